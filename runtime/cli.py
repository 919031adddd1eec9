"""``captcha-edge``: read captchas with an int8 TFLite model on a CPU or Raspberry Pi.

Subcommands: predict, eval, bench, info. No TensorFlow needed. Exit status: 0 all inputs
answered, 1 some inputs failed (the others are still answered), 2 usage or model error.

This module is the parser and the dispatch; each subcommand's work lives in :mod:`.commands`
(``cmd_predict``, ``cmd_eval``, ``cmd_bench``, ``cmd_info``), built on :mod:`.inputs`
(expanding and reading the inputs, printable names), :mod:`.metrics` (accuracy, CER,
confusions), :mod:`.timing` (stage timing, shared with the benchmarks) and :mod:`.synthetic`
(benchmark images). More subcommands plug in through :data:`SUBCOMMAND_MODULES`: a module there
defines ``register(add, parents)``, where ``add(name, help, parents, epilog)`` returns a new
subparser and ``parents`` maps "backend", "model", "decoding" and "threads" to the shared
option groups; the subparser sets ``func`` (``args -> exit status``) with ``set_defaults``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Callable

from ._common import number_arg
from .commands import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    UsageError,
    cmd_bench,
    cmd_eval,
    cmd_info,
    cmd_predict,
    err,
    python_owns_stderr,
)
from .errors import ModelFormatError

# -- parser -------------------------------------------------------------------------------------

EXAMPLES = {
    "predict": """examples:
  captcha-edge predict captcha.png
  captcha-edge predict shots/ 'more/**/*.png' --json
  curl -s https://example.org/captcha | captcha-edge predict -
  captcha-edge predict --model my_int8.tflite --beam-width 8 --allowed 0123456789 \\
      --min-length 4 --max-length 6 --threads 2 captchas/
output: one line per image "path<TAB>text" (errors on stderr, one line each), or with --json
  {"path": ..., "text": ..., "confidence": ..., "error": null}; control characters and
  non-UTF-8 bytes in names are shown escaped (\\n, \\udcff), so one image is one line
folders: their image files; entries that are not regular files are reported, one line each
exit status: 0 all read, 1 some inputs failed (the others are still answered),
  2 usage or model error""",
    "eval": """examples:
  captcha-edge eval labelled_captchas/
  captcha-edge eval data/ --label-pattern '^(?P<label>[a-z0-9]+)_' --json
  captcha-edge eval shots/ --labels shots/labels.csv      (captcha1.jpg,4821 rows)
  captcha-edge eval data/ --model run/model_int8.tflite --beam-width 8 --threads 2
  captcha-edge eval archive/ --recursive                  (archive/2024/..., archive/2025/...)
labels come from the file name: the regex is searched in the stem; group "label", else group 1,
else the whole match is the label (default: the stem up to the first "_"); or from a labels
file, --labels or DIR's labels.csv / labels.tsv (read unless --label-pattern is given)""",
    "bench": """examples:
  captcha-edge bench
  captcha-edge bench --images captchas/ --n 500 --threads 2
  captcha-edge bench --model a_int8.tflite --model b_float32.tflite --json
stages: decode+preprocess (PNG bytes -> uint8 array), bare invoke, quantize+invoke+dequantize,
CTC decode, end to end; throughput with 1 thread, N workers (one interpreter each) and one
interpreter with num_threads=N""",
    "info": """examples:
  captcha-edge info
  captcha-edge info --model run/model_int8.tflite --json""",
}


#: Modules (in this package) that add a subcommand with ``register(add, parents)`` when present.
SUBCOMMAND_MODULES: tuple[str, ...] = ("serve",)


