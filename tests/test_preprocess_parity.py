"""Runtime preprocessing equals the training pipeline's on the shared images (<= 1 grey level).

Training loads images with ``captcha_edge.train.data.load_samples`` (numpy + Pillow, no
TensorFlow); the runtime with ``Recognizer.preprocess``. Both should reach the same function;
this test proves it on real files, read the ways a runtime user would hand them in.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from captcha_edge import Recognizer, metadata
from captcha_edge.preprocess import make_recipe
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data" / "captcha_images_v2"
INT8 = ROOT / "tests" / "data" / "tiny_int8.tflite"

data = pytest.importorskip("captcha_edge.train.data", reason="training data module not present")


@pytest.fixture(scope="module")
def samples() -> list:
    if not SHARED.is_dir():
        pytest.skip(f"shared captcha images not found at {SHARED}")
    return data.find_samples(SHARED)[::7]  # 120 of the 840, spread over the set


@pytest.mark.parametrize("recipe", [
    metadata.read(INT8)["preprocess"],
    make_recipe(),
    make_recipe(height=64, width=256, resize="pad", resample="bicubic"),
], ids=["fixture-32x96", "default-50x200", "pad-64x256-bicubic"])
def test_runtime_matches_training_pipeline(samples: list, recipe: dict) -> None:
    loaded = data.load_samples(samples, recipe)
    assert not loaded.unreadable and len(loaded.samples) == len(samples)
    rec = Recognizer(INT8)
    rec.recipe = recipe  # only preprocess() is used here; the model's own recipe is 32x96
    worst = 0
    for s, trained in zip(loaded.samples, loaded.images):
        raw = s.path.read_bytes()
        pil = Image.open(io.BytesIO(raw))
        for src in (s.path, raw, io.BytesIO(raw), pil, np.asarray(pil)):
            got = rec.preprocess(src)
            assert got.shape == trained.shape == (recipe["height"], recipe["width"])
            assert got.dtype == trained.dtype == np.uint8
            worst = max(worst, int(np.abs(got.astype(np.int16) - trained).max()))
    assert worst <= 1, f"runtime and training differ by {worst} grey levels"
