"""End-to-end Recognizer benchmarks: PNG bytes -> text on one thread, per stage, and threads.

Run with ``pytest benchmarks/test_bench_recognizer.py --benchmark-only``. Models: the bundled
default int8 model when present, plus the tiny int8/float32 test fixtures (and, end to end only,
the bundled float32 and dynamic-range twins). Images: the shared
captcha_images_v2 PNGs as bytes (synthetic captcha-like PNGs when absent), read before timing.
Targets (issue 5) are asserted on ratios measured in the same run: our work around invoke()
(decode + preprocess + quantize + dequantize + CTC) <= 50 % of the bare invoke time, CTC <= 5 %
(for the bundled model; the 26 KB fixture's invoke is so short that PNG decoding alone is ~60 %
of it, so it only reports), and 2 workers >= 1.6x the throughput of one (needs 2 idle cores;
the fixture, whose images spend a larger share under the GIL, must reach 1.2x).
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
from captcha_edge import DEFAULT_MODEL, Recognizer
from captcha_edge.synthetic import synthetic_pngs
from captcha_edge.timing import medians, stage_times

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data" / "captcha_images_v2"
FIXTURES = ROOT / "tests" / "data"

MODELS: dict[str, Path] = {"fixture-int8": FIXTURES / "tiny_int8.tflite",
                           "fixture-float32": FIXTURES / "tiny_float32.tflite"}
if DEFAULT_MODEL.is_file():
    MODELS = {"default-int8": DEFAULT_MODEL, **MODELS}
#: The bundled twins (x86 serving picks default_dynamic): end to end only.
TWINS = {f"default-{f}": DEFAULT_MODEL.with_name(f"default_{f}.tflite")
         for f in ("float32", "dynamic") if DEFAULT_MODEL.with_name(f"default_{f}.tflite").is_file()}


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    if SHARED.is_dir():
        return [p.read_bytes() for p in sorted(SHARED.glob("*.png"))[:200]]
    return synthetic_pngs(64, (200, 50))


def _cycle(items: list[bytes]):
    state = {"i": 0}

    def nxt() -> bytes:
        state["i"] = (state["i"] + 1) % len(items)
        return items[state["i"]]

    return nxt


@pytest.mark.parametrize("name", list(MODELS) + list(TWINS))
@pytest.mark.benchmark(group="recognizer-e2e-1-thread")
def test_end_to_end_png_bytes(benchmark, pngs: list[bytes], name: str) -> None:
    """PNG bytes -> text with Recognizer.predict on one interpreter thread."""
    path = {**MODELS, **TWINS}[name]
    rec = Recognizer(path, num_threads=1)
    nxt = _cycle(pngs)
    text = benchmark(lambda: rec.predict(nxt()))
    assert isinstance(text, str)
    benchmark.extra_info["model_bytes"] = path.stat().st_size


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.benchmark(group="recognizer-bare-invoke")
def test_bare_invoke(benchmark, pngs: list[bytes], name: str) -> None:
    """interpreter.invoke() alone, input already set: the floor our pipeline is compared to."""
    rec = Recognizer(MODELS[name], num_threads=1)
    rec.infer(rec.preprocess(pngs[0]))
    interp = rec._interpreter()
    benchmark(interp.invoke)


def _stage_medians(rec: Recognizer, pngs: list[bytes], n: int) -> dict[str, float]:
    """Median seconds of each stage (captcha_edge.timing: the loop ``captcha-edge bench`` runs)."""
    return medians(stage_times(rec, pngs, n))


@pytest.mark.parametrize("name", [n for n in MODELS if "int8" in n])
@pytest.mark.benchmark(group="recognizer-overhead")
def test_overhead_vs_bare_invoke(benchmark, pngs: list[bytes], name: str) -> None:
    """Our work around invoke() as a share of the bare invoke time, int8, one thread."""
    rec = Recognizer(MODELS[name], num_threads=1)
    _stage_medians(rec, pngs, 20)  # warm up
    med = benchmark.pedantic(_stage_medians, args=(rec, pngs, 300), rounds=3, iterations=1)
    overhead = (med["preprocess"] + med["infer"] + med["ctc"] - med["invoke"]) / med["invoke"]
    ctc = med["ctc"] / med["invoke"]
    benchmark.extra_info.update({f"{k}_us": round(v * 1e6, 1) for k, v in med.items()})
    benchmark.extra_info.update(overhead=round(overhead, 3), ctc_share=round(ctc, 3))
    print(f"\n{name}: " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in med.items())
          + f"; overhead {overhead:.1%} of invoke, CTC {ctc:.1%}")
    if name == "default-int8":  # the targets are for the real model; the fixtures only report
        assert overhead <= 0.50, f"pipeline adds {overhead:.0%} to the bare invoke (target <= 50 %)"
        assert ctc <= 0.05, f"CTC decode is {ctc:.1%} of invoke (target <= 5 %)"


@pytest.mark.parametrize("name", [n for n in MODELS if "int8" in n])
@pytest.mark.benchmark(group="recognizer-throughput")
def test_two_workers_vs_one(benchmark, pngs: list[bytes], name: str) -> None:
    """predict_batch throughput: 2 workers (one interpreter each) against 1, same run."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPU cores")
    rec = Recognizer(MODELS[name], num_threads=1)
    batch = (pngs * (400 // len(pngs) + 1))[:400]
    rec.predict_batch(batch[:20], workers=2)  # make both interpreters

    def ratio() -> float:
        t0 = time.perf_counter()
        rec.predict_batch(batch, workers=1)
        t1 = time.perf_counter()
        rec.predict_batch(batch, workers=2)
        t2 = time.perf_counter()
        return (t1 - t0) / (t2 - t1)

    # One round's ratio swings with this VM's neighbours (1.1x-1.8x seen); the median of five
    # paired rounds does not, and each round still times 1 and 2 workers back to back.
    ratios: list[float] = []
    benchmark.pedantic(lambda: ratios.append(ratio()), rounds=5, iterations=1)
    speedup = statistics.median(ratios)
    benchmark.extra_info["speedup_2_workers"] = round(speedup, 3)
    benchmark.extra_info["speedup_rounds"] = [round(r, 3) for r in ratios]
    print(f"\n{name}: 2 workers = {speedup:.2f}x one (median of {[round(r, 2) for r in ratios]})")
    # The 1.6x target is the bundled model's. The fixture's invoke is shorter than PNG decoding,
    # so the share of each image spent in Python under the GIL caps what a second thread adds
    # (1.1x-1.95x per round, median ~1.5x here): for it, a second worker must still pay off.
    target = 1.6 if name.startswith("default") else 1.2
    assert speedup >= target, (f"2 workers give {speedup:.2f}x one thread "
                               f"(target >= {target}x)")
