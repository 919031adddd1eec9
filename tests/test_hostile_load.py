"""Long runs (issue 10): memory stays flat over 20,000 predictions, and 8 threads sharing one
Recognizer give the single-threaded answers. Both are ``slow``: ``pytest -m slow``.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from captcha_edge import Recognizer
from captcha_edge.synthetic import synthetic_pngs
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
INT8 = ROOT / "tests" / "data" / "tiny_int8.tflite"
GOOD = ROOT / "tests" / "data" / "images" / "good"

_MEMORY_SCRIPT = """
import io, sys
import numpy as np
from PIL import Image
from captcha_edge import ImageError, Recognizer

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])

rec = Recognizer(sys.argv[1])
png = open(sys.argv[2], "rb").read()
pil = Image.open(io.BytesIO(png))
pil.load()
inputs = [png, sys.argv[2], pil, np.asarray(pil.convert("L")), png[:len(png) // 2],
          b"not an image"]

def run(n):
    for k in range(n):
        try:
            rec.recognize(inputs[k % len(inputs)], beam_width=1 + k % 3)
        except ImageError:
            pass

run(2000)
before = rss()
run(int(sys.argv[3]))
print(before, rss())
"""


@pytest.mark.slow
def test_memory_is_flat_over_20k_predictions() -> None:
    if not Path("/proc/self/statm").is_file():
        pytest.skip("needs /proc to read the resident set size")
    res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(INT8),
                          str(GOOD / "2b4cd.png"), "20000"],
                         capture_output=True, text=True, timeout=1200, check=False)
    assert res.returncode == 0, res.stderr
    before, after = map(int, res.stdout.split())
    assert after <= before * 1.05, f"RSS grew from {before} to {after} pages over 20k predictions"


@pytest.mark.slow
def test_eight_threads_sharing_one_recognizer_agree_with_one() -> None:
    images: list = [p.read_bytes() for p in sorted(GOOD.iterdir())]
    images += synthetic_pngs(40, (96, 32), seed=3)
    images += [np.asarray(Image.open(GOOD / "8ny7p.png").convert("L"))]
    alone = Recognizer(INT8)
    want = [(p.text, p.confidence) for p in (alone.recognize(img, beam_width=3)
                                             for img in images)]
    shared = Recognizer(INT8)
    rounds = 5
    got: dict[int, list] = {}
    start = threading.Barrier(8)

    def work(t: int) -> None:
        start.wait()
        order = [(t * 7 + k) % len(images) for k in range(len(images) * rounds)]
        got[t] = [(k, shared.recognize(images[k], beam_width=3)) for k in order]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert sorted(got) == list(range(8))
    for t, answers in got.items():
        for k, p in answers:
            assert (p.text, p.confidence) == want[k], (t, k)
