"""The captcha_edge metadata embedded in a ``.tflite`` file, readable without TensorFlow.

Layout: the TFLite flatbuffer, then a zip archive appended to it (as the Ultralytics exporter
does) holding one member, ``captcha_edge.json``. Zip readers find the archive from the end of the
file, so the flatbuffer in front is untouched; ``tflite_size`` in the JSON says where it ends,
so the interpreter is given exactly the flatbuffer bytes.

The JSON is the contract between ``captcha-export`` (the writer) and the runtime (the reader).
:class:`ModelMeta` is that contract as code: every writer builds one (``embed`` validates it) and
every reader gets one (``load``), so a key, its type and its default live here only.

A model file is untrusted input. Reading one is bounded: the file must be a regular file of at
most :data:`MAX_MODEL_BYTES`; the zip archive must lie in the file's last
:data:`MAX_ARCHIVE_BYTES`; the JSON member is stored or deflated, not encrypted, and inflates to
at most :data:`MAX_METADATA_BYTES` (declared and actual size). Every failure is one
:class:`~captcha_edge.ModelFormatError` line naming the file and the problem.
"""
from __future__ import annotations

import io
import json
import math
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Optional, Union

from .errors import ModelFormatError
from .preprocess import make_recipe

MEMBER = "captcha_edge.json"
#: Version of the JSON layout. Bump it only for a change an older reader would misread; a new
#: optional key does not need it (readers keep unknown keys in ``ModelMeta.extra``).
METADATA_VERSION = 1
FORMAT_VERSION = METADATA_VERSION  # the name before ModelMeta existed

#: Largest model file the runtime reads (the bundled int8 model is ~80 KB, a float32 "large"
#: export a few MB); bigger files, devices and FIFOs are refused before any byte is read.
MAX_MODEL_BYTES = 256 * 1024 * 1024
#: Largest inflated metadata JSON (an export writes ~1 KB).
MAX_METADATA_BYTES = 1024 * 1024
#: The appended zip archive must lie within this many bytes at the end of the file.
MAX_ARCHIVE_BYTES = 2 * MAX_METADATA_BYTES + 64 * 1024

#: Export formats a model can declare (``captcha_edge.export.formats.FORMATS`` has the same names).
MODEL_FORMATS = ("float32", "float16", "dynamic", "int8")
#: Tensor dtypes a model can declare for its input and output.
TENSOR_DTYPES = ("uint8", "int8", "int16", "float16", "float32")

PathLike = Union[str, "os.PathLike[str]"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise ValueError(f"{key!r} must be {expected}; got "
                         f"{shown if len(shown) <= 60 else shown[:57] + '...'}")


def _opt_str(key: str, value: Any, choices: Optional[tuple[str, ...]] = None) -> None:
    if value is None:
        return
    if choices is None:
        _check(isinstance(value, str), key, "a string or null", value)
    else:
        _check(value in choices if isinstance(value, str) else False, key,
               f"one of {', '.join(choices)} or null", value)


def _opt_mapping(key: str, value: Any) -> Optional[Mapping[str, Any]]:
    if value is None:
        return None
    _check(isinstance(value, Mapping) and all(isinstance(k, str) for k in value), key,
           "a JSON object or null", value)
    return MappingProxyType(dict(value))


def _quant(key: str, value: Any) -> Optional[tuple[float, int]]:
    """[scale, zero_point] -> (float, int); None stays None."""
    if value is None:
        return None
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and isinstance(value[0], (int, float)) and not isinstance(value[0], bool)
          and math.isfinite(value[0]) and value[0] > 0 and _is_int(value[1])
          and -(2 ** 31) <= value[1] < 2 ** 31)
    _check(ok, key, "[scale > 0, integer zero point] or null", value)
    return float(value[0]), int(value[1])


