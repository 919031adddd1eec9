"""The development panel of hard captcha styles: synthetic styles drawn offline, seeded.

Each style is a pure function of ``(style, seed, index)``: the same call gives the same pixels on
any machine with the pinned ``captcha`` and Pillow (fonts: the ``captcha`` package's
DroidSansMono and Pillow's built-in scalable font, nothing from the system). A style folder holds
``NNNNNNN.png`` files and a ``labels.csv`` (``file,label``), so training uses the same label
option a user would give (``--labels DIR/labels.csv``).

The styles are hard in different ways (issue 22), none of them a copy of a shared folder:

- ``scratch-grey``: grey 200x80, 6 of 37 symbols, heavy scratches and dots over the glyphs;
- ``wide-color``: RGBA 410-690x80 (width grows with the label), 4-8 of 36, coloured rotated
  glyphs over black lines on a transparent background;
- ``mixed-case``: the ``captcha`` package's ImageCaptcha, 160x60, 5 of 54 (upper and lower
  case), its own noise curve and dots;
- ``small``: 90x30, 4 of 26, thin glyphs and a noise line;
- ``dotted-digits``: palette 240x80, 4 digits drawn as coloured dots on black;
- ``varlen``: ImageCaptcha 240x60, 4-8 of 36;
- ``faint-grey``: grey 180x60, 5 of 36, faint ink (10-28 grey levels below a light, uneven
  background), a little noise: low contrast, where the first conv's int8 weights matter
  (issue 23).

Examples:
  python scripts/style_panel.py --out runs/panel                 # every style, 10000 + 2000
  python scripts/style_panel.py --out runs/panel --styles small --train 500 --test 100
  python scripts/style_panel.py --show scratch-grey --out /tmp/sheet.png   # a contact sheet
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

DIGITS = "0123456789"
LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = LOWER.upper()


@dataclass(frozen=True)
class Style:
    """One panel style: how to draw it and its labels."""

    name: str
    charset: str
    lengths: Tuple[int, int]
    draw: Callable[[str, random.Random], Image.Image]
    what: str


def _captcha_font_path() -> str:
    import captcha

    return str(Path(captcha.__file__).parent / "data" / "DroidSansMono.ttf")


_FONTS: Dict[Tuple[str, int], ImageFont.FreeTypeFont] = {}


def _font(which: str, size: int) -> ImageFont.FreeTypeFont:
    """``mono`` (DroidSansMono from the captcha package) or ``sans`` (Pillow's built-in)."""
    key = (which, size)
    if key not in _FONTS:
        if which == "mono":
            _FONTS[key] = ImageFont.truetype(_captcha_font_path(), size)
        else:
            font = ImageFont.load_default(size=size)
            assert isinstance(font, ImageFont.FreeTypeFont), "Pillow was built without FreeType"
            _FONTS[key] = font
    return _FONTS[key]


def _glyph(ch: str, font: ImageFont.FreeTypeFont, fill: Tuple[int, ...], angle: float,
           mode: str = "RGBA") -> Image.Image:
    """One character on a transparent tile, rotated by ``angle`` degrees."""
    left, top, right, bottom = font.getbbox(ch)
    w, h = right - left + 4, bottom - top + 4
    tile = Image.new(mode, (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((2 - left, 2 - top), ch, font=font, fill=fill)
    return tile.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)


def _place(canvas: Image.Image, text: str, rng: random.Random, font_of: Callable[[], ImageFont.FreeTypeFont],
           fill_of: Callable[[], Tuple[int, ...]], angle: float, x0: float, x1: float,
           y_jitter: float) -> None:
    """Spread the glyphs of ``text`` over ``[x0, x1]`` with random rotation and height."""
    W, H = canvas.size
    step = (x1 - x0) / len(text)
    for i, ch in enumerate(text):
        g = _glyph(ch, font_of(), fill_of(), rng.uniform(-angle, angle))
        cx = x0 + step * (i + 0.5) + rng.uniform(-0.12, 0.12) * step
        cy = H / 2 + rng.uniform(-y_jitter, y_jitter) * H
        canvas.alpha_composite(g, (int(cx - g.width / 2), int(max(0, min(H - g.height,
                                                                          cy - g.height / 2)))))


def _scratch_grey(text: str, rng: random.Random) -> Image.Image:
    W, H = 200, 80
    bg = rng.randint(200, 245)
    img = Image.new("RGBA", (W, H), (bg, bg, bg, 255))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(250, 500)):  # dots under the text
        x, y, v = rng.randrange(W), rng.randrange(H), rng.randint(60, 180)
        d.point((x, y), fill=(v, v, v, 255))
    ink = rng.randint(20, 90)
    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(30, 40)),
           lambda: (ink, ink, ink, 255), 18, 8, W - 8, 0.12)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(10, 18)):  # heavy scratches over the text
        v = rng.randint(30, 150)
        pts = [(rng.uniform(-20, W + 20), rng.uniform(0, H)) for _ in range(rng.randint(2, 3))]
        d.line(pts, fill=(v, v, v, 255), width=rng.randint(1, 3))
    for _ in range(rng.randint(2, 4)):
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(15, 60)
        v = rng.randint(40, 140)
        d.arc((x - r, y - r, x + r, y + r), rng.uniform(0, 360), rng.uniform(0, 360),
              fill=(v, v, v, 255), width=rng.randint(1, 2))
    for _ in range(rng.randint(150, 300)):  # dots over the text
        x, y, v = rng.randrange(W), rng.randrange(H), rng.randint(20, 200)
        d.point((x, y), fill=(v, v, v, 255))
    return img.convert("L")


