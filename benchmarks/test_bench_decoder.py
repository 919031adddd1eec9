"""Decoder speed: Cython vs the Python twin vs outside references, one group per case.

Run:    pytest benchmarks/test_bench_decoder.py --benchmark-only
Table:  python scripts/bench_decoder_table.py          (runs this file, prints µs/sample + ratios)
Smoke:  pytest benchmarks/test_bench_decoder.py --benchmark-disable -k "not tf"   (< 1 min)

Every test builds its inputs outside the timed callable (see conftest.py) and checks the result
after timing. ``extra_info`` carries what the table script needs (impl, op, case, width, mode,
samples per call).
"""
from __future__ import annotations

import itertools
import os
from typing import Any, Callable

import numpy as np
import pytest
from captcha_edge.decoder import (
    DEFAULT_PRUNE,
    ENGINES,
    beam_search,
    decode_beam,
    decode_beam_batch,
    decode_greedy,
    decode_greedy_batch,
)
from conftest import BATCH, CASES, Case

IMPLS = list(ENGINES)  # "python", and "cython" when built
WIDTHS = (1, 5, 10, 25)
MODES = {"exact": None, "pruned": DEFAULT_PRUNE}
SMALL = [n for n in CASES if n.startswith("T50-")]
BIG = [n for n in CASES if n.startswith("T200-")]

try:
    import fast_ctc_decode
except ImportError:  # optional outside reference (the [bench] extra)
    fast_ctc_decode = None


def _run(benchmark: Any, fn: Callable[[], Any], impl: str, rounds: int | None = None) -> Any:
    """Time ``fn``; the slow Python twin gets a fixed, small number of rounds."""
    if impl == "python" or rounds is not None:
        return benchmark.pedantic(fn, rounds=rounds or 3, iterations=1, warmup_rounds=0)
    return benchmark(fn)


def _info(benchmark: Any, impl: str, op: str, case: str, width: int = 0, mode: str = "",
          per_call: int = 1) -> None:
    benchmark.extra_info.update(impl=impl, op=op, case=case, width=width, mode=mode,
                                per_call=per_call, load1=os.getloadavg()[0])


def numpy_greedy(probs: np.ndarray, alphabet: str, blank: int) -> str:
    """The numpy + itertools.groupby baseline (fast-ctc-decode's decode_ctc_greedy_py)."""
    best = np.argmax(probs, axis=1)
    return "".join(alphabet[k] for k, _ in itertools.groupby(best.tolist()) if k != blank)


# ---------------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("impl", IMPLS + ["numpy", "fast-ctc-decode"])
@pytest.mark.parametrize("name", list(CASES))
def test_greedy(benchmark: Any, name: str, impl: str) -> None:
    """decode_greedy on one (T, C) matrix, through the public API (validation included)."""
    c: Case = CASES[name]
    benchmark.group = f"greedy-{name}"
    _info(benchmark, impl, "greedy", name)
    expected = numpy_greedy(c.probs, c.alphabet, len(c.alphabet))
    if impl == "numpy":
        got = benchmark(numpy_greedy, c.probs, c.alphabet, len(c.alphabet))
    elif impl == "fast-ctc-decode":
        if fast_ctc_decode is None:
            pytest.skip("fast-ctc-decode not installed")
        got = benchmark(fast_ctc_decode.viterbi_search, c.probs_blank_first,
                        c.alphabet_blank_first)[0]
    else:
        got = _run(benchmark, lambda: decode_greedy(c.probs, c.alphabet, engine=impl), impl,
                   rounds=20 if impl == "python" else None)
    assert got == expected


@pytest.mark.skipif("cython" not in ENGINES, reason="Cython engine not built")
@pytest.mark.parametrize("name", ["T50-C20-peaky", "T50-C20-flat"])
def test_greedy_kernel_only(benchmark: Any, name: str) -> None:
    """The Cython greedy kernel alone on an already validated array: labels, no text.

    The difference to test_greedy[cython] is the public call's cost: validation (including a
    NaN/inf/negative scan of every value), the alphabet lookup and joining the text.
    """
    c = CASES[name]
    kernel = ENGINES["cython"]
    benchmark.group = f"greedy-{name}"
    _info(benchmark, "cython-kernel-only", "greedy", name)
    blank = len(c.alphabet)
    labels = benchmark(kernel.greedy, c.probs, blank, False)
    assert "".join(c.alphabet[i] for i in labels) == numpy_greedy(c.probs, c.alphabet, blank)


# ------------------------------------------------------------------------------------ beam


def _beam_params() -> list[Any]:
    out = []
    for name, width, mode, impl in itertools.product(CASES, WIDTHS, MODES, IMPLS):
        # The Python twin takes ~0.5 s per T=200 C=100 call: measure it at width 10 only.
        if impl == "python" and name in BIG and width != 10:
            continue
        out.append(pytest.param(name, width, mode, impl))
    return out


_exact_top1: dict[tuple[str, int], str] = {}


def _reference(c: Case, width: int) -> str:
    """Exact-search top-1 (Cython when built), computed once per case and width."""
    key = (c.name, width)
    if key not in _exact_top1:
        _exact_top1[key] = decode_beam(c.probs, c.alphabet, beam_width=width, prune=None)
    return _exact_top1[key]


