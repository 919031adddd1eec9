"""Recognition metrics, one copy for the runtime, training and export: numpy only, no TensorFlow.

* :func:`edit_ops` / :func:`edit_distance`: Levenshtein distance and the aligned edits;
* :func:`greedy_texts`: best-path texts of a ``(N, T, C)`` probability batch, decoded by
  :mod:`captcha_edge.decoder` (its pure-Python twin is always installed);
* :func:`score`: sequence accuracy (exact match) and character error rate;
* :class:`Tally`: the running counts ``captcha-edge eval`` reports, confusions included.

An edit op is a ``(true char, predicted char)`` pair: ``(c, "")`` is a deletion (a missed
character), ``("", c)`` an insertion (an extra one); matches are not listed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import decoder as _decoder  # type: ignore[attr-defined]  # mypy cannot map package_dir

EditOp = tuple[str, str]


def edit_ops(truth: str, pred: str) -> tuple[int, list[EditOp]]:
    """Levenshtein distance from ``truth`` to ``pred`` and one minimal list of edits, in order."""
    n, m = len(truth), len(pred)
    d = [list(range(m + 1))] + [[i] + [0] * m for i in range(1, n + 1)]
    for i in range(1, n + 1):
        row, up, t = d[i], d[i - 1], truth[i - 1]
        for j in range(1, m + 1):
            row[j] = min(up[j] + 1, row[j - 1] + 1, up[j - 1] + (t != pred[j - 1]))
    ops: list[EditOp] = []
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (truth[i - 1] != pred[j - 1]):
            if truth[i - 1] != pred[j - 1]:
                ops.append((truth[i - 1], pred[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            ops.append((truth[i - 1], ""))
            i -= 1
        else:
            ops.append(("", pred[j - 1]))
            j -= 1
    return d[n][m], ops[::-1]


def edit_distance(truth: str, pred: str) -> int:
    """Levenshtein distance (insertions, deletions and substitutions each cost 1)."""
    return edit_ops(truth, pred)[0]


def greedy_texts(probs: Any, charset: str, *, blank: int = -1) -> list[str]:
    """Best-path texts of ``probs`` (N, T, C) probabilities; ``blank`` as in the decoder.

    Raises:
        ValueError: ``probs`` is not (N, T, len(charset) + 1), or holds NaN, inf or negatives.
    """
    arr = np.asarray(probs)
    if arr.ndim != 3 or arr.shape[-1] != len(charset) + 1:
        raise ValueError(f"probs must be (N, T, {len(charset) + 1}) for a charset of "
                         f"{len(charset)} symbols + blank; got shape {arr.shape}")
    return [str(t) for t in _decoder.decode_greedy_batch(arr, charset, blank=blank)]


def _check_pairs(truths: Sequence[str], preds: Sequence[str]) -> None:
    if len(truths) != len(preds):
        raise ValueError(f"truths and preds must have the same length; got {len(truths)} "
                         f"truths and {len(preds)} predictions")


def score(truths: Sequence[str], preds: Sequence[str]) -> dict[str, float]:
    """``{"seq_acc": exact matches / N, "cer": edits / truth characters}`` (0.0 for no pairs)."""
    _check_pairs(truths, preds)
    tally = Tally()
    tally.add_all(truths, preds)
    return {"seq_acc": tally.accuracy, "cer": tally.cer}


def confusions(truths: Sequence[str], preds: Sequence[str], top: int = 10) -> list[tuple[EditOp, int]]:
    """The ``top`` most frequent edits over all pairs, ``((true, pred), count)``, most first."""
    _check_pairs(truths, preds)
    tally = Tally()
    tally.add_all(truths, preds)
    return tally.confusions.most_common(top)


@dataclass
class Tally:
    """Running sequence/character counts over (truth, prediction) pairs."""

    sequences: int = 0
    correct: int = 0
    edits: int = 0
    chars: int = 0
    confusions: Counter[EditOp] = field(default_factory=Counter)

    def add(self, truth: str, pred: str) -> int:
        """Count one pair; returns its edit distance."""
        dist, ops = edit_ops(truth, pred)
        self.sequences += 1
        self.correct += dist == 0
        self.edits += dist
        self.chars += len(truth)
        self.confusions.update(ops)
        return dist

    def add_all(self, truths: Sequence[str], preds: Sequence[str]) -> None:
        """Count every pair of two equally long sequences."""
        _check_pairs(truths, preds)
        for t, p in zip(truths, preds):
            self.add(t, p)

    @property
    def accuracy(self) -> float:
        """Exact matches / sequences (0.0 when empty)."""
        return self.correct / self.sequences if self.sequences else 0.0

    @property
    def cer(self) -> float:
        """Edits / truth characters (edits / 1 when the truths are all empty)."""
        return self.edits / max(1, self.chars)
