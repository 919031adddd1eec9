"""Image loading and preprocessing shared bit for bit by training, export and the runtime.

Only numpy and Pillow: the runtime (and a Raspberry Pi) uses this very module, and training calls
it too, so the two cannot drift. The recipe is a small dict stored in ``model.json`` and in the
exported model's metadata; :func:`to_array` is the single function that applies it.
"""
from __future__ import annotations

import functools
import importlib
import io
import os
import stat
import struct
import zlib
from collections.abc import Mapping
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

#: Images with more pixels than this are refused before decoding (decompression-bomb guard);
#: arrays and PIL images get the same limit.
MAX_PIXELS = 40_000_000
#: Bytes read at most from a path that is not a regular file (a FIFO, ``<(cat img.png)``).
MAX_STREAM_BYTES = 64 * 2**20

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, BinaryIO, Image.Image, np.ndarray]

DEFAULT_RECIPE: dict[str, Any] = {
    "height": 50,
    "width": 200,
    "color": "L",  # "L": 8-bit grayscale, (H, W) arrays; "RGB": (H, W, 3) arrays
    "resize": "stretch",  # or "pad": keep aspect ratio, pad right/bottom with background
    "resample": "bilinear",
    "background": 255,  # transparent pixels are composited on white, padding is white
}

#: Keys a recipe may have, with the value that means "absent". A recipe keeps such a key only
#: when it differs from that value, so recipes that do not use it stay readable by runtimes
#: older than the key. ``contrast``: "none" (the pixels as they are) or "stretch" (each image's
#: own levels stretched so that its CONTRAST_CUT darkest and brightest pixels reach 0 and 255,
#: see :func:`stretch`).
OPTIONAL_RECIPE: dict[str, Any] = {"contrast": "none"}

#: ``contrast`` values of a recipe.
CONTRASTS = ("none", "stretch")
#: ``contrast: stretch`` maps the level below which this share of an image's values lie to 0,
#: and the level above which this share lie to 255.
CONTRAST_CUT = 0.01
#: ... unless those two levels are closer than this (a blank or flat image is left as it is).
CONTRAST_MIN_SPAN = 8

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
    unknown = set(overrides) - set(recipe) - set(OPTIONAL_RECIPE)
    if unknown:
        raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; valid: "
                         f"{sorted([*recipe, *OPTIONAL_RECIPE])}")
    recipe.update(overrides)
    if recipe["resize"] not in ("stretch", "pad"):
        raise ValueError(f"resize must be 'stretch' or 'pad'; got {recipe['resize']!r}")
    if recipe["resample"] not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}; got {recipe['resample']!r}")
    if recipe["color"] not in ("L", "RGB"):
        raise ValueError(f"color must be 'L' (grayscale) or 'RGB'; got {recipe['color']!r}")
    if recipe.get("contrast", "none") not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}; got {recipe['contrast']!r}")
    for key, absent in OPTIONAL_RECIPE.items():
        if recipe.get(key, absent) == absent:
            recipe.pop(key, None)
    for key in ("height", "width"):
        if not isinstance(recipe[key], int) or recipe[key] < 8:
            raise ValueError(f"{key} must be an int >= 8; got {recipe[key]!r}")
    return recipe


def _name(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src) if os.fspath(src) != "" else "''"
    name = getattr(src, "name", None)
    return str(name) if isinstance(name, (str, bytes)) and name else f"<{type(src).__name__}>"


