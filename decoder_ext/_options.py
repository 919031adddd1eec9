"""DecodeOptions: the decoding options of a recognizer call, validated once.

A :class:`~captcha_edge.Recognizer` keeps its constructor's options as one ``DecodeOptions``
and merges each call's keywords over it (:meth:`DecodeOptions.merged`). Every check is the
decoder's own (``_validate``), so the messages read the same wherever an option is refused:
``ValueError: beam_width must be >= 1; got 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from . import _validate


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode one ``(T, C)`` output; ``None`` means "not set" (see :meth:`merged`).

    Attributes:
        beam_width: 1 = greedy (best path), > 1 = CTC prefix beam search of that width, at most
            ``MAX_BEAM_WIDTH``; None = greedy, or a beam search of width
            ``max(DEFAULT_BEAM_WIDTH, top_k)`` when a constraint or ``top_k > 1`` asks for
            one (greedy decoding cannot honour those). See :attr:`width`.
        allowed: characters the text may contain (None: every character of the charset).
        min_length, max_length: length range of the text (None: unbounded).
        top_k: hypotheses wanted (the best and ``top_k - 1`` alternatives); never more than
            an explicit ``beam_width``.

    Raises:
        TypeError, ValueError: an option of the wrong type or out of range, with the
            decoder's message (``beam_width must be >= 1; got 0``).
    """

    beam_width: int | None = None
    allowed: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    top_k: int = 1

    def __post_init__(self) -> None:
        # Normalised values (numpy ints -> int) replace the given ones; frozen, so via object.
        if self.beam_width is not None:
            object.__setattr__(self, "beam_width", _validate.check_beam_width(self.beam_width))
        object.__setattr__(self, "top_k", _validate.check_top_k(self.top_k, self.beam_width))
        lo, hi = _validate.check_lengths(
            0 if self.min_length is None else self.min_length, self.max_length)
        if self.min_length is not None:
            object.__setattr__(self, "min_length", lo)
        object.__setattr__(self, "max_length", hi)
        if self.allowed is not None:
            if not isinstance(self.allowed, str):
                raise TypeError(f"allowed must be a str of characters or None; got "
                                f"{type(self.allowed).__name__}")
            if not self.allowed:
                raise ValueError("allowed is empty; pass None to allow every symbol")

    def merged(self, **overrides: Any) -> DecodeOptions:
        """These options with every keyword that is not None put over them (a call's options
        over a recognizer's defaults); the result is validated as a whole."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown decoding option {unknown[0]!r}; valid options: "
                            f"{', '.join(sorted(names))}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given) if given else self

    def check_model(self, charset: str, time_steps: int | None = None) -> None:
        """Refuse options that a model with this ``charset`` (blank last) and ``time_steps``
        output frames can never satisfy: ``allowed`` characters outside the charset, and a
        ``min_length`` above ``T`` (T frames of CTC output emit at most T characters)."""
        _validate.check_allowed(self.allowed, (*charset, ""), len(charset), "model's charset")
        if time_steps is not None and self.min_length is not None:
            _validate.check_min_length(self.min_length, time_steps)

    @property
    def constrained(self) -> bool:
        """``allowed`` or a length bound is set (only a beam search honours them)."""
        return (self.allowed is not None or self.min_length is not None
                or self.max_length is not None)

    @property
    def width(self) -> int:
        """The beam width to search with; 1 with :attr:`constrained` False means greedy."""
        if self.beam_width is not None:
            return self.beam_width
        if self.constrained or self.top_k > 1:
            return max(_validate.DEFAULT_BEAM_WIDTH, self.top_k)
        return 1