def _faint_grey(text: str, rng: random.Random) -> Image.Image:
    """Faint ink on a light, slightly uneven background: the strokes are 10-28 grey levels
    darker than the paper, with a little noise and two or three faint lines."""
    W, H = 180, 60
    bg = rng.randint(205, 240)
    img = Image.new("RGBA", (W, H), (bg, bg, bg, 255))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 6)):  # soft blotches: the paper is not flat
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(10, 35)
        v = bg + rng.randint(-6, 6)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(v, v, v, 255))
    ink = bg - rng.randint(10, 28)
    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(30, 38)),
           lambda: (ink, ink, ink, 255), 12, 6, W - 6, 0.1)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 3)):
        v = bg - rng.randint(6, 18)
        pts = [(rng.uniform(-10, W + 10), rng.uniform(0, H)) for _ in range(2)]
        d.line(pts, fill=(v, v, v, 255), width=1)
    for _ in range(rng.randint(200, 400)):
        x, y = rng.randrange(W), rng.randrange(H)
        v = bg + rng.randint(-14, 8)
        d.point((x, y), fill=(v, v, v, 255))
    return img.convert("L")


def _wide_color(text: str, rng: random.Random) -> Image.Image:
    H = 80
    W = int(min(690, max(410, 86 * len(text) + rng.randint(-20, 20))))
    img = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(4, 8)):  # black lines under the glyphs
        d.line([(rng.uniform(0, W), rng.uniform(0, H)) for _ in range(2)],
               fill=(0, 0, 0, 255), width=rng.randint(2, 4))

    def colour() -> Tuple[int, ...]:
        import colorsys

        r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 0.95))
        return (int(255 * r), int(255 * g), int(255 * b), 255)

    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(44, 58)),
           colour, 35, 12, W - 12, 0.1)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 3)):  # and a few over them
        d.line([(rng.uniform(0, W), rng.uniform(0, H)) for _ in range(2)],
               fill=(0, 0, 0, 255), width=rng.randint(1, 2))
    return img


def _image_captcha(width: int, height: int, sizes: Tuple[int, ...]) -> Callable[[str, random.Random], Image.Image]:
    def draw(text: str, rng: random.Random) -> Image.Image:
        from captcha_edge.train.data import _seeded_captcha  # the seeded `secrets` stand-in

        with _seeded_captcha(rng) as ci:
            img = ci.ImageCaptcha(width=width, height=height, font_sizes=sizes).generate_image(text)
        return img.convert("RGB")
    return draw


