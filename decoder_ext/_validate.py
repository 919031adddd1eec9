"""The only place decoder inputs are checked; both kernels trust what leaves this module.

Everything here raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, bad
value) with the parameter's name, what was expected and what was received, before any search runs.
What leaves: C-contiguous float32 arrays, a blank index in ``[0, C)``, a tuple of ``C`` symbols
(the blank's symbol is ``""``), and plain ints/floats for the search options.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

Alphabet = Union[str, Sequence[str]]
Allowed = Union[str, Sequence[Union[str, int]]]
FloatArray = npt.NDArray[np.float32]

# Bits returned by a scan (numpy here, compiled in ``_ctc_cy.scan``): what the values contain.
NAN, POS_INF, NEG_INF, NEGATIVE = 1, 2, 4, 8

_F32 = np.dtype(np.float32)
_SHAPE_NAMES = {2: "(time, classes)", 3: "(batch, time, classes)"}
_symbols_cache: dict[tuple[Any, int, int], tuple[tuple[str, ...], int]] = {}


def scan_numpy(p: FloatArray) -> int:
    """Return the NAN/POS_INF/NEG_INF/NEGATIVE bits present in ``p`` (numpy version)."""
    flags = 0
    if not np.isfinite(p).all():
        if np.isnan(p).any():
            flags |= NAN
        if np.isposinf(p).any():
            flags |= POS_INF
        if np.isneginf(p).any():
            flags |= NEG_INF
    if p.size and p.min() < 0:
        flags |= NEGATIVE
    return flags


def check_probs(
    probs: Any, ndim: int, log_input: bool, scan: Callable[[FloatArray], int]
) -> FloatArray:
    """Validate ``probs`` and return it as a C-contiguous float32 array of rank ``ndim``.

    With ``log_input`` the values are log-probabilities or logits; each frame is renormalised
    with a log-softmax (in float64) so scores and confidences are true log-probabilities.
    """
    if (type(probs) is np.ndarray and probs.dtype is _F32 and probs.ndim == ndim == 2
            and not log_input and probs.flags.c_contiguous and probs.size):
        # Fast path for what a model emits; same checks as below, fewer attribute lookups.
        if scan(probs):
            return check_probs(probs.astype(np.float64), ndim, log_input, scan)
        return probs
    if not isinstance(probs, np.ndarray):
        if isinstance(probs, (str, bytes)) or not hasattr(probs, "__len__"):
            raise TypeError(
                f"probs must be a numpy array of shape {_SHAPE_NAMES[ndim]}; "
                f"got {type(probs).__name__}"
            )
        probs = np.asarray(probs)
    if probs.dtype.kind != "f":
        raise TypeError(
            f"probs must be a float32 or float64 array; got dtype {probs.dtype}"
            + (" (dequantize it first)" if probs.dtype.kind in "iu" else "")
        )
    if probs.ndim != ndim:
        raise ValueError(f"probs must be {ndim}-D {_SHAPE_NAMES[ndim]}; got shape {probs.shape}")
    if probs.shape[-2] == 0:
        raise ValueError(f"probs has no time steps (T=0); got shape {probs.shape}")
    if probs.shape[-1] == 0:
        raise ValueError(f"probs has no classes (C=0); got shape {probs.shape}")
    if log_input:
        return _log_softmax(probs)
    if probs.dtype != np.float32 or not probs.flags.c_contiguous:
        probs = np.ascontiguousarray(probs, dtype=np.float32)
    flags = scan(probs if ndim == 2 else probs.reshape(-1, probs.shape[-1]))
    if flags:
        if flags & NAN:
            raise ValueError("probs contains NaN")
        if flags & (POS_INF | NEG_INF):
            raise ValueError("probs contains inf; probabilities must be finite")
        raise ValueError(
            f"probs contains negative values (min {float(probs.min()):.4g}); probabilities must "
            "be >= 0 (pass log_input=True for log-probabilities or logits)"
        )
    return probs  # type: ignore[no-any-return]


def _log_softmax(x: npt.NDArray[np.floating[Any]]) -> FloatArray:
    """Check log-domain input and renormalise each frame: ``x - logsumexp(x)`` in float64."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("probs contains NaN")
    if np.isposinf(x).any():
        raise ValueError("probs contains +inf; log-probabilities/logits must be < +inf")
    peak = x.max(axis=-1, keepdims=True)
    if np.isneginf(peak).any():
        raise ValueError(
            "probs has a frame where every class is -inf (zero probability); "
            "each frame needs at least one finite log-probability"
        )
    with np.errstate(under="ignore"):
        out = x - (peak + np.log(np.exp(x - peak).sum(axis=-1, keepdims=True)))
    return np.ascontiguousarray(out, dtype=np.float32)


def check_blank(blank: Any, num_classes: int) -> int:
    """Return ``blank`` as an index in ``[0, num_classes)`` (negative values count from the end)."""
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)):
        raise TypeError(f"blank must be an int class index; got {type(blank).__name__}")
    if not -num_classes <= blank < num_classes:
        raise ValueError(
            f"blank must be in [{-num_classes}, {num_classes - 1}] for probs with "
            f"{num_classes} classes; got {blank}"
        )
    return int(blank) % num_classes


