"""Write the small image fixtures of the runtime tests into tests/data/images/ (numpy + Pillow).

good/   four captcha-like 200x50 images drawn here (PNG, RGBA PNG, JPEG, palette GIF), plus the
        same first image as CMYK TIFF and as 16-bit grey PNG (readable: converted to grey)
bad/    one file per failure the runtime must name clearly: zero bytes, truncated PNG, text
        named .png, a 20000x20000 PNG header (decompression-bomb guard), an animated GIF

    python scripts/make_test_images.py
"""
from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def captcha(text: str, seed: int) -> Image.Image:
    """A grey-ish captcha-like image: noisy background, dark text, two lines."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(190, 256, (50, 200, 3), dtype=np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.text((20 + seed * 3, 15), text, fill=(30, 30, 30))
    for _ in range(2):
        d.line([int(v) for v in rng.integers(0, 200, 4) * [1, 0.25, 1, 0.25]], fill=(80, 80, 80))
    return img


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming ``width`` x ``height`` and one empty IDAT chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + \
        chunk(b"IEND", b"")


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def main() -> int:
    out = ROOT / "tests" / "data" / "images"
    good, bad = out / "good", out / "bad"
    good.mkdir(parents=True, exist_ok=True)
    bad.mkdir(parents=True, exist_ok=True)
    imgs = [captcha(t, i) for i, t in enumerate(["2b4cd", "8ny7p", "mx3de", "66gfw"])]
    atomic_write(good / "2b4cd.png", save(imgs[0], "PNG", optimize=True))
    atomic_write(good / "8ny7p.png", save(imgs[1].convert("RGBA"), "PNG", optimize=True))
    atomic_write(good / "mx3de.jpg", save(imgs[2], "JPEG", quality=90))
    atomic_write(good / "66gfw.gif", save(imgs[3].convert("P"), "GIF"))
    grey = imgs[0].convert("L")
    atomic_write(good / "2b4cd_cmyk.tif", save(grey.convert("RGB").convert("CMYK"), "TIFF",
                                              compression="tiff_deflate"))
    wide = (np.asarray(grey, dtype=np.uint16) * 257).astype(np.uint16)
    atomic_write(good / "2b4cd_16bit.png", save(Image.fromarray(wide), "PNG"))

    atomic_write(bad / "empty.png", b"")
    full = save(imgs[1], "PNG")
    atomic_write(bad / "truncated.png", full[: len(full) // 3])
    atomic_write(bad / "text.png", b"this is not an image, only text named .png\n")
    atomic_write(bad / "bomb.png", png_header_only(20000, 20000))
    frames = [imgs[2].convert("P"), imgs[3].convert("P")]
    atomic_write(bad / "animated.gif", save(frames[0], "GIF", save_all=True,
                                            append_images=frames[1:], duration=100, loop=0))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