def _small(text: str, rng: random.Random) -> Image.Image:
    W, H = 90, 30
    bg = tuple(rng.randint(215, 255) for _ in range(3))
    img = Image.new("RGBA", (W, H), (*bg, 255))
    ink = tuple(rng.randint(0, 110) for _ in range(3))
    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(17, 22)),
           lambda: (*ink, 255), 12, 4, W - 4, 0.1)
    d = ImageDraw.Draw(img)
    d.line([(0, rng.uniform(5, H - 5)), (W, rng.uniform(5, H - 5))], fill=(*ink, 255), width=1)
    for _ in range(rng.randint(30, 60)):
        d.point((rng.randrange(W), rng.randrange(H)), fill=(*ink, 255))
    return img.convert("RGB")


def _dotted_digits(text: str, rng: random.Random) -> Image.Image:
    W, H = 240, 80
    mask = Image.new("L", (W, H), 0)
    tile = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    _place(tile, text, rng, lambda: _font("sans", rng.randint(50, 64)),
           lambda: (255, 255, 255, 255), 15, 20, W - 20, 0.08)
    mask = tile.getchannel("A")
    px = mask.load()
    img = Image.new("RGB", (W, H), (0, 0, 0))
    d = ImageDraw.Draw(img)
    pitch = rng.choice((3, 4))
    ox, oy = rng.randrange(pitch), rng.randrange(pitch)
    palette = [(rng.randint(120, 255), rng.randint(120, 255), rng.randint(120, 255))
               for _ in range(3)]
    for y in range(oy, H, pitch):
        for x in range(ox, W, pitch):
            if px[x, y] > 100 and rng.random() < 0.9:
                d.point((x, y), fill=rng.choice(palette))
                if pitch == 4 and rng.random() < 0.5:
                    d.point((x + 1, y), fill=rng.choice(palette))
    for _ in range(rng.randint(80, 160)):  # stray dots
        d.point((rng.randrange(W), rng.randrange(H)), fill=rng.choice(palette))
    return img.quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


STYLES: Dict[str, Style] = {s.name: s for s in (
    Style("scratch-grey", DIGITS + LOWER + "@", (6, 6), _scratch_grey,
          "grey 200x80, heavy scratches and dots, 6 of 37"),
    Style("wide-color", DIGITS + UPPER, (4, 8), _wide_color,
          "RGBA 410-690x80, coloured rotated glyphs over black lines, 4-8 of 36"),
    Style("mixed-case", "23456789" + "abcdefghjkmnpqrstuvwxyz" + "ABCDEFGHJKLMNPQRSTUVWXYZ",
          (5, 5), _image_captcha(160, 60, (42, 50, 56)),
          "ImageCaptcha 160x60, mixed case, 5 of 55"),
    Style("small", "abcdefghjkmnpqrstuvwxyz234", (4, 4), _small,
          "small 90x30, 4 of 26, a noise line and dots"),
    Style("dotted-digits", DIGITS, (4, 4), _dotted_digits,
          "palette 240x80, 4 digits drawn as coloured dots on black"),
    Style("varlen", DIGITS + LOWER, (4, 8), _image_captcha(240, 60, (40, 46, 52)),
          "ImageCaptcha 240x60, 4-8 of 36"),
    Style("faint-grey", DIGITS + UPPER, (5, 5), _faint_grey,
          "grey 180x60, faint ink 10-28 levels below a light background, 5 of 36"),
)}


def _inverted(text: str, rng: random.Random) -> Image.Image:
    """Light glyphs on a dark grey background with a faint grid (a holdout style)."""
    W, H = 160, 50
    bg = rng.randint(15, 70)
    img = Image.new("RGBA", (W, H), (bg, bg, bg, 255))
    d = ImageDraw.Draw(img)
    pitch, v = rng.randint(8, 14), bg + rng.randint(15, 40)
    for x in range(rng.randrange(pitch), W, pitch):
        d.line([(x, 0), (x, H)], fill=(v, v, v, 255))
    for y in range(rng.randrange(pitch), H, pitch):
        d.line([(0, y), (W, y)], fill=(v, v, v, 255))
    ink = rng.randint(170, 255)
    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(24, 32)),
           lambda: (ink, ink, ink, 255), 20, 6, W - 6, 0.12)
    return img.convert("L")


