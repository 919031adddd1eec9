"""CTC helpers for training-time evaluation: greedy decoding, edit distance, confusions.

Thin names over :mod:`captcha_edge.metrics` (the one copy, shared with the runtime's ``eval`` and
the exporter's checks; numpy and the decoder's pure-Python twin only, no TensorFlow). The blank is
the last class, as everywhere in captcha_edge.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from .. import metrics
from ..metrics import edit_ops, score

__all__ = ["confusions", "edit_ops", "greedy_decode", "score"]


def greedy_decode(probs: np.ndarray, charset: str) -> List[str]:
    """Best path for a batch: ``probs`` (N, T, C) with blank = C - 1 -> N strings.

    A diverged model's NaN/inf outputs are scored (as 0 / 1) instead of stopping the epoch's
    evaluation: its accuracy then shows what happened.
    """
    finite = np.nan_to_num(np.asarray(probs, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return metrics.greedy_texts(finite, charset, blank=-1)


def confusions(truths: Sequence[str], preds: Sequence[str], top: int = 10) -> List[Dict[str, object]]:
    """The most frequent character errors, e.g. ``{"truth": "m", "pred": "n", "count": 3}``."""
    pairs: List[Tuple[str, str]] = [(t, p) for t, p in zip(truths, preds) if t != p]
    found = metrics.confusions([t for t, _ in pairs], [p for _, p in pairs], top)
    return [{"truth": a, "pred": b, "count": k} for (a, b), k in found]
