"""Mutated image bytes through the API and the CLI (issue 10, "keep it fixed"), bounded in time.

hypothesis picks a small valid PNG/JPEG/TIFF/GIF/BMP, overwrites a few bytes and maybe cuts it
short. The API must answer a string or raise ImageError, and warn about nothing but PIL's own
notices; ``captcha-edge predict --json`` must print exactly one JSON line per file, in order,
with nothing on stderr, in both decoder engines.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from captcha_edge import ImageError, Recognizer
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INT8 = ROOT / "tests" / "data" / "tiny_int8.tflite"
GOOD = ROOT / "tests" / "data" / "images" / "good" / "2b4cd.png"


def _bases() -> dict[str, bytes]:
    img = Image.open(GOOD).convert("RGB").resize((96, 32))
    specs = {"png-rgba": ("PNG", img.convert("RGBA"), {}), "png-l": ("PNG", img.convert("L"), {}),
             "jpeg": ("JPEG", img, {"quality": 70}), "gif": ("GIF", img.convert("P"), {}),
             "tiff-deflate": ("TIFF", img.convert("L"), {"compression": "tiff_adobe_deflate"}),
             "tiff-raw": ("TIFF", img, {}), "bmp": ("BMP", img.convert("L"), {})}
    out = {}
    for name, (fmt, im, kw) in specs.items():
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out[name] = buf.getvalue()
    return out


BASES = _bases()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(BASES[draw(st.sampled_from(sorted(BASES)))])
    for pos, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1),
                                              st.integers(0, 255)), max_size=6)):
        data[pos] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data[:cut] if cut is not None else data)


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer(INT8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_api_answers_or_raises_image_error(rec: Recognizer, data: bytes) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            assert isinstance(rec.predict(data), str)
        except ImageError as exc:
            assert str(exc).startswith("<bytes>: ")
            assert "\n" not in str(exc)
    strays = [w for w in caught if f"{os.sep}PIL{os.sep}" not in w.filename]
    assert not strays, [str(w.message) for w in strays]


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batch=st.lists(mutated(), min_size=8, max_size=8))
def test_cli_prints_one_json_line_per_file_and_nothing_else(engine: str,
                                                            batch: list[bytes]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    if engine == "python":
        env["CAPTCHA_EDGE_PUREPYTHON"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        names = [f"f{k}.img" for k in range(len(batch))]
        for name, data in zip(names, batch):
            Path(tmp, name).write_bytes(data)
        res = subprocess.run([sys.executable, "-m", "captcha_edge.cli", "predict", "-m",
                              str(INT8), "--json", *names], cwd=tmp, capture_output=True,
                             timeout=120, env=env, check=False)
    assert res.stderr == b""
    rows = [json.loads(line.decode("utf-8")) for line in res.stdout.splitlines()]
    assert [r["path"] for r in rows] == names
    for r in rows:
        assert (r["text"] is None) != (r["error"] is None)
        if r["error"] is not None:
            assert r["error"].startswith(f"{r['path']}: ")
    assert res.returncode == (1 if any(r["error"] for r in rows) else 0)
