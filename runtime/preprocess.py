"""Image loading and preprocessing shared bit for bit by training, export and the runtime.

Only numpy and Pillow: the runtime (and a Raspberry Pi) uses this very module, and training calls
it too, so the two cannot drift. The recipe is a small dict stored in ``model.json`` and in the
exported model's metadata; :func:`to_array` is the single function that applies it.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image

from .errors import ImageError

#: Images with more pixels than this are refused before decoding (decompression-bomb guard).
MAX_PIXELS = 40_000_000

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, BinaryIO, Image.Image, np.ndarray]

DEFAULT_RECIPE: dict[str, Any] = {
    "height": 50,
    "width": 200,
    "color": "L",  # "L": 8-bit grayscale, (H, W) arrays; "RGB": (H, W, 3) arrays
    "resize": "stretch",  # or "pad": keep aspect ratio, pad right/bottom with background
    "resample": "bilinear",
    "background": 255,  # transparent pixels are composited on white, padding is white
}

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def make_recipe(**overrides: Any) -> dict[str, Any]:
    """Return a checked preprocessing recipe: :data:`DEFAULT_RECIPE` updated with ``overrides``."""
    recipe = dict(DEFAULT_RECIPE)
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; valid: {sorted(recipe)}")
    recipe.update(overrides)
    if recipe["resize"] not in ("stretch", "pad"):
        raise ValueError(f"resize must be 'stretch' or 'pad'; got {recipe['resize']!r}")
    if recipe["resample"] not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}; got {recipe['resample']!r}")
    if recipe["color"] not in ("L", "RGB"):
        raise ValueError(f"color must be 'L' (grayscale) or 'RGB'; got {recipe['color']!r}")
    for key in ("height", "width"):
        if not isinstance(recipe[key], int) or recipe[key] < 8:
            raise ValueError(f"{key} must be an int >= 8; got {recipe[key]!r}")
    return recipe


def _name(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return getattr(src, "name", None) or f"<{type(src).__name__}>"


def load_image(src: ImageSource) -> Image.Image:
    """Open ``src`` (path, bytes, binary file, PIL image or uint8 array) as a decoded PIL image.

    Raises:
        ImageError: with the file name and the problem (missing, empty, not an image, truncated,
            too large, animated).
    """
    name = _name(src)
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, np.ndarray):
        if src.ndim not in (2, 3) or src.size == 0:
            raise ImageError(f"{name}: array must be (H, W) or (H, W, C); got shape {src.shape}")
        if src.dtype != np.uint8:
            raise ImageError(f"{name}: array must be uint8; got {src.dtype}")
        return Image.fromarray(src[..., 0] if src.ndim == 3 and src.shape[2] == 1 else src)
    if isinstance(src, (bytes, bytearray)):
        if not src:
            raise ImageError(f"{name}: empty input (0 bytes)")
        fp: Any = io.BytesIO(src)
    elif isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not p.exists():
            raise ImageError(f"{name}: no such file")
        if p.is_dir():
            raise ImageError(f"{name}: is a directory, not an image")
        if p.stat().st_size == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        fp = str(p)
    elif hasattr(src, "read"):
        fp = src
    else:
        raise TypeError(f"image must be a path, bytes, a binary file, a PIL image or a uint8 "
                        f"array; got {type(src).__name__}")
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large ({exc})") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({w}x{h} pixels; limit {MAX_PIXELS})")
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise ImageError(f"{name}: animated image with {frames} frames; give a single frame")
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: truncated or corrupt image ({exc})") from None
    return img


def to_gray(img: Image.Image, background: int = 255) -> Image.Image:
    """Convert any Pillow mode to 8-bit grayscale; transparency is composited on ``background``."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.rint(arr * (255.0 / hi)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info) \
        or (mode in ("L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (background, background, background, 255))
        return Image.alpha_composite(bg, rgba).convert("L")
    if mode == "L":
        return img
    if mode == "1":
        return img.convert("L")
    return img.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, HSV, P, RGB


def to_rgb(img: Image.Image, background: int = 255) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on ``background``.

    Grey-only modes (16-bit, float, 1-bit) go through :func:`to_gray` first, so an RGB model
    reads them as the grey picture with three equal channels.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F", "1", "L") \
            and "transparency" not in img.info:
        return to_gray(img, background).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (background, background, background, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def channels(recipe: Mapping[str, Any]) -> int:
    """Channels of the model input: 1 for ``color`` "L" (also when the key is absent), 3 for RGB."""
    return 3 if recipe.get("color", "L") == "RGB" else 1


def to_array(src: ImageSource, recipe: Mapping[str, Any] = DEFAULT_RECIPE) -> np.ndarray:
    """Load ``src`` and apply ``recipe``: uint8 raw pixels, shape (height, width) for ``color``
    "L" or (height, width, 3) for "RGB".

    This is the model input (before the batch and, for grey, the channel axis); models scale it
    themselves.
    """
    rgb = recipe.get("color", "L") == "RGB"
    bg = int(recipe["background"])
    img = (to_rgb if rgb else to_gray)(load_image(src), bg)
    h, w = int(recipe["height"]), int(recipe["width"])
    resample = _RESAMPLE[recipe["resample"]]
    if recipe["resize"] == "pad":
        scale = min(w / img.width, h / img.height)
        nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        canvas = Image.new(img.mode, (w, h), (bg,) * 3 if rgb else bg)
        canvas.paste(img.resize((nw, nh), resample), (0, 0))
        img = canvas
    elif img.size != (w, h):
        img = img.resize((w, h), resample)
    return np.asarray(img, dtype=np.uint8)