def symbols(alphabet: Any, num_classes: int, blank: Any) -> tuple[tuple[str, ...], int]:
    """Return (symbol of each class with ``""`` for the blank, blank index in ``[0, C)``)."""
    try:  # only valid (alphabet, C, blank) triples are cached
        return _symbols_cache[(alphabet, num_classes, blank)]
    except (KeyError, TypeError):  # TypeError: an unhashable alphabet (a list) is not cached
        pass
    b = check_blank(blank, num_classes)
    if isinstance(alphabet, str):
        labels: list[str] = list(alphabet)
    elif isinstance(alphabet, (bytes, bytearray)) or not isinstance(alphabet, Sequence):
        raise TypeError(
            f"alphabet must be a str or a sequence of str; got {type(alphabet).__name__}"
        )
    else:
        labels = list(alphabet)
        for i, s in enumerate(labels):
            if not isinstance(s, str):
                raise TypeError(f"alphabet[{i}] must be a str; got {type(s).__name__}")
    if len(labels) != num_classes - 1:
        raise ValueError(
            f"alphabet has {len(labels)} symbols but probs has {num_classes} classes; "
            "expected len(alphabet) + 1 (blank)"
        )
    out = tuple(labels[:b]) + ("",) + tuple(labels[b:])
    if isinstance(alphabet, (str, tuple)) and type(blank) is int and len(_symbols_cache) < 64:
        _symbols_cache[(alphabet, num_classes, blank)] = (out, b)
    return out, b


def check_int(value: Any, name: str, minimum: int) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise naming ``name``."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int; got {type(value).__name__}")
        value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value  # type: ignore[no-any-return]


def check_allowed(
    allowed: Allowed | None, syms: tuple[str, ...], blank: int
) -> tuple[int, ...] | None:
    """Turn ``allowed`` (symbols or class indices) into sorted non-blank class indices."""
    if allowed is None:
        return None
    items: Sequence[Any]
    if isinstance(allowed, str):
        items = list(allowed)
    elif isinstance(allowed, (bytes, bytearray)) or not isinstance(allowed, (Sequence, set,
                                                                             frozenset)):
        raise TypeError(
            "allowed must be a str of symbols or a sequence of symbols / class indices; "
            f"got {type(allowed).__name__}"
        )
    else:
        items = list(allowed)
    if not items:
        raise ValueError("allowed is empty; pass None to allow every symbol")
    index = {s: i for i, s in enumerate(syms) if i != blank}
    classes = set()
    for item in items:
        if isinstance(item, str):
            if item not in index:
                raise ValueError(f"allowed contains {item!r}, which is not in the alphabet")
            classes.add(index[item])
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(syms):
                raise ValueError(
                    f"allowed contains class index {item}; expected 0 <= index < {len(syms)}"
                )
            if item == blank:
                raise ValueError(
                    f"allowed contains the blank index {item}; the blank is always allowed"
                )
            classes.add(int(item))
        else:
            raise TypeError(
                f"allowed items must be str symbols or int class indices; got "
                f"{type(item).__name__}"
            )
    return tuple(sorted(classes))


def check_beam_options(
    beam_width: Any,
    top_k: Any,
    min_length: Any,
    max_length: Any,
    prune: Any,
    time_steps: int,
    log_input: bool,
) -> tuple[int, int, int, int, float]:
    """Validate the beam options; return (beam_width, top_k, min_length, max_length or -1,
    threshold in the kernel's input domain: a probability, or a log-probability with log_input).
    """
    w = check_int(beam_width, "beam_width", 1)
    k = w if top_k is None else check_int(top_k, "top_k", 1)
    if k > w:
        raise ValueError(f"top_k must be <= beam_width ({w}); got {k}")
    lo = check_int(min_length, "min_length", 0)
    if lo > time_steps:
        raise ValueError(
            f"min_length must be <= the number of time steps T={time_steps}; got {lo}"
        )
    hi = -1 if max_length is None else check_int(max_length, "max_length", 0)
    if hi >= 0 and hi < lo:
        raise ValueError(f"max_length must be >= min_length ({lo}); got {hi}")
    if prune is None:
        thr = 0.0
    elif type(prune) is float and 0.0 <= prune < 1.0:
        thr = prune
    else:
        if isinstance(prune, bool) or not isinstance(prune, (int, float, np.floating,
                                                             np.integer)):
            raise TypeError(f"prune must be a float probability or None; got "
                            f"{type(prune).__name__}")
        thr = float(prune)
        if not 0.0 <= thr < 1.0:
            raise ValueError(f"prune must be in [0, 1) (a per-frame probability); got {prune}")
    if log_input:
        thr = math.log(thr) if thr > 0 else -math.inf
    return w, k, lo, hi, thr


def check_num_threads(num_threads: Any) -> int:
    """Return ``num_threads`` as an int >= 1."""
    return check_int(num_threads, "num_threads", 1)