def check_recipe(value: Any) -> Mapping[str, Any]:
    """A stored preprocessing recipe, checked: ``make_recipe`` plus the types JSON can get wrong.

    Shared by :class:`ModelMeta` and the run folder's ``RunInfo`` (``captcha_edge.train``).

    Returns:
        The complete recipe as a read-only mapping.

    Raises:
        ValueError: naming the recipe key (``preprocess.background`` must be an int in 0..255).
    """
    _check(isinstance(value, Mapping), "preprocess", "a JSON object (the to_array recipe)", value)
    for key in ("height", "width"):
        if key in value:
            _check(_is_int(value[key]), f"preprocess.{key}", "an int", value[key])
    for key in ("color", "resize", "resample", "contrast"):
        if key in value:
            _check(isinstance(value[key], str), f"preprocess.{key}", "a string", value[key])
    if "background" in value:
        bg = value["background"]
        _check(_is_int(bg) and 0 <= bg <= 255, "preprocess.background",
               "an int grey level in 0..255", bg)
    try:
        recipe = make_recipe(**value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"'preprocess': {exc}") from None
    return MappingProxyType(recipe)


@dataclass(frozen=True)
class ModelMeta:
    """The metadata of an exported model (the ``captcha_edge.json`` member), validated.

    Build one with keyword arguments (writers) or :meth:`from_dict` (readers, JSON); both check
    every field and raise ``ValueError`` naming the key. Keys that older exports lack get the
    defaults below, so models written before a key existed still load.

    Attributes:
        charset: the symbols, class ``i`` is ``charset[i]``; distinct characters.
        preprocess: the ``captcha_edge.preprocess.to_array`` recipe (read-only mapping).
        blank: the blank class, always ``len(charset)`` (the last one); ``-1`` is accepted.
        input_shape: ``(H, W, 1)``; defaults to the recipe's height and width.
        time_steps: frames T of the output; None when unknown (the runtime reads the tensor).
        format: one of :data:`MODEL_FORMATS`, None when unknown.
        input_dtype, output_dtype: the tensors' dtypes (:data:`TENSOR_DTYPES`), None when unknown.
        input_quant, output_quant: ``(scale, zero_point)`` of a quantized tensor, else None.
        stateful: the fused LSTM keeps state between invokes, so a caller must run
            ``reset_all_variables()`` before each; unknown (old models) counts as True, the safe
            side.
        batch: the static batch size of the input tensor.
        calibration: where the int8 calibration images came from, None for the other formats.
        route: how export rebuilt the graph (``tf_keras`` or ``unroll``).
        label_lengths: ``(shortest, longest)`` label the model was trained on, the length
            prior: the runtime decodes within it unless told otherwise. None = no prior (older
            models).
        int8_route: int8 only, the integer route of ``export/routes.py`` that made the file
            (``plain``, ``wide-calibration``); None for float formats and older models.
        exported: UTC time of the export, ISO 8601.
        source_run: the run folder's name as given to captcha-export (never an absolute path).
        package_version: the captcha-edge version that exported it.
        accuracy: what export measured on the validation split, None with ``--no-verify``.
        tflite_size: bytes of the flatbuffer in front of the zip; set by :func:`embed`.
        metadata_version: :data:`METADATA_VERSION` of the writer.
        extra: keys this version does not know, kept so that nothing a newer writer added is lost.
    """

    charset: str
    preprocess: Mapping[str, Any]
    blank: int = -1
    input_shape: Optional[tuple[int, ...]] = None
    time_steps: Optional[int] = None
    format: Optional[str] = None
    input_dtype: Optional[str] = None
    output_dtype: Optional[str] = None
    input_quant: Optional[tuple[float, int]] = None
    output_quant: Optional[tuple[float, int]] = None
    stateful: bool = True
    batch: int = 1
    calibration: Optional[Mapping[str, Any]] = None
    route: Optional[str] = None
    int8_route: Optional[str] = None
    label_lengths: Optional[tuple[int, int]] = None
    exported: Optional[str] = None
    source_run: Optional[str] = None
    package_version: Optional[str] = None
    accuracy: Optional[Mapping[str, Any]] = None
    tflite_size: Optional[int] = None
    metadata_version: int = METADATA_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.charset
        _check(isinstance(c, str) and len(c) > 0 and len(set(c)) == len(c), "charset",
               "a non-empty string of distinct characters", c)
        _check(_is_int(self.blank) and self.blank in (len(c), -1), "blank",
               f"the last class, {len(c)} (len(charset))", self.blank)
        recipe = check_recipe(self.preprocess)
        h, w = recipe["height"], recipe["width"]
        shape = (h, w, 1) if self.input_shape is None else self.input_shape
        _check(isinstance(shape, (list, tuple)) and len(shape) == 3 and all(map(_is_int, shape))
               and tuple(shape[:2]) == (h, w) and shape[2] >= 1, "input_shape",
               f"[{h}, {w}, channels] (the preprocess height and width)", shape)
        _check(self.time_steps is None or (_is_int(self.time_steps) and self.time_steps >= 1),
               "time_steps", "an int >= 1 or null", self.time_steps)
        _opt_str("format", self.format, MODEL_FORMATS)
        _opt_str("input_dtype", self.input_dtype, TENSOR_DTYPES)
        _opt_str("output_dtype", self.output_dtype, TENSOR_DTYPES)
        _check(isinstance(self.stateful, bool), "stateful", "true or false", self.stateful)
        _check(_is_int(self.batch) and self.batch >= 1, "batch", "an int >= 1", self.batch)
        for key in ("route", "int8_route", "exported", "source_run", "package_version"):
            _opt_str(key, getattr(self, key))
        _check(self.tflite_size is None or (_is_int(self.tflite_size) and self.tflite_size >= 8),
               "tflite_size", "an int >= 8 or null", self.tflite_size)
        ll = self.label_lengths
        _check(ll is None or (isinstance(ll, (list, tuple)) and len(ll) == 2
                              and all(map(_is_int, ll)) and 1 <= ll[0] <= ll[1]),
               "label_lengths", "[shortest, longest] ints with 1 <= shortest <= longest, or null",
               ll)
        v = self.metadata_version
        _check(_is_int(v) and v >= 1, "metadata_version", "an int >= 1", v)
        if v > METADATA_VERSION:
            raise ValueError(f"'metadata_version' is {v}, newer than this captcha-edge reads "
                             f"({METADATA_VERSION}); upgrade captcha-edge")
        _check(isinstance(self.extra, Mapping), "extra", "a mapping", self.extra)
        known = {f.name for f in fields(self)}
        clash = sorted(set(self.extra) & known)
        if clash:
            raise ValueError(f"extra repeats known keys {clash}")
        # Normalise to immutable, canonical values (frozen: set through object.__setattr__).
        put = object.__setattr__
        put(self, "blank", len(c))
        put(self, "preprocess", recipe)
        put(self, "input_shape", tuple(shape))
        put(self, "label_lengths", None if ll is None else (int(ll[0]), int(ll[1])))
        put(self, "input_quant", _quant("input_quant", self.input_quant))
        put(self, "output_quant", _quant("output_quant", self.output_quant))
        put(self, "calibration", _opt_mapping("calibration", self.calibration))
        put(self, "accuracy", _opt_mapping("accuracy", self.accuracy))
        put(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the preprocessed image."""
        return int(self.preprocess["height"]), int(self.preprocess["width"])

    @classmethod
    def from_dict(cls, d: Any) -> ModelMeta:
        """Validate a decoded ``captcha_edge.json`` object.

        Raises:
            ValueError: ``d`` is not a JSON object, a required key (``charset``, ``preprocess``)
                is missing, or a key has the wrong type or value (the message names the key).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"the metadata must be a JSON object; got {type(d).__name__}")
        missing = [k for k in ("charset", "preprocess") if k not in d]
        if missing:
            raise ValueError(f"missing keys {', '.join(missing)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        return cls(**kwargs, extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: every key (defaults filled in), then the ``extra`` keys."""
        return contract_dict(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle through the JSON form: the read-only mapping fields cannot be pickled as they
        # are, and a Recognizer shipped to another process (Ray, Spark) carries its ModelMeta.
        return (type(self).from_dict, (self.to_dict(),))


def contract_dict(obj: Any) -> dict[str, Any]:
    """A contract dataclass as a JSON-ready dict: its fields (mappings -> dict, tuples -> list,
    objects with ``to_dict`` -> their dict), then its ``extra`` mapping's keys."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        if f.name == "extra":
            continue
        v = getattr(obj, f.name)
        if hasattr(v, "to_dict"):
            v = v.to_dict()
        elif isinstance(v, Mapping):
            v = dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    out.update(obj.extra)
    return out


# -- writing ------------------------------------------------------------------------------------


def embed(tflite: bytes, meta: Union[ModelMeta, Mapping[str, Any]]) -> bytes:
    """Return ``tflite`` with ``meta`` appended as the zip member (``tflite_size`` is set).

    Raises:
        ModelFormatError: ``tflite`` is not a TFLite flatbuffer.
        ValueError: ``meta`` is not valid (see :class:`ModelMeta`).
    """
    if tflite[4:8] != b"TFL3":
        raise ModelFormatError("embed() needs a TFLite flatbuffer (no 'TFL3' identifier found)")
    m = meta if isinstance(meta, ModelMeta) else ModelMeta.from_dict(meta)
    m = replace(m, tflite_size=len(tflite))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MEMBER, json.dumps(m.to_dict(), indent=1, sort_keys=True))
    return tflite + buf.getvalue()


# -- reading ------------------------------------------------------------------------------------

_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"))


def read_model(path: PathLike) -> bytes:
    """The bytes of a model file: a regular file of at most :data:`MAX_MODEL_BYTES`.

    The file is opened non-blocking and checked with ``fstat`` before anything is read, so a
    FIFO without a writer, ``/dev/zero`` or a directory fail at once instead of hanging or
    filling the memory.

    Raises:
        ModelFormatError: missing, unreadable, not a regular file, or too large.
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise ModelFormatError(f"{name}: cannot read model ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _NOT_REGULAR if test(st.st_mode)), "not a file")
            raise ModelFormatError(f"{name}: is {kind}, not a model file; give the path of a "
                                   ".tflite exported by captcha-export")
        if st.st_size > MAX_MODEL_BYTES:
            raise ModelFormatError(f"{name}: {st.st_size} bytes is larger than a captcha model "
                                   f"can be ({MAX_MODEL_BYTES} bytes at most)")
        with os.fdopen(os.dup(fd), "rb") as fh:
            # read(n) allocates n bytes up front: ask for the size fstat gave, not the cap.
            data = fh.read(st.st_size)
            grew = fh.read(1)
    except OSError as exc:
        raise ModelFormatError(f"{name}: cannot read model ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if grew or len(data) != st.st_size:
        raise ModelFormatError(f"{name}: the file changed while it was read; try again")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _member_bytes(data: bytes, name: str) -> bytes:
    """The raw ``captcha_edge.json`` member, read within the size limits."""
    tail = data[max(0, len(data) - MAX_ARCHIVE_BYTES):]
    try:
        zf = zipfile.ZipFile(io.BytesIO(tail))
        info = zf.getinfo(MEMBER)
    except (zipfile.BadZipFile, KeyError, EOFError, OSError, ValueError, struct.error,
            UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{name}: has no captcha_edge metadata ({type(exc).__name__}); "
                               "re-export it with `captcha-export`") from None
    with zf:
        if info.flag_bits & 0x1:
            raise ModelFormatError(f"{name}: the captcha_edge metadata member is encrypted; "
                                   "re-export the model with `captcha-export`")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFormatError(f"{name}: the captcha_edge metadata uses compression method "
                                   f"{info.compress_type} (only stored or deflated is read); "
                                   "re-export it with `captcha-export`")
        if info.file_size > MAX_METADATA_BYTES or info.compress_size > MAX_ARCHIVE_BYTES:
            raise ModelFormatError(f"{name}: the captcha_edge metadata declares "
                                   f"{info.file_size} bytes; at most {MAX_METADATA_BYTES} are "
                                   "read")
        try:
            # zipfile inflates at most the declared size (checked above) and then verifies the
            # CRC, so a member that inflates to more fails here with bounded memory.
            with zf.open(info) as fh:
                raw = fh.read(MAX_METADATA_BYTES + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
                RuntimeError, NotImplementedError, OverflowError) as exc:
            raise ModelFormatError(f"{name}: the captcha_edge metadata cannot be read "
                                   f"({_first_line(exc)}); re-export it") from None
    if len(raw) > MAX_METADATA_BYTES:  # belt and braces: zipfile stops at the declared size
        raise ModelFormatError(f"{name}: the captcha_edge metadata inflates past "
                               f"{MAX_METADATA_BYTES} bytes")
    return raw


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not a JSON number")


def _unpack(data: bytes, name: str) -> Any:
    """The decoded JSON value of a captcha_edge model's metadata; nothing validated yet."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError(f"{name}: not a TFLite model (no 'TFL3' identifier)")
    raw = _member_bytes(data, name)
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ModelFormatError(f"{name}: the captcha_edge metadata is not UTF-8 text; "
                               "re-export it") from None
    except RecursionError:
        raise ModelFormatError(f"{name}: the captcha_edge metadata JSON is nested too deeply; "
                               "re-export it") from None
    except ValueError as exc:
        raise ModelFormatError(f"{name}: the captcha_edge metadata is not valid JSON "
                               f"({_first_line(exc)}); re-export it") from None
    return value


def load(data: bytes, name: str = "model") -> tuple[bytes, ModelMeta]:
    """Split a captcha_edge ``.tflite`` into (flatbuffer bytes, validated :class:`ModelMeta`).

    Raises:
        ModelFormatError: not a TFLite file, no or unreadable captcha_edge metadata, or metadata
            that breaks the contract (one line naming ``name`` and the problem).
    """
    value = _unpack(data, name)
    try:
        meta = ModelMeta.from_dict(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ModelFormatError(f"{name}: invalid captcha_edge metadata ({exc}); re-export it "
                               "with `captcha-export`") from None
    size = meta.tflite_size
    if size is None or size > len(data) - 22:  # 22: the smallest zip archive behind it
        raise ModelFormatError(f"{name}: metadata has no valid 'tflite_size'; re-export it")
    return data[:size], meta


def split(data: bytes, name: str = "model") -> tuple[bytes, dict[str, Any]]:
    """Like :func:`load`, with the metadata as a plain dict (``ModelMeta.to_dict()``)."""
    flat, meta = load(data, name)
    return flat, meta.to_dict()


def load_file(path: PathLike) -> tuple[bytes, ModelMeta]:
    """:func:`read_model` then :func:`load`: (flatbuffer bytes, metadata) of a model file."""
    return load(read_model(path), os.fspath(path))


def read(path: PathLike) -> dict[str, Any]:
    """Read only the metadata of a captcha_edge ``.tflite`` file, as a plain dict."""
    return load_file(path)[1].to_dict()


def read_meta(path: PathLike) -> ModelMeta:
    """Read only the metadata of a captcha_edge ``.tflite`` file."""
    return load_file(path)[1]


__all__ = ["MAX_ARCHIVE_BYTES", "MAX_METADATA_BYTES", "MAX_MODEL_BYTES", "MEMBER",
           "METADATA_VERSION", "MODEL_FORMATS", "TENSOR_DTYPES", "ModelMeta", "check_recipe", "embed", "load",
           "load_file", "read", "read_meta", "read_model", "split"]
