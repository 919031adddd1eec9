"""Benchmark inputs, built once with fixed seeds (outside every timed callable).

Cases: T=50 C=20 (a short captcha model) and T=200 C=100 (a big one), each "peaky" (model-like:
one clear winner per frame at ~0.99, 80% of frames blank, as a CRNN reading a 5-8 character
captcha emits) and "flat" (random softmax, the worst case for a beam search). Blank = last class, as the models emit; fast-ctc-decode wants it first, so its
inputs are rolled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

SYMBOLS = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 2
BATCH = 64


@dataclass(frozen=True)
class Case:
    """One benchmark input in the layouts each decoder wants."""

    name: str
    probs: np.ndarray           # (T, C) float32, blank last
    alphabet: str               # C - 1 symbols
    batch: np.ndarray           # (BATCH, T, C) float32, same kind of input
    probs_blank_first: np.ndarray  # for fast-ctc-decode
    alphabet_blank_first: list[str]


def make_probs(rng: np.random.Generator, n: int, T: int, C: int, kind: str) -> np.ndarray:
    """(n, T, C) float32 softmax outputs; ``kind`` is "peaky" or "flat"."""
    logits = rng.normal(size=(n, T, C))
    if kind == "peaky":
        win = np.where(rng.random((n, T)) < 0.8, C - 1, rng.integers(0, C - 1, (n, T)))
        # The winner stands ~8 nats above the rest: ~0.99 per frame, others ~1e-4..1e-3.
        idx = win[..., None]
        np.put_along_axis(logits, idx, np.take_along_axis(logits, idx, axis=2) + 8.0, axis=2)
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    return (e / e.sum(axis=2, keepdims=True)).astype(np.float32)


def _case(T: int, C: int, kind: str, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    batch = make_probs(rng, BATCH + 1, T, C, kind)
    probs = np.ascontiguousarray(batch[0])
    alphabet = SYMBOLS[: C - 1]
    return Case(
        name=f"T{T}-C{C}-{kind}",
        probs=probs,
        alphabet=alphabet,
        batch=np.ascontiguousarray(batch[1:]),
        probs_blank_first=np.ascontiguousarray(np.roll(probs, 1, axis=1)),
        alphabet_blank_first=["-"] + list(alphabet),
    )


CASES = {
    c.name: c
    for c in (
        _case(50, 20, "peaky", 1),
        _case(50, 20, "flat", 2),
        _case(200, 100, "peaky", 3),
        _case(200, 100, "flat", 4),
    )
}


@pytest.fixture(scope="session", params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    """Every benchmark case in turn."""
    return CASES[request.param]
