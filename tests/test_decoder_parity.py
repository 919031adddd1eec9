"""Hypothesis fuzz: the Cython kernel and the Python twin give the same answers.

Greedy must match exactly; beam search must give the same texts in the same order, log-probs
within 1e-5 and the same confidences (in practice they are bit-identical).
"""
from __future__ import annotations

import numpy as np
import pytest
from captcha_edge.decoder import (
    ENGINES,
    beam_search,
    decode_greedy,
    decode_greedy_batch,
    greedy_search,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytestmark = pytest.mark.skipif("cython" not in ENGINES, reason="Cython engine not built")

SYMS = "abcdefghijkl"


@st.composite
def matrices(draw: st.DrawFn) -> tuple[np.ndarray, bool]:
    """Random (T, C) inputs: uniform, spiky (few exact zeros and ties) or log-domain."""
    T = draw(st.integers(1, 30))
    C = draw(st.integers(2, 13))
    kind = draw(st.sampled_from(["uniform", "spiky", "log"]))
    if kind == "spiky":
        # Few distinct values: exact ties and zeros exercise the tie-breaking rules.
        elements = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0])
    elif kind == "log":
        elements = st.floats(-30.0, 5.0, width=32)
    else:
        elements = st.floats(0.0, 1.0, width=32)
    x = draw(hnp.arrays(np.float32, (T, C), elements=elements))
    if kind == "spiky":
        x[:, draw(st.integers(0, C - 1))] += 0.125  # no all-zero frame
    return x, kind == "log"


@settings(max_examples=60, deadline=None)
@given(case=matrices(), data=st.data())
def test_cython_matches_python(case: tuple[np.ndarray, bool], data: st.DataObject) -> None:
    x, log_input = case
    T, C = x.shape
    syms = SYMS[: C - 1]
    blank = data.draw(st.integers(-C, C - 1), label="blank")
    kw = {
        "beam_width": data.draw(st.integers(1, 12), label="beam_width"),
        "prune": data.draw(st.sampled_from([None, 1e-3, 0.2]), label="prune"),
        "min_length": data.draw(st.integers(0, min(T, 3)), label="min_length"),
        "max_length": data.draw(st.one_of(st.none(), st.integers(3, 8)), label="max_length"),
        "allowed": data.draw(
            st.one_of(st.none(), st.sets(st.sampled_from(syms), min_size=1).map(sorted)),
            label="allowed",
        ),
    }
    common = {"blank": blank, "log_input": log_input}
    g_py = greedy_search(x, syms, engine="python", **common)
    g_cy = greedy_search(x, syms, engine="cython", **common)
    assert g_cy == g_py
    assert decode_greedy(x, syms, engine="cython", **common) == g_py.text
    assert decode_greedy(x, syms, engine="python", **common) == g_py.text
    b_py = beam_search(x, syms, engine="python", **common, **kw)
    b_cy = beam_search(x, syms, engine="cython", **common, **kw)
    assert [b.labels for b in b_cy] == [b.labels for b in b_py]
    for c, p in zip(b_cy, b_py):
        assert c.log_prob == pytest.approx(p.log_prob, abs=1e-5)
        assert c.char_confidences == pytest.approx(p.char_confidences, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(0, 5), st.integers(1, 20),
                                           st.just(6)), elements=st.floats(0.0, 1.0, width=32)))
def test_batch_greedy_parity(x: np.ndarray) -> None:
    assert decode_greedy_batch(x, "abcde", engine="cython", num_threads=2) == \
        decode_greedy_batch(x, "abcde", engine="python")
