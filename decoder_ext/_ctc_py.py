"""Pure-Python CTC kernels: the reference twin of ``_ctc_cy.pyx``; change both together.

Conventions shared with the Cython twin (results must match: same labels, same tie-breaking,
scores within 1e-5; in practice they are bit-identical because every float operation happens in
the same order on IEEE doubles):

* ``p`` is a validated, C-contiguous float32 ``(T, C)`` array (``(N, T, C)`` for ``*_batch``):
  probabilities, or log-probabilities when ``is_log`` is true. Nothing here raises for bad input.
* ``blank`` is an index in ``[0, C)``; labels are class indices, never the blank.
* Scores are natural-log probabilities accumulated in double precision.
* Ties: argmax takes the lowest class index; beam candidates are ranked by score, then by
  creation order (stay-candidates of the beams in rank order, then extensions by beam rank and
  class index).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

NEG_INF = -math.inf
BeamTuple = tuple[list[int], float, Optional[list[float]]]


def _lae(a: float, b: float) -> float:
    """log(exp(a) + exp(b)), exact for -inf operands."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def _lg(x: float) -> float:
    """Natural log with log(0) = -inf instead of an exception."""
    return math.log(x) if x > 0.0 else NEG_INF


def scan(probs: Any, num_classes: int) -> int:
    """Return the ``_validate`` bits that describe ``probs`` (numpy twin of ``_ctc_cy.scan``).

    LAYOUT (32) unless ``probs`` is a non-empty C-contiguous float32 2-D ndarray with
    ``num_classes`` columns (any number when -1); otherwise the bits of the values present:
    NaN (1), +inf (2), -inf (4), negative (8, -inf included) and -0.0 (16). Never raises.
    """
    if (type(probs) is not np.ndarray or probs.dtype != np.float32 or probs.ndim != 2
            or not probs.flags.c_contiguous or probs.size == 0
            or num_classes not in (-1, probs.shape[1])):
        return 32
    if not np.signbit(probs).any() and np.isfinite(probs).all():
        return 0
    flags = 0
    if np.isnan(probs).any():
        flags |= 1
    if np.isposinf(probs).any():
        flags |= 2
    if np.isneginf(probs).any():
        flags |= 4
    if (probs < 0).any():
        flags |= 8
    if ((probs == 0) & np.signbit(probs)).any():
        flags |= 16
    return flags


def greedy(p: npt.NDArray[np.float32], blank: int, is_log: bool) -> list[int]:
    """Best path: argmax per frame (lowest index wins ties), merge repeats, drop blanks."""
    out: list[int] = []
    prev = -1
    for row in p.tolist():
        best = row.index(max(row))
        if best != prev and best != blank:
            out.append(best)
        prev = best
    return out


def greedy_text(p: npt.NDArray[np.float32], blank: int, symbols: tuple[str, ...]) -> str:
    """:func:`greedy`, joined into text with ``symbols`` (one str per class)."""
    return "".join([symbols[i] for i in greedy(p, blank, False)])


def greedy_chars(p: npt.NDArray[np.float32], alphabet: str) -> str:
    """:func:`greedy_text` for the blank last and ``alphabet`` a str of ``C - 1`` symbols.

    ``decode_greedy``'s fast path, for input that ``_validate.greedy_fast`` accepted: every
    value in ``[+0, +inf)``.
    """
    return greedy_text(p, len(alphabet), (*alphabet, ""))


def greedy_detail(
    p: npt.NDArray[np.float32], blank: int, is_log: bool
) -> tuple[list[int], list[float], float]:
    """Best path with (labels, per-char confidence, log-probability of the path).

    A character's confidence is the highest probability of its class over the run of frames
    that emitted it; the path's log-probability is the sum of the per-frame maxima's logs.
    """
    labels: list[int] = []
    confs: list[float] = []
    logp = 0.0
    prev = -1
    for row in p.tolist():
        m = max(row)
        best = row.index(m)
        logp += m if is_log else _lg(m)
        if best != blank:
            c = math.exp(m) if is_log else m
            if best != prev:
                labels.append(best)
                confs.append(c)
            elif c > confs[-1]:
                confs[-1] = c
        prev = best
    return labels, confs, logp


