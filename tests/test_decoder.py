"""captcha_edge.decoder: one suite, run against every engine through the ``engine`` fixture."""
from __future__ import annotations

import itertools
import math
import os
import re
import threading
from collections import defaultdict

import numpy as np
import pytest
from captcha_edge.decoder import (
    DEFAULT_BEAM_WIDTH,
    ENGINES,
    MAX_BEAM_WIDTH,
    Beam,
    DecodeOptions,
    beam_search,
    beam_search_batch,
    decode_beam,
    decode_beam_batch,
    decode_greedy,
    decode_greedy_batch,
    greedy_search,
    greedy_search_batch,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


# ------------------------------------------------------------------------------- helpers


def from_path(path: str, alphabet: str, hi: float = 0.97) -> np.ndarray:
    """(T, C) probabilities whose best path spells ``path`` frame by frame; '-' is the blank
    (last class). The winning class gets ``hi``, the rest share ``1 - hi``."""
    C = len(alphabet) + 1
    p = np.full((len(path), C), (1.0 - hi) / (C - 1), dtype=np.float32)
    for t, ch in enumerate(path):
        p[t, C - 1 if ch == "-" else alphabet.index(ch)] = hi
    return p


def peaky(rng: np.random.Generator, T: int, C: int, blank_frac: float = 0.6,
          sharp: float = 8.0) -> np.ndarray:
    """Model-like softmax output: one clear winner per frame, mostly the blank (last class)."""
    logits = rng.normal(size=(T, C))
    win = np.where(rng.random(T) < blank_frac, C - 1, rng.integers(0, C - 1, T))
    logits[np.arange(T), win] += sharp
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    """CTC collapse: merge repeats, drop blanks."""
    return tuple(c for i, c in enumerate(path) if c != blank and (i == 0 or path[i - 1] != c))


def oracle(probs: np.ndarray, blank: int) -> dict[tuple[int, ...], float]:
    """Exact probability of every labelling: sum over all C**T alignments (float64)."""
    T, C = probs.shape
    p = probs.astype(np.float64)
    scores: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(C), repeat=T):
        scores[collapse(path, blank)] += math.prod(p[t, c] for t, c in enumerate(path))
    return {k: v for k, v in scores.items() if v > 0}


def n_prefixes(T: int, C: int) -> int:
    """How many labellings of length <= T exist over C - 1 symbols (a beam that keeps all)."""
    return sum((C - 1) ** k for k in range(T + 1))


# Shapes small enough for the oracle (C**T paths) and for a beam that keeps every prefix
# (n_prefixes(T, C) <= MAX_BEAM_WIDTH): T <= 7 with C <= 3, T <= 5 with C = 4.
small_probs = st.integers(2, 4).flatmap(
    lambda C: st.integers(1, 7 if C < 4 else 5).flatmap(
        lambda T: hnp.arrays(
            np.float32, (T, C),
            elements=st.floats(0.0, 1.0, width=32).map(lambda v: 0.0 if v < 0.05 else v),
        )
    )
).filter(lambda a: bool((a.sum(axis=1) > 0).all()))


# ----------------------------------------------------------------------- hand-built cases


@pytest.mark.parametrize(
    "path, text",
    [
        ("a-ab", "aab"),          # a blank separates the two a's
        ("aaabbb", "ab"),         # repeats merge
        ("aa-aa", "aa"),
        ("------", ""),           # all blank
        ("-c-a--t-", "cat"),
        ("x", "x"),
        ("z9z9", "z9z9"),
    ],
)
def test_hand_built_paths_decode_exactly(engine: str, path: str, text: str) -> None:
    p = from_path(path, ALPHABET)
    assert decode_greedy(p, ALPHABET, engine=engine) == text
    assert decode_beam(p, ALPHABET, beam_width=5, engine=engine) == text
    assert decode_beam(p, ALPHABET, beam_width=5, prune=None, engine=engine) == text
    assert greedy_search(p, ALPHABET, engine=engine).text == text


def test_beam_sums_alignments_where_greedy_cannot(engine: str) -> None:
    # Two frames, P(a) = 0.4, P(blank) = 0.6 each. The best path is blank-blank (""), 0.36, but
    # "a" has three alignments (a-, -a, aa) summing to 0.64.
    p = np.array([[0.4, 0.6], [0.4, 0.6]], dtype=np.float32)
    assert decode_greedy(p, "a", engine=engine) == ""
    beams = beam_search(p, "a", beam_width=4, prune=None, engine=engine)
    assert [b.text for b in beams] == ["a", ""]
    p64 = p.astype(np.float64)
    a_alignments = p64[0, 0] * p64[1, 1] + p64[0, 1] * p64[1, 0] + p64[0, 0] * p64[1, 0]
    assert beams[0].log_prob == pytest.approx(math.log(a_alignments), abs=1e-9)
    assert beams[1].log_prob == pytest.approx(math.log(p64[0, 1] * p64[1, 1]), abs=1e-9)
    assert beams[0].confidence == pytest.approx(0.64, abs=1e-6)


