"""captcha_edge: read text captchas with an int8 TFLite CRNN, on a CPU or a Raspberry Pi.

Importing this package needs only numpy and Pillow; it never imports TensorFlow and prints
nothing. The TFLite interpreter is imported when the first :class:`Recognizer` is built.
"""
from ._common import package_version
from .errors import CaptchaEdgeError, ImageError, ModelFormatError
from .recognizer import DEFAULT_MODEL, Prediction, Recognizer

__version__ = package_version()

__all__ = [
    "DEFAULT_MODEL",
    "CaptchaEdgeError",
    "ImageError",
    "ModelFormatError",
    "Prediction",
    "Recognizer",
    "__version__",
]