def greedy_batch(p: npt.NDArray[np.float32], blank: int, is_log: bool) -> list[list[int]]:
    """:func:`greedy` over the first axis of an ``(N, T, C)`` array."""
    return [greedy(x, blank, is_log) for x in p]


def greedy_detail_batch(
    p: npt.NDArray[np.float32], blank: int, is_log: bool
) -> list[tuple[list[int], list[float], float]]:
    """:func:`greedy_detail` over the first axis of an ``(N, T, C)`` array."""
    return [greedy_detail(x, blank, is_log) for x in p]


def _align_confidences(
    lp: list[list[float]], labels: list[int], blank: int, is_log: bool
) -> list[float]:
    """Per-char confidence from the most probable alignment (Viterbi) of ``labels``.

    ``lp`` holds log-probabilities. Each character's confidence is the highest probability of
    its class over the frames that alignment assigns to it.
    """
    n = len(labels)
    if n == 0:
        return []
    S = 2 * n + 1
    ext = [blank if s % 2 == 0 else labels[s // 2] for s in range(S)]
    T = len(lp)
    back = [[0] * S for _ in range(T)]
    delta = [NEG_INF] * S
    delta[0] = lp[0][ext[0]]
    delta[1] = lp[0][ext[1]]
    for t in range(1, T):
        row = lp[t]
        new = [NEG_INF] * S
        bt = back[t]
        for s in range(S):
            best = delta[s]
            arg = s
            if s >= 1 and delta[s - 1] > best:
                best = delta[s - 1]
                arg = s - 1
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2] and delta[s - 2] > best:
                best = delta[s - 2]
                arg = s - 2
            new[s] = best + row[ext[s]]
            bt[s] = arg
        delta = new
    s = S - 1 if delta[S - 1] >= delta[S - 2] else S - 2
    best_lp = [NEG_INF] * n
    for t in range(T - 1, -1, -1):
        if s % 2 == 1:
            v = lp[t][ext[s]]
            j = s // 2
            best_lp[j] = max(best_lp[j], v)
        s = back[t][s]
    return [math.exp(v) for v in best_lp]


def beam(
    p: npt.NDArray[np.float32],
    blank: int,
    is_log: bool,
    beam_width: int,
    top_k: int,
    classes: Sequence[int] | None,
    min_length: int,
    max_length: int,
    threshold: float,
    want_conf: bool,
) -> list[BeamTuple]:
    """CTC prefix beam search in log space; returns up to ``top_k`` (labels, log_prob, confs).

    Each prefix keeps two scores: ending in blank (``pb``) and ending in its last label
    (``pnb``); a repeated label only extends a prefix through ``pb`` ("aa" needs a blank
    between). ``classes`` lists the non-blank classes that may be emitted (``None``: all);
    classes whose input value is below ``threshold`` at a frame do not extend prefixes there
    (``threshold`` is in the input's domain). ``max_length < 0`` means no limit; prefixes that
    can no longer reach ``min_length`` in the frames left are dropped.
    """
    T, C = p.shape
    rows = p.tolist()
    zero = NEG_INF if is_log else 0.0
    if classes is None:
        classes = [c for c in range(C) if c != blank]
    # Prefix trie: node 0 is the empty prefix; only prefixes that enter the beam get a node.
    n_parent = [-1]
    n_label = [-1]
    n_len = [0]
    children: dict[tuple[int, int], int] = {}
    b_node = [0]
    b_pb = [0.0]
    b_pnb = [NEG_INF]
    for t in range(T):
        row = rows[t]
        remaining = T - 1 - t
        lb = row[blank] if is_log else _lg(row[blank])
        ext = [(c, row[c] if is_log else _lg(row[c]))
               for c in classes if row[c] >= threshold and row[c] > zero]
        nb = len(b_node)
        # A beam whose prefix is another beam's prefix + one label receives that extension.
        # (Beams hold distinct nodes, so a node -> beam map finds it in linear time.)
        beam_of = {node: a for a, node in enumerate(b_node)}
        merge: dict[tuple[int, int], int] = {}
        for j in range(nb):
            a = beam_of.get(n_parent[b_node[j]], -1)
            if a >= 0:
                merge[(a, n_label[b_node[j]])] = j
        c_node: list[int] = []
        c_parent: list[int] = []
        c_label: list[int] = []
        c_len: list[int] = []
        c_pb: list[float] = []
        c_pnb: list[float] = []
        totals = [_lae(b_pb[j], b_pnb[j]) for j in range(nb)]
        for j in range(nb):
            node = b_node[j]
            c_node.append(node)
            c_parent.append(-1)
            c_label.append(-1)
            c_len.append(n_len[node])
            c_pb.append(totals[j] + lb)
            if node != 0:
                last = n_label[node]
                c_pnb.append(b_pnb[j] + (row[last] if is_log else _lg(row[last])))
            else:
                c_pnb.append(NEG_INF)
        for j in range(nb):
            node = b_node[j]
            length = n_len[node]
            if max_length >= 0 and length >= max_length:
                continue
            last = n_label[node]
            for c, lc in ext:
                base = b_pb[j] if c == last else totals[j]
                if base == NEG_INF:
                    continue
                v = base + lc
                k = merge.get((j, c), -1)
                if k >= 0:
                    c_pnb[k] = _lae(c_pnb[k], v)
                else:
                    c_node.append(-1)
                    c_parent.append(node)
                    c_label.append(c)
                    c_len.append(length + 1)
                    c_pb.append(NEG_INF)
                    c_pnb.append(v)
        c_total = [_lae(c_pb[i], c_pnb[i]) for i in range(len(c_node))]
        eligible = [i for i in range(len(c_node))
                    if c_total[i] != NEG_INF and c_len[i] + remaining >= min_length]
        eligible.sort(key=lambda i: (-c_total[i], i))
        chosen = eligible[:beam_width]
        b_node = []
        b_pb = []
        b_pnb = []
        for i in chosen:
            node = c_node[i]
            if node < 0:
                # One node per distinct prefix, so a prefix that left the beam and comes back
                # is recognised as the parent of beams extended from it earlier.
                node = children.get((c_parent[i], c_label[i]), -1)
                if node < 0:
                    node = len(n_parent)
                    children[(c_parent[i], c_label[i])] = node
                    n_parent.append(c_parent[i])
                    n_label.append(c_label[i])
                    n_len.append(c_len[i])
            b_node.append(node)
            b_pb.append(c_pb[i])
            b_pnb.append(c_pnb[i])
        if not b_node:
            break
    lp: list[list[float]] | None = None
    if want_conf and b_node:
        lp = rows if is_log else [[_lg(v) for v in row] for row in rows]
    out: list[BeamTuple] = []
    for j in range(min(top_k, len(b_node))):
        labels = []
        node = b_node[j]
        while node > 0:
            labels.append(n_label[node])
            node = n_parent[node]
        labels.reverse()
        confs = _align_confidences(lp, labels, blank, is_log) if lp is not None else None
        out.append((labels, _lae(b_pb[j], b_pnb[j]), confs))
    return out


def beam_batch(p: npt.NDArray[np.float32], *options: Any) -> list[list[BeamTuple]]:
    """:func:`beam` over the first axis of an ``(N, T, C)`` array; ``options`` are
    :func:`beam`'s arguments after ``p`` (``blank`` ... ``want_conf``), in the same order."""
    return [beam(x, *options) for x in p]