def test_repeat_needs_blank_between(engine: str) -> None:
    # a a a: only "a" is reachable with meaningful mass; a - a: "aa" wins.
    assert decode_beam(from_path("aaa", "ab"), "ab", prune=None, engine=engine) == "a"
    assert decode_beam(from_path("a-a", "ab"), "ab", prune=None, engine=engine) == "aa"


def test_blank_position_and_multichar_symbols(engine: str) -> None:
    p_last = from_path("-ab-b", "abc")
    p_first = np.ascontiguousarray(np.roll(p_last, 1, axis=1))  # blank moved to class 0
    for kw in ({"blank": -1, "probs": p_last}, {"blank": 3, "probs": p_last},
               {"blank": 0, "probs": p_first}):
        probs = kw.pop("probs")
        assert decode_greedy(probs, "abc", engine=engine, **kw) == "abb"
        assert decode_beam(probs, "abc", engine=engine, **kw) == "abb"
    vocab = ["[UNK]", "x", "yy"]
    assert decode_greedy(from_path("-ab-b", "abc"), vocab, engine=engine) == "[UNK]xx"


def test_greedy_details(engine: str) -> None:
    p = np.array(
        [[0.7, 0.1, 0.2], [0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]], np.float32
    )
    beam = greedy_search(p, "ab", engine=engine)
    assert beam == Beam("ab", (0, 1), beam.log_prob, beam.char_confidences, beam.confidence)
    p64 = p.astype(np.float64)
    assert beam.log_prob == pytest.approx(math.log(p64[0, 0] * p64[1, 0] * p64[2, 2]
                                                   * p64[3, 1]), abs=1e-9)
    assert beam.char_confidences == pytest.approx((p64[1, 0], p64[3, 1]))
    assert beam.confidence == pytest.approx(math.exp(beam.log_prob))


def test_beam_char_confidences_follow_best_alignment(engine: str) -> None:
    p = from_path("-aa-bb-", "ab", hi=0.9)
    p[2, 0] = 0.95  # the a-run's best frame
    p[2] /= p[2].sum()
    best = beam_search(p, "ab", prune=None, engine=engine)[0]
    assert best.text == "ab"
    assert best.char_confidences == pytest.approx((p[2, 0], 0.9), abs=1e-6)
    assert 0.0 < best.confidence <= 1.0
    assert best.confidence == pytest.approx(math.exp(best.log_prob))


