"""CTC for training: the loss (TensorFlow, imported only when called) and the evaluation
helpers (numpy): greedy decoding, edit distance, confusions.

The blank is the last class, as everywhere in captcha_edge.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np


def greedy_decode(probs: np.ndarray, charset: str) -> List[str]:
    """Best path for a batch: ``probs`` (N, T, C) with blank = C - 1 -> N strings."""
    if probs.ndim != 3 or probs.shape[-1] != len(charset) + 1:
        raise ValueError(f"probs must be (N, T, {len(charset) + 1}); got shape {probs.shape}")
    blank = len(charset)
    best = probs.argmax(axis=-1)
    out = []
    for row in best:
        keep = np.ones(row.shape, bool)
        keep[1:] = row[1:] != row[:-1]
        out.append("".join(charset[i] for i in row[keep] if i != blank))
    return out


def edit_ops(truth: str, pred: str) -> Tuple[int, List[Tuple[str, str]]]:
    """Levenshtein distance and the aligned substitutions/deletions/insertions.

    Returns ``(distance, ops)`` where each op is ``(truth_char, pred_char)``; ``""`` on one side
    marks a deletion (missed character) or an insertion (extra character).
    """
    n, m = len(truth), len(pred)
    d = np.zeros((n + 1, m + 1), np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1,
                          d[i - 1, j - 1] + (truth[i - 1] != pred[j - 1]))
    ops: List[Tuple[str, str]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (truth[i - 1] != pred[j - 1]):
            if truth[i - 1] != pred[j - 1]:
                ops.append((truth[i - 1], pred[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            ops.append((truth[i - 1], ""))
            i -= 1
        else:
            ops.append(("", pred[j - 1]))
            j -= 1
    return int(d[n, m]), ops[::-1]


def score(truths: Sequence[str], preds: Sequence[str]) -> Dict[str, float]:
    """Sequence accuracy (exact match) and character error rate (edits / truth characters)."""
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truths but {len(preds)} predictions")
    if not truths:
        return {"seq_acc": 0.0, "cer": 0.0}
    exact = sum(t == p for t, p in zip(truths, preds))
    edits = sum(edit_ops(t, p)[0] for t, p in zip(truths, preds))
    chars = max(1, sum(len(t) for t in truths))
    return {"seq_acc": exact / len(truths), "cer": edits / chars}


def confusions(truths: Sequence[str], preds: Sequence[str], top: int = 10) -> List[Dict[str, object]]:
    """The most frequent character errors, e.g. ``{"truth": "m", "pred": "n", "count": 3}``."""
    c: Counter = Counter()
    for t, p in zip(truths, preds):
        if t != p:
            c.update(edit_ops(t, p)[1])
    return [{"truth": a, "pred": b, "count": k} for (a, b), k in c.most_common(top)]


# -- the loss (training graph only) -------------------------------------------------------------


def pack_targets(codes: Any, lengths: Any) -> Any:
    """Pack labels for :func:`ctc_loss`: column 0 = length, then the padded class indices."""
    return np.concatenate([np.asarray(lengths, np.int32)[:, None],
                           np.asarray(codes, np.int32)], axis=1)


def ctc_loss(y_true: Any, y_pred: Any) -> Any:
    """Per-sample CTC loss; ``y_true`` from :func:`pack_targets`, ``y_pred`` logits (N, T, C).

    Uses sparse labels so TensorFlow runs its native CTC kernel (blank = last class).
    """
    import tensorflow as tf

    y_true = tf.cast(y_true, tf.int32)  # Keras hands targets over cast to the loss dtype
    logits = tf.cast(y_pred, tf.float32)
    lengths, codes = y_true[:, 0], y_true[:, 1:]
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(codes)[1])
    idx = tf.where(mask)
    sparse = tf.SparseTensor(idx, tf.gather_nd(codes, idx), tf.shape(codes, out_type=tf.int64))
    batch, frames = tf.shape(logits)[0], tf.shape(logits)[1]
    return tf.nn.ctc_loss(labels=sparse, logits=logits, label_length=None,
                          logit_length=tf.fill([batch], frames), logits_time_major=False,
                          blank_index=-1)