def _jpeg_wave(text: str, rng: random.Random) -> Image.Image:
    """The captcha package's ImageCaptcha, saved as a low-quality JPEG (a holdout style)."""
    img = _image_captcha(200, 70, (40, 46))(text, rng)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(12, 25))
    buf.seek(0)
    with Image.open(buf) as jpeg:
        return jpeg.convert("RGB")


def _wave(rng: random.Random, W: int, H: int, amp: Tuple[float, float],
          period: Tuple[float, float]) -> List[Tuple[float, float]]:
    """Points of a sine wave across the image: random amplitude, period and phase, centred at a
    random height in the middle third."""
    a, p, phase = rng.uniform(*amp), rng.uniform(*period), rng.uniform(0, 6.3)
    y0 = rng.uniform(0.35, 0.65) * H
    return [(x, y0 + a * math.sin(phase + 2 * math.pi * x / p)) for x in range(0, W, 2)]


def _long_digits(text: str, rng: random.Random) -> Image.Image:
    """9-10 small coloured digits on a pale background, a sine wave through them (holdout)."""
    W, H = 320, 48
    bg = tuple(rng.randint(220, 255) for _ in range(3))
    img = Image.new("RGBA", (W, H), (*bg, 255))

    def ink() -> Tuple[int, ...]:
        return (rng.randint(0, 140), rng.randint(0, 140), rng.randint(0, 140), 255)

    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(26, 32)),
           ink, 12, 8, W - 8, 0.1)
    ImageDraw.Draw(img).line(_wave(rng, W, H, (4, 12), (40, 90)), fill=ink(), width=2)
    return img.convert("RGB")


def _square_blobs(text: str, rng: random.Random) -> Image.Image:
    """4 letters across a 100x100 square over coloured blobs (a holdout style)."""
    W = H = 100
    img = Image.new("RGBA", (W, H), (255, 255, 255, 255))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(6, 12)):
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(6, 22)
        col = tuple(rng.randint(150, 250) for _ in range(3))
        d.ellipse((x - r, y - r, x + r, y + r), fill=(*col, 255))
    ink = tuple(rng.randint(0, 90) for _ in range(3))
    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(26, 32)),
           lambda: (*ink, 255), 25, 4, W - 4, 0.25)
    return img.convert("RGB")


def _cased(text: str, rng: random.Random) -> Image.Image:
    """Mixed case drawn with one font and size per captcha, so a lower-case letter is smaller
    than its capital (unlike ImageCaptcha, which stretches every glyph's ink to the same height);
    a holdout style."""
    W, H = 180, 60
    bg = tuple(rng.randint(225, 255) for _ in range(3))
    img = Image.new("RGBA", (W, H), (*bg, 255))
    ink = tuple(rng.randint(0, 120) for _ in range(3))
    font = _font(rng.choice(("mono", "sans")), rng.randint(32, 38))
    _place(img, text, rng, lambda: font, lambda: (*ink, 255), 15, 6, W - 6, 0.08)
    d = ImageDraw.Draw(img)
    for _ in range(2):
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(20, 60)
        d.arc((x - r, y - r, x + r, y + r), rng.uniform(0, 360), rng.uniform(0, 360),
              fill=(*ink, 255), width=2)
    for _ in range(rng.randint(60, 120)):
        d.point((rng.randrange(W), rng.randrange(H)), fill=(*ink, 255))
    return img.convert("RGB")


def _overlap(text: str, rng: random.Random) -> Image.Image:
    """6 glyphs packed so tight that they touch and overlap, and a thick wavy line of the ink
    through them (as Java's SimpleCaptcha and 'gimpy' draw); grey; a holdout style."""
    W, H = 140, 50
    bg = rng.randint(215, 250)
    img = Image.new("RGBA", (W, H), (bg, bg, bg, 255))
    ink = rng.randint(10, 80)
    font = _font(rng.choice(("mono", "sans")), rng.randint(28, 33))
    _place(img, text, rng, lambda: font, lambda: (ink, ink, ink, 255), 22, 8, W - 8, 0.1)
    ImageDraw.Draw(img).line(_wave(rng, W, H, (3, 8), (50, 110)), fill=(ink, ink, ink, 255),
                             width=3)
    return img.convert("L")