# ---------------------------------------------------------------------------- exact oracle


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(probs=small_probs)
def test_unpruned_wide_beam_matches_brute_force(engine: str, probs: np.ndarray) -> None:
    T, C = probs.shape
    blank = C - 1
    truth = oracle(probs, blank)
    w = n_prefixes(T, C)
    beams = beam_search(probs, "abc"[: C - 1], beam_width=w, prune=None, engine=engine)
    # Every labelling with non-zero probability comes back, each with its exact log-prob.
    assert {b.labels for b in beams} == set(truth)
    for b in beams:
        assert b.log_prob == pytest.approx(math.log(truth[b.labels]), abs=1e-5)
    assert [b.log_prob for b in beams] == sorted((b.log_prob for b in beams), reverse=True)
    assert math.log(truth[beams[0].labels]) == pytest.approx(
        math.log(max(truth.values())), abs=1e-9
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(probs=small_probs, data=st.data())
def test_constrained_search_matches_filtered_oracle(
    engine: str, probs: np.ndarray, data: st.DataObject
) -> None:
    T, C = probs.shape
    blank = C - 1
    syms = "abc"[: C - 1]
    allowed = data.draw(st.sets(st.sampled_from(range(C - 1)), min_size=1), label="allowed")
    lo = data.draw(st.integers(0, T), label="min_length")
    hi = data.draw(st.one_of(st.none(), st.integers(lo, T)), label="max_length")
    truth = {
        k: v for k, v in oracle(probs, blank).items()
        if set(k) <= allowed and len(k) >= lo and (hi is None or len(k) <= hi)
    }
    beams = beam_search(probs, syms, beam_width=n_prefixes(T, C), prune=None,
                        allowed=sorted(allowed), min_length=lo, max_length=hi, engine=engine)
    assert {b.labels for b in beams} == set(truth)
    for b in beams:
        assert b.log_prob == pytest.approx(math.log(truth[b.labels]), abs=1e-5)
    text = decode_beam(probs, syms, beam_width=n_prefixes(T, C), prune=None,
                       allowed=sorted(allowed), min_length=lo, max_length=hi, engine=engine)
    assert text == (beams[0].text if beams else "")


# ------------------------------------------------------------------------ constraints, prune


def test_constraints_honoured_on_model_like_inputs(engine: str) -> None:
    rng = np.random.default_rng(7)
    syms = ALPHABET[:19]
    for _ in range(10):
        p = peaky(rng, 30, 20)
        free = decode_beam(p, syms, engine=engine)
        allowed = "abcdef"
        for b in beam_search(p, syms, allowed=allowed, engine=engine):
            assert set(b.text) <= set(allowed)
        want = len(free) + 2
        for b in beam_search(p, syms, min_length=want, engine=engine):
            assert len(b.text) >= want
        if free:
            cap = max(0, len(free) - 1)
            beams = beam_search(p, syms, max_length=cap, engine=engine)
            assert beams and all(len(b.text) <= cap for b in beams)


def test_min_length_forces_a_longer_reading(engine: str) -> None:
    # "ab" is clearly best, but a faint 'c' sits in the middle; with min_length=3 the search
    # must find "acb" rather than returning nothing or a short text.
    p = from_path("-a---b-", "abc", hi=0.9)
    p[3] = [0.02, 0.02, 0.3, 0.66]
    assert decode_beam(p, "abc", engine=engine) == "ab"
    assert decode_beam(p, "abc", min_length=3, engine=engine) == "acb"
    assert decode_beam(p, "abc", max_length=1, engine=engine) in {"a", "b"}
    assert decode_beam(p, "abc", allowed="ac", engine=engine) == "ac"
    assert decode_beam(p, "abc", allowed=[0, 2], engine=engine) == "ac"


def test_impossible_constraints_give_no_beams(engine: str) -> None:
    # One allowed symbol repeated 3 times needs 5 frames; T = 4.
    p = from_path("a-a-", "ab", hi=0.9)
    assert beam_search(p, "ab", allowed="a", min_length=3, prune=None, engine=engine) == []
    assert decode_beam(p, "ab", allowed="a", min_length=3, prune=None, engine=engine) == ""


@pytest.mark.parametrize("T, C", [(50, 20), (30, 37), (80, 63)])
def test_default_pruning_keeps_exact_top1_on_peaky_inputs(engine: str, T: int, C: int) -> None:
    rng = np.random.default_rng(T * C)
    syms = (ALPHABET * 2)[: C - 1]
    for _ in range(8 if engine == "python" else 40):
        p = peaky(rng, T, C)
        exact = beam_search(p, syms, beam_width=10, prune=None, top_k=1, engine=engine)[0]
        pruned = beam_search(p, syms, beam_width=10, top_k=1, engine=engine)[0]
        assert pruned.labels == exact.labels
        # Pruning drops low-probability alignments (and a 10-wide beam is itself approximate,
        # so the pruned score can come out either side), but only by a little on peaky input.
        assert pruned.log_prob == pytest.approx(exact.log_prob, abs=0.05)


def best_first_walk(probs: np.ndarray, blank: int) -> tuple[tuple[int, ...], float]:
    """A width-1 prefix search written out: one prefix with its log P(ends in blank) and log
    P(ends in its last label); at each frame keep the most probable of "stay" and the one-label
    extensions (ties: stay first, then the lowest class, as the kernels rank creation order)."""
    lp = np.log(probs.astype(np.float64))
    prefix: tuple[int, ...] = ()
    pb, pnb = 0.0, -math.inf
    for row in lp:
        total = np.logaddexp(pb, pnb)
        last = prefix[-1] if prefix else -1
        best = (prefix, total + row[blank], pnb + row[last] if prefix else -math.inf)
        for c in range(len(row)):
            if c == blank:
                continue
            ext = (prefix + (c,), -math.inf, (pb if c == last else total) + row[c])
            if np.logaddexp(ext[1], ext[2]) > np.logaddexp(best[1], best[2]):
                best = ext
        prefix, pb, pnb = best
    return prefix, float(np.logaddexp(pb, pnb))


def test_beam_width_one_equals_a_best_first_walk(engine: str) -> None:
    rng = np.random.default_rng(3)
    differs_from_greedy = 0
    for i in range(20):
        # Peaky (model-like) and flat inputs; on flat ones the walk, which sums a prefix's two
        # alignments, often reads differently from the best path.
        p = peaky(rng, 40, 12) if i % 2 else rng.dirichlet(np.ones(5), size=12).astype(np.float32)
        syms = ALPHABET[: p.shape[1] - 1]
        labels, log_prob = best_first_walk(p, p.shape[1] - 1)
        (b1,) = beam_search(p, syms, beam_width=1, prune=None, engine=engine)
        assert b1.labels == labels
        assert b1.log_prob == pytest.approx(log_prob, abs=1e-6)
        assert decode_beam(p, syms, beam_width=1, prune=None, engine=engine) == b1.text
        differs_from_greedy += greedy_search(p, syms, engine=engine).labels != labels
    assert differs_from_greedy > 0  # the walk is not just the best path by another name


# ------------------------------------------------------------------- input forms and batches


def test_log_input_and_logits_give_the_same_answers(engine: str) -> None:
    rng = np.random.default_rng(11)
    syms = ALPHABET[:19]
    p = peaky(rng, 40, 20)
    ref = beam_search(p, syms, top_k=3, engine=engine)
    logits = np.log(p.astype(np.float64)) + rng.normal(size=(40, 1)) * 5  # any per-frame shift
    for x in (np.log(p), logits):
        got = beam_search(x, syms, top_k=3, log_input=True, engine=engine)
        assert [b.text for b in got] == [b.text for b in ref]
        for g, r in zip(got, ref):
            assert g.log_prob == pytest.approx(r.log_prob, abs=1e-4)
            assert g.char_confidences == pytest.approx(r.char_confidences, abs=1e-5)
        assert decode_greedy(x, syms, log_input=True, engine=engine) == decode_greedy(p, syms)
        g = greedy_search(x, syms, log_input=True, engine=engine)
        assert g.log_prob == pytest.approx(greedy_search(p, syms).log_prob, abs=1e-4)


def test_float64_and_non_contiguous_inputs(engine: str) -> None:
    rng = np.random.default_rng(5)
    p = peaky(rng, 30, 20)
    syms = ALPHABET[:19]
    ref_g = greedy_search(p, syms, engine=engine)
    ref_b = beam_search(p, syms, engine=engine)
    wide = np.zeros((30, 40), np.float32)
    wide[:, ::2] = p
    variants = [p.astype(np.float64), np.asfortranarray(p), wide[:, ::2], p.tolist()]
    for x in variants:
        assert greedy_search(x, syms, engine=engine) == ref_g
        assert beam_search(x, syms, engine=engine) == ref_b
    ro = p.copy()
    ro.setflags(write=False)  # e.g. an interpreter's output buffer
    assert beam_search(ro, syms, engine=engine) == ref_b


@pytest.mark.parametrize("num_threads", [1, 2, 3])
def test_batches_match_per_sample(engine: str, num_threads: int) -> None:
    rng = np.random.default_rng(num_threads)
    syms = ALPHABET[:19]
    batch = np.stack([peaky(rng, 25, 20) for _ in range(7)])
    kw = {"beam_width": 5, "min_length": 1}
    assert decode_greedy_batch(batch, syms, engine=engine, num_threads=num_threads) == [
        decode_greedy(x, syms) for x in batch
    ]
    assert greedy_search_batch(batch, syms, engine=engine, num_threads=num_threads) == [
        greedy_search(x, syms) for x in batch
    ]
    assert beam_search_batch(batch, syms, engine=engine, num_threads=num_threads, **kw) == [
        beam_search(x, syms, engine=engine, **kw) for x in batch
    ]
    assert decode_beam_batch(batch, syms, engine=engine, num_threads=num_threads, **kw) == [
        decode_beam(x, syms, engine=engine, **kw) for x in batch
    ]
    empty = np.zeros((0, 25, 20), np.float32)
    assert decode_greedy_batch(empty, syms, engine=engine) == []
    assert beam_search_batch(empty, syms, engine=engine) == []
    assert greedy_search_batch(empty, syms, engine=engine, num_threads=2) == []
    assert decode_beam_batch(empty, syms, engine=engine, num_threads=2) == []


@pytest.fixture
def started_threads(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Every thread started while the test runs (threading.Thread replaced by a recorder)."""
    started: list[threading.Thread] = []

    class Recorded(threading.Thread):
        def start(self) -> None:
            started.append(self)
            super().start()

    monkeypatch.setattr(threading, "Thread", Recorded)
    return started


def _large_batch() -> np.ndarray:
    # 1400 x 20 x 20 = 560k values: enough for two threads of GREEDY_VALUES_PER_THREAD.
    rng = np.random.default_rng(9)
    batch = rng.random((1400, 20, 20), dtype=np.float32)
    batch[rng.random((1400, 20)) < 0.5, -1] = 2.0  # plenty of blanks
    return batch


def test_large_greedy_batch_is_split_over_threads(
    engine: str, started_threads: list[threading.Thread]
) -> None:
    if engine == "python":
        pytest.skip("the Python engine holds the GIL, so it decodes a batch in the calling "
                    "thread (test_python_engine_batches_run_in_the_calling_thread)")
    batch, syms = _large_batch(), ALPHABET[:19]
    expected = [decode_greedy(x, syms, engine=engine) for x in batch]
    details = [greedy_search(x, syms, engine=engine) for x in batch[:300]]
    assert started_threads == []
    assert decode_greedy_batch(batch, syms, engine=engine, num_threads=2) == expected
    assert len(started_threads) == 1  # the calling thread decodes the other half
    # 8 asked, but each thread needs GREEDY_VALUES_PER_THREAD values: still two halves.
    assert decode_greedy_batch(batch, syms, engine=engine, num_threads=8) == expected
    assert len(started_threads) == 2
    assert greedy_search_batch(batch, syms, engine=engine, num_threads=2)[:300] == details
    assert len(started_threads) == 3
    # A small batch is not worth a thread.
    assert decode_greedy_batch(batch[:10], syms, engine=engine, num_threads=8) == expected[:10]
    assert len(started_threads) == 3


def test_python_engine_batches_run_in_the_calling_thread(
    engine: str, started_threads: list[threading.Thread]
) -> None:
    if engine != "python":
        pytest.skip("only the Python engine runs batches serially")
    batch, syms = _large_batch()[:300], ALPHABET[:19]
    expected = [decode_greedy(x, syms, engine=engine) for x in batch]
    assert decode_greedy_batch(batch, syms, engine=engine, num_threads=4) == expected
    assert decode_beam_batch(batch[:20], syms, engine=engine, num_threads=4) == [
        decode_beam(x, syms, engine=engine) for x in batch[:20]]
    assert started_threads == []


def test_confidences_are_probabilities(engine: str) -> None:
    rng = np.random.default_rng(2)
    p = peaky(rng, 50, 20, sharp=3.0)
    for b in beam_search(p, ALPHABET[:19], engine=engine) + [
            greedy_search(p, ALPHABET[:19], engine=engine)]:
        assert len(b.char_confidences) == len(b.text) == len(b.labels)
        assert all(0.0 < c <= 1.0 for c in b.char_confidences)
        assert 0.0 <= b.confidence <= 1.0
        assert b.confidence == pytest.approx(math.exp(b.log_prob))


# ------------------------------------------------------------------------------ bad input

GOOD = from_path("-ab-", "abc")


@pytest.mark.parametrize(
    "call, kwargs, exc, match",
    [
        (decode_greedy, {"probs": GOOD[None]}, ValueError, r"probs must be 2-D .*\(1, 4, 4\)"),
        (decode_greedy, {"probs": GOOD[0]}, ValueError, r"probs must be 2-D"),
        (decode_greedy_batch, {"probs": GOOD}, ValueError, r"probs must be 3-D"),
        (decode_greedy, {"probs": GOOD[:, :3]}, ValueError,
         r"alphabet has 3 symbols but probs has 3 classes"),
        (decode_greedy, {"probs": np.zeros((0, 4), np.float32)}, ValueError, r"T=0"),
        (decode_greedy, {"probs": np.where(GOOD == GOOD[0, 0], np.nan, GOOD)}, ValueError,
         r"probs contains NaN"),
        (decode_greedy, {"probs": np.where(GOOD == GOOD[0, 0], np.inf, GOOD)}, ValueError,
         r"probs contains inf"),
        (decode_beam, {"probs": GOOD - 0.5}, ValueError, r"probs contains negative values"),
        (decode_greedy, {"probs": (GOOD * 255).astype(np.uint8)}, TypeError,
         r"probs must be a float32 or float64 array; got dtype uint8"),
        (decode_greedy, {"probs": "abc"}, TypeError, r"probs must be a numpy array"),
        (decode_greedy, {"alphabet": 123}, TypeError, r"alphabet must be a str"),
        (decode_greedy, {"alphabet": ["a", 1, "c"]}, TypeError, r"alphabet\[1\] must be a str"),
        (decode_greedy, {"blank": 4}, ValueError, r"blank must be in \[-4, 3\]"),
        (decode_greedy, {"blank": 1.0}, TypeError, r"blank must be an int"),
        (decode_beam, {"beam_width": 0}, ValueError, r"beam_width must be >= 1; got 0"),
        (decode_beam, {"beam_width": 2.5}, TypeError, r"beam_width must be an int"),
        (decode_beam, {"beam_width": MAX_BEAM_WIDTH + 1}, ValueError,
         r"^beam_width must be <= MAX_BEAM_WIDTH \(1024\); got 1025$"),
        (beam_search_batch, {"probs": GOOD[None], "beam_width": 10**7}, ValueError,
         r"^beam_width must be <= MAX_BEAM_WIDTH"),
        (beam_search, {"beam_width": 3, "top_k": 4}, ValueError, r"top_k must be <= beam_width"),
        (beam_search, {"top_k": 0}, ValueError, r"top_k must be >= 1"),
        (decode_beam, {"min_length": 5}, ValueError, r"min_length must be <= T=4, .*; got 5"),
        (decode_beam, {"min_length": -1}, ValueError, r"min_length must be >= 0"),
        (decode_beam, {"min_length": 2, "max_length": 1}, ValueError,
         r"max_length must be >= min_length"),
        (decode_beam, {"prune": 1.5}, ValueError, r"prune must be in \[0, 1\)"),
        (decode_beam, {"prune": "high"}, TypeError, r"prune must be a float"),
        (decode_beam, {"allowed": "az"}, ValueError,
         r"^allowed contains 'z', which the alphabet 'abc' cannot emit$"),
        (decode_beam, {"allowed": ["a", "yy", "z"]}, ValueError,
         r"^allowed contains \['yy', 'z'\], which the alphabet 'abc' cannot emit$"),
        (decode_beam, {"allowed": [3]}, ValueError, r"allowed contains the blank index 3"),
        (decode_beam, {"allowed": [7]}, ValueError, r"allowed contains class index 7"),
        (decode_beam, {"allowed": ""}, ValueError, r"allowed is empty"),
        (decode_beam, {"allowed": 5}, TypeError, r"allowed must be"),
        (decode_beam_batch, {"probs": GOOD[None], "num_threads": 0}, ValueError,
         r"num_threads must be >= 1"),
        (decode_greedy, {"log_input": True, "probs": np.full((2, 4), -np.inf)}, ValueError,
         r"every class is -inf"),
        (decode_greedy, {"log_input": True, "probs": np.full((2, 4), np.nan)}, ValueError,
         r"probs contains NaN"),
        (decode_greedy, {"engine_override": "rust"}, ValueError, r"unknown engine 'rust'"),
    ],
)
def test_bad_input_names_the_parameter(engine: str, call, kwargs, exc, match) -> None:
    kw = {"probs": GOOD, "alphabet": "abc", "engine": engine, **kwargs}
    if "engine_override" in kw:
        kw["engine"] = kw.pop("engine_override")
    probs = kw.pop("probs")
    alphabet = kw.pop("alphabet")
    with pytest.raises(exc, match=match):
        call(probs, alphabet, **kw)


# ------------------------------------------------------------- hostile values, fuzzed (issue 10)

F32_TINY = float(np.finfo(np.float32).smallest_normal)
DENORMAL = st.floats(0.0, F32_TINY, width=32, allow_subnormal=True, exclude_max=True)
HOSTILE = st.one_of(
    st.floats(0.0, 1.0, width=32),
    DENORMAL,
    st.sampled_from([0.0, -0.0, 1.0, math.nan, math.inf, -math.inf]),
    st.floats(-1.0, -F32_TINY, width=32),
)


@st.composite
def hostile_probs(draw: st.DrawFn) -> np.ndarray:
    """Tiny (T, C) inputs mixing probabilities with NaN, +-inf, negatives, -0.0, denormals and
    all-zero frames; the first frames are drawn from the valid values only half the time."""
    C = draw(st.integers(2, 3))
    T = draw(st.integers(1, 4))
    elements = draw(st.sampled_from([HOSTILE, st.one_of(st.floats(0.0, 1.0, width=32),
                                                        DENORMAL, st.just(-0.0))]))
    x = draw(hnp.arrays(np.float32, (T, C), elements=elements))
    if draw(st.booleans()):
        x[draw(st.integers(0, T - 1))] = 0.0  # a frame where everything is impossible
    return x


def expected_error(x: np.ndarray) -> str | None:
    """The validator's message for probability input ``x`` (None: valid), worked out here."""
    if np.isnan(x).any():
        return "probs contains NaN"
    if np.isinf(x).any():
        return "probs contains inf; probabilities must be finite"
    if (x < 0).any():
        return f"probs contains negative values (min {float(x.min()):.4g})"
    return None


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=hostile_probs())
def test_hostile_values_fail_alike_or_decode_like_the_oracle(engine: str, x: np.ndarray) -> None:
    T, C = x.shape
    syms = "ab"[: C - 1]
    batch = np.ascontiguousarray(np.stack([x, x]))
    calls = [
        lambda: decode_greedy(x, syms, engine=engine),
        lambda: greedy_search(x, syms, engine=engine),
        lambda: decode_beam(x, syms, prune=None, engine=engine),
        lambda: beam_search(x, syms, beam_width=n_prefixes(T, C), prune=None, engine=engine),
        lambda: decode_greedy_batch(batch, syms, engine=engine),
        lambda: greedy_search_batch(batch, syms, engine=engine),
        lambda: beam_search_batch(batch, syms, prune=None, engine=engine),
    ]
    error = expected_error(x)
    if error is not None:
        for call in calls:
            with pytest.raises(ValueError) as info:
                call()
            assert str(info.value).startswith(error)
        return
    # Valid (-0.0 is a zero probability, denormals are tiny ones): greedy is the first-index
    # argmax path, beam search the exact oracle; an all-zero frame leaves no text possible.
    path = tuple(int(k) for k in x.argmax(axis=1))
    greedy = collapse(path, C - 1)
    assert decode_greedy(x, syms, engine=engine) == "".join(syms[k] for k in greedy)
    assert greedy_search(x, syms, engine=engine).labels == greedy
    truth = oracle(x, C - 1)
    beams = beam_search(x, syms, beam_width=n_prefixes(T, C), prune=None, engine=engine)
    assert {b.labels for b in beams} == set(truth)
    for b in beams:
        assert b.log_prob == pytest.approx(math.log(truth[b.labels]), abs=1e-5)
    best = decode_beam(x, syms, beam_width=n_prefixes(T, C), prune=None, engine=engine)
    assert best == (beams[0].text if beams else "")
    assert decode_greedy_batch(batch, syms, engine=engine) == [decode_greedy(x, syms)] * 2


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.just(3)),
                    elements=st.one_of(st.floats(-30.0, 5.0, width=32),
                                       st.sampled_from([math.nan, math.inf, -math.inf]))))
