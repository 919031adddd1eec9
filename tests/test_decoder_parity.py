"""Hypothesis fuzz: the Cython kernel and the Python twin give the same answers and errors.

Greedy must match exactly; beam search must give the same texts in the same order, log-probs
within 1e-5 and the same confidences (in practice they are bit-identical). On hostile or
malformed input both raise the same exception type with the same message.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest
from captcha_edge import decoder as dec
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytestmark = pytest.mark.skipif("cython" not in dec.ENGINES, reason="Cython engine not built")

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
    g_py = dec.greedy_search(x, syms, engine="python", **common)
    g_cy = dec.greedy_search(x, syms, engine="cython", **common)
    assert g_cy == g_py
    assert dec.decode_greedy(x, syms, engine="cython", **common) == g_py.text
    assert dec.decode_greedy(x, syms, engine="python", **common) == g_py.text
    b_py = dec.beam_search(x, syms, engine="python", **common, **kw)
    b_cy = dec.beam_search(x, syms, engine="cython", **common, **kw)
    assert [b.labels for b in b_cy] == [b.labels for b in b_py]
    for c, p in zip(b_cy, b_py):
        assert c.log_prob == pytest.approx(p.log_prob, abs=1e-5)
        assert c.char_confidences == pytest.approx(p.char_confidences, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(0, 5), st.integers(1, 20),
                                           st.just(6)), elements=st.floats(0.0, 1.0, width=32)))
def test_batch_greedy_parity(x: np.ndarray) -> None:
    assert dec.decode_greedy_batch(x, "abcde", engine="cython", num_threads=2) == \
        dec.decode_greedy_batch(x, "abcde", engine="python")


HOSTILE = st.one_of(
    st.floats(0.0, 1.0, width=32),
    st.floats(0.0, float(np.finfo(np.float32).smallest_normal), width=32, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, -1e-30]),
    st.floats(-2.0, 2.0, width=32),
)


@st.composite
def any_arrays(draw: st.DrawFn) -> object:
    """Arrays a caller might pass: float32/float64/int, 1-3-D, empty, strided or Fortran
    ordered, with hostile values; now and then not an array at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([None, "abc", [[0.5, 0.5]], 3.0]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.int32]))
    x = draw(hnp.arrays(dtype, shape, elements=HOSTILE if dtype != np.int32 else None))
    layout = draw(st.sampled_from(["c", "f", "strided"]))
    if layout == "f":
        x = np.asfortranarray(x)
    elif layout == "strided" and x.ndim >= 1:
        x = x[..., ::2]
    return x


@settings(max_examples=200, deadline=None)
@given(x=any_arrays(), classes=st.sampled_from([-1, 2, 3, 4, 6]))
def test_scan_twins_agree(x: object, classes: int) -> None:
    """The validator's scan (layout + value bits) is the same in both engines."""
    assert dec.ENGINES["cython"].scan(x, classes) == dec.ENGINES["python"].scan(x, classes)


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    """("ok", result) or (exception type name, message)."""
    try:
        return "ok", call()
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=150, deadline=None)
@given(x=any_arrays(), log_input=st.booleans(), blank=st.sampled_from([-1, 0]))
def test_errors_and_answers_are_the_same_in_both_engines(
    x: object, log_input: bool, blank: int
) -> None:
    """Hostile or malformed input: identical exception types and messages, or equal results."""
    C = x.shape[-1] if isinstance(x, np.ndarray) and x.ndim else 3
    syms = SYMS[: max(C - 1, 0)]
    kw = {"blank": blank, "log_input": log_input}
    for fn, extra in [(dec.decode_greedy, {}), (dec.greedy_search, {}),
                      (dec.beam_search, {"beam_width": 4, "prune": None}),
                      (dec.decode_beam, {"min_length": 1}),
                      (dec.decode_greedy_batch, {}), (dec.greedy_search_batch, {}),
                      (dec.beam_search_batch, {"beam_width": 3}), (dec.decode_beam_batch, {})]:
        py = _outcome(lambda: fn(x, syms, engine="python", **kw, **extra))
        cy = _outcome(lambda: fn(x, syms, engine="cython", **kw, **extra))
        assert cy == py, fn.__name__
