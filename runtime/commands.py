"""The work of ``captcha-edge``'s subcommands predict, eval, bench and info.

:mod:`.cli` parses the command line and calls one ``cmd_*`` function here with the parsed
arguments; each returns the exit status: :data:`EXIT_OK` all inputs answered,
:data:`EXIT_SOME_FAILED` some inputs failed (the others are still answered). A problem found
before any input is read raises :class:`UsageError` (exit :data:`EXIT_USAGE`). The pieces they
build on live in :mod:`.inputs` (expanding and reading the inputs, printable names),
:mod:`.metrics` (accuracy, CER, confusions), :mod:`.timing` (stage timing, shared with the
benchmarks) and :mod:`.synthetic` (benchmark images).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import crash_traceback_to, not_a_folder
from .inputs import Input, expand, json_line, printable, recognize_all
from .labels import LabelsFileError, find_labels_file, read_labels_file
from .metrics import Tally
from .synthetic import synthetic_pngs
from .timing import bench_model, percentiles_ms

PROG = "captcha-edge"

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

# -- small helpers ------------------------------------------------------------------------------


class UsageError(Exception):
    """A command-line problem found before any input is read: one line, exit 2."""


def err(msg: str) -> None:
    print(f"{PROG}: {printable(msg)}", file=sys.stderr, flush=True)


class _Progress:
    """A dependency-free progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.on = total > 1 and sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if self.on and (self.done == self.total or self.done % 8 == 0):
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done}/{self.total} {rate:.0f} img/s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@contextlib.contextmanager
def python_owns_stderr() -> Iterator[None]:
    """While a command runs, only Python writes to stderr; native libraries write to /dev/null.

    The TFLite runtime prints ``INFO: Created TensorFlow Lite XNNPACK delegate`` and libtiff
    prints ``ZIPDecode: Decoding error ...`` straight to file descriptor 2, which would break
    the one-line-per-bad-input contract; their failures still reach us as Python exceptions.
    Python's ``sys.stderr`` keeps the real stream (and a fatal crash still shows its
    traceback there through :mod:`faulthandler`). PIL's warnings (a decompression-bomb notice,
    "Corrupt EXIF data") are silenced too: the image is either read or refused with one line.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        try:
            from PIL import Image

            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        except ImportError:  # no Pillow: the Recognizer import will say so
            pass
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, io.UnsupportedOperation, ValueError):
            yield
            return
        sys.stderr.flush()
        saved = os.dup(fd)
        real = open(os.dup(saved), "w", encoding=sys.stderr.encoding or "utf-8",  # noqa: SIM115
                    errors="backslashreplace", buffering=1)
        old = sys.stderr
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), fd)
            sys.stderr = real
            with crash_traceback_to(real, fd, always=True):  # fd is /dev/null in the block
                yield
        finally:
            real.flush()
            sys.stderr = old
            os.dup2(saved, fd)
            os.close(saved)
            real.close()


def _load(model: str | None, backend: str | None, num_threads: int | None = None, *,
          length_prior: bool = True) -> Any:
    """Build the Recognizer (model errors propagate as ModelFormatError / ImportError)."""
    from .recognizer import Recognizer

    return Recognizer(model, num_threads=num_threads, backend=backend,
                      length_prior=length_prior)


def _decode_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"beam_width": args.beam_width, "allowed": args.allowed,
            "min_length": args.min_length, "max_length": args.max_length}


def _checked_opts(rec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The decoding options, refused up front (exit 2) when this model can never satisfy them."""
    opts = _decode_opts(args)
    try:
        rec.check_options(**opts)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return opts


def _run(rec: Any, items: list[Input], opts: dict[str, Any], threads: int, label: str
         ) -> Iterator[dict[str, Any]]:
    """recognize_all with the progress bar."""
    bar = _Progress(len(items), label)
    try:
        yield from recognize_all(rec, items, opts, threads, step=bar.step)
    finally:
        bar.close()


# -- predict ------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    rec = _load(args.model, args.backend, length_prior=args.length_prior)
    opts = _checked_opts(rec, args)
    failed = 0
    for r in _run(rec, expand(args.paths, sys.stdin.buffer), opts, args.threads, "predict"):
        r.pop("seconds", None)
        if r["error"]:
            failed += 1
        if args.json:
            print(json_line(r), flush=True)
        elif r["error"]:
            err(r["error"])
        else:
            print(f"{printable(r['path'])}\t{printable(r['text'])}", flush=True)
    return EXIT_SOME_FAILED if failed else EXIT_OK


# -- eval ---------------------------------------------------------------------------------------


def _label(pattern: re.Pattern[str], name: str) -> str | None:
    m = pattern.search(Path(name).stem)
    if not m:
        return None
    if "label" in pattern.groupindex:
        return m.group("label")
    return m.group(1) if pattern.groups else m.group(0)


#: eval's --label-pattern when none is given: the stem up to the first "_" (``3b7fd_12.png``).
DEFAULT_LABEL_PATTERN = r"^[^_]+"