def _warped_color(text: str, rng: random.Random) -> Image.Image:
    """Glyphs of several colours on a two-colour gradient, the whole image then bent by a sine
    wave down the columns and another along the rows (as PHP captchas such as Securimage and
    Gregwar do); RGB 200x64; a holdout style drawn after the defaults were last changed."""
    import numpy as np

    W, H = 200, 64
    a, b = (np.array([rng.randint(150, 255) for _ in range(3)], float) for _ in range(2))
    ramp = np.linspace(0.0, 1.0, W)[None, :, None]
    bg = (a * (1 - ramp) + b * ramp).repeat(H, axis=0).astype(np.uint8)
    img = Image.fromarray(bg, "RGB").convert("RGBA")

    def ink() -> Tuple[int, ...]:
        return (rng.randint(0, 130), rng.randint(0, 130), rng.randint(0, 130), 255)

    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(30, 38)),
           ink, 10, 10, W - 10, 0.08)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 4)):
        d.line([(rng.uniform(0, W), rng.uniform(0, H)) for _ in range(2)], fill=ink(), width=1)
    px = np.asarray(img.convert("RGB"))
    ys, xs = np.mgrid[0:H, 0:W].astype(float)
    ay, py, fy = rng.uniform(3, 7), rng.uniform(50, 110), rng.uniform(0, 6.3)
    ax, px_, fx = rng.uniform(1, 3), rng.uniform(25, 50), rng.uniform(0, 6.3)
    src_y = np.clip(np.rint(ys + ay * np.sin(fy + 2 * np.pi * xs / py)), 0, H - 1).astype(int)
    src_x = np.clip(np.rint(xs + ax * np.sin(fx + 2 * np.pi * ys / px_)), 0, W - 1).astype(int)
    return Image.fromarray(px[src_y, src_x], "RGB")


def _hollow(text: str, rng: random.Random) -> Image.Image:
    """Outlined glyphs (ink only on each glyph's edge, the inside left the background colour),
    crossed by a few lines and sprinkled with salt and pepper; grey 180x60; a holdout style
    drawn after the defaults were last changed."""
    W, H = 180, 60
    bg = rng.randint(205, 250)
    img = Image.new("L", (W, H), bg)
    d = ImageDraw.Draw(img)
    ink = rng.randint(0, 90)
    step = (W - 16) / len(text)
    for i, ch in enumerate(text):
        font = _font(rng.choice(("mono", "sans")), rng.randint(34, 42))
        left, top, right, bottom = font.getbbox(ch)
        tile = Image.new("LA", (right - left + 8, bottom - top + 8), (bg, 0))
        ImageDraw.Draw(tile).text((4 - left, 4 - top), ch, font=font, fill=(bg, 255),
                                  stroke_width=rng.choice((1, 2)), stroke_fill=(ink, 255))
        tile = tile.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BICUBIC, expand=True)
        cx = 8 + step * (i + 0.5) + rng.uniform(-0.1, 0.1) * step
        cy = H / 2 + rng.uniform(-0.1, 0.1) * H
        img.paste(tile.convert("L"), (int(cx - tile.width / 2),
                                      int(max(0, min(H - tile.height, cy - tile.height / 2)))),
                  tile.getchannel("A"))
    for _ in range(rng.randint(3, 5)):
        d.line([(rng.uniform(-10, W + 10), rng.uniform(0, H)) for _ in range(2)], fill=ink,
               width=rng.choice((1, 2)))
    for _ in range(int(W * H * rng.uniform(0.04, 0.08))):
        d.point((rng.randrange(W), rng.randrange(H)), fill=rng.choice((ink, 255)))
    return img