@pytest.mark.parametrize("name, width, mode, impl", _beam_params())
def test_beam(benchmark: Any, name: str, width: int, mode: str, impl: str) -> None:
    """decode_beam (prefix beam search, top-1 text) on one (T, C) matrix, public API."""
    c = CASES[name]
    benchmark.group = f"beam{width}-{mode}-{name}"
    _info(benchmark, impl, "beam", name, width, mode)
    prune = MODES[mode]
    got = _run(benchmark, lambda: decode_beam(c.probs, c.alphabet, beam_width=width,
                                              prune=prune, engine=impl), impl)
    if mode == "exact" or "peaky" in name:
        # Engines agree; on model-like input pruning keeps the exact top-1.
        assert got == _reference(c, width)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(CASES))
def test_beam_fast_ctc_decode(benchmark: Any, name: str, width: int, mode: str) -> None:
    """fast-ctc-decode's beam_search (Rust), blank first; cut threshold = our prune."""
    if fast_ctc_decode is None:
        pytest.skip("fast-ctc-decode not installed")
    c = CASES[name]
    benchmark.group = f"beam{width}-{mode}-{name}"
    _info(benchmark, "fast-ctc-decode", "beam", name, width, mode)
    cut = MODES[mode] or 0.0
    got = _run(benchmark, lambda: fast_ctc_decode.beam_search(
        c.probs_blank_first, c.alphabet_blank_first, beam_size=width, beam_cut_threshold=cut),
        "fast-ctc-decode", rounds=3 if name in BIG else None)[0]
    if "peaky" in name:
        assert got == _reference(c, width)


@pytest.mark.tf
@pytest.mark.parametrize("name", ["T50-C20-peaky", "T50-C20-flat", "T200-C100-flat"])
def test_beam_tf(benchmark: Any, name: str) -> None:
    """tf.nn.ctc_beam_search_decoder, width 10, exact, batched; reported per sample."""
    tf = pytest.importorskip("tensorflow")
    c = CASES[name]
    n = 8 if name in BIG else BATCH
    logp = tf.constant(np.log(np.maximum(c.batch[:n], 1e-30)).transpose(1, 0, 2))  # (T, N, C)
    lengths = tf.fill([n], logp.shape[0])
    benchmark.group = f"beam10-exact-{name}"
    _info(benchmark, "tf", "beam", name, 10, "exact", per_call=n)

    def run() -> Any:
        return tf.nn.ctc_beam_search_decoder(logp, lengths, beam_width=10, top_paths=1)

    run()  # trace/warm up outside the timing
    decoded, _ = _run(benchmark, run, "tf", rounds=3 if name in BIG else 10)
    dense = tf.sparse.to_dense(decoded[0], default_value=-1).numpy()
    texts = ["".join(c.alphabet[k] for k in row if k >= 0) for row in dense]
    if "peaky" in name:
        ours = decode_beam_batch(c.batch[:n], c.alphabet, beam_width=10, prune=None)
        assert texts == ours


# ---------------------------------------------------------------------- batch vs per-sample


@pytest.mark.parametrize(
    "how", ["loop", "batch-1thread", "batch-2threads"]
)
@pytest.mark.parametrize("op", ["greedy", "beam10-pruned", "beam10-exact"])
def test_batch_vs_per_sample(benchmark: Any, op: str, how: str) -> None:
    """A batch of 64 T=50 C=20 peaky matrices: a Python loop of single calls vs one *_batch
    call (the Cython kernel releases the GIL; 2 threads split the batch). Default engine."""
    c = CASES["T50-C20-peaky"]
    benchmark.group = f"batch-{op}-T50-C20-peaky"
    impl = "cython" if "cython" in ENGINES else "python"
    _info(benchmark, f"{impl}-{how}", op, c.name, 10 if "beam" in op else 0,
          op.split("-")[-1] if "beam" in op else "", per_call=BATCH)
    prune = MODES.get(op.split("-")[-1])
    if op == "greedy":
        single: Callable[[np.ndarray], str] = lambda x: decode_greedy(x, c.alphabet)
        batched: Callable[[int], list[str]] = lambda k: decode_greedy_batch(
            c.batch, c.alphabet, num_threads=k)
    else:
        single = lambda x: decode_beam(x, c.alphabet, beam_width=10, prune=prune)
        batched = lambda k: decode_beam_batch(c.batch, c.alphabet, beam_width=10,
                                              prune=prune, num_threads=k)
    if how == "loop":
        got = _run(benchmark, lambda: [single(x) for x in c.batch], impl)
    else:
        k = 1 if how == "batch-1thread" else 2
        got = _run(benchmark, lambda: batched(k), impl)
    assert got == [single(x) for x in c.batch]


def test_beam_search_with_confidences(benchmark: Any) -> None:
    """beam_search (all 10 beams with per-char confidences) vs decode_beam's text only."""
    c = CASES["T50-C20-peaky"]
    impl = "cython" if "cython" in ENGINES else "python"
    benchmark.group = "beam10-pruned-T50-C20-peaky"
    _info(benchmark, f"{impl}-beam_search", "beam", c.name, 10, "pruned")
    beams = _run(benchmark, lambda: beam_search(c.probs, c.alphabet, beam_width=10), impl)
    assert beams[0].text == _reference(c, 10)
    assert all(len(b.char_confidences) == len(b.text) for b in beams)
