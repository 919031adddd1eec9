"""The bundled int8 model holds against its float32 twin on the 840 real captchas (issue 12's
"v2 default model" case): what the runtime ships must meet the integer-export goals it claims.
So does the dynamic-range twin that ``serve`` answers with on x86 (scripts/make_dynamic_twin.py).

Skipped when ../shared is absent. Figures: ``benchmarks/results/int8-cases.md``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from captcha_edge import DEFAULT_MODEL, Recognizer
from captcha_edge.metrics import score

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "captcha_images_v2"
FLOAT32 = DEFAULT_MODEL.with_name("default_float32.tflite")
DYNAMIC = DEFAULT_MODEL.with_name("default_dynamic.tflite")


@pytest.fixture(scope="module")
def outputs():
    if not SHARED.is_dir():
        pytest.skip(f"shared captchas not found at {SHARED}")
    files = sorted(SHARED.glob("*.png"))
    i8, f32 = Recognizer(DEFAULT_MODEL, num_threads=1), Recognizer(FLOAT32, num_threads=1)
    dyn = Recognizer(DYNAMIC, num_threads=1)
    truths, texts, probs = [p.stem for p in files], {"int8": [], "float32": [], "dynamic": []}, {}
    for name, rec in (("int8", i8), ("float32", f32), ("dynamic", dyn)):
        frames = []
        for p in files:
            x = rec.preprocess(p)
            out = rec.infer(x)
            frames.append(out.argmax(-1))
            texts[name].append(rec.predict(p))
        probs[name] = np.stack(frames)
    return truths, texts, probs, i8, f32


@pytest.mark.slow  # 1680 invokes: seconds natively, minutes under the emulated Pi (not run there)
def test_bundled_int8_loses_at_most_half_a_point_and_agrees_on_99_percent_of_frames(outputs):
    truths, texts, frames, _, _ = outputs
    acc8 = score(truths, texts["int8"])["seq_acc"]
    acc32 = score(truths, texts["float32"])["seq_acc"]
    agreement = float((frames["int8"] == frames["float32"]).mean())
    assert acc32 - acc8 <= 0.005, (acc8, acc32)
    assert agreement >= 0.99, agreement
    assert acc8 >= 0.95  # and it still reads this style (it was trained on part of it)


@pytest.mark.slow
def test_bundled_dynamic_twin_reads_as_the_float32_one(outputs):
    truths, texts, frames, _, _ = outputs
    accd = score(truths, texts["dynamic"])["seq_acc"]
    acc32 = score(truths, texts["float32"])["seq_acc"]
    assert abs(acc32 - accd) <= 0.005, (accd, acc32)
    assert float((frames["dynamic"] == frames["float32"]).mean()) >= 0.99


def test_bundled_dynamic_twin_has_integer_weights_and_float_input():
    from captcha_edge import metadata
    from captcha_edge.export import verify

    _, meta = metadata.load_file(DYNAMIC)
    assert meta.format == "dynamic" and meta.charset == metadata.load_file(FLOAT32)[1].charset
    flat, _ = metadata.split(DYNAMIC.read_bytes())
    assert verify.io_details(flat)["input_dtype"] == "float32"
    assert DYNAMIC.stat().st_size <= 0.30 * FLOAT32.stat().st_size  # int8 weights, not float


def test_bundled_int8_is_small_integer_only_with_raw_pixel_input():
    from captcha_edge import metadata
    from captcha_edge.export import verify  # no TensorFlow: it runs the runtime's interpreter

    # Integer weights are 1/4 of float ones; the rest is the graph, int32 biases and per-channel
    # scales. Issue 12 asks <= 30 %: the 64k-parameter bundled model is at 29.7 % with its tensor
    # names stripped (30.5 % with them), the larger models of int8-cases.md at 26.5 %. A
    # dynamic-range or float fallback file would be ~100 %.
    assert DEFAULT_MODEL.stat().st_size <= 0.30 * FLOAT32.stat().st_size
    flat, _ = metadata.split(DEFAULT_MODEL.read_bytes())
    assert verify.io_details(flat)["input_dtype"] == "uint8"
    assert verify.float_compute_ops(flat) == []
    flat32, _ = metadata.split(FLOAT32.read_bytes())
    assert verify.float_compute_ops(flat32)  # the check can see float ops