def _speckle(text: str, rng: random.Random) -> Image.Image:
    """Dark glyphs in a storm of coloured speckles (a third to a half of the pixels) and a few
    coloured blots; RGB 160x60; a holdout style drawn after the defaults were last changed."""
    import numpy as np

    W, H = 160, 60
    img = Image.new("RGBA", (W, H), (*(rng.randint(200, 255) for _ in range(3)), 255))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 6)):
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(5, 14)
        d.ellipse((x - r, y - r, x + r, y + r),
                  fill=(*(rng.randint(90, 230) for _ in range(3)), 255))
    ink = tuple(rng.randint(0, 70) for _ in range(3))
    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(26, 32)),
           lambda: (*ink, 255), 15, 6, W - 6, 0.1)
    px = np.asarray(img.convert("RGB")).copy()
    gen = np.random.default_rng(rng.getrandbits(32))
    mask = gen.random((H, W)) < rng.uniform(0.3, 0.5)
    px[mask] = gen.integers(60, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return Image.fromarray(px, "RGB")


def _ink_grid(text: str, rng: random.Random) -> Image.Image:
    """Dark glyphs under a dense, slightly tilted grid drawn in the glyphs' own ink, so lines and
    strokes differ only in shape; grey 200x60; a holdout style drawn after the defaults were
    last changed."""
    W, H = 200, 60
    bg = rng.randint(215, 250)
    img = Image.new("RGBA", (W, H), (bg, bg, bg, 255))
    ink = rng.randint(10, 70)
    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(30, 38)),
           lambda: (ink, ink, ink, 255), 12, 8, W - 8, 0.08)
    d = ImageDraw.Draw(img)
    pitch, tilt = rng.randint(9, 15), rng.uniform(-0.15, 0.15)
    for x in range(rng.randrange(pitch) - H, W + H, pitch):
        d.line([(x, 0), (x + tilt * H, H)], fill=(ink, ink, ink, 255), width=1)
    for y in range(rng.randrange(pitch), H, pitch):
        d.line([(0, y), (W, y - tilt * W / 3)], fill=(ink, ink, ink, 255), width=1)
    return img.convert("L")


