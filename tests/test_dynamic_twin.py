"""scripts/make_dynamic_twin.py on the tiny float32 fixture: the Keras graph rebuilt from a
.tflite's own weights reproduces it, and the dynamic-range twin reads like it (needs TensorFlow)."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf_keras")

from captcha_edge import Recognizer, metadata
from captcha_edge.synthetic import synthetic_pngs
from conftest import load_file_module

pytestmark = [pytest.mark.tf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_dynamic_twin.py"
FLOAT32 = ROOT / "tests" / "data" / "tiny_float32.tflite"


@pytest.fixture(scope="module")
def twin_script() -> ModuleType:
    return load_file_module(SCRIPT)


def test_twin_of_the_fixture_has_int8_weights_and_reads_like_float32(twin_script, tmp_path):
    out = tmp_path / "tiny_dynamic.tflite"
    assert twin_script.main(["--float32", str(FLOAT32), "--out", str(out)]) == 0
    _, meta = metadata.load_file(out)
    _, src = metadata.load_file(FLOAT32)
    assert meta.format == "dynamic" and meta.input_dtype == "float32"
    assert (meta.charset, meta.preprocess, meta.label_lengths) == \
        (src.charset, src.preprocess, src.label_lengths)
    from captcha_edge.export import verify

    def int8_tensors(path: Path) -> int:
        it = verify.interpreter(metadata.split(path.read_bytes())[0], delegates=False)
        return sum(d["dtype"] == np.int8 for d in it.get_tensor_details())

    # Weights stored as int8 (the converter leaves tensors under 1024 values in float).
    assert int8_tensors(out) > 0 and int8_tensors(FLOAT32) == 0
    f32, dyn = Recognizer(FLOAT32, num_threads=1), Recognizer(out, num_threads=1)
    frames = [(f32.infer(f32.preprocess(p)).argmax(-1), dyn.infer(dyn.preprocess(p)).argmax(-1))
              for p in synthetic_pngs(16, (meta.preprocess["width"], meta.preprocess["height"]))]
    agreement = float(np.mean([a == b for pair in frames for a, b in zip(*pair)]))
    assert agreement >= 0.95, agreement


def test_a_model_the_rebuild_does_not_reproduce_writes_nothing(twin_script, tmp_path, capsys):
    other = ROOT / "tests" / "data" / "tiny_int8.tflite"  # the same graph, quantized weights
    out = tmp_path / "x.tflite"
    assert twin_script.main(["--float32", str(other), "--out", str(out)]) == 1
    assert "does not reproduce tiny_int8.tflite" in capsys.readouterr().err
    assert not out.exists()
