"""Exception types of captcha_edge.

Each one also subclasses the builtin a caller would expect, so ``except ValueError`` keeps working.
"""


class CaptchaEdgeError(Exception):
    """Base class of every error raised by captcha_edge on purpose."""


class ModelFormatError(CaptchaEdgeError, ValueError):
    """A model file is missing, corrupt, foreign, or has no captcha_edge metadata."""


class ImageError(CaptchaEdgeError, ValueError):
    """An input image cannot be read or is not a usable captcha image."""