def _perspective(text: str, rng: random.Random) -> Image.Image:
    """Dark glyphs with a grey drop shadow on a light tint with faint rings, the whole picture
    then seen at an angle (a random perspective: one side taller than the other, the top
    leaning), as '3D' captchas draw it; RGB 200x70; a holdout style drawn after the defaults
    were last changed."""
    import numpy as np

    W, H = 200, 70
    bg = tuple(rng.randint(215, 255) for _ in range(3))
    img = Image.new("RGBA", (W, H), (*bg, 255))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 6)):
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(10, 40)
        d.ellipse((x - r, y - r, x + r, y + r), outline=tuple(c - 35 for c in bg) + (255,),
                  width=2)
    text_layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    ink = tuple(rng.randint(0, 90) for _ in range(3))
    font = _font(rng.choice(("mono", "sans")), rng.randint(34, 40))
    _place(text_layer, text, rng, lambda: font, lambda: (*ink, 255), 12, 14, W - 14, 0.06)
    dx, dy = rng.choice((-1, 1)) * rng.randint(2, 4), rng.randint(2, 4)
    shadow = Image.new("RGBA", (W, H), (110, 110, 110, 255))
    shadow.putalpha(text_layer.getchannel("A").point(lambda a: a * 2 // 3))
    img.alpha_composite(shadow, (max(dx, 0), dy), (max(-dx, 0), 0))
    img.alpha_composite(text_layer)
    # Output corners -> where they come from in the flat picture: one side squeezed, the top
    # pushed sideways.
    squeeze, lean = rng.uniform(0.08, 0.22) * H, rng.uniform(-0.12, 0.12) * W
    left = rng.random() < 0.5
    src = [(0 + lean, -squeeze if left else 0), (W + lean, 0 if left else -squeeze),
           (W, H + (0 if left else squeeze)), (0, H + (squeeze if left else 0))]
    dst = [(0, 0), (W, 0), (W, H), (0, H)]
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(rows, float), np.array(src, float).reshape(8))
    return img.convert("RGB").transform((W, H), Image.Transform.PERSPECTIVE,
                                        tuple(coeffs), Image.Resampling.BICUBIC,
                                        fillcolor=bg)


def _tumble(text: str, rng: random.Random) -> Image.Image:
    """4-6 glyphs each turned up to 45 degrees and drawn at its own size (22-40 px) in its own
    dark colour, with two thin arcs across; RGB 180x60; a holdout style drawn after the defaults
    were last changed."""
    W, H = 180, 60
    img = Image.new("RGBA", (W, H), (*(rng.randint(230, 255) for _ in range(3)), 255))

    def ink() -> Tuple[int, ...]:
        return (*(rng.randint(0, 110) for _ in range(3)), 255)

    _place(img, text, rng, lambda: _font(rng.choice(("mono", "sans")), rng.randint(22, 40)),
           ink, 45, 8, W - 8, 0.12)
    d = ImageDraw.Draw(img)
    for _ in range(2):
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(30, 90)
        d.arc((x - r, y - r, x + r, y + r), rng.uniform(0, 360), rng.uniform(0, 360),
              fill=ink(), width=1)
    return img.convert("RGB")


#: Styles kept out of every tuning decision: drawn only to check that the defaults chosen on
#: STYLES carry over to kinds of captcha they were not chosen on (light on dark, JPEG
#: artefacts, long labels, a square image, touching glyphs, a whole-image sine warp, outlined
#: glyphs, dense speckle, a grid in the glyphs' own ink, a perspective view with a drop shadow,
#: glyphs turned up to 45 degrees at sizes of their own). Not in the default panel.
HOLDOUT: Dict[str, Style] = {s.name: s for s in (
    Style("inverted", DIGITS + UPPER, (5, 5), _inverted,
          "grey 160x50, light glyphs on a dark grid, 5 of 36"),
    Style("jpeg-wave", DIGITS + LOWER, (6, 6), _jpeg_wave,
          "ImageCaptcha 200x70 as a JPEG of quality 12-25, 6 of 36"),
    Style("long-digits", DIGITS, (9, 10), _long_digits,
          "RGB 320x48, 9-10 small coloured digits and a sine wave"),
    Style("square", LOWER, (4, 4), _square_blobs,
          "RGB 100x100, 4 letters over coloured blobs"),
    Style("cased", "23456789" + "abcdefghjkmnpqrstuvwxyz" + "ABCDEFGHJKLMNPQRSTUVWXYZ",
          (5, 5), _cased, "RGB 180x60, mixed case at one font size a captcha, 5 of 55"),
    Style("overlap", "23456789abcdefghjkmnpqrstuvwxyz", (6, 6), _overlap,
          "grey 140x50, 6 of 31 touching rotated glyphs and a thick wavy line"),
    Style("warped-color", "23456789ABCDEFGHJKLMNPQRSTUVWXYZ", (5, 5), _warped_color,
          "RGB 200x64, 5 of 32 glyphs of several colours on a gradient, sine-warped"),
    Style("hollow", DIGITS + UPPER, (5, 5), _hollow,
          "grey 180x60, 5 of 36 outlined glyphs, crossing lines, salt and pepper"),
    Style("speckle", "23456789abcdefghjkmnpqrstuvwxyz", (6, 6), _speckle,
          "RGB 160x60, 6 of 31 dark glyphs under coloured speckles on a third to a half of "
          "the pixels"),
    Style("ink-grid", "23456789ABCDEFGHJKLMNPQRSTUVWXYZ", (5, 5), _ink_grid,
          "grey 200x60, 5 of 32 under a dense tilted grid in the glyphs' own ink"),
    Style("perspective", "23456789abcdefghjkmnpqrstuvwxyz", (5, 5), _perspective,
          "RGB 200x70, 5 of 31 shadowed glyphs seen at an angle (a random perspective)"),
    Style("tumble", "23456789abcdefghjkmnpqrstuvwxyz", (4, 6), _tumble,
          "RGB 180x60, 4-6 of 31 glyphs each turned up to 45 degrees, sized 22-40 px"),
)}
#: Every style this script draws: the panel and the holdouts.
ALL_STYLES: Dict[str, Style] = {**STYLES, **HOLDOUT}


def label_of(style: Style, seed: int, index: int) -> str:
    rng = random.Random(f"panel-label-{style.name}-{seed}-{index}")
    k = rng.randint(*style.lengths)
    return "".join(rng.choice(style.charset) for _ in range(k))


def draw(style: Style, seed: int, index: int) -> Tuple[str, Image.Image]:
    """The label and picture of one sample: a pure function of its arguments."""
    text = label_of(style, seed, index)
    return text, style.draw(text, random.Random(f"panel-image-{style.name}-{seed}-{index}"))


def write_style(style: Style, out: Path, count: int, seed: int, start: int = 0,
                progress: bool = False) -> Path:
    """Write ``count`` samples of ``style`` (indices ``start..``) into ``out`` with labels.csv.

    Files go to a temporary folder of this call's own first, renamed into place when all are
    written, so a folder that exists is complete; two processes drawing the same folder at once
    (two benchmark runs of one style) each write their own and the first rename wins (the
    pictures are a pure function of the arguments, so both are the same).
    """
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent))
    try:
        _draw_into(tmp, style, count, seed, start, progress)
    except BaseException:  # Ctrl-C or a failed draw: no half-written folder is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, out)
    except OSError:  # another writer's complete folder is already in place
        if not out.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _draw_into(folder: Path, style: Style, count: int, seed: int, start: int,
               progress: bool) -> None:
    rows: List[Tuple[str, str]] = []
    rng_iter = range(start, start + count)
    if progress:
        from tqdm import tqdm

        rng_iter = tqdm(rng_iter, desc=f"drawing {style.name}", unit="img", leave=False)
    for i in rng_iter:
        text, img = draw(style, seed, i)
        name = f"{i:07d}.png"
        img.save(folder / name)
        rows.append((name, text))
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(("file", "label"))
        w.writerows(rows)


