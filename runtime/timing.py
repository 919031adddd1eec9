"""Stage timing of the Recognizer pipeline: what ``captcha-edge bench`` and the benchmarks measure.

One loop, :func:`stage_times`, times each image's stages back to back (decode + preprocess,
quantize + invoke + dequantize, CTC decode, then one bare ``invoke()`` on the input already set),
so noise on a busy machine hits every stage alike and the ratios between them stay meaningful.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np

from .preprocess import ImageSource
from .recognizer import Recognizer

#: Stage names in pipeline order; ``total`` is preprocess + infer + ctc of the same image.
STAGES = ("preprocess", "invoke", "infer", "ctc", "total")


def stage_times(rec: Recognizer, images: Sequence[ImageSource], n: int, *, warmup: int = 0,
                **decode_opts: Any) -> dict[str, list[float]]:
    """Seconds of every stage for ``n`` images (cycling through ``images``), one thread.

    Args:
        rec: the recognizer to time.
        images: inputs, used in turn.
        n: timed images.
        warmup: untimed full runs first (interpreter creation, caches).
        decode_opts: passed to :meth:`Recognizer.decode` (beam_width, allowed, ...).

    Returns:
        ``{stage: [seconds per image]}`` for every name in :data:`STAGES`.
    """
    if not images:
        raise ValueError("images must not be empty")
    for k in range(warmup):
        rec.decode(rec.infer(rec.preprocess(images[k % len(images)])), **decode_opts)
    interp = rec._interpreter()  # this thread's interpreter, the one infer() uses
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    clock = time.perf_counter
    for k in range(n):
        img = images[k % len(images)]
        t0 = clock()
        arr = rec.preprocess(img)
        t1 = clock()
        probs = rec.infer(arr)
        t2 = clock()
        rec.decode(probs, **decode_opts)
        t3 = clock()
        interp.invoke()  # the bare call, input already set: what our own work is measured against
        t4 = clock()
        times["preprocess"].append(t1 - t0)
        times["infer"].append(t2 - t1)
        times["ctc"].append(t3 - t2)
        times["total"].append(t3 - t0)
        times["invoke"].append(t4 - t3)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """Median seconds of each stage."""
    return {k: float(np.median(v)) if v else float("nan") for k, v in times.items()}


def percentiles_ms(xs: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ms, ...}`` of durations given in seconds (NaN when there are none)."""
    if not xs:
        return {f"p{q:g}": float("nan") for q in qs}
    arr = np.asarray(xs, dtype=np.float64) * 1000.0
    return {f"p{q:g}": round(float(np.percentile(arr, q)), 4) for q in qs}


def throughput(rec: Recognizer, images: Sequence[ImageSource], n: int, workers: int,
               **decode_opts: Any) -> float:
    """Images per second of ``rec.predict_batch`` over ``n`` images with ``workers`` threads."""
    batch = [images[k % len(images)] for k in range(n)]
    t0 = time.perf_counter()
    rec.predict_batch(batch, workers=workers, **decode_opts)
    return float(n / (time.perf_counter() - t0))


def bench_model(load: Callable[[Optional[int]], Recognizer], images: Sequence[ImageSource], *,
                n: int, warmup: int, threads: int, decode_opts: dict[str, Any]) -> dict[str, Any]:
    """Everything ``captcha-edge bench`` reports for one model.

    Args:
        load: builds the model's Recognizer with the given interpreter ``num_threads``
            (None: the backend's default).
        images: inputs, used in turn.
        n: timed runs per stage and images per throughput figure.
        warmup: untimed runs first.
        threads: workers / ``num_threads`` for the parallel throughput figures.
        decode_opts: decoding options (beam_width, allowed, min_length, max_length).
    """
    rec = load(None)
    stages = stage_times(rec, images, n, warmup=min(warmup, n), **decode_opts)
    med = medians(stages)
    tp1 = throughput(rec, images, n, 1, **decode_opts)
    tpn = throughput(rec, images, n, threads, **decode_opts) if threads > 1 else tp1
    tpi = throughput(load(threads), images, n, 1, **decode_opts) if threads > 1 else tp1
    return {
        "model": rec.name,
        "format": rec.metadata.get("format"),
        "size": rec.model_size,
        "backend": rec.backend,
        "stages_ms": {k: percentiles_ms(stages[k]) for k in STAGES},
        "overhead_vs_invoke": round((med["total"] - med["invoke"]) / med["invoke"], 4),
        "ctc_share_of_invoke": round(med["ctc"] / med["invoke"], 4),
        "throughput_per_s": {"1 thread": round(tp1, 1),
                             f"{threads} workers": round(tpn, 1),
                             f"num_threads={threads}": round(tpi, 1)},
        "speedup_workers": round(tpn / tp1, 3),
        "speedup_num_threads": round(tpi / tp1, 3),
    }