def _fail(name: str, problem: str, exc: BaseException) -> ImageError:
    """An ImageError naming the file, the problem and (one line of) what the decoder said."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, UnidentifiedImageError):
        detail = "cannot identify image file"  # PIL's text repeats the name or a BytesIO repr
    elif not isinstance(exc, (OSError, ValueError, SyntaxError)):
        detail = f"{type(exc).__name__}: {detail}"
    return ImageError(f"{name}: {problem} ({detail})")


def _checked_size(img: Image.Image, name: str) -> Image.Image:
    """Refuse images with no pixels or more than :data:`MAX_PIXELS`."""
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: empty image ({w}x{h} pixels)")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({w}x{h} pixels; limit {MAX_PIXELS})")
    return img


def _from_array(src: np.ndarray, name: str) -> Image.Image:
    if src.ndim not in (2, 3) or src.size == 0 or (src.ndim == 3 and src.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{name}: array must be (H, W) or (H, W, 1|3|4) and not empty; "
                         f"got shape {src.shape}")
    if src.dtype != np.uint8:
        raise ImageError(f"{name}: array must be uint8; got {src.dtype}")
    h, w = src.shape[:2]
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({w}x{h} pixels; limit {MAX_PIXELS})")
    return Image.fromarray(np.ascontiguousarray(src[..., 0] if src.ndim == 3 and src.shape[2] == 1
                                                else src))


def _open_path(path: str, name: str) -> Any:
    """What PIL opens for a path: the path of a regular file, else the bytes read from it.

    A FIFO, ``/dev/stdin`` or a shell's ``<(cat img.png)`` is read (up to
    :data:`MAX_STREAM_BYTES`) instead of being judged by its size, which is always 0.
    """
    if path == "":
        raise ImageError("'': empty path; expected an image file name")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        why = " (dangling symbolic link)" if os.path.islink(path) else ""
        raise ImageError(f"{name}: no such file{why}") from None
    except OSError as exc:  # name too long, symlink loop, permission denied, ...
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:  # an embedded NUL, a surrogate the file system cannot encode
        raise ImageError(f"{name}: not a usable path ({exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{name}: is a directory, not an image")
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        return path
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STREAM_BYTES + 1)
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_STREAM_BYTES:
        raise ImageError(f"{name}: more than {MAX_STREAM_BYTES} bytes; not a captcha image")
    if not data:
        raise ImageError(f"{name}: empty input (0 bytes)")
    return io.BytesIO(data)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types that Pillow opens as these modes at bit depth 8 (grey, RGB).
_SPNG_MODES = {0: "L", 2: "RGB"}


@functools.lru_cache(maxsize=None)
def _pyspng() -> Any:
    """pyspng, imported on first use (so ``import captcha_edge`` stays numpy and Pillow), or
    None when it is not installed: it is optional (the ``[fast-png]`` extra, in ``[serve-fast]``)."""
    try:
        return importlib.import_module("pyspng")
    except ImportError:
        return None


def spng_enabled() -> bool:
    """Whether plain PNGs are decoded by libspng, in ~60 % of Pillow's time: pyspng is installed
    and ``$CAPTCHA_EDGE_PNG`` is not ``pillow``."""
    return os.environ.get("CAPTCHA_EDGE_PNG", "").lower() != "pillow" and _pyspng() is not None


def _read_png_file(path: Any) -> bytes:
    """The bytes of a regular file that starts like a PNG, else b"" (and Pillow opens it, with
    its own checks and errors; a FIFO is never read here, so it is never consumed twice)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_STREAM_BYTES:
            return b""
        with open(path, "rb") as f:
            head = f.read(8)
            return head + f.read() if head == _PNG_SIGNATURE else b""
    except (OSError, ValueError, TypeError):  # Pillow's path reports these
        return b""


def _spng_array(src: Any) -> np.ndarray | None:
    """The pixels of a PNG (``bytes``, ``bytearray``, ``io.BytesIO`` or the path of a regular
    file) decoded by libspng (pyspng): (H, W) grey or (H, W, 3) RGB uint8; None for anything
    else, and then Pillow reads the image as before.

    Only a file that Pillow opens as mode L or RGB is taken: bit depth 8, colour type grey or RGB,
    no ``tRNS`` (Pillow composites transparency) and no ``acTL`` (Pillow counts the frames of an
    animated PNG), within :data:`MAX_PIXELS`, and every chunk before the image data with a good
    CRC (Pillow checks those). PNG is lossless, so both decoders give the same pixels. Whatever
    libspng refuses goes to Pillow too, so a bad file gets Pillow's error, as without pyspng.
    """
    if not spng_enabled():
        return None
    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    elif isinstance(src, io.BytesIO):
        data = src.getvalue()[src.tell():]
    elif isinstance(src, (str, os.PathLike)):
        data = _read_png_file(src)
    else:
        return None
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, mode, shape = 8, None, None
    try:
        while True:
            length, cid = struct.unpack_from(">I4s", data, pos)
            if cid == b"IDAT":
                break
            end = pos + 8 + length
            if len(data) < end + 4 or zlib.crc32(data[pos + 4:end]) != \
                    struct.unpack_from(">I", data, end)[0]:
                return None
            if cid == b"IHDR":
                if pos != 8 or length != 13:
                    return None
                w, h, depth, ctype = struct.unpack_from(">IIBB", data, 16)
                mode = _SPNG_MODES.get(ctype) if depth == 8 else None
                if mode is None or not 0 < w * h <= MAX_PIXELS:
                    return None
                shape = (h, w) if mode == "L" else (h, w, 3)
            elif cid in (b"tRNS", b"acTL", b"IEND") or mode is None:
                return None
            pos = end + 4
    except struct.error:  # cut short before the image data
        return None
    try:
        arr = _pyspng().load(data)
    except Exception:  # noqa: BLE001 -- anything libspng refuses, Pillow judges
        return None
    return arr if arr.shape == shape and arr.dtype == np.uint8 else None