def _labelled_by_file(folder: Path, labels_file: Path) -> list[tuple[Input, str | None]]:
    """The images a labels file names (relative to ``folder``), in its order, with their labels;
    a missing image stays in the list and is reported unreadable, as in a batch."""
    if not labels_file.is_file():
        raise UsageError(f"--labels {labels_file}: no such file")
    try:
        rows = read_labels_file(labels_file)
    except LabelsFileError as exc:
        raise UsageError(f"--labels {labels_file}: {exc}") from None
    return [(Input(path := str(folder / fname), path), label) for fname, label in rows]


def _sub_folders(folder: Path) -> list[Path]:
    """Every folder below ``folder``, sorted, without following links to folders (no loops).

    Sorting each level's ``dirs`` in place makes the walk's pre-order the sorted order."""
    found: list[Path] = []
    for root, dirs, _ in os.walk(folder):  # os.walk does not follow symlinks by default
        dirs.sort()
        found.extend(Path(root) / d for d in dirs)
    return found


def cmd_eval(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise UsageError(f"{folder}: {not_a_folder(folder, 'directory')}")
    if args.labels is not None and args.label_pattern is not None:
        raise UsageError("--labels and --label-pattern: give one (the labels come from a file "
                         "or from the file names)")
    labels_file = Path(args.labels) if args.labels is not None else (
        find_labels_file(folder) if args.label_pattern is None else None)
    if labels_file is not None:
        found = _labelled_by_file(folder, labels_file)
    else:
        text = DEFAULT_LABEL_PATTERN if args.label_pattern is None else args.label_pattern
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise UsageError(f"--label-pattern {text!r}: invalid regular expression "
                             f"({exc})") from None
        # A folder without images gives an error item named after it: not an input here.
        folders = [folder] + (_sub_folders(folder) if args.recursive else [])
        listed = [i for d in folders for i in expand([str(d)]) if i.name != str(d)]
        found = [(i, _label(pattern, i.name)) for i in listed]
    unlabelled = [i for i, lab in found if not lab]
    labelled = [(i, lab) for i, lab in found if lab]
    if args.limit:
        labelled = labelled[:args.limit]
    if not any(i.error is None for i, _ in labelled):
        raise UsageError(f"{folder}: no image files with a label matching {text!r}"
                         if labels_file is None else f"--labels {labels_file}: no rows to read")
    rec = _load(args.model, args.backend, length_prior=args.length_prior)
    opts = _checked_opts(rec, args)
    labels = {i.name: lab for i, lab in labelled}
    t0 = time.perf_counter()
    results = list(_run(rec, [i for i, _ in labelled], opts, args.threads, "eval"))
    wall = time.perf_counter() - t0
    ok = [r for r in results if not r["error"]]
    errors = [r for r in results if r["error"]]
    tally = Tally()
    for r in ok:
        tally.add(labels[r["path"]], r["text"])
    lat = [r["seconds"] for r in ok]
    report = {
        "model": rec.name,
        "dir": str(folder),
        "labels": str(labels_file) if labels_file is not None else None,
        "images": len(results),
        "unreadable": len(errors),
        "unlabelled": len(unlabelled),
        "correct": tally.correct,
        "accuracy": tally.accuracy,
        "cer": tally.cer,
        "edits": tally.edits,
        "chars": tally.chars,
        "latency_ms": {"mean": round(1000 * sum(lat) / len(lat), 4) if lat else None,
                       **percentiles_ms(lat, (50, 95))},
        "throughput_per_s": round(len(results) / wall, 2) if wall > 0 else None,
        "threads": args.threads,
        "confusions": [{"true": t, "pred": p, "count": c}
                       for (t, p), c in tally.confusions.most_common(args.top_confusions)],
        "errors": [r["error"] for r in errors],
        "mistakes": [{"path": r["path"], "label": labels[r["path"]], "text": r["text"]}
                     for r in ok if r["text"] != labels[r["path"]]][:args.show_mistakes],
    }
    for msg in report["errors"]:
        err(msg)
    print(json_line(report) if args.json else printable_lines(_format_eval(report)))
    return EXIT_SOME_FAILED if errors else EXIT_OK


def printable_lines(text: str) -> str:
    """Each line of ``text`` made printable (names inside cannot break the layout)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _format_eval(r: dict[str, Any]) -> str:
    def ch(c: str) -> str:
        return repr(c) if c else "(none)"

    n_ok = r["images"] - r["unreadable"]
    lines = [
        f"model       {r['model']}",
        (f"images      {r['images']} in {r['dir']} ("
         + (f"labels from {r['labels']}; " if r.get("labels") else "")
         + f"{r['unreadable']} unreadable, {r['unlabelled']} without a label skipped)"),
        f"accuracy    {100 * r['accuracy']:.2f} %  ({r['correct']}/{n_ok} sequences exact)",
        f"CER         {100 * r['cer']:.2f} %  ({r['edits']} edits / {r['chars']} characters)",
        (f"latency     mean {r['latency_ms']['mean']} ms, p50 {r['latency_ms']['p50']} ms, "
        f"p95 {r['latency_ms']['p95']} ms per image (end to end)"),
        f"throughput  {r['throughput_per_s']} images/s with {r['threads']} thread(s)",
    ]
    if r["confusions"]:
        lines.append("confused    " + ", ".join(f"{ch(c['true'])}->{ch(c['pred'])} x{c['count']}"
                                                for c in r["confusions"]))
    for m in r["mistakes"]:
        lines.append(f"  wrong     {printable(m['path'])}: expected {m['label']!r}, "
                     f"got {m['text']!r}")
    return "\n".join(lines)


# -- bench --------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    models: list[str | None] = list(args.model) if args.model else [None]
    if len(models) > 2:
        raise UsageError("bench compares at most two models (--model A --model B)")
    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            raise UsageError(f"--images {folder}: {not_a_folder(folder, 'directory')}")
        files = [i.name for i in expand([str(folder)]) if i.error is None][:args.n]
        if not files:
            raise UsageError(f"--images {folder}: no image files")
        try:
            pngs = [Path(f).read_bytes() for f in files]
        except OSError as exc:
            raise UsageError(f"--images {exc.filename}: cannot read ({exc.strerror})") from None
        source = f"{len(pngs)} images from {folder}"
    else:
        pngs = synthetic_pngs(min(args.n, 64), (200, 50))
        source = f"{len(pngs)} synthetic 200x50 PNGs"
    results = []
    for model in models:
        rec = _load(model, args.backend, length_prior=args.length_prior)
        opts = _checked_opts(rec, args)

        def load(threads: int | None, model: str | None = model, rec: Any = rec) -> Any:
            return rec if threads is None else _load(model, args.backend, threads,
                                                     length_prior=args.length_prior)

        results.append(bench_model(load, pngs, n=args.n, warmup=args.warmup,
                                   threads=args.threads, decode_opts=opts))
    if args.json:
        print(json_line({"images": source, "n": args.n, "results": results}))
        return EXIT_OK
    print(printable_lines(_format_bench(args.n, source, results)))
    return EXIT_OK


def _format_bench(n: int, source: str, results: list[dict[str, Any]]) -> str:
    col = 28
    names = [Path(r["model"]).name for r in results]
    lines = [f"{n} runs per stage on {source}, 1 thread; times in ms (p50 / p95 / p99)",
             f"{'':26}" + "".join(f"{nm[:col]:>{col}}" for nm in names),
             f"{'format, size':26}" + "".join(
                 f"{r['format'] + ', ' + str(round(r['size'] / 1024, 1)) + ' KiB':>{col}}"
                 for r in results)]
    labels = {"preprocess": "decode+preprocess", "invoke": "invoke (bare)",
              "infer": "quantize+invoke+dequant", "ctc": "CTC decode",
              "total": "end to end"}
    for key, lab in labels.items():
        cells = []
        for r in results:
            p = r["stages_ms"][key]
            cells.append(f"{p['p50']:.3f} / {p['p95']:.3f} / {p['p99']:.3f}")
        lines.append(f"{lab:26}" + "".join(f"{c:>{col}}" for c in cells))
    lines.append(f"{'overhead vs bare invoke':26}" + "".join(
        f"{100 * r['overhead_vs_invoke']:>{col - 2}.1f} %" for r in results))
    lines.append(f"{'CTC / bare invoke':26}" + "".join(
        f"{100 * r['ctc_share_of_invoke']:>{col - 2}.1f} %" for r in results))
    for key in results[0]["throughput_per_s"]:
        lines.append(f"{'img/s, ' + key:26}" + "".join(
            f"{r['throughput_per_s'][key]:>{col}.1f}" for r in results))
    lines.append(f"{'backend':26}" + "".join(f"{r['backend']:>{col}}" for r in results))
    return "\n".join(lines)


# -- info ---------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    rec = _load(args.model, args.backend)
    info = rec.info()
    if args.json:
        print(json_line(info, default=str))
        return EXIT_OK
    meta = info["metadata"]
    h, w = rec.input_size
    print(printable_lines("\n".join([
        f"model        {info['model']}",
        f"size         {info['file_size']} bytes ({info['tflite_size']} flatbuffer + "
        f"{info['file_size'] - info['tflite_size']} metadata)",
        f"format       {meta.get('format')}",
        f"backend      {info['backend']} {info['backend_version']}",
        f"charset      {rec.charset!r} ({len(rec.charset)} symbols + blank)",
        f"input        {info['input']['shape']} {info['input']['dtype']} "
        f"quant={info['input']['quantization']}  ({h}x{w}, {rec.recipe['resize']}, "
        f"{rec.recipe['resample']}"
        f"{', contrast ' + rec.recipe['contrast'] if 'contrast' in rec.recipe else ''})",
        f"output       {info['output']['shape']} {info['output']['dtype']} "
        f"quant={info['output']['quantization']}",
        f"lengths      {'%d-%d characters (length prior; --no-length-prior ignores it)' % tuple(meta['label_lengths']) if meta.get('label_lengths') else 'not recorded (no length prior)'}",
        f"accuracy     {meta.get('accuracy')}",
        f"source run   {meta.get('source_run')}",
        f"version      {meta.get('package_version')}",
        "ops          " + ", ".join(f"{k} x{v}" for k, v in info["ops"].items()),
    ])))
    return EXIT_OK
