"""Shared fixtures: every decoder test runs once per available engine (ids ``py`` / ``cy``)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from captcha_edge.decoder import ENGINES

_IDS = {"python": "py", "cython": "cy"}


@pytest.fixture(params=list(ENGINES), ids=[_IDS.get(name, name) for name in ENGINES])
def engine(request: pytest.FixtureRequest) -> str:
    """Name of a decoder engine: ``"python"``, plus ``"cython"`` when the extension is built."""
    return str(request.param)


def run_without_tensorflow(code: str) -> str:
    """Run ``code`` in a fresh interpreter, then assert it imported neither TensorFlow nor Keras;
    return its stdout (a test's assertion failure inside ``code`` fails the test here)."""
    check = ("\nimport sys as _s\n"
             "assert 'tensorflow' not in _s.modules, 'tensorflow was imported'\n"
             "assert 'keras' not in _s.modules, 'keras was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code + check], check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def load_file_module(path: Path) -> ModuleType:
    """Import a repo file that is not in the package (a script, an example) by its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    # Registered only while it runs (dataclasses look their module up there), then removed
    # again, so pickling (Ray) still ships its classes by value, not by a module name.
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod
