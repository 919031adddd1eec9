"""The captcha_edge metadata embedded in a ``.tflite`` file, readable without TensorFlow.

Layout: the TFLite flatbuffer, then a zip archive appended to it (as the Ultralytics exporter
does) holding one member, ``captcha_edge.json``. Zip readers find the archive from the end of the
file, so the flatbuffer in front is untouched; ``tflite_size`` in the JSON says where it ends,
so the interpreter is given exactly the flatbuffer bytes.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Union

from .errors import ModelFormatError

MEMBER = "captcha_edge.json"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


def embed(tflite: bytes, meta: dict[str, Any]) -> bytes:
    """Return ``tflite`` with ``meta`` appended as a zip member (``tflite_size`` is added)."""
    if tflite[4:8] != b"TFL3":
        raise ModelFormatError("embed() needs a TFLite flatbuffer (no 'TFL3' identifier found)")
    payload = dict(meta)
    payload["tflite_size"] = len(tflite)
    payload.setdefault("metadata_version", FORMAT_VERSION)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MEMBER, json.dumps(payload, indent=1, sort_keys=True))
    return tflite + buf.getvalue()


def split(data: bytes, name: str = "model") -> tuple[bytes, dict[str, Any]]:
    """Split a captcha_edge ``.tflite`` into (flatbuffer bytes, metadata dict).

    Raises:
        ModelFormatError: not a TFLite file, or no captcha_edge metadata in it.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError(f"{name}: not a TFLite model (no 'TFL3' identifier)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            meta = json.loads(zf.read(MEMBER).decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(
            f"{name}: has no captcha_edge metadata ({exc.__class__.__name__}); "
            "re-export it with `captcha-export`"
        ) from None
    size = meta.get("tflite_size")
    if not isinstance(size, int) or not 8 <= size <= len(data):
        raise ModelFormatError(f"{name}: metadata has no valid 'tflite_size'; re-export it")
    return data[:size], meta


def read(path: PathLike) -> dict[str, Any]:
    """Read only the metadata dict of a captcha_edge ``.tflite`` file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"{p}: cannot read model ({exc.strerror or exc})") from None
    return split(data, str(p))[1]
