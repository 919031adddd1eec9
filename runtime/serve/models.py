"""The served models: :class:`ModelSet` loads them (``--model`` files, or every ``*.tflite`` of
``--models DIR``, named by file stem) and re-reads them on a change or SIGHUP: new models are
built first, then swapped in by replacing one dict, so a request in flight keeps the Recognizer
it started with and nothing is dropped.
"""
from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CaptchaEdgeError
from ..recognizer import DEFAULT_MODEL, Recognizer
from .errors import HTTPError

log = logging.getLogger("captcha_edge.serve")


@dataclass
class LoadedModel:
    """One served model: its Recognizer and the file facts used to notice a change."""

    name: str
    path: Path
    recognizer: Recognizer
    stamp: tuple[int, int]  # (mtime_ns, size)
    loaded_at: float = field(default_factory=time.time)

    def describe(self, default: bool) -> dict[str, Any]:
        rec = self.recognizer
        return {"name": self.name, "path": self.path.name, "default": default,
                "format": rec.metadata.get("format"), "charset": rec.charset,
                "input_size": list(rec.input_size), "time_steps": rec.time_steps,
                "size": rec.model_size, "backend": rec.backend,
                "accuracy": rec.metadata.get("accuracy"),
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def bundled_models() -> tuple[list[Path], str]:
    """The bundled models to serve when none is named, and which one requests get by default.

    All that ship are served (a request picks one with ``model=``). On x86-64 the default is the
    fastest twin there: ``default_dynamic`` (int8 weights, float activations; XNNPACK runs it in
    0.38 ms per invoke against float32's 0.58 and int8's 2.5, one thread, docs/serve.md), else
    ``default_float32``. Elsewhere (ARM: a Pi) it is the int8 model, ~4x faster than float32 there.
    """
    twins = [DEFAULT_MODEL.with_name(f"default_{f}.tflite") for f in ("dynamic", "float32")]
    twins = [t for t in twins if t.is_file()]
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    default = twins[0] if x86 and twins else DEFAULT_MODEL
    return [DEFAULT_MODEL, *twins], default.stem


class ModelSet:
    """The served models, re-read on demand without ever leaving the set empty mid-swap.

    Args:
        files: ``--model`` paths (served by file stem).
        folder: ``--models DIR``: every ``*.tflite`` in it, by file stem.
        default: name of the model for requests that name none (None: the first).
        backend: TFLite interpreter to use.

    Raises:
        ValueError: two models with the same stem, ``default`` not among them, no model at all.
        ModelFormatError: a model given at start-up cannot be loaded.
    """

    def __init__(self, files: Sequence[str] = (), folder: str | None = None,
                 default: str | None = None, backend: str | None = None) -> None:
        self.files = [Path(f) for f in files]
        self.folder = Path(folder) if folder else None
        if self.folder is not None and not self.folder.is_dir():
            raise ValueError(f"--models {self.folder}: not a directory")
        if not self.files and self.folder is None:
            self.files, bundled_default = bundled_models()
            default = default or bundled_default
        self.backend = backend
        self.default_name = default
        self.models: dict[str, LoadedModel] = {}
        self.reloads = 0
        self.last_errors: list[str] = []
        errors = self.reload(strict=True)
        if errors:  # pragma: no cover - strict raises instead
            raise ValueError(errors[0])
        if not self.models:
            raise ValueError(f"--models {self.folder}: no .tflite files to serve")
        if default is not None and default not in self.models:
            raise ValueError(f"--default-model {default!r} is not served; served: "
                             f"{', '.join(self.models)}")

    def _candidates(self) -> dict[str, Path]:
        """name -> path of every model that should be served now."""
        found: dict[str, Path] = {}
        paths = list(self.files)
        if self.folder is not None:
            paths += sorted(p for p in self.folder.glob("*.tflite") if p.is_file())
        for p in paths:
            if p.stem in found and found[p.stem] != p:
                raise ValueError(f"two models are named {p.stem!r}: {found[p.stem]} and {p}; "
                                 "rename one (models are served by file stem)")
            found[p.stem] = p
        return found

    def changed(self) -> bool:
        """Whether the files on disk differ from what is served (cheap: stat only)."""
        try:
            want = self._candidates()
        except ValueError:
            return True
        if set(want) != set(self.models):
            return True
        for name, path in want.items():
            try:
                if _stamp(path) != self.models[name].stamp:
                    return True
            except OSError:
                return True
        return False

    def reload(self, strict: bool = False) -> list[str]:
        """Load new and changed models, drop removed ones, then swap the set in one step.

        A model that fails to load keeps its previous version (if any) and is reported; with
        ``strict`` (start-up) the failure is raised instead.
        """
        want = self._candidates()
        current = self.models
        new: dict[str, LoadedModel] = {}
        errors: list[str] = []
        for name, path in want.items():
            try:
                stamp = _stamp(path)
            except OSError as exc:
                if strict:
                    raise CaptchaEdgeError(f"{path}: cannot read model ({exc.strerror})") \
                        from None
                errors.append(f"{path}: cannot read model ({exc.strerror})")
                if name in current:
                    new[name] = current[name]
                continue
            old = current.get(name)
            if old is not None and old.stamp == stamp and old.path == path:
                new[name] = old
                continue
            try:
                rec = Recognizer(path, num_threads=1, backend=self.backend)
            except (CaptchaEdgeError, ValueError, ImportError) as exc:
                if strict:
                    raise
                errors.append(str(exc))
                if old is not None:
                    new[name] = old
                continue
            new[name] = LoadedModel(name, path, rec, stamp)
        self.models = new  # one reference swap: requests in flight keep their Recognizer
        self.reloads += 1
        self.last_errors = errors
        for msg in errors:
            log.error("model reload: %s", msg)
        return errors

    @property
    def default(self) -> str | None:
        if self.default_name in self.models:
            return self.default_name
        return next(iter(self.models), None)

    def get(self, name: str | None) -> LoadedModel:
        models = self.models
        key = name if name is not None else self.default
        if key is None or key not in models:
            served = ", ".join(models) or "none"
            if name is None:
                raise HTTPError(503, "no model is loaded")
            raise HTTPError(404, f"unknown model {name!r}; served: {served}")
        return models[key]