def load_image(src: ImageSource) -> Image.Image:
    """Open ``src`` (path, bytes, binary file, PIL image or uint8 array) as a decoded PIL image.

    Every problem with the image itself is an :class:`ImageError`, whatever the decoder raised.

    Raises:
        ImageError: with the file name and the problem (missing, empty, not an image, truncated,
            too large, animated, unreadable).
        TypeError: ``src`` is none of the accepted types, or a file opened in text mode.
    """
    fast = _spng_array(src)
    return _decode(src) if fast is None else Image.fromarray(fast)


def _decode(src: ImageSource) -> Image.Image:
    """:func:`load_image` by Pillow (or for a PIL image or an array, without decoding)."""
    name = _name(src)
    if isinstance(src, Image.Image):
        return _checked_size(src, name)
    if isinstance(src, np.ndarray):
        return _from_array(src, name)
    if isinstance(src, (bytes, bytearray)):
        if not src:
            raise ImageError(f"{name}: empty input (0 bytes)")
        fp: Any = io.BytesIO(src)
    elif isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        fp = _open_path(path if isinstance(path, str) else os.fsdecode(path), name)
    elif isinstance(src, io.TextIOBase):
        raise TypeError(f"image file {name} is open in text mode; open it with 'rb'")
    elif hasattr(src, "read"):
        fp = src
    else:
        raise TypeError(f"image must be a path, bytes, a binary file, a PIL image or a uint8 "
                        f"array; got {type(src).__name__}")
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise _fail(name, "image too large", exc) from None
    except OSError as exc:
        if exc.errno is not None:  # the file itself, not its contents
            raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
        raise _fail(name, "not a readable image", exc) from None
    except Exception as exc:  # noqa: BLE001 -- a decoder's surprise is still a bad image
        raise _fail(name, "not a readable image", exc) from None
    _checked_size(img, name)
    try:
        frames = getattr(img, "n_frames", 1)
    except Exception as exc:  # noqa: BLE001 -- counting frames decodes a mutated file
        raise _fail(name, "truncated or corrupt image", exc) from None
    if frames > 1:
        raise ImageError(f"{name}: animated image with {frames} frames; give a single frame")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 -- OSError, SyntaxError, NotImplementedError, ...
        raise _fail(name, "truncated or corrupt image", exc) from None
    return img


