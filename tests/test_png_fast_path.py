"""PNG decoding by libspng (pyspng, in the [serve-fast] extra) gives what Pillow gives.

``preprocess`` reads a plain 8-bit grey or RGB PNG with libspng when pyspng is installed and
everything else with Pillow. Here every image is read both ways (``CAPTCHA_EDGE_PNG=pillow``
turns the fast path off) and the model inputs must be equal to the bit; the files the fast path
must leave to Pillow (palette, alpha, transparency, 16-bit, animated, broken headers, bombs)
must be left to it, so their results and their errors are Pillow's.
"""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from captcha_edge import ImageError
from captcha_edge import preprocess as pp
from PIL import Image

pytest.importorskip("pyspng", reason="pyspng (the [fast-png] extra) is not installed")

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "tests" / "data" / "images"
SHARED = ROOT / ".." / "shared" / "data"
GOOD = IMAGES / "good" / "2b4cd.png"
RECIPES = [pp.make_recipe(), pp.make_recipe(color="RGB"), pp.make_recipe(resize="pad"),
           pp.make_recipe(height=32, width=96, resample="bicubic")]


@pytest.fixture(autouse=True)
def fast_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPTCHA_EDGE_PNG", raising=False)


def with_pillow(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` with the fast path off: the result, or the ImageError it raised."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CAPTCHA_EDGE_PNG", "pillow")
    try:
        return fn(*args)
    except ImageError as exc:
        return exc
    finally:
        mp.undo()


def result(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ImageError as exc:
        return exc


def same(a: Any, b: Any) -> bool:
    if isinstance(a, ImageError) or isinstance(b, ImageError):
        return type(a) is type(b) and str(a) == str(b)
    return bool(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b))


def png(img: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def variants() -> dict[str, bytes]:
    """One picture saved the ways a PNG can be: what the fast path takes and what it leaves."""
    rgb = Image.open(GOOD).convert("RGB")
    grey = rgb.convert("L")
    apng = io.BytesIO()
    grey.save(apng, "PNG", save_all=True, append_images=[grey.rotate(10)])
    return {"L": png(grey), "RGB": png(rgb), "L-odd-size": png(grey.resize((123, 37))),
            "L-text": png(grey, pnginfo=_text_info()),
            "L-interlaced": _interlaced(grey), "RGBA": png(rgb.convert("RGBA")),
            "LA": png(grey.convert("LA")), "P": png(rgb.convert("P")),
            "1": png(grey.convert("1")), "I;16": png(grey.convert("I;16")),
            # transparent keys that the picture uses, so Pillow's compositing changes pixels
            "L-tRNS": png(grey, transparency=_darkest(grey)),
            "RGB-tRNS": png(rgb, transparency=tuple(_darkest(b) for b in rgb.split())),
            "APNG": apng.getvalue()}


def _darkest(band: Image.Image) -> int:
    return int(np.asarray(band).min())


def _text_info() -> Any:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by a test")
    return info


def _interlaced(img: Image.Image) -> bytes:
    """An Adam7-interlaced grey PNG (Pillow cannot write one): built from raw scanlines."""
    a = np.asarray(img, dtype=np.uint8)
    h, w = a.shape
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
              (1, 0, 2, 1)]  # (row0, col0, row step, col step)
    raw = b"".join(b"\x00" + a[r, c0::cs].tobytes() for r0, c0, rs, cs in passes
                   if c0 < w for r in range(r0, h, rs))

    def chunk(cid: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + cid + body + struct.pack(">I", zlib.crc32(cid + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


TAKEN = {"L", "RGB", "L-odd-size", "L-text", "L-interlaced"}


@pytest.mark.parametrize("kind", sorted(variants()))
def test_only_plain_8bit_grey_and_rgb_are_taken(kind: str) -> None:
    data = variants()[kind]
    arr = pp._spng_array(data)
    assert (arr is not None) == (kind in TAKEN)
    if arr is not None:
        want = np.asarray(Image.open(io.BytesIO(data)))
        assert arr.shape == want.shape and np.array_equal(arr, want)


@pytest.mark.parametrize("kind", sorted(variants()))
@pytest.mark.parametrize("recipe", RECIPES, ids=["grey", "rgb", "pad", "32x96-bicubic"])
def test_model_input_equals_pillows(kind: str, recipe: dict) -> None:
    data = variants()[kind]
    for src in (data, bytearray(data), io.BytesIO(data)):
        got = result(pp.to_array, src, recipe)
        if isinstance(src, io.BytesIO):
            src.seek(0)
        assert same(got, with_pillow(pp.to_array, src, recipe)), kind
    assert same(result(lambda: np.asarray(pp.load_image(data))),
                with_pillow(lambda: np.asarray(pp.load_image(data))))


def test_a_bytesio_is_read_from_its_position() -> None:
    data = variants()["L"]
    buf = io.BytesIO(b"junk" + data)
    buf.seek(4)
    assert np.array_equal(pp.to_array(buf), with_pillow(pp.to_array, io.BytesIO(data)))


def test_files_on_disk(tmp_path: Path) -> None:
    """Paths too: every test image, read both ways, including the bad ones' errors."""
    files = sorted(p for p in IMAGES.rglob("*") if p.is_file())
    assert len(files) >= 10
    for path in files:
        for recipe in RECIPES[:2]:
            assert same(result(pp.to_array, path, recipe),
                        with_pillow(pp.to_array, path, recipe)), path.name
    plain = tmp_path / "plain.png"
    plain.write_bytes(variants()["L"])
    assert pp._spng_array(str(plain)) is not None and pp._spng_array(plain) is not None
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    assert pp._spng_array(fifo) is None  # never opened here (that would block, or consume it)


def test_the_shared_captchas_are_taken_and_equal() -> None:
    folders = [SHARED / "captcha_images_v2", *sorted((SHARED / "styles").glob("*"))]
    files = [p for d in folders if d.is_dir() for p in sorted(d.rglob("*.png"))[:60]]
    if not files:
        pytest.skip(f"no shared PNG captchas at {SHARED}")
    taken = 0
    for path in files:
        data = path.read_bytes()
        taken += pp._spng_array(data) is not None
        assert same(pp.to_array(data), with_pillow(pp.to_array, data)), path.name
    assert taken >= len(files) // 2


def _with_chunk_byte(data: bytes, cid: bytes, offset: int, value: int) -> bytes:
    pos = data.index(cid) + 4 + offset
    return data[:pos] + bytes([value]) + data[pos + 1:]


def test_bad_headers_are_left_to_pillow() -> None:
    data = variants()["L-text"]
    bad_crc = _with_chunk_byte(data, b"tEXt", 2, ord("X"))  # text changed, CRC not
    bomb = data[:16] + struct.pack(">II", 20_000, 20_000) + data[24:]  # IHDR CRC now wrong too
    ihdr = data[12:29]
    body = ihdr[4:]
    big = struct.pack(">II", 20_000, 20_000) + body[8:]
    bomb_ok_crc = data[:16] + big + struct.pack(">I", zlib.crc32(b"IHDR" + big)) + data[33:]
    for bad in (bad_crc, bomb, bomb_ok_crc, data[:20], data[:60]):
        assert pp._spng_array(bad) is None
        assert same(result(pp.to_array, bad), with_pillow(pp.to_array, bad))
    with pytest.raises(ImageError, match="too large"):
        pp.to_array(bomb_ok_crc)


def test_broken_image_data_gets_pillows_error() -> None:
    data = variants()["L"]
    start = data.index(b"IDAT") + 4
    broken = data[:start + 10] + b"\xff" * 40 + data[start + 50:]
    assert same(result(pp.to_array, broken), with_pillow(pp.to_array, broken))


def test_the_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    data = variants()["L"]
    assert pp.spng_enabled() and pp._spng_array(data) is not None
    monkeypatch.setenv("CAPTCHA_EDGE_PNG", "pillow")
    assert not pp.spng_enabled() and pp._spng_array(data) is None


def test_import_captcha_edge_does_not_import_pyspng() -> None:
    """pyspng is imported on the first PNG, so ``import captcha_edge`` stays numpy + Pillow."""
    code = ("import sys, captcha_edge; assert 'pyspng' not in sys.modules; "
            "from captcha_edge import preprocess as pp; assert pp.spng_enabled(); "
            "assert 'pyspng' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_png_left_to_pillow_is_looked_at_once(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """to_array() tries the fast path once, then goes to Pillow (no second read of the file)."""
    calls: list[Any] = []
    real = pp._spng_array

    def spy(src: Any) -> Any:
        calls.append(src)
        return real(src)

    monkeypatch.setattr(pp, "_spng_array", spy)
    path = tmp_path / "rgba.png"
    path.write_bytes(variants()["RGBA"])
    for src in (variants()["RGBA"], path, variants()["L-odd-size"]):
        calls.clear()
        pp.to_array(src)
        assert len(calls) == 1
