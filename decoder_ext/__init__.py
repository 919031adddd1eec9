"""CTC decoding for captcha_edge: greedy (best path) and prefix beam search, numpy only.

Input is what a CTC model's softmax emits: a ``(T, C)`` array of per-frame class probabilities
(``(N, T, C)`` for the ``*_batch`` functions), with the blank at index ``blank`` (default ``-1``,
the last class, the Keras convention) and ``alphabet`` naming the other ``C - 1`` classes in
order. Pass ``log_input=True`` for log-probabilities or logits.

Two engines compute identical results: a Cython kernel (``"cython"``, used when built) and its
pure-Python twin (``"python"``). ``CAPTCHA_EDGE_PUREPYTHON=1`` hides the Cython one.

Example:
    >>> import numpy as np
    >>> from captcha_edge.decoder import decode_greedy, beam_search
    >>> probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]], np.float32)
    >>> decode_greedy(probs, "ab")  # a, blank, a: the blank keeps both a's
    'aa'
    >>> beam_search(probs, "ab", beam_width=4)[0].text
    'aa'
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, NamedTuple, TypeVar

from . import _ctc_py, _validate
from ._options import DecodeOptions
from ._validate import DEFAULT_BEAM_WIDTH, MAX_BEAM_WIDTH, Allowed, Alphabet

__all__ = [
    "DEFAULT_BEAM_WIDTH",
    "DEFAULT_PRUNE",
    "ENGINES",
    "MAX_BEAM_WIDTH",
    "Beam",
    "DecodeOptions",
    "beam_search",
    "beam_search_batch",
    "decode_beam",
    "decode_beam_batch",
    "decode_greedy",
    "decode_greedy_batch",
    "greedy_search",
    "greedy_search_batch",
]

ENGINES: dict[str, ModuleType] = {"python": _ctc_py}
if not os.environ.get("CAPTCHA_EDGE_PUREPYTHON"):
    try:
        from . import _ctc_cy

        ENGINES["cython"] = _ctc_cy
    except ImportError:  # no compiler at install time: the Python twin does the work
        pass
_DEFAULT = ENGINES.get("cython", _ctc_py)

#: Default per-frame probability below which a class does not extend beam prefixes.
DEFAULT_PRUNE = 1e-3

_BUILD_HINT = (
    "the Cython CTC decoder is not built{why}; build it with "
    "`pip install --no-build-isolation -e .` (needs Cython>=3 and a C compiler; set "
    "CAPTCHA_EDGE_REQUIRE_EXT=1 to make a failed build an error), or use engine='python'"
)


@dataclass(frozen=True)
class Beam:
    """One decoded hypothesis.

    Attributes:
        text: the decoded string (the labels' symbols joined).
        labels: class indices of the emitted characters (never the blank).
        log_prob: natural-log probability. Beam search: the probability of ``text`` summed over
            all its alignments (exact when unpruned and the beam kept every prefix). Greedy: the
            probability of the single best path (a lower bound of the text's probability).
        char_confidences: one per character: the highest probability of that character's
            class over the frames that the most probable alignment of ``text`` assigns to it
            (for greedy, the frames of its run on the best path).
        confidence: ``exp(log_prob)``, in ``[0, 1]`` when each frame's probabilities sum to 1.
    """

    text: str
    labels: tuple[int, ...]
    log_prob: float
    char_confidences: tuple[float, ...]
    confidence: float


def _engine(engine: str | None) -> ModuleType:
    """Return the kernel module for ``engine`` (None: the fastest available)."""
    if engine is None:
        return _DEFAULT
    mod = ENGINES.get(engine) if isinstance(engine, str) else None
    if mod is not None:
        return mod
    if engine == "cython":
        why = " (CAPTCHA_EDGE_PUREPYTHON is set)" if os.environ.get(
            "CAPTCHA_EDGE_PUREPYTHON") else ""
        raise ImportError(_BUILD_HINT.format(why=why))
    if not isinstance(engine, str):
        raise TypeError(f"engine must be None, 'python' or 'cython'; got {type(engine).__name__}")
    raise ValueError(f"unknown engine {engine!r}; valid engines: None, 'python', 'cython'")


def _text(symbols: tuple[str, ...], labels: Sequence[int]) -> str:
    """Join the symbols of ``labels``."""
    return "".join([symbols[i] for i in labels])


T = TypeVar("T")


#: A greedy batch gets one thread per this many values at most: starting a thread (~0.1 ms)
#: costs more than a greedy decode of fewer values.
GREEDY_VALUES_PER_THREAD = 1 << 18


class _Prepared(NamedTuple):
    """Validated inputs of one public call: the engine, ``probs`` as the kernels want it, the
    symbol of each class (``""`` for the blank), the blank index and the thread count."""

    mod: ModuleType
    p: _validate.FloatArray
    symbols: tuple[str, ...]
    blank: int
    num_threads: int


def _prepare(probs: Any, alphabet: Alphabet, ndim: int, blank: Any, log_input: bool,
             engine: str | None, num_threads: Any = 1) -> _Prepared:
    """Look the engine up and validate ``probs``, ``alphabet``, ``blank`` and ``num_threads``."""
    mod = _engine(engine)
    nt = _validate.check_num_threads(num_threads)
    p = _validate.check_probs(probs, ndim, log_input, mod.scan)
    symbols, b = _validate.symbols(alphabet, p.shape[-1], blank)
    return _Prepared(mod, p, symbols, b, nt)


def _prepare_beam(
    probs: Any, alphabet: Alphabet, ndim: int, blank: Any, log_input: bool,
    engine: str | None, num_threads: Any, beam_width: Any, top_k: Any, allowed: Any,
    min_length: Any, max_length: Any, prune: Any,
) -> tuple[_Prepared, tuple[Any, ...]]:
    """:func:`_prepare` plus the beam options, validated once for the whole call; returns the
    kernel arguments after ``p`` (all but ``want_conf``)."""
    pr = _prepare(probs, alphabet, ndim, blank, log_input, engine, num_threads)
    w, k, lo, hi, thr = _validate.check_beam_options(
        beam_width, top_k, min_length, max_length, prune, pr.p.shape[-2], log_input
    )
    classes = _validate.check_allowed(allowed, pr.symbols, pr.blank)
    return pr, (pr.blank, log_input, w, k, classes, lo, hi, thr)


def _chunked(run: Callable[[Any], list[T]], pr: _Prepared, min_values: int = 0) -> list[T]:
    """Run ``run`` on contiguous slices of the batch ``pr.p`` in up to ``pr.num_threads``
    threads (the Cython kernels release the GIL), each slice holding at least ``min_values``
    values; the Python engine, which holds the GIL, always runs in the calling thread."""
    p = pr.p
    n = p.shape[0]
    workers = min(pr.num_threads, n) if pr.mod is not _ctc_py else 1
    if min_values:
        workers = min(workers, max(1, p.size // min_values))
    if workers <= 1:
        return run(p)
    bounds = [n * i // workers for i in range(workers + 1)]
    parts: list[list[T]] = [[] for _ in range(workers)]
    errors: list[Exception] = []

    def work(i: int) -> None:
        try:
            parts[i] = run(p[bounds[i]:bounds[i + 1]])
        except Exception as exc:  # noqa: BLE001 -- re-raised in the calling thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, workers)]
    for th in threads:
        th.start()
    work(0)
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return [item for part in parts for item in part]


def _beams(symbols: tuple[str, ...], found: list[Any]) -> list[Beam]:
    """Kernel tuples -> :class:`Beam` objects."""
    return [_beam(symbols, labels, logp, confs) for labels, logp, confs in found]


def _beam(symbols: tuple[str, ...], labels: list[int], logp: float, confs: list[float]) -> Beam:
    """Build one :class:`Beam` from kernel output."""
    return Beam(_text(symbols, labels), tuple(labels), logp, tuple(confs), math.exp(logp))


# ---------------------------------------------------------------------------------- greedy

_greedy_fast = _validate.greedy_fast  # one attribute lookup less on the fast path


def decode_greedy(
    probs: Any,
    alphabet: Alphabet,
    *,
    blank: int = -1,
    log_input: bool = False,
    engine: str | None = None,
) -> str:
    """Best-path CTC decode: argmax per frame, merge repeats, drop blanks.

    Args:
        probs: ``(T, C)`` float32/float64 array of per-frame class probabilities.
        alphabet: the ``C - 1`` non-blank symbols in class order (a str, or a sequence of str
            for multi-character symbols).
        blank: index of the blank class; default ``-1`` (last class).
        log_input: ``probs`` holds log-probabilities or logits (renormalised per frame).
        engine: ``None`` (fastest available), ``"python"`` or ``"cython"``.

    Returns:
        The decoded text.

    Raises:
        TypeError, ValueError: bad ``probs``/``alphabet``/``blank`` (message names which).
        ImportError: ``engine="cython"`` but the extension is not built.
    """
    # A hit in ENGINES skips _engine's call (~0.1 µs, a twentieth of the fast path's time).
    mod = _DEFAULT if engine is None else ENGINES.get(engine) if type(engine) is str else None
    if mod is None:
        mod = _engine(engine)
    if _greedy_fast(probs, alphabet, blank, log_input, mod.scan):
        return mod.greedy_chars(probs, alphabet)  # type: ignore[no-any-return]
    pr = _prepare(probs, alphabet, 2, blank, log_input, engine)
    return pr.mod.greedy_text(pr.p, pr.blank, pr.symbols)  # type: ignore[no-any-return]


def greedy_search(
    probs: Any,
    alphabet: Alphabet,
    *,
    blank: int = -1,
    log_input: bool = False,
    engine: str | None = None,
) -> Beam:
    """Best-path decode with details: labels, path log-probability and confidences.

    Same arguments as :func:`decode_greedy`. ``log_prob`` is the log-probability of the best
    path; each character's confidence is its class's highest probability over its run of
    frames; ``confidence = exp(log_prob)``.

    Returns:
        A :class:`Beam`.
    """
    pr = _prepare(probs, alphabet, 2, blank, log_input, engine)
    labels, confs, logp = pr.mod.greedy_detail(pr.p, pr.blank, log_input)
    return _beam(pr.symbols, labels, logp, confs)


def decode_greedy_batch(
    probs: Any,
    alphabet: Alphabet,
    *,
    blank: int = -1,
    log_input: bool = False,
    engine: str | None = None,
    num_threads: int = 1,
) -> list[str]:
    """:func:`decode_greedy` over a ``(N, T, C)`` batch.

    Args:
        num_threads: the most threads to split the batch over; the Cython kernel releases the
            GIL (the Python engine runs serially). Each thread gets at least
            ``GREEDY_VALUES_PER_THREAD`` (2**18) values of ``probs``: below that, starting a
            thread costs more than the decode.
        (others): as :func:`decode_greedy`.

    Returns:
        One text per sample.
    """
    pr = _prepare(probs, alphabet, 3, blank, log_input, engine, num_threads)
    rows = _chunked(lambda x: pr.mod.greedy_batch(x, pr.blank, log_input), pr,
                    GREEDY_VALUES_PER_THREAD)
    return [_text(pr.symbols, r) for r in rows]


def greedy_search_batch(
    probs: Any,
    alphabet: Alphabet,
    *,
    blank: int = -1,
    log_input: bool = False,
    engine: str | None = None,
    num_threads: int = 1,
) -> list[Beam]:
    """:func:`greedy_search` over a ``(N, T, C)`` batch (one :class:`Beam` per sample).

    Args:
        num_threads: as :func:`decode_greedy_batch`.
        (others): as :func:`decode_greedy`.
    """
    pr = _prepare(probs, alphabet, 3, blank, log_input, engine, num_threads)
    found = _chunked(lambda x: pr.mod.greedy_detail_batch(x, pr.blank, log_input), pr,
                     GREEDY_VALUES_PER_THREAD)
    return [_beam(pr.symbols, labels, logp, confs) for labels, confs, logp in found]


# ------------------------------------------------------------------------------------ beam


def beam_search(
    probs: Any,
    alphabet: Alphabet,
    *,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    top_k: int | None = None,
    blank: int = -1,
    allowed: Allowed | None = None,
    min_length: int = 0,
    max_length: int | None = None,
    prune: float | None = DEFAULT_PRUNE,
    log_input: bool = False,
    engine: str | None = None,
) -> list[Beam]:
    """CTC prefix beam search in log space; the ``top_k`` best hypotheses, best first.

    Each prefix keeps the probability of its alignments ending in a blank and ending in its
    last label, so repeats are handled correctly ("aa" needs a blank between the a's) and a
    text's probability is summed over all its alignments.

    Args:
        probs: ``(T, C)`` float32/float64 array of per-frame class probabilities.
        alphabet: the ``C - 1`` non-blank symbols in class order.
        beam_width: prefixes kept after each frame (1..``MAX_BEAM_WIDTH``).
        top_k: hypotheses returned (1..beam_width); default ``beam_width``.
        blank: index of the blank class; default ``-1`` (last class).
        allowed: symbols (a str, or a sequence of symbols) or class indices that may be
            emitted; the search never extends a prefix with anything else. ``None``: all.
        min_length: prefixes that can no longer reach this length in the frames left are
            dropped during the search, so every result has at least this many characters
            (at most ``T``).
        max_length: prefixes never grow past this length (``None``: no limit).
        prune: per-frame probability below which a class does not extend prefixes (the blank
            and repeats still count exactly). Default ``DEFAULT_PRUNE`` (1e-3): on model-like
            (peaky) output this skips almost every class and keeps the exact search's top-1;
            on flat output it can drop hypotheses. ``None`` or ``0``: exact search.
        log_input: ``probs`` holds log-probabilities or logits (renormalised per frame).
        engine: ``None`` (fastest available), ``"python"`` or ``"cython"``.

    Returns:
        Up to ``top_k`` :class:`Beam` objects, best first. Fewer (possibly none) when fewer
        texts have non-zero probability under the constraints (e.g. ``min_length`` with a
        single allowed symbol needs ``2 * min_length - 1`` frames).

    Raises:
        TypeError, ValueError: bad input or option (the message names the parameter).
        ImportError: ``engine="cython"`` but the extension is not built.
    """
    pr, args = _prepare_beam(probs, alphabet, 2, blank, log_input, engine, 1, beam_width,
                             top_k, allowed, min_length, max_length, prune)
    return _beams(pr.symbols, pr.mod.beam(pr.p, *args, True))


def decode_beam(
    probs: Any,
    alphabet: Alphabet,
    *,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    blank: int = -1,
    allowed: Allowed | None = None,
    min_length: int = 0,
    max_length: int | None = None,
    prune: float | None = DEFAULT_PRUNE,
    log_input: bool = False,
    engine: str | None = None,
) -> str:
    """The text of the best :func:`beam_search` hypothesis (same arguments).

    Returns:
        The decoded text; ``""`` when no text satisfies the constraints.
    """
    pr, args = _prepare_beam(probs, alphabet, 2, blank, log_input, engine, 1, beam_width,
                             1, allowed, min_length, max_length, prune)
    return _best_text(pr.symbols, pr.mod.beam(pr.p, *args, False))


def _best_text(symbols: tuple[str, ...], found: list[Any]) -> str:
    """The text of the first kernel tuple, or ``""`` when there is none."""
    return _text(symbols, found[0][0]) if found else ""


def beam_search_batch(
    probs: Any,
    alphabet: Alphabet,
    *,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    top_k: int | None = None,
    blank: int = -1,
    allowed: Allowed | None = None,
    min_length: int = 0,
    max_length: int | None = None,
    prune: float | None = DEFAULT_PRUNE,
    log_input: bool = False,
    engine: str | None = None,
    num_threads: int = 1,
) -> list[list[Beam]]:
    """:func:`beam_search` over a ``(N, T, C)`` batch.

    Args:
        num_threads: threads to split the batch over; the Cython kernel releases the GIL
            (the Python engine runs serially).
        (others): as :func:`beam_search`.

    Returns:
        One list of :class:`Beam` (best first) per sample.
    """
    pr, args = _prepare_beam(probs, alphabet, 3, blank, log_input, engine, num_threads,
                             beam_width, top_k, allowed, min_length, max_length, prune)
    found = _chunked(lambda x: pr.mod.beam_batch(x, *args, True), pr)
    return [_beams(pr.symbols, f) for f in found]


def decode_beam_batch(
    probs: Any,
    alphabet: Alphabet,
    *,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    blank: int = -1,
    allowed: Allowed | None = None,
    min_length: int = 0,
    max_length: int | None = None,
    prune: float | None = DEFAULT_PRUNE,
    log_input: bool = False,
    engine: str | None = None,
    num_threads: int = 1,
) -> list[str]:
    """:func:`decode_beam` over a ``(N, T, C)`` batch; one text per sample."""
    pr, args = _prepare_beam(probs, alphabet, 3, blank, log_input, engine, num_threads,
                             beam_width, 1, allowed, min_length, max_length, prune)
    found = _chunked(lambda x: pr.mod.beam_batch(x, *args, False), pr)
    return [_best_text(pr.symbols, f) for f in found]
