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

from . import decoder as _decoder
from . import metadata as _metadata
from ._backend import backend_version, get_interpreter_class
from .errors import ModelFormatError
from .preprocess import ImageSource, channels, to_array

#: The model shipped inside the package (trained and exported by scripts/make_default_model.sh).
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default_int8.tflite"

ModelSource = Union[str, "os.PathLike[str]", bytes, None]

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


class Recognizer:
    """Read text captchas with a captcha_edge TFLite model.

    Args:
        model: path to a ``.tflite`` exported by ``captcha-export``, its bytes, or None for the
            bundled default model (:data:`DEFAULT_MODEL`).
        num_threads: threads the interpreter may use for one image (None: the backend's default).
            For throughput over many images prefer ``predict_batch(..., workers=N)``.
        backend: ``"ai-edge-litert"``, ``"tflite-runtime"`` or ``"tensorflow"``; None picks the
            first installed in that order (or ``$CAPTCHA_EDGE_BACKEND``).
        beam_width: default decoding: 1 = greedy (best path), > 1 = CTC prefix beam search
            (at most ``MAX_BEAM_WIDTH``, 1024); None (default) = greedy, or a beam search of
            width ``max(10, top_k)`` when ``allowed``, a length bound or ``top_k > 1`` is asked
            for (greedy decoding cannot honour those).
        allowed: default set of characters the output may contain (None: the whole charset).
        min_length, max_length: default length range of the output (None: unbounded, or
            the length prior below).
        length_prior: True (default): a model whose metadata records the label lengths it was
            trained on (``label_lengths``, written by ``captcha-export`` since 0.2) is decoded
            within that range whenever no ``min_length``/``max_length`` is given: the greedy
            answer is kept when its length fits, else the beam search looks for the best text
            that fits. A bound the caller gives wins over the prior's. False: any length.

        The decoding defaults are kept as a :class:`~captcha_edge.decoder.DecodeOptions`
        (``decode_options``) and checked against the model here: characters outside its
        charset, or a ``min_length`` above its ``time_steps``, fail in the constructor.

    Raises:
        ModelFormatError: the model is missing, corrupt, not TFLite, or has no captcha_edge
            metadata, or its metadata disagrees with its tensors.
        ImportError: no TFLite interpreter is installed.
        TypeError, ValueError: a bad ``num_threads`` or decoding option (the message names it).

    Example:
        >>> rec = Recognizer("captcha_int8.tflite")          # doctest: +SKIP
        >>> rec.predict("3n7bx.png")                          # doctest: +SKIP
        '3n7bx'
    """

    def __init__(self, model: ModelSource = None, *, num_threads: int | None = None,
                 backend: str | None = None, beam_width: int | None = None,
                 allowed: str | None = None, min_length: int | None = None,
                 max_length: int | None = None, length_prior: bool = True) -> None:
        if not isinstance(length_prior, bool):
            raise TypeError(f"length_prior must be True or False; got {length_prior!r}")
        if num_threads is not None:
            _decoder._validate.check_int(num_threads, "num_threads", 1)
        self.decode_options = _decoder.DecodeOptions(beam_width, allowed, min_length, max_length)
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
            data = _metadata.read_model(self.model_path)  # a regular file under the size cap
        else:
            raise TypeError(f"model must be a path, bytes or None; got {type(model).__name__}")
        self.name = name
        self.model_size = len(data)
        self._flatbuffer, self.meta = _metadata.load(data, name)
        self._read_metadata(name)
        #: ``(shortest, longest)`` text the decoder keeps to when the caller sets no length
        #: bound: the model's ``label_lengths``; None without one or with ``length_prior=False``.
        self.length_prior: tuple[int, int] | None = (
            self.meta.label_lengths if length_prior else None)
        self.num_threads = num_threads
        self.backend, self._interpreter_cls = get_interpreter_class(backend)
        self._local = threading.local()
        self._io = self._check_tensors(self._interpreter(), name)
        self.decode_options.check_model(self.charset, self.time_steps)

    # -- model --------------------------------------------------------------------------------

    def _read_metadata(self, name: str) -> None:
        """Take what the runtime needs from the (already validated) metadata."""
        meta = self.meta
        #: The metadata as a plain dict (``ModelMeta.to_dict()``: defaults filled in).
        self.metadata: dict[str, Any] = meta.to_dict()
        self.charset: str = meta.charset
        self.recipe: dict[str, Any] = dict(meta.preprocess)
        self.input_size: tuple[int, int] = meta.input_size

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
        meta = self.meta
        if meta.time_steps is not None and meta.time_steps != oshape[1]:
            raise ModelFormatError(f"{name}: output has {oshape[1]} frames but the metadata "
                                   f"says time_steps {meta.time_steps}")
        for what, d, said in (("input", i, meta.input_dtype), ("output", o, meta.output_dtype)):
            if said is not None and np.dtype(d["dtype"]).name != said:
                raise ModelFormatError(f"{name}: {what} tensor is {np.dtype(d['dtype']).name} "
                                       f"but the metadata says {what}_dtype {said}")
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

    def _options(self, **given: Any) -> Any:
        """This call's :class:`DecodeOptions`: ``given`` (None = unset) over the instance's
        defaults, validated and checked against the model."""
        opts = self.decode_options.merged(**given)
        if opts is not self.decode_options:
            opts.check_model(self.charset, self.time_steps)
        return opts

    def check_options(self, *, beam_width: int | None = None, allowed: str | None = None,
                      min_length: int | None = None, max_length: int | None = None,
                      top_k: int | None = None) -> None:
        """Raise ValueError (or TypeError) now for decoding options that every call would
        reject: out of range, characters the model cannot emit, or a ``min_length`` above
        the model's ``time_steps`` (T frames of CTC output emit at most T characters)."""
        self._options(beam_width=beam_width, allowed=allowed, min_length=min_length,
                      max_length=max_length, top_k=top_k)

    def _beams(self, probs: np.ndarray, opts: Any) -> list[Any]:
        """Run the decoder: greedy for one unconstrained answer, else the beam search."""
        if opts.width == 1 and not opts.constrained:
            return [_decoder.greedy_search(probs, self.charset, blank=-1)]
        prune: float | None = _decoder.DEFAULT_PRUNE
        if opts.constrained:
            # int8 outputs round small probabilities to exactly 0, and pruning drops the rest,
            # so a constrained search could find no text at all; floor the zeros and search
            # exactly instead (the argmax, hence the unconstrained answer, is unchanged).
            probs, prune = np.maximum(probs, np.float32(_PROB_FLOOR)), None
        return list(_decoder.beam_search(
            probs, self.charset, beam_width=opts.width, top_k=opts.top_k, blank=-1,
            allowed=opts.allowed, min_length=opts.min_length or 0,
            max_length=opts.max_length, prune=prune))

    def _fits_prior(self, text: str) -> bool:
        prior = self.length_prior
        return prior is None or prior[0] <= len(text) <= prior[1]

    def _with_prior(self, opts: Any) -> Any:
        """``opts`` with the length prior filling the length bounds the caller left open (the
        caller's bound wins; a prior that contradicts it is dropped)."""
        prior = self.length_prior
        if prior is None or (opts.min_length is not None and opts.max_length is not None):
            return opts
        lo = prior[0] if opts.min_length is None else opts.min_length
        hi = prior[1] if opts.max_length is None else opts.max_length
        return opts if lo > hi else opts.merged(min_length=lo, max_length=hi)

    def _search(self, probs: np.ndarray, opts: Any) -> list[Any]:
        """Beams for ``opts`` within the length prior: an unconstrained greedy answer that
        fits it is kept as is (so the prior costs nothing then), else the constrained search."""
        if opts.width == 1 and not opts.constrained:
            beams = self._beams(probs, opts)
            if self._fits_prior(str(beams[0].text)):
                return beams
            return self._beams(probs, self._with_prior(opts)) or beams
        return self._beams(probs, self._with_prior(opts))

    def decode(self, probs: np.ndarray, *, beam_width: int | None = None,
               allowed: str | None = None, min_length: int | None = None,
               max_length: int | None = None) -> str:
        """(T, C) probabilities -> text, with the same options as :meth:`predict`."""
        opts = self._options(beam_width=beam_width, allowed=allowed, min_length=min_length,
                             max_length=max_length)
        if opts.width == 1 and not opts.constrained:
            text = str(_decoder.decode_greedy(probs, self.charset, blank=-1))
            if self._fits_prior(text):
                return text
        beams = self._search(probs, opts)
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
            ImageError: the image cannot be read, whatever the reason (message names the file
                and the problem).
            TypeError: ``image`` is not one of the types above, or a file open in text mode.
            ValueError: a decoding option is out of range.
        """
        probs = self.infer(self.preprocess(image))
        return self.decode(probs, beam_width=beam_width, allowed=allowed,
                           min_length=min_length, max_length=max_length)

    def recognize(self, image: ImageSource, *, top_k: int = 1, beam_width: int | None = None,
                  allowed: str | None = None, min_length: int | None = None,
                  max_length: int | None = None) -> Prediction:
        """Read one captcha and return text, confidences and the top-k alternatives.

        ``top_k > 1`` runs the beam search (width ``max(10, top_k)`` unless ``beam_width`` is
        given, which must then be >= ``top_k``: a wider beam is never chosen silently); the
        best beam is the answer and the others are the alternatives. Other arguments as
        :meth:`predict`.
        """
        opts = self._options(beam_width=beam_width, allowed=allowed, min_length=min_length,
                             max_length=max_length, top_k=top_k)
        probs = self.infer(self.preprocess(image))
        return self._prediction(self._search(probs, opts))

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
        _decoder._validate.check_int(workers, "workers", 1)
        self.check_options(beam_width=beam_width, allowed=allowed, min_length=min_length,
                           max_length=max_length)  # fail before any work
        items = list(images)

        def one(img: ImageSource) -> str:
            return self.predict(img, beam_width=beam_width, allowed=allowed,
                                min_length=min_length, max_length=max_length)

        if workers == 1 or len(items) <= 1:
            return [one(img) for img in items]
        with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
            return list(pool.map(one, items))

    # -- pickling: by model bytes; interpreters are native, per process, and rebuilt lazily ----

    def __getstate__(self) -> dict[str, Any]:
        """State without the interpreters: the model bytes, metadata and options travel."""
        state = dict(self.__dict__)
        state.pop("_local", None)  # per-thread interpreters cannot cross a process boundary
        state.pop("_interpreter_cls", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild on the receiving side: same backend, interpreters made on first use."""
        self.__dict__.update(state)
        self.backend, self._interpreter_cls = get_interpreter_class(state["backend"])
        self._local = threading.local()

    def __repr__(self) -> str:
        h, w = self.input_size
        return (f"Recognizer({self.name!r}, format={self.metadata.get('format')!r}, "
                f"input={h}x{w}, charset={len(self.charset)} symbols, backend={self.backend!r})")