def to_gray(img: Image.Image, background: int = 255, *, name: str = "image") -> Image.Image:
    """Convert any Pillow mode to 8-bit grayscale; transparency is composited on ``background``.

    Raises:
        ImageError: a float (mode ``F``) image holds NaN or infinite values.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.rint(arr * (255.0 / hi)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageError(f"{name}: float image with NaN or infinite pixel values")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")
    if mode == "La":  # premultiplied alpha: Pillow converts it only to LA
        img, mode = img.convert("LA"), "LA"
    if _has_alpha(img, mode):
        return _composite(img, background).convert("L")
    if mode == "L":
        return img
    if mode == "1":
        return img.convert("L")
    return img.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, HSV, P, RGB, RGBX


def _has_alpha(img: Image.Image, mode: str) -> bool:
    return mode in ("RGBA", "RGBa", "LA", "PA") \
        or (mode in ("P", "L", "RGB") and "transparency" in img.info)


def _composite(img: Image.Image, background: int) -> Image.Image:
    """RGBA over a grey ``background``: what a browser shows on a page of that colour."""
    rgba = img.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (background, background, background, 255))
    return Image.alpha_composite(bg, rgba)


def to_rgb(img: Image.Image, background: int = 255, *, name: str = "image") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on ``background``.

    Grey-only modes (16-bit, float, 1-bit, L, La) go through :func:`to_gray` first, so an RGB
    model reads them as the grey picture with three equal channels.

    Raises:
        ImageError: a float (mode ``F``) image holds NaN or infinite values.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F", "1", "L", "La") \
            and "transparency" not in img.info:
        return to_gray(img, background, name=name).convert("RGB")
    if _has_alpha(img, mode):
        return _composite(img, background).convert("RGB")
    return img.convert("RGB")


def channels(recipe: Mapping[str, Any]) -> int:
    """Channels of the model input: 1 for ``color`` "L" (also when the key is absent), 3 for RGB."""
    return 3 if recipe.get("color", "L") == "RGB" else 1


def to_array(src: ImageSource, recipe: Mapping[str, Any] = DEFAULT_RECIPE) -> np.ndarray:
    """Load ``src`` and apply ``recipe``: uint8 raw pixels, shape (height, width) for ``color``
    "L" or (height, width, 3) for "RGB".

    This is the model input (before the batch and, for grey, the channel axis); models scale it
    themselves.

    Raises:
        ImageError: the image cannot be read or converted (see :func:`load_image`).
        TypeError: ``src`` is not an accepted image type.
    """
    fast = _spng_array(src)
    if fast is not None and fast.shape == _shape(recipe):
        out = fast  # a grey (RGB) PNG of the model's size: the model input as it is
    else:
        img = _decode(src) if fast is None else Image.fromarray(fast)
        name = _name(src)
        try:
            out = _apply(img, recipe, name)
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 -- e.g. a lazily decoded PIL image, corrupt
            raise _fail(name, f"cannot convert this {img.mode} image", exc) from None
    return stretch(out) if recipe.get("contrast") == "stretch" else out


def cut_levels(arr: np.ndarray) -> tuple[int, int]:
    """The levels of a uint8 array below which, and above which, :data:`CONTRAST_CUT` of its
    values lie: the ends :func:`stretch` maps to 0 and 255 (and what ``--contrast auto``
    measures). Integer histogram: the same on every machine."""
    cdf = np.cumsum(np.bincount(arr.reshape(-1), minlength=256))
    n = int(cdf[-1])
    lo = int(np.searchsorted(cdf, CONTRAST_CUT * n, side="right"))
    hi = int(np.searchsorted(cdf, (1.0 - CONTRAST_CUT) * n, side="left"))
    return lo, hi


def stretch(arr: np.ndarray) -> np.ndarray:
    """The recipe's ``contrast: stretch``: a uint8 image's levels mapped linearly so that the
    :data:`CONTRAST_CUT` darkest of its values become 0 and the brightest 255 (clipped), one
    mapping for all channels of an RGB image (hues keep their order). An image whose span is
    under :data:`CONTRAST_MIN_SPAN` levels is returned as it is.

    Faint ink on a light, uneven paper (10-30 levels of contrast) then reaches the model, and its
    int8 first convolution, at the same scale as black on white; an image that already spans
    0..255 is left nearly unchanged. Integer histogram and a lookup table: the same bytes on
    every machine.
    """
    lo, hi = cut_levels(arr)
    if hi - lo < CONTRAST_MIN_SPAN:
        return arr
    # (v - lo) * 255 / (hi - lo), rounded half up, in integers
    lut = np.clip(((np.arange(256, dtype=np.int64) - lo) * 510 + (hi - lo)) // (2 * (hi - lo)),
                  0, 255).astype(np.uint8)
    out: np.ndarray = lut[arr]
    return out


def _shape(recipe: Mapping[str, Any]) -> tuple[int, ...]:
    """The shape of :func:`to_array`'s output for ``recipe``."""
    h, w = int(recipe["height"]), int(recipe["width"])
    return (h, w, 3) if channels(recipe) == 3 else (h, w)


def _apply(img: Image.Image, recipe: Mapping[str, Any], name: str) -> np.ndarray:
    """Grey or RGB, then stretch or pad to the recipe's size."""
    rgb = recipe.get("color", "L") == "RGB"
    bg = int(recipe["background"])
    img = (to_rgb if rgb else to_gray)(img, bg, name=name)
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
