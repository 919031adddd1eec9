"""The runtime feeds the interpreter exactly what training fed the Keras model, on real files.

Training's side: ``captcha_edge.train.data.find_samples`` + ``load_samples`` (the arrays
``fit.py`` turns into float32 ``(N, H, W, 1)`` batches). The runtime's side: a Recognizer built
from a model whose embedded metadata carries the recipe (never patched afterwards), reading each
file the five ways a user hands it in, and the tensor it actually sets on its interpreter. Both
are also checked against a reference written here with plain Pillow calls, so a change to
``to_array`` that both sides share cannot pass unnoticed.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from captcha_edge import DEFAULT_MODEL, Recognizer, metadata
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
INT8 = ROOT / "tests" / "data" / "tiny_int8.tflite"
FLOAT32 = ROOT / "tests" / "data" / "tiny_float32.tflite"

data = pytest.importorskip("captcha_edge.train.data", reason="training data module not present")

_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX}


@pytest.fixture(scope="module")
def samples() -> list:
    """Grey PNGs of the default style plus colour JPEGs of two other sizes."""
    if not (SHARED / "captcha_images_v2").is_dir():
        pytest.skip(f"shared captchas not found at {SHARED / 'captcha_images_v2'}")
    picked = data.find_samples(SHARED / "captcha_images_v2")[::40]
    # The other styles when this checkout's ../shared has them (the emulated Pi mounts only v2).
    colour = SHARED / "styles" / "digits-color"
    if (colour / "labels.csv").is_file():
        picked += data.find_samples(colour, labels_file=colour / "labels.csv")[:12]
    if (SHARED / "styles" / "amazon").is_dir():
        picked += data.find_samples(SHARED / "styles" / "amazon")[:8]
    return picked


def reference(path: Path, recipe: dict) -> np.ndarray:
    """The recipe applied with plain Pillow calls (grey images of these sets have no alpha)."""
    img = Image.open(path)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        bg = Image.new("RGBA", img.size, (recipe["background"],) * 3 + (255,))
        img = Image.alpha_composite(bg, img.convert("RGBA"))
    grey = img.convert("L") if img.mode in ("L", "1") else img.convert("RGB").convert("L")
    w, h = recipe["width"], recipe["height"]
    f = _FILTERS[recipe["resample"]]
    if recipe["resize"] == "pad":
        s = min(w / grey.width, h / grey.height)
        canvas = Image.new("L", (w, h), recipe["background"])
        canvas.paste(grey.resize((max(1, round(grey.width * s)), max(1, round(grey.height * s))),
                                 f), (0, 0))
        grey = canvas
    elif grey.size != (w, h):
        grey = grey.resize((w, h), f)
    out = np.asarray(grey, dtype=np.uint8)
    return reference_stretch(out) if recipe.get("contrast") == "stretch" else out


def reference_stretch(a: np.ndarray, cut: float = 0.01, min_span: int = 8) -> np.ndarray:
    """``contrast: stretch`` from sorted values, written apart from the histogram version: the
    level at index floor(cut n) -> 0, the one at ceil((1 - cut) n) - 1 -> 255, rounded half up."""
    v = np.sort(a.reshape(-1)).astype(np.int64)
    n = len(v)
    lo, hi = int(v[int(np.floor(cut * n))]), int(v[int(np.ceil((1.0 - cut) * n)) - 1])
    if hi - lo < min_span:
        return a
    x = (a.astype(np.float64) - lo) * 255.0 / (hi - lo)
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _with_recipe(model: Path, **changes: object) -> tuple[Recognizer, dict]:
    """A Recognizer on ``model``'s graph whose metadata recipe has ``changes``, and that recipe."""
    flat, meta = metadata.split(model.read_bytes())
    recipe = {**meta["preprocess"], **changes}
    return Recognizer(metadata.embed(flat, {**meta, "preprocess": recipe})), recipe


def _fed_tensor(rec: Recognizer, src: object) -> np.ndarray:
    """What the runtime sets as the interpreter's input for ``src``."""
    rec.infer(rec.preprocess(src))
    interp = rec._interpreter()
    return np.array(interp.get_tensor(interp.get_input_details()[0]["index"]))


def _training_feed(images: np.ndarray, rec: Recognizer) -> np.ndarray:
    """Training's batch (float32 pixels, channel last) in the dtype the exported input takes."""
    x = images.astype(np.float32)[..., None]
    d = rec._interpreter().get_input_details()[0]
    if d["dtype"] == np.float32:
        return x
    scale, zero = d["quantization"]
    info = np.iinfo(d["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])


@pytest.mark.parametrize("model, changes", [
    (INT8, {}),
    (FLOAT32, {}),
    (INT8, {"resize": "pad", "resample": "bicubic"}),
    (FLOAT32, {"resize": "pad", "resample": "nearest", "background": 0}),
    (DEFAULT_MODEL, {}),
    (INT8, {"contrast": "stretch"}),
    (DEFAULT_MODEL, {"contrast": "stretch"}),
], ids=["int8", "float32", "int8-pad-bicubic", "float32-pad-nearest-black", "default-50x200",
        "int8-stretch", "default-50x200-stretch"])
def test_runtime_feeds_what_training_fed(samples: list, model: Path, changes: dict) -> None:
    if not model.is_file():
        pytest.skip(f"{model.name} not present")
    rec, recipe = _with_recipe(model, **changes)
    assert rec.recipe == recipe  # the recipe reached the runtime through the metadata only
    loaded = data.load_samples(samples, recipe)
    assert not loaded.unreadable and len(loaded.samples) == len(samples)
    feed = _training_feed(loaded.images, rec)
    for k, s in enumerate(loaded.samples):
        assert np.array_equal(loaded.images[k], reference(s.path, recipe)), s.name
        raw = s.path.read_bytes()
        pil = Image.open(io.BytesIO(raw))
        for src in (s.path, raw, io.BytesIO(raw), pil, np.asarray(pil)):
            got = _fed_tensor(rec, src)
            assert got.dtype == feed.dtype
            assert np.array_equal(got.reshape(feed[k].shape), feed[k]), (s.name, type(src))
