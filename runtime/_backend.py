"""Pick a TFLite interpreter without importing TensorFlow unless nothing else is installed.

Order: ``ai-edge-litert`` (maintained, numpy 2, aarch64 wheels), then ``tflite-runtime`` (older
Raspberry Pi images; numpy < 2), then ``tensorflow.lite`` as a last resort. The environment
variable ``CAPTCHA_EDGE_BACKEND`` (or ``backend=``) forces one of them.
"""
from __future__ import annotations

import os
from typing import Any

#: backend name -> (module to import, distribution whose version is reported)
BACKENDS: dict[str, tuple[str, str]] = {
    "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow.lite.python.interpreter", "tensorflow"),
}

_cache: dict[str, Any] = {}


def _import(name: str) -> Any:
    """Import one backend's module and return its ``Interpreter`` class (cached)."""
    if name not in _cache:
        import importlib

        module = importlib.import_module(BACKENDS[name][0])
        _cache[name] = module.Interpreter
    return _cache[name]


def get_interpreter_class(backend: str | None = None) -> tuple[str, Any]:
    """Return ``(backend name, Interpreter class)``.

    Args:
        backend: one of :data:`BACKENDS`, or None for ``$CAPTCHA_EDGE_BACKEND`` or the first
            one that imports.

    Raises:
        ValueError: unknown backend name.
        ImportError: the requested backend (or every backend) is not installed, with the pip
            command that fixes it.
    """
    wanted = backend or os.environ.get("CAPTCHA_EDGE_BACKEND") or None
    if wanted is not None:
        if wanted not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {wanted!r}")
        try:
            return wanted, _import(wanted)
        except ImportError as exc:
            raise ImportError(f"TFLite backend {wanted!r} is not installed ({exc}); "
                              f"pip install {BACKENDS[wanted][1]}") from None
    errors = []
    for name in BACKENDS:
        try:
            return name, _import(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("no TFLite interpreter found; pip install ai-edge-litert "
                      "(or captcha-edge[tflite] on old Raspberry Pi images). Tried: "
                      + "; ".join(errors))


def backend_version(name: str) -> str:
    """Installed version of a backend's distribution, or ``"unknown"``."""
    from importlib import metadata

    try:
        return metadata.version(BACKENDS[name][1])
    except metadata.PackageNotFoundError:
        return "unknown"
