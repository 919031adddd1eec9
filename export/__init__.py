"""captcha_edge.export: ``captcha-export``, a trained run folder -> verified ``.tflite`` files.

Importing this package does not import TensorFlow; only the conversion child process
(``_worker.py``) does. Needs the ``[train]`` extra: pip install "captcha-edge[train]".
"""
from .formats import FORMATS, Format, parse_formats

__all__ = ["FORMATS", "Format", "parse_formats"]