def test_hostile_log_input_fails_alike_or_matches_probabilities(
    engine: str, x: np.ndarray
) -> None:
    """log_input: NaN and +inf are refused, -inf is probability 0, a frame of -inf only has
    no probability to renormalise; otherwise the answers are those of the probabilities."""
    if np.isnan(x).any():
        error = "probs contains NaN"
    elif np.isposinf(x).any():
        error = "probs contains +inf"
    elif np.isneginf(x).all(axis=1).any():
        error = "probs has a frame where every class is -inf"
    else:
        error = None
    calls = [lambda: decode_greedy(x, "ab", log_input=True, engine=engine),
             lambda: beam_search(x, "ab", log_input=True, prune=None, engine=engine)]
    if error is not None:
        for call in calls:
            with pytest.raises(ValueError, match="^" + re.escape(error)):
                call()
        return
    x64 = x.astype(np.float64)
    p = np.exp(x64 - np.logaddexp.reduce(x64, axis=1, keepdims=True))
    truth = oracle(p, 2)
    beams = beam_search(x, "ab", log_input=True, beam_width=n_prefixes(len(x), 3), prune=None,
                        engine=engine)
    assert {b.labels for b in beams} == set(truth)
    for b in beams:
        assert b.log_prob == pytest.approx(math.log(truth[b.labels]), abs=1e-4)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 30), st.integers(4, 40)),
                    elements=st.one_of(DENORMAL, st.sampled_from([0.0, -0.0, 1.0]),
                                       st.floats(0.0, 1.0, width=32))))