_positive = number_arg(int, 1)
_nonneg = number_arg(int, 0)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0].strip("`").split(": ", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  captcha-edge predict captcha.png\n  captcha-edge eval folder/\n"
               "  captcha-edge bench --threads 2\n  captcha-edge info\n"
               "run 'captcha-edge COMMAND --help' for each command's options")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", choices=["ai-edge-litert", "tflite-runtime", "tensorflow"],
                        default=None, help="TFLite interpreter (default: first installed)")
    common = argparse.ArgumentParser(add_help=False, parents=[backend])
    common.add_argument("--model", "-m", default=None,
                        help="captcha_edge .tflite model (default: the bundled int8 model)")
    dec = argparse.ArgumentParser(add_help=False)
    g = dec.add_argument_group("decoding")
    g.add_argument("--beam-width", type=_positive, default=None,
                   help="1 = greedy best path, >1 = CTC prefix beam search (default: greedy, "
                        "or width 10 when --allowed/--min-length/--max-length is given)")
    g.add_argument("--allowed", default=None, help="only these characters may appear")
    g.add_argument("--min-length", type=_nonneg, default=None, help="shortest allowed text")
    g.add_argument("--max-length", type=_nonneg, default=None, help="longest allowed text")
    g.add_argument("--no-length-prior", dest="length_prior", action="store_false",
                   help="read texts of any length; by default a model that records the label "
                        "lengths it was trained on (metadata label_lengths) is decoded within "
                        "that range, unless --min-length/--max-length say otherwise")
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=_positive, default=1,
                         help="images read in parallel, one interpreter each (default 1)")

    def add(name: str, help_: str, parents: list[argparse.ArgumentParser],
            epilog: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_,
                              epilog=EXAMPLES[name] if epilog is None else epilog,
                              parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("predict", "read captcha images and print their text", [common, dec, threads])
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders, glob patterns, or - for image bytes on stdin")
    p.add_argument("--json", action="store_true", help="JSON lines instead of path<TAB>text")
    p.set_defaults(func=cmd_predict)

    p = add("eval", "measure accuracy, CER and latency on a folder of labelled images",
            [common, dec, threads])
    p.add_argument("dir", metavar="DIR",
                   help="folder of images whose names carry the label, or with a labels file")
    p.add_argument("--labels", metavar="FILE",
                   help="CSV/TSV of filename,label, file names relative to DIR (default: DIR's "
                        "labels.csv or labels.tsv when there and no --label-pattern is given)")
    p.add_argument("--label-pattern", default=None, metavar="REGEX",
                   help="regex searched in each file stem to get its label (its first group, or "
                        "the group named 'label'; default '^[^_]+': the stem up to the first _)")
    p.add_argument("--recursive", action="store_true",
                   help="also read the images in DIR's sub-folders (a labels file lists its own "
                        "paths)")
    p.add_argument("--limit", type=_positive, default=None, help="evaluate only the first N")
    p.add_argument("--top-confusions", type=_positive, default=10, metavar="N",
                   help="most confused character pairs to list (default 10)")
    p.add_argument("--show-mistakes", type=_nonneg, default=0, metavar="N",
                   help="list the first N wrongly read images")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.set_defaults(func=cmd_eval)

    p = add("bench", "time each stage of the pipeline and the throughput", [backend, dec])
    p.add_argument("--model", "-m", action="append", default=[],
                   help="model to time (default: the bundled one); give twice to compare two")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="time on these images (default: synthetic captcha-like PNGs)")
    p.add_argument("--n", type=_positive, default=200, help="runs per stage (default 200)")
    p.add_argument("--warmup", type=_nonneg, default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", type=_positive, default=2,
                   help="threads for the parallel throughput figures (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.set_defaults(func=cmd_bench)

    p = add("info", "show the model's metadata, tensors, ops, size and the backend", [common])
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_info)

    parents = {"backend": backend, "model": common, "decoding": dec, "threads": threads}
    for module in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{module}":  # not part of this install
                continue
            raise
        mod.register(add, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 usage/model error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    # Pillow logs what it refuses in a hostile file (e.g. TIFF's "More samples per pixel than
    # can be decoded") and then raises; with no handler, logging prints that to stderr beside
    # our own one-line error for the file. The raise is what we report.
    logging.getLogger("PIL").addHandler(logging.NullHandler())
    with contextlib.suppress(AttributeError, ValueError):  # names and texts never stop output
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        with python_owns_stderr():
            return func(args)
    except (UsageError, ModelFormatError, ImportError) as exc:
        err(f"error: {exc}")
        return EXIT_USAGE
    except ValueError as exc:  # an option a library call refused
        err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BrokenPipeError:  # `captcha-edge predict dir/ | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- stays open until exit
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