def make_panel(out: Path, styles: Sequence[str], train: int, test: int, seed: int = 0,
               progress: bool = True) -> Dict[str, Dict[str, Path]]:
    """``out/STYLE/train`` and ``out/STYLE/test`` for each style; test indices never overlap."""
    made: Dict[str, Dict[str, Path]] = {}
    for name in styles:
        st = ALL_STYLES[name]
        made[name] = {
            "train": write_style(st, out / name / f"train-{train}-s{seed}", train, seed, 0, progress),
            "test": write_style(st, out / name / f"test-{test}-s{seed}", test, seed,
                                10_000_000 - test, progress),
        }
    return made


def contact_sheet(style: Style, n: int = 8, seed: int = 0) -> Image.Image:
    tiles = [draw(style, seed, i) for i in range(n)]
    W = max(im.width for _, im in tiles)
    H = sum(im.height + 14 for _, im in tiles)
    sheet = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    y = 0
    for text, im in tiles:
        rgba = im.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        sheet.paste(Image.alpha_composite(back, rgba).convert("RGB"), (0, y))
        d.text((2, y + im.height), text, fill=(200, 0, 0))
        y += im.height + 14
    return sheet


def pick_styles(text: str, known: Sequence[str], prog: str, flag: str = "--styles") -> Optional[List[str]]:
    """The comma-separated names in ``text``, or None after one error line naming the unknown."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in known]
    if bad:
        print(f"{prog}: error: {flag}: unknown {', '.join(bad)} (known: {', '.join(known)})",
              file=sys.stderr)
        return None
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="panel folder (or PNG with --show)")
    p.add_argument("--styles", default=",".join(STYLES),
                   help="comma-separated subset (default: the panel; the holdout styles "
                        f"{', '.join(HOLDOUT)} only when named)")
    p.add_argument("--train", type=int, default=10000, help="training images per style")
    p.add_argument("--test", type=int, default=2000, help="unseen test images per style")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", metavar="STYLE", help="write a contact sheet of STYLE to --out")
    a = p.parse_args(argv)
    if a.show:
        if pick_styles(a.show, list(ALL_STYLES), "style_panel", "--show") is None:
            return 2
        buf = io.BytesIO()
        contact_sheet(ALL_STYLES[a.show], seed=a.seed).save(buf, "PNG")
        a.out.write_bytes(buf.getvalue())
        return 0
    names = pick_styles(a.styles, list(ALL_STYLES), "style_panel")
    if names is None:
        return 2
    for name, parts in make_panel(a.out, names, a.train, a.test, a.seed).items():
        print(f"{name}: {parts['train']} ({a.train}), {parts['test']} ({a.test})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