def test_greedy_on_wide_rows_of_zeros_and_denormals(engine: str, x: np.ndarray) -> None:
    """Rows as wide as the Cython kernel's packed (4-wide) argmax needs, full of -0.0, +0.0,
    denormals and ties: the answer is still the first index of each frame's maximum."""
    syms = (ALPHABET * 2)[: x.shape[1] - 1]
    path = collapse(tuple(int(k) for k in x.argmax(axis=1)), x.shape[1] - 1)
    text = "".join(syms[k] for k in path)
    assert decode_greedy(x, syms, engine=engine) == text
    assert greedy_search(x, syms, engine=engine).labels == path
    assert decode_greedy_batch(x[None], syms, engine=engine) == [text]
    first = np.ascontiguousarray(np.roll(x, 1, axis=1))  # blank first: other ties
    path0 = collapse(tuple(int(k) for k in first.argmax(axis=1)), 0)
    assert decode_greedy(first, syms, blank=0, engine=engine) == "".join(syms[k - 1] for k in path0)


def test_max_beam_width_is_allowed_and_one_more_is_not(engine: str) -> None:
    p = from_path("-ab-", "abc")
    widest = beam_search(p, "abc", beam_width=MAX_BEAM_WIDTH, prune=None, engine=engine)
    assert widest[0].text == "ab"
    assert {b.labels for b in widest} == set(oracle(p, 3))  # the beam kept every labelling
    too_wide = (rf"^beam_width must be <= MAX_BEAM_WIDTH \({MAX_BEAM_WIDTH}\); "
                rf"got {MAX_BEAM_WIDTH + 1}$")
    with pytest.raises(ValueError, match=too_wide):
        beam_search(p, "abc", beam_width=MAX_BEAM_WIDTH + 1, engine=engine)


