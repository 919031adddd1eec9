"""Recognizer: load a captcha_edge ``.tflite``, preprocess images, run the interpreter, decode CTC.

Everything the runtime needs (charset, blank, input size, preprocessing recipe) comes from the
metadata embedded in the model by ``captcha-export``; quantization parameters come from the
interpreter's own tensor details, so int8, float16 and float32 exports all work unchanged.

Thread safety: a TFLite interpreter is not thread-safe, so a :class:`Recognizer` keeps one
interpreter per thread (made on first use in that thread). One Recognizer can be shared by any
number of threads; calls from different threads run in parallel.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from . import decoder as _decoder  # type: ignore[attr-defined]  # mypy cannot map package_dir
from . import metadata as _metadata
from ._backend import backend_version, get_interpreter_class
from .errors import ModelFormatError
from .preprocess import ImageSource, channels, make_recipe, to_array

#: The model shipped inside the package (trained and exported by scripts/make_default_model.sh).
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default_int8.tflite"

ModelSource = Union[str, "os.PathLike[str]", bytes, None]

#: Beam width used when constraints or top_k > 1 are asked for without an explicit beam_width.
_DEFAULT_BEAM = 10
#: Floor for probabilities that quantization rounded to 0, used by constrained decoding.
_PROB_FLOOR = 1e-6


@dataclass(frozen=True)
class Prediction:
    """A detailed recognition result.

    Attributes:
        text: the decoded string (the best beam, or the greedy path); ``""`` when no text
            satisfies the ``allowed``/length constraints.
        confidence: probability of ``text`` in [0, 1]: summed over its alignments for the beam
            search, the best path's probability for greedy decoding.
        char_confidences: one value in [0, 1] per character of ``text`` (the highest
            probability of that character over the frames aligned to it).
        alternatives: the top-k ``(text, confidence)`` pairs from the beam search, best first
            (``alternatives[0]`` is ``(text, confidence)``).
    """

    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    alternatives: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class _IOSpec:
    """Input/output tensor facts of one model, read once from a first interpreter."""

    in_index: int
    in_dtype: Any
    in_scale: float
    in_zero: int
    out_index: int
    out_dtype: Any
    out_scale: float
    out_zero: int


def _check_int(name: str, value: int | None, minimum: int) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or value < minimum):
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


class Recognizer:
    """Read text captchas with a captcha_edge TFLite model.

    Args:
        model: path to a ``.tflite`` exported by ``captcha-export``, its bytes, or None for the
            bundled default model (:data:`DEFAULT_MODEL`).
        num_threads: threads the interpreter may use for one image (None: the backend's default).
            For throughput over many images prefer ``predict_batch(..., workers=N)``.
        backend: ``"ai-edge-litert"``, ``"tflite-runtime"`` or ``"tensorflow"``; None picks the
            first installed in that order (or ``$CAPTCHA_EDGE_BACKEND``).
        beam_width: default decoding: 1 = greedy (best path), > 1 = CTC prefix beam search;
            None (default) = greedy, or a width-10 beam search when ``allowed``, a length
            bound or ``top_k > 1`` is asked for (greedy decoding cannot honour those).
        allowed: default set of characters the output may contain (None: the whole charset).
        min_length, max_length: default length range of the output (None: unbounded).

    Raises:
        ModelFormatError: the model is missing, corrupt, not TFLite, or has no captcha_edge
            metadata, or its metadata disagrees with its tensors.
        ImportError: no TFLite interpreter is installed.

    Example:
        >>> rec = Recognizer("captcha_int8.tflite")          # doctest: +SKIP
        >>> rec.predict("3n7bx.png")                          # doctest: +SKIP
        '3n7bx'
    """

    def __init__(self, model: ModelSource = None, *, num_threads: int | None = None,
                 backend: str | None = None, beam_width: int | None = None,
                 allowed: str | None = None, min_length: int | None = None,
                 max_length: int | None = None) -> None:
        _check_int("num_threads", num_threads, 1)
        self._decode_defaults = self._decode_options(beam_width, allowed, min_length, max_length)
        if model is None:
            model = DEFAULT_MODEL
            if not DEFAULT_MODEL.is_file():
                raise ModelFormatError(f"{DEFAULT_MODEL}: the bundled default model is missing "
                                       "from this install; pass a model path")
        if isinstance(model, (bytes, bytearray)):
            data, self.model_path = bytes(model), None
            name = "<model bytes>"
        elif isinstance(model, (str, os.PathLike)):
            self.model_path = Path(model)
            name = str(self.model_path)
            try:
                data = self.model_path.read_bytes()
            except OSError as exc:
                raise ModelFormatError(f"{name}: cannot read model "
                                       f"({exc.strerror or exc})") from None
        else:
            raise TypeError(f"model must be a path, bytes or None; got {type(model).__name__}")
        self.name = name
        self.model_size = len(data)
        self._flatbuffer, self.metadata = _metadata.split(data, name)
        self._read_metadata(name)
        self.num_threads = num_threads
        self.backend, self._interpreter_cls = get_interpreter_class(backend)
        self._local = threading.local()
        self._io = self._check_tensors(self._interpreter(), name)

    # -- model --------------------------------------------------------------------------------

    def _read_metadata(self, name: str) -> None:
        """Validate the metadata fields the runtime relies on."""
        meta = self.metadata
        try:
            charset = meta["charset"]
            if not isinstance(charset, str) or not charset or len(set(charset)) != len(charset):
                raise ValueError(f"charset must be a non-empty string of distinct characters; "
                                 f"got {charset!r}")
            blank = int(meta.get("blank", len(charset)))
            if blank not in (len(charset), -1):
                raise ValueError(f"blank must be the last class ({len(charset)}); got {blank}")
            recipe = make_recipe(**meta["preprocess"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"{name}: invalid captcha_edge metadata ({exc}); "
                                   "re-export it with `captcha-export`") from None
        self.charset: str = charset
        self.recipe: dict[str, Any] = recipe
        self.input_size: tuple[int, int] = (recipe["height"], recipe["width"])

    def _new_interpreter(self) -> Any:
        """Build and allocate one interpreter on the model's flatbuffer."""
        try:
            interp = self._interpreter_cls(model_content=self._flatbuffer,
                                           num_threads=self.num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFormatError(f"{self.name}: the TFLite interpreter cannot load this "
                                   f"model ({msg})") from None
        return interp

    def _interpreter(self) -> Any:
        """This thread's interpreter (TFLite interpreters must not be shared across threads)."""
        interp = getattr(self._local, "interpreter", None)
        if interp is None:
            interp = self._local.interpreter = self._new_interpreter()
        return interp

    def _check_tensors(self, interp: Any, name: str) -> _IOSpec:
        """Match the interpreter's tensors against the metadata; read quantization."""
        ins, outs = interp.get_input_details(), interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelFormatError(f"{name}: expected 1 input and 1 output tensor; got "
                                   f"{len(ins)} and {len(outs)}")
        i, o = ins[0], outs[0]
        h, w = self.input_size
        ok_shapes = ((1, h, w, 3),) if channels(self.recipe) == 3 else ((1, h, w, 1), (1, h, w))
        if tuple(int(d) for d in i["shape"]) not in ok_shapes:
            raise ModelFormatError(f"{name}: input tensor shape {list(i['shape'])} does not "
                                   f"match the metadata's {h}x{w} {self.recipe['color']} "
                                   "preprocessing")
        oshape = tuple(int(d) for d in o["shape"])
        if len(oshape) != 3 or oshape[0] != 1 or oshape[2] != len(self.charset) + 1:
            raise ModelFormatError(f"{name}: output shape {list(oshape)} does not match a "
                                   f"charset of {len(self.charset)} symbols + blank")
        self.time_steps = oshape[1]
        self._in_shape = tuple(int(d) for d in i["shape"])
        i_scale, i_zero = i["quantization"]
        o_scale, o_zero = o["quantization"]
        return _IOSpec(int(i["index"]), i["dtype"], float(i_scale), int(i_zero),
                       int(o["index"]), o["dtype"], float(o_scale), int(o_zero))

    def info(self) -> dict[str, Any]:
        """Describe the model: metadata, backend, tensors, op counts and sizes."""
        interp = self._interpreter()
        ops: dict[str, int] = {}
        try:
            for op in interp._get_ops_details():
                ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
        except AttributeError:  # very old interpreters lack the op listing
            pass

        def tensor(d: dict[str, Any]) -> dict[str, Any]:
            scale, zero = d["quantization"]
            return {"name": d["name"], "shape": [int(x) for x in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name,
                    "quantization": [float(scale), int(zero)] if scale else None}

        return {
            "model": self.name,
            "file_size": self.model_size,
            "tflite_size": len(self._flatbuffer),
            "backend": self.backend,
            "backend_version": backend_version(self.backend),
            "input": tensor(interp.get_input_details()[0]),
            "output": tensor(interp.get_output_details()[0]),
            "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
            "metadata": self.metadata,
        }

    # -- pipeline stages ----------------------------------------------------------------------

    def preprocess(self, image: ImageSource) -> np.ndarray:
        """Image -> uint8 (height, width) raw grey levels (or (height, width, 3) for an RGB
        model), exactly as in training."""
        return to_array(image, self.recipe)

    def infer(self, array: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 (height, width) array -> float32 (T, C) class probabilities."""
        io, interp = self._io, self._interpreter()
        if io.in_dtype == np.float32:
            x = array.astype(np.float32)
        elif io.in_scale == 1.0 and io.in_zero == 0 and io.in_dtype == np.uint8:
            x = array  # raw pixels are the quantized input already
        else:
            info = np.iinfo(io.in_dtype)
            q = np.rint(array.astype(np.float32) / io.in_scale) + io.in_zero
            x = np.clip(q, info.min, info.max).astype(io.in_dtype)
        interp.set_tensor(io.in_index, x.reshape(self._in_shape))
        # A converted Keras LSTM keeps its state in TFLite variable tensors that survive
        # invoke(): without this reset each image would start from the previous image's state.
        interp.reset_all_variables()
        interp.invoke()
        out: np.ndarray = interp.get_tensor(io.out_index)[0]
        if io.out_dtype == np.float32:
            return np.ascontiguousarray(out, dtype=np.float32)
        return (out.astype(np.float32) - np.float32(io.out_zero)) * np.float32(io.out_scale)

    @staticmethod
    def _decode_options(beam_width: int | None, allowed: str | None,
                        min_length: int | None, max_length: int | None) -> dict[str, Any]:
        _check_int("beam_width", beam_width, 1)
        _check_int("min_length", min_length, 0)
        _check_int("max_length", max_length, 0)
        if min_length is not None and max_length is not None and min_length > max_length:
            raise ValueError(f"min_length ({min_length}) must be <= max_length ({max_length})")
        if allowed is not None and (not isinstance(allowed, str) or not allowed):
            raise ValueError(f"allowed must be a non-empty string of characters; got {allowed!r}")
        return {"beam_width": beam_width, "allowed": allowed, "min_length": min_length,
                "max_length": max_length}

    def _options(self, beam_width: int | None, allowed: str | None,
                 min_length: int | None, max_length: int | None) -> dict[str, Any]:
        """Per-call decoding options over the instance defaults."""
        given = self._decode_options(beam_width, allowed, min_length, max_length)
        opts = {k: (v if v is not None else self._decode_defaults[k]) for k, v in given.items()}
        if opts["allowed"] is not None:
            unknown = sorted(set(opts["allowed"]) - set(self.charset))
            if unknown:
                raise ValueError(f"allowed has characters the model cannot emit: "
                                 f"{''.join(unknown)!r}; the charset is {self.charset!r}")
        return opts

    def check_options(self, *, beam_width: int | None = None, allowed: str | None = None,
                      min_length: int | None = None, max_length: int | None = None) -> None:
        """Raise ValueError now for decoding options that every call would reject."""
        self._options(beam_width, allowed, min_length, max_length)

    def _beams(self, probs: np.ndarray, opts: dict[str, Any], top_k: int) -> list[Any]:
        """Run the decoder: greedy for one unconstrained answer, else the beam search."""
        constrained = any(opts[k] is not None for k in ("allowed", "min_length", "max_length"))
        width = opts["beam_width"]
        if width is None:
            width = _DEFAULT_BEAM if constrained or top_k > 1 else 1
        width = max(width, top_k)
        if width == 1 and not constrained:
            return [_decoder.greedy_search(probs, self.charset, blank=-1)]
        prune: float | None = _decoder.DEFAULT_PRUNE
        if constrained:
            # int8 outputs round small probabilities to exactly 0, and pruning drops the rest,
            # so a constrained search could find no text at all; floor the zeros and search
            # exactly instead (the argmax, hence the unconstrained answer, is unchanged).
            probs, prune = np.maximum(probs, np.float32(_PROB_FLOOR)), None
        return list(_decoder.beam_search(
            probs, self.charset, beam_width=width, top_k=top_k, blank=-1,
            allowed=opts["allowed"], min_length=opts["min_length"] or 0,
            max_length=opts["max_length"], prune=prune))

    def decode(self, probs: np.ndarray, *, beam_width: int | None = None,
               allowed: str | None = None, min_length: int | None = None,
               max_length: int | None = None) -> str:
        """(T, C) probabilities -> text, with the same options as :meth:`predict`."""
        opts = self._options(beam_width, allowed, min_length, max_length)
        if opts["beam_width"] in (None, 1) and all(
                opts[k] is None for k in ("allowed", "min_length", "max_length")):
            return str(_decoder.decode_greedy(probs, self.charset, blank=-1))
        beams = self._beams(probs, opts, 1)
        return str(beams[0].text) if beams else ""

    # -- public API ---------------------------------------------------------------------------

    def predict(self, image: ImageSource, *, beam_width: int | None = None,
                allowed: str | None = None, min_length: int | None = None,
                max_length: int | None = None) -> str:
        """Read one captcha.

        Args:
            image: a path, bytes, a binary file object, a PIL image or a uint8 array
                ((H, W) grey or (H, W, 3|4) RGB/RGBA).
            beam_width, allowed, min_length, max_length: override the instance's decoding
                defaults for this call (see :class:`Recognizer`).

        Returns:
            The text.

        Raises:
            ImageError: the image cannot be read (message names the file and the problem).
            ValueError: a decoding option is out of range.
        """
        probs = self.infer(self.preprocess(image))
        return self.decode(probs, beam_width=beam_width, allowed=allowed,
                           min_length=min_length, max_length=max_length)

    def recognize(self, image: ImageSource, *, top_k: int = 1, beam_width: int | None = None,
                  allowed: str | None = None, min_length: int | None = None,
                  max_length: int | None = None) -> Prediction:
        """Read one captcha and return text, confidences and the top-k alternatives.

        ``top_k > 1`` runs the beam search with width ``max(beam_width, top_k)``; the best beam
        is the answer and the others are the alternatives. Other arguments as :meth:`predict`.
        """
        _check_int("top_k", top_k, 1)
        opts = self._options(beam_width, allowed, min_length, max_length)
        probs = self.infer(self.preprocess(image))
        return self._prediction(self._beams(probs, opts, top_k))

    @staticmethod
    def _prediction(beams: Sequence[Any]) -> Prediction:
        if not beams:  # no text satisfies the allowed/length constraints
            return Prediction(text="", confidence=0.0, char_confidences=(), alternatives=())
        best = beams[0]
        return Prediction(text=str(best.text), confidence=float(best.confidence),
                          char_confidences=tuple(float(c) for c in best.char_confidences),
                          alternatives=tuple((str(b.text), float(b.confidence)) for b in beams))

    def predict_batch(self, images: Iterable[ImageSource], *, workers: int = 1,
                      beam_width: int | None = None, allowed: str | None = None,
                      min_length: int | None = None,
                      max_length: int | None = None) -> list[str]:
        """Read many captchas, in order; ``workers`` threads each with its own interpreter.

        Raises the first :class:`ImageError` met (use :meth:`recognize` per image to collect
        errors instead).
        """
        _check_int("workers", workers, 1)
        self._options(beam_width, allowed, min_length, max_length)  # fail before any work
        items = list(images)

        def one(img: ImageSource) -> str:
            return self.predict(img, beam_width=beam_width, allowed=allowed,
                                min_length=min_length, max_length=max_length)

        if workers == 1 or len(items) <= 1:
            return [one(img) for img in items]
        with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
            return list(pool.map(one, items))

    def __repr__(self) -> str:
        h, w = self.input_size
        return (f"Recognizer({self.name!r}, format={self.metadata.get('format')!r}, "
                f"input={h}x{w}, charset={len(self.charset)} symbols, backend={self.backend!r})")
