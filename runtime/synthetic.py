"""Captcha-like PNGs drawn on the fly, so benchmarks run on a fresh device with no data set."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

#: The symbols drawn by default (no look-alikes such as 0/o, 1/l/i).
DEFAULT_CHARSET = "abcdefghkmnpqrstuvwxyz23456789"


def synthetic_pngs(n: int, size: tuple[int, int] = (200, 50), charset: str = DEFAULT_CHARSET,
                   seed: int = 0) -> list[bytes]:
    """``n`` PNG files (bytes) of ``size`` (width, height): noisy background, 5 random symbols.

    The same ``seed`` gives the same bytes, so two timing runs see the same images.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if not charset:
        raise ValueError("charset must be a non-empty string")
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(n):
        img = Image.fromarray(rng.integers(180, 256, (h, w, 3), dtype=np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        text = "".join(rng.choice(list(charset), 5))
        draw.text((int(rng.integers(2, max(3, w // 6))), int(rng.integers(0, max(1, h // 3)))),
                  text, fill=tuple(int(v) for v in rng.integers(0, 90, 3)))
        for _ in range(3):
            xy = [int(v) for v in (rng.integers(0, w), rng.integers(0, h),
                                   rng.integers(0, w), rng.integers(0, h))]
            draw.line(xy, fill=(60, 60, 60), width=1)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(buf.getvalue())
    return out
