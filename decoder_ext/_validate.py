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
#: An engine's ``scan(probs, num_classes) -> int`` (``_ctc_py.scan``, ``_ctc_cy.scan``).
Scan = Callable[[Any, int], int]

# Bits returned by an engine's scan: what ``probs`` holds. LAYOUT: not a non-empty C-contiguous
# float32 2-D ndarray (with ``num_classes`` columns unless that is -1); its values are then not
# looked at. NEG_ZERO (-0.0) is a valid probability but keeps an input off the greedy fast path.
NAN, POS_INF, NEG_INF, NEGATIVE, NEG_ZERO, LAYOUT = 1, 2, 4, 8, 16, 32
_BAD_VALUES = NAN | POS_INF | NEG_INF | NEGATIVE

#: The most prefixes a beam search may keep (``beam_width``, and so ``top_k``). Time and memory
#: grow about linearly with the width (the trie holds up to ``T * beam_width`` prefixes). At 1024
#: an exact search takes 13-26 ms in Cython and 1-2 s in the Python twin at T=50 C=20, 0.2 s in
#: Cython at T=200 C=100 (measured, docs/decoder.md): far past the widths where a captcha's
#: answer still changes (~25), while a typo such as ``--beam-width 10000000`` (~1 GB) is refused.
MAX_BEAM_WIDTH = 1024
#: Default ``beam_width`` of the beam searches (and of a recognizer's constrained decoding).
DEFAULT_BEAM_WIDTH = 10

_SHAPE_NAMES = {2: "(time, classes)", 3: "(batch, time, classes)"}
_symbols_cache: dict[tuple[Any, int, int], tuple[tuple[str, ...], int]] = {}


def greedy_fast(probs: Any, alphabet: Any, blank: Any, log_input: Any, scan: Scan) -> bool:
    """True when ``decode_greedy``'s common case applies to valid input.

    The case is what a model emits: ``probs`` a non-empty C-contiguous float32 ``(T, C)``
    ndarray whose values are all in ``[+0, +inf)`` (finite, sign bit clear), ``alphabet`` a str
    of ``C - 1`` symbols, ``blank=-1`` and ``log_input=False``. :func:`check_probs` and
    :func:`symbols` would pass such input through unchanged, so the engine's ``greedy_chars``
    may decode it as it is. Anything else, every invalid input included, is False and takes the
    validating path. ``scan`` is the engine's: one compiled pass over the values in Cython.
    """
    return (type(blank) is int and blank == -1 and log_input is False
            and type(alphabet) is str and scan(probs, len(alphabet) + 1) == 0)


def check_probs(probs: Any, ndim: int, log_input: bool, scan: Scan) -> FloatArray:
    """Validate ``probs`` and return it as a C-contiguous float32 array of rank ``ndim``.

    With ``log_input`` the values are log-probabilities or logits; each frame is renormalised
    with a log-softmax (in float64) so scores and confidences are true log-probabilities.
    ``scan`` is the engine's (see :data:`LAYOUT` and the other bits).
    """
    if ndim == 2 and not log_input and scan(probs, -1) & ~NEG_ZERO == 0:
        return probs  # type: ignore[no-any-return]  # what a model emits: used as it is
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
    flags = scan(probs if ndim == 2 else probs.reshape(-1, probs.shape[-1]), -1) & _BAD_VALUES
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
    allowed: Allowed | None, syms: tuple[str, ...], blank: int, symbols_name: str = "alphabet"
) -> tuple[int, ...] | None:
    """Turn ``allowed`` (symbols or class indices) into sorted non-blank class indices.

    ``symbols_name`` names ``syms`` in the message for unknown symbols ("alphabet", or e.g.
    "model's charset" for a recognizer)."""
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
    unknown = list(dict.fromkeys(i for i in items if isinstance(i, str) and i not in index))
    if unknown:
        names = [s for i, s in enumerate(syms) if i != blank]
        shown = "".join(names) if all(len(s) == 1 for s in names) else names
        missing = "".join(unknown) if all(len(s) == 1 for s in unknown) else unknown
        raise ValueError(
            f"allowed contains {missing!r}, which the {symbols_name} {shown!r} cannot emit"
        )
    classes = set()
    for item in items:
        if isinstance(item, str):
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
    w = check_beam_width(beam_width)
    k = w if top_k is None else check_top_k(top_k, w)
    lo, hi = check_lengths(min_length, max_length)
    check_min_length(lo, time_steps)
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
    return w, k, lo, -1 if hi is None else hi, thr


def check_beam_width(beam_width: Any) -> int:
    """Return ``beam_width`` as an int in ``[1, MAX_BEAM_WIDTH]``."""
    w = check_int(beam_width, "beam_width", 1)
    if w > MAX_BEAM_WIDTH:
        raise ValueError(f"beam_width must be <= MAX_BEAM_WIDTH ({MAX_BEAM_WIDTH}); got {w}")
    return w


def check_top_k(top_k: Any, beam_width: int | None) -> int:
    """Return ``top_k`` as an int >= 1 and <= ``beam_width`` (None: <= MAX_BEAM_WIDTH)."""
    k = check_int(top_k, "top_k", 1)
    if beam_width is not None and k > beam_width:
        raise ValueError(f"top_k must be <= beam_width ({beam_width}); got {k}")
    if k > MAX_BEAM_WIDTH:
        raise ValueError(f"top_k must be <= MAX_BEAM_WIDTH ({MAX_BEAM_WIDTH}); got {k}")
    return k


def check_lengths(min_length: Any, max_length: Any) -> tuple[int, int | None]:
    """Return (min_length as an int >= 0, max_length as an int >= min_length, or None)."""
    lo = check_int(min_length, "min_length", 0)
    hi = None if max_length is None else check_int(max_length, "max_length", 0)
    if hi is not None and hi < lo:
        raise ValueError(f"max_length must be >= min_length ({lo}); got {hi}")
    return lo, hi


def check_min_length(min_length: int, time_steps: int) -> None:
    """Refuse a ``min_length`` that no CTC output of ``time_steps`` frames can reach."""
    if min_length > time_steps:
        raise ValueError(
            f"min_length must be <= T={time_steps}, the number of time steps (T frames of CTC "
            f"output emit at most T characters); got {min_length}"
        )


def check_num_threads(num_threads: Any) -> int:
    """Return ``num_threads`` as an int >= 1."""
    return check_int(num_threads, "num_threads", 1)