# ----------------------------------------------------------------------------- DecodeOptions


def test_decode_options_merge_calls_over_defaults() -> None:
    defaults = DecodeOptions(allowed="23", max_length=2)
    assert defaults.merged() is defaults
    assert defaults.merged(beam_width=None, min_length=None) is defaults  # None: not given
    call = defaults.merged(allowed="abc", min_length=1, top_k=3)
    assert call == DecodeOptions(beam_width=None, allowed="abc", min_length=1, max_length=2,
                                 top_k=3)
    assert defaults.constrained and not DecodeOptions().constrained
    with pytest.raises(TypeError, match="unknown decoding option 'beam'"):
        defaults.merged(beam=3)


def test_decode_options_width_never_widens_silently() -> None:
    assert DecodeOptions().width == 1  # greedy
    assert DecodeOptions(min_length=4).width == DEFAULT_BEAM_WIDTH
    assert DecodeOptions(top_k=3).width == DEFAULT_BEAM_WIDTH
    assert DecodeOptions(top_k=40).width == 40  # the default grows to hold top_k
    assert DecodeOptions(beam_width=5, top_k=5).width == 5
    with pytest.raises(ValueError, match=r"^top_k must be <= beam_width \(5\); got 6$"):
        DecodeOptions(beam_width=5, top_k=6)
    with pytest.raises(ValueError, match=r"^top_k must be <= beam_width \(5\); got 6$"):
        DecodeOptions(beam_width=5).merged(top_k=6)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"beam_width": 0}, ValueError, r"^beam_width must be >= 1; got 0$"),
    ({"beam_width": 1025}, ValueError,
     r"^beam_width must be <= MAX_BEAM_WIDTH \(1024\); got 1025$"),
    ({"beam_width": 2.0}, TypeError, r"^beam_width must be an int; got float$"),
    ({"beam_width": True}, TypeError, r"^beam_width must be an int; got bool$"),
    ({"top_k": 0}, ValueError, r"^top_k must be >= 1; got 0$"),
    ({"top_k": 2000}, ValueError, r"^top_k must be <= MAX_BEAM_WIDTH \(1024\); got 2000$"),
    ({"min_length": -1}, ValueError, r"^min_length must be >= 0; got -1$"),
    ({"min_length": 3, "max_length": 2}, ValueError,
     r"^max_length must be >= min_length \(3\); got 2$"),
    ({"max_length": "5"}, TypeError, r"^max_length must be an int; got str$"),
    ({"allowed": ""}, ValueError, r"^allowed is empty; pass None to allow every symbol$"),
    ({"allowed": ["a"]}, TypeError, r"^allowed must be a str of characters or None; got list$"),
])
def test_decode_options_are_checked_by_the_decoders_validator(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        DecodeOptions(**kwargs)
    with pytest.raises(exc, match=match):  # a call's override is checked the same way
        DecodeOptions().merged(**kwargs)


def test_decode_options_numpy_ints_become_ints() -> None:
    opts = DecodeOptions(beam_width=np.int64(5), min_length=np.int32(2), top_k=np.int8(3))
    assert (type(opts.beam_width), type(opts.min_length), type(opts.top_k)) == (int, int, int)


def test_decode_options_checked_against_a_model() -> None:
    DecodeOptions(allowed="ab", min_length=12).check_model("abc", time_steps=12)
    unknown = r"^allowed contains 'xz', which the model's charset 'abc' cannot emit$"
    with pytest.raises(ValueError, match=unknown):
        DecodeOptions(allowed="axz").check_model("abc", time_steps=12)
    with pytest.raises(ValueError, match=r"^min_length must be <= T=12, .*; got 13$"):
        DecodeOptions(min_length=13).check_model("abc", time_steps=12)


def test_cython_engine_missing_says_how_to_build() -> None:
    if "cython" in ENGINES:
        pytest.skip("the Cython engine is built; nothing to refuse")
    with pytest.raises(ImportError, match="pip install"):
        decode_greedy(GOOD, "abc", engine="cython")


def test_cython_built() -> None:
    """With CAPTCHA_EDGE_REQUIRE_EXT=1 (CI) a failed extension build must not pass silently."""
    if not os.environ.get("CAPTCHA_EDGE_REQUIRE_EXT"):
        pytest.skip("CAPTCHA_EDGE_REQUIRE_EXT not set")
    if os.environ.get("CAPTCHA_EDGE_PUREPYTHON"):
        pytest.skip("CAPTCHA_EDGE_PUREPYTHON forces the Python twin")
    assert "cython" in ENGINES, "CAPTCHA_EDGE_REQUIRE_EXT=1 but captcha_edge.decoder._ctc_cy " \
        "did not import; rebuild with `pip install --no-build-isolation -e .`"

