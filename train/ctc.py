"""CTC for training: the loss (TensorFlow, imported only when it is called) and the evaluation
helpers (greedy decoding, edit distance, confusions).

The helpers are thin names over :mod:`captcha_edge.metrics` (the one copy, shared with the
runtime's ``eval`` and the exporter's checks; numpy and the decoder's pure-Python twin only, no
TensorFlow). The blank is the last class, as everywhere in captcha_edge.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .. import metrics
from ..metrics import edit_ops, score

__all__ = ["confusions", "ctc_loss", "edit_ops", "greedy_decode", "pack_targets", "score"]


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
