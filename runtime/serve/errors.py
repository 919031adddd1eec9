"""The two request errors of the service: plain exceptions, no web framework, so that every
module of :mod:`captcha_edge.serve` may raise them (a leaf of the import map in ``__init__``)."""
from __future__ import annotations


class HTTPError(Exception):
    """A request problem answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLarge(Exception):
    """Raised from ``receive`` when the streamed body passes ``--max-bytes``."""

