"""Importing and using captcha_edge needs no TensorFlow, prints nothing, and reports its backend."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import captcha_edge
import pytest
from captcha_edge import _backend

ROOT = Path(__file__).resolve().parents[1]
INT8 = ROOT / "tests" / "data" / "tiny_int8.tflite"
IMG = ROOT / "tests" / "data" / "images" / "good" / "2b4cd.png"


def run_py(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True,
                          env={**os.environ, **env}, timeout=120)


def test_import_is_silent_and_tensorflow_free() -> None:
    res = run_py("import sys, captcha_edge, captcha_edge.cli, captcha_edge.decoder\n"
                 "import captcha_edge.inputs, captcha_edge.metrics, captcha_edge.timing\n"
                 "import captcha_edge.synthetic\n"
                 "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
                 "('tensorflow', 'keras', 'tf_keras', 'ai_edge_litert', 'tflite_runtime'))\n"
                 "assert not bad, bad")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""


def test_predicting_never_imports_tensorflow() -> None:
    res = run_py(f"import sys\nfrom captcha_edge import Recognizer\n"
                 f"r = Recognizer({str(INT8)!r})\nprint(r.backend, r.predict({str(IMG)!r}))\n"
                 "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
                 "('tensorflow', 'keras', 'tf_keras'))\nassert not bad, bad")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ai-edge-litert ")


def test_public_names() -> None:
    assert set(captcha_edge.__all__) == {
        "DEFAULT_MODEL", "CaptchaEdgeError", "ImageError", "ModelFormatError", "Prediction",
        "Recognizer", "__version__"}
    for name in captcha_edge.__all__:
        assert getattr(captcha_edge, name) is not None
    assert (Path(captcha_edge.__file__).parent / "py.typed").is_file()


def test_backend_order_and_forcing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert list(_backend.BACKENDS) == ["ai-edge-litert", "tflite-runtime", "tensorflow"]
    name, cls = _backend.get_interpreter_class()
    assert name == "ai-edge-litert" and cls.__module__.startswith("ai_edge_litert")
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.get_interpreter_class("onnx")
    monkeypatch.setenv("CAPTCHA_EDGE_BACKEND", "nope")
    with pytest.raises(ValueError, match="'nope'"):
        _backend.get_interpreter_class()


def test_missing_backend_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every backend unimportable, the error names the pip package to install."""
    def fail(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(_backend, "_import", fail)
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        _backend.get_interpreter_class()
    with pytest.raises(ImportError, match="pip install tflite-runtime"):
        _backend.get_interpreter_class("tflite-runtime")


@pytest.mark.skipif(not os.environ.get("CAPTCHA_EDGE_TEST_TF_BACKEND"),
                    reason="set CAPTCHA_EDGE_TEST_TF_BACKEND=1 to load TensorFlow (slow)")
def test_tensorflow_backend_gives_the_same_answer() -> None:
    from captcha_edge import Recognizer

    tf_rec = Recognizer(INT8, backend="tensorflow")
    assert tf_rec.backend == "tensorflow"
    assert (tf_rec.infer(tf_rec.preprocess(IMG)) == Recognizer(INT8).infer(
        Recognizer(INT8).preprocess(IMG))).all()
