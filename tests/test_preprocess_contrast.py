"""``contrast: stretch`` in the preprocessing recipe: what it does to an image, and that old
recipes (no key) keep the pixels as they are."""
from __future__ import annotations

import numpy as np
import pytest
from captcha_edge import metadata
from captcha_edge.preprocess import CONTRAST_MIN_SPAN, make_recipe, stretch, to_array
from PIL import Image


def _faint(seed: int = 0) -> np.ndarray:
    """Light uneven paper (205-240) with faint ink 10-28 levels darker: the panel's faint-grey."""
    rng = np.random.default_rng(seed)
    a = np.full((40, 120), 225, np.int64) + rng.integers(-6, 7, (40, 120))
    a[10:30, 20:100:7] -= 20  # strokes
    return np.clip(a, 0, 255).astype(np.uint8)


def test_faint_ink_is_stretched_to_the_full_range_and_keeps_its_order() -> None:
    a = _faint()
    b = stretch(a)
    assert b.min() == 0 and b.max() == 255
    assert a.max() - a.min() < 50
    # monotonic: a darker pixel never comes out brighter
    order = np.argsort(a.reshape(-1), kind="stable")
    assert (np.diff(b.reshape(-1)[order].astype(int)) >= 0).all()


def test_a_full_range_image_stays_nearly_the_same() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (50, 200), dtype=np.uint8)
    assert np.abs(stretch(a).astype(int) - a).max() <= 3


def test_a_flat_image_is_left_as_it_is() -> None:
    a = np.full((30, 90), 200, np.uint8)
    a[0, :5] = 200 + CONTRAST_MIN_SPAN - 1  # a few outliers do not count (1 % cut)
    assert np.array_equal(stretch(a), a)


def test_rgb_takes_one_mapping_for_all_channels() -> None:
    g = _faint()
    rgb = np.stack([g, g // 2 + 100, g], axis=-1).astype(np.uint8)
    out = stretch(rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # the same input level maps to the same output level in every channel
    lut = {}
    for v, o in zip(rgb.reshape(-1), out.reshape(-1)):
        assert lut.setdefault(int(v), int(o)) == int(o)


def test_to_array_applies_it_only_when_the_recipe_asks(tmp_path) -> None:
    a = _faint()
    path = tmp_path / "faint.png"
    Image.fromarray(a).save(path)
    plain = to_array(path, make_recipe(height=40, width=120))
    assert np.array_equal(plain, a)  # the default and every old recipe: pixels as they are
    stretched = to_array(path, make_recipe(height=40, width=120, contrast="stretch"))
    assert np.array_equal(stretched, stretch(a))
    # through a resize (the Pillow path) as well
    small = to_array(path, make_recipe(height=20, width=60, contrast="stretch"))
    assert small.min() == 0 and small.max() == 255


def test_an_unknown_contrast_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match="contrast must be one of"):
        make_recipe(contrast="equalize")
    with pytest.raises(ValueError, match="preprocess.contrast"):
        metadata.check_recipe({**make_recipe(), "contrast": 3})
