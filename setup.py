"""Build the Cython CTC decoder; everything else is declared in pyproject.toml.

CAPTCHA_EDGE_PUREPYTHON=1 skips the extension (pure-Python decoder only).
CAPTCHA_EDGE_REQUIRE_EXT=1 turns a failed extension build into an error (CI and wheels set it);
without it a machine with no compiler still installs, with the pure-Python twin.
"""
import os
import platform
import sys

from setuptools import Extension, setup

PURE = bool(os.environ.get("CAPTCHA_EDGE_PUREPYTHON")) or platform.python_implementation() != "CPython"
REQUIRE = bool(os.environ.get("CAPTCHA_EDGE_REQUIRE_EXT"))

ext_modules = []
if not PURE:
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        if REQUIRE:
            raise
        print(f"captcha-edge: Pure build (Cython/numpy unavailable: {exc})", file=sys.stderr)
    else:
        ext = Extension(
            "captcha_edge.decoder._ctc_cy",
            ["decoder_ext/_ctc_cy.pyx"],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"] if os.name != "nt" else [],
            optional=not REQUIRE,
        )
        ext_modules = cythonize([ext], language_level=3, quiet=True)
        print("captcha-edge: Accelerated build (Cython CTC decoder)", file=sys.stderr)
else:
    print("captcha-edge: Pure build (CAPTCHA_EDGE_PUREPYTHON set or not CPython)", file=sys.stderr)

setup(ext_modules=ext_modules)
