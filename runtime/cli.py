"""``captcha-edge``: read captchas with an int8 TFLite model on a CPU or Raspberry Pi.

Subcommands: predict, eval, bench, info. No TensorFlow needed. Exit status: 0 all inputs
answered, 1 some inputs failed (the others are still answered), 2 usage or model error.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ._common import IMAGE_SUFFIXES
from .errors import CaptchaEdgeError, ModelFormatError

PROG = "captcha-edge"

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

# -- small helpers ------------------------------------------------------------------------------


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


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
def _quiet_stderr() -> Iterator[None]:
    """Silence native stderr while the first interpreter is built.

    The TFLite C++ runtime writes an ``INFO: Created TensorFlow Lite XNNPACK delegate`` line
    to file descriptor 2; real failures still reach us as Python exceptions.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _load(args: argparse.Namespace, model: str | None = None, num_threads: int | None = None
          ) -> Any:
    """Build the Recognizer (model errors propagate as ModelFormatError / ImportError)."""
    from .recognizer import Recognizer

    if model is None and not isinstance(args.model, list):  # bench's --model is a list
        model = args.model
    with _quiet_stderr():
        return Recognizer(model, num_threads=num_threads, backend=args.backend)


def _decode_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"beam_width": args.beam_width, "allowed": args.allowed,
            "min_length": args.min_length, "max_length": args.max_length}


def _expand(paths: Sequence[str]) -> list[tuple[str, Any]]:
    """Turn files, folders, globs and ``-`` into ``(display name, source)`` pairs.

    A source is a Path, bytes (stdin) or an error message string for an input that cannot
    even be listed (empty folder, glob matching nothing, stdin given twice).
    """
    out: list[tuple[str, Any]] = []
    stdin_used = False
    for p in paths:
        if p == "-":
            if stdin_used:
                out.append(("-", "-: stdin can be given only once"))
            else:
                stdin_used = True
                out.append(("-", sys.stdin.buffer.read()))
        elif os.path.isdir(p):
            files = sorted(f for f in Path(p).iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                exts = ", ".join(sorted(IMAGE_SUFFIXES))
                out.append((p, f"{p}: folder has no image files ({exts})"))
            out.extend((str(f), f) for f in files)
        elif not os.path.lexists(p) and glob.has_magic(p):
            files = sorted(Path(f) for f in glob.glob(p, recursive=True) if os.path.isfile(f))
            if not files:
                out.append((p, f"{p}: no files match this pattern"))
            out.extend((str(f), f) for f in files)
        else:
            out.append((p, Path(p)))
    return out


def _source(name: str, src: Any) -> Any:
    """What the Recognizer reads for one item: stdin bytes get a name for error messages."""
    if isinstance(src, bytes):
        if not src:
            return None
        buf = io.BytesIO(src)
        buf.name = "<stdin>"
        return buf
    return src


def _answer(rec: Any, items: list[tuple[str, Any]], opts: dict[str, Any], threads: int,
            label: str) -> Iterator[dict[str, Any]]:
    """Recognize every item (in order, ``threads`` at a time); never raises for one bad image."""

    def one(item: tuple[str, Any]) -> dict[str, Any]:
        name, src = item
        res: dict[str, Any] = {"path": name, "text": None, "confidence": None, "error": None}
        t0 = time.perf_counter()
        if isinstance(src, str):
            res["error"] = src
            return res
        source = _source(name, src)
        if source is None:
            res["error"] = f"{name}: empty input (0 bytes)"
            return res
        try:
            pred = rec.recognize(source, **opts)
        except CaptchaEdgeError as exc:
            msg = str(exc).replace("<stdin>", "-")
            res["error"] = msg if msg.startswith(name) else f"{name}: {msg}"
        except Exception as exc:  # noqa: BLE001 -- one odd image must not end the batch
            res["error"] = f"{name}: {type(exc).__name__}: {exc}"
        else:
            res["text"], res["confidence"] = pred.text, round(pred.confidence, 6)
        res["seconds"] = time.perf_counter() - t0
        return res

    bar = _Progress(len(items), label)
    try:
        if threads <= 1 or len(items) <= 1:
            for item in items:
                r = one(item)
                bar.step()
                yield r
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for r in pool.map(one, items):
                    bar.step()
                    yield r
    finally:
        bar.close()


def _percentiles(xs: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    import numpy as np

    if not xs:
        return {f"p{q:g}": float("nan") for q in qs}
    arr = np.asarray(xs, dtype=np.float64) * 1000.0
    return {f"p{q:g}": round(float(np.percentile(arr, q)), 4) for q in qs}


# -- predict ------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    rec = _load(args)
    rec.check_options(**_decode_opts(args))
    items = _expand(args.paths)
    failed = 0
    for r in _answer(rec, items, _decode_opts(args), args.threads, "predict"):
        r.pop("seconds", None)
        if r["error"]:
            failed += 1
        if args.json:
            print(json.dumps(r, ensure_ascii=False), flush=True)
        elif r["error"]:
            _err(r["error"])
        else:
            print(f"{r['path']}\t{r['text']}", flush=True)
    return EXIT_SOME_FAILED if failed else EXIT_OK


# -- eval ---------------------------------------------------------------------------------------


def _align(truth: str, pred: str) -> tuple[int, list[tuple[str, str]]]:
    """Levenshtein distance and the edit operations as (true char, predicted char) pairs.

    A deletion is (c, ""), an insertion ("", c); matches are not listed.
    """
    n, m = len(truth), len(pred)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (truth[i - 1] != pred[j - 1]))
    ops: list[tuple[str, str]] = []
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (truth[i - 1] != pred[j - 1]):
            if truth[i - 1] != pred[j - 1]:
                ops.append((truth[i - 1], pred[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            ops.append((truth[i - 1], ""))
            i -= 1
        else:
            ops.append(("", pred[j - 1]))
            j -= 1
    return d[n][m], ops[::-1]


def _label(pattern: re.Pattern[str], path: Path) -> str | None:
    m = pattern.search(path.stem)
    if not m:
        return None
    if "label" in pattern.groupindex:
        return m.group("label")
    return m.group(1) if pattern.groups else m.group(0)


def cmd_eval(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        _err(f"error: {folder}: not a directory")
        return EXIT_USAGE
    try:
        pattern = re.compile(args.label_pattern)
    except re.error as exc:
        _err(f"error: --label-pattern {args.label_pattern!r}: invalid regular expression ({exc})")
        return EXIT_USAGE
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    labelled = [(f, _label(pattern, f)) for f in files]
    unlabelled = [f for f, lab in labelled if not lab]
    labelled = [(f, lab) for f, lab in labelled if lab]
    if args.limit:
        labelled = labelled[:args.limit]
    if not labelled:
        _err(f"error: {folder}: no image files with a label matching {args.label_pattern!r}")
        return EXIT_USAGE
    rec = _load(args)
    rec.check_options(**_decode_opts(args))
    labels = {str(f): lab for f, lab in labelled}
    t0 = time.perf_counter()
    results = list(_answer(rec, [(str(f), f) for f, _ in labelled], _decode_opts(args),
                           args.threads, "eval"))
    wall = time.perf_counter() - t0
    ok = [r for r in results if not r["error"]]
    errors = [r for r in results if r["error"]]
    correct = edits = chars = 0
    confusions: Counter[tuple[str, str]] = Counter()
    for r in ok:
        truth = labels[r["path"]] or ""
        dist, ops = _align(truth, r["text"])
        correct += dist == 0
        edits += dist
        chars += len(truth)
        confusions.update(ops)
    lat = [r["seconds"] for r in ok]
    report = {
        "model": rec.name,
        "dir": str(folder),
        "images": len(results),
        "unreadable": len(errors),
        "unlabelled": len(unlabelled),
        "correct": correct,
        "accuracy": correct / len(ok) if ok else 0.0,
        "cer": edits / chars if chars else 0.0,
        "edits": edits,
        "chars": chars,
        "latency_ms": {"mean": round(1000 * sum(lat) / len(lat), 4) if lat else None,
                       **_percentiles(lat, (50, 95))},
        "throughput_per_s": round(len(results) / wall, 2) if wall > 0 else None,
        "threads": args.threads,
        "confusions": [{"true": t, "pred": p, "count": c}
                       for (t, p), c in confusions.most_common(args.top_confusions)],
        "errors": [r["error"] for r in errors],
        "mistakes": [{"path": r["path"], "label": labels[r["path"]], "text": r["text"]}
                     for r in ok if r["text"] != labels[r["path"]]][:args.show_mistakes],
    }
    for msg in report["errors"]:
        _err(msg)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(_format_eval(report))
    return EXIT_SOME_FAILED if errors else EXIT_OK


def _format_eval(r: dict[str, Any]) -> str:
    def ch(c: str) -> str:
        return repr(c) if c else "(none)"

    n_ok = r["images"] - r["unreadable"]
    lines = [
        f"model       {r['model']}",
        (f"images      {r['images']} in {r['dir']} ({r['unreadable']} unreadable, "
        f"{r['unlabelled']} without a label skipped)"),
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
        lines.append(f"  wrong     {m['path']}: expected {m['label']!r}, got {m['text']!r}")
    return "\n".join(lines)


# -- bench --------------------------------------------------------------------------------------


def _synthetic_pngs(n: int, size: tuple[int, int], charset: str, seed: int = 0) -> list[bytes]:
    """Captcha-like PNGs (noisy background, random text) for benchmarking without data."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(n):
        bg = rng.integers(180, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(bg, "RGB")
        draw = ImageDraw.Draw(img)
        text = "".join(rng.choice(list(charset), 5))
        draw.text((int(rng.integers(2, max(3, w // 6))), int(rng.integers(0, max(1, h // 3)))),
                  text, fill=tuple(int(v) for v in rng.integers(0, 90, 3)))
        for _ in range(3):
            xy = [int(v) for v in (rng.integers(0, w), rng.integers(0, h),
                                   rng.integers(0, w), rng.integers(0, h))]
            draw.line(xy, fill=(60, 60, 60), width=1)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _bench_one(args: argparse.Namespace, model: str | None, pngs: list[bytes]
               ) -> dict[str, Any]:
    """Per-stage timings on one thread, then throughput with 1 and N threads."""
    rec = _load(args, model)
    opts = _decode_opts(args)
    n = args.n
    for k in range(min(args.warmup, n)):
        rec.decode(rec.infer(rec.preprocess(pngs[k % len(pngs)])), **opts)
    stages: dict[str, list[float]] = {"preprocess": [], "infer": [], "ctc": [], "total": []}
    clock = time.perf_counter
    for k in range(n):
        png = pngs[k % len(pngs)]
        t0 = clock()
        arr = rec.preprocess(png)
        t1 = clock()
        probs = rec.infer(arr)
        t2 = clock()
        rec.decode(probs, **opts)
        t3 = clock()
        stages["preprocess"].append(t1 - t0)
        stages["infer"].append(t2 - t1)
        stages["ctc"].append(t3 - t2)
        stages["total"].append(t3 - t0)
    # The bare interpreter call, input already set: what our own work is measured against.
    interp = rec._interpreter()
    bare = []
    for _ in range(n):
        t0 = clock()
        interp.invoke()
        bare.append(clock() - t0)
    stages = {"preprocess": stages["preprocess"], "invoke": bare,
              "infer": stages["infer"], "ctc": stages["ctc"], "total": stages["total"]}

    def throughput(r: Any, workers: int) -> float:
        t0 = clock()
        r.predict_batch(pngs[:n] if len(pngs) >= n else (pngs * (n // len(pngs) + 1))[:n],
                        workers=workers, **opts)
        return float(n / (clock() - t0))

    tp1 = throughput(rec, 1)
    tpn = throughput(rec, args.threads) if args.threads > 1 else tp1
    tpi = throughput(_load(args, model, num_threads=args.threads), 1) \
        if args.threads > 1 else tp1
    import numpy as np

    med = {k: float(np.median(v)) for k, v in stages.items()}
    return {
        "model": rec.name,
        "format": rec.metadata.get("format"),
        "size": rec.model_size,
        "backend": rec.backend,
        "stages_ms": {k: _percentiles(v) for k, v in stages.items()},
        "overhead_vs_invoke": round((med["total"] - med["invoke"]) / med["invoke"], 4),
        "ctc_share_of_invoke": round(med["ctc"] / med["invoke"], 4),
        "throughput_per_s": {"1 thread": round(tp1, 1),
                             f"{args.threads} workers": round(tpn, 1),
                             f"num_threads={args.threads}": round(tpi, 1)},
        "speedup_workers": round(tpn / tp1, 3),
        "speedup_num_threads": round(tpi / tp1, 3),
    }


def cmd_bench(args: argparse.Namespace) -> int:
    models: list[str | None] = list(args.model) if args.model else [None]
    if len(models) > 2:
        _err("error: bench compares at most two models (--model A --model B)")
        return EXIT_USAGE
    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            _err(f"error: --images {folder}: not a directory")
            return EXIT_USAGE
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:args.n]
        if not files:
            _err(f"error: --images {folder}: no image files")
            return EXIT_USAGE
        pngs = [f.read_bytes() for f in files]
        source = f"{len(pngs)} images from {folder}"
    else:
        pngs = _synthetic_pngs(min(args.n, 64), (200, 50), "abcdefghkmnpqrstuvwxyz23456789")
        source = f"{len(pngs)} synthetic 200x50 PNGs"
    results = [_bench_one(args, m, pngs) for m in models]
    if args.json:
        print(json.dumps({"images": source, "n": args.n, "results": results}))
        return EXIT_OK
    print(f"{args.n} runs per stage on {source}, 1 thread; times in ms (p50 / p95 / p99)")
    col = 28
    names = [Path(r["model"]).name for r in results]
    print(f"{'':26}" + "".join(f"{nm[:col]:>{col}}" for nm in names))
    print(f"{'format, size':26}" + "".join(
        f"{r['format'] + ', ' + str(round(r['size'] / 1024, 1)) + ' KiB':>{col}}"
        for r in results))
    labels = {"preprocess": "decode+preprocess", "invoke": "invoke (bare)",
              "infer": "quantize+invoke+dequant", "ctc": "CTC decode",
              "total": "end to end"}
    for key, lab in labels.items():
        cells = []
        for r in results:
            p = r["stages_ms"][key]
            cells.append(f"{p['p50']:.3f} / {p['p95']:.3f} / {p['p99']:.3f}")
        print(f"{lab:26}" + "".join(f"{c:>{col}}" for c in cells))
    print(f"{'overhead vs bare invoke':26}" + "".join(
        f"{100 * r['overhead_vs_invoke']:>{col - 2}.1f} %" for r in results))
    print(f"{'CTC / bare invoke':26}" + "".join(
        f"{100 * r['ctc_share_of_invoke']:>{col - 2}.1f} %" for r in results))
    for key in results[0]["throughput_per_s"]:
        print(f"{'img/s, ' + key:26}" + "".join(
            f"{r['throughput_per_s'][key]:>{col}.1f}" for r in results))
    print(f"{'backend':26}" + "".join(f"{r['backend']:>{col}}" for r in results))
    return EXIT_OK


# -- info ---------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    rec = _load(args)
    info = rec.info()
    if args.json:
        print(json.dumps(info, ensure_ascii=False, default=str))
        return EXIT_OK
    meta = info["metadata"]
    h, w = rec.input_size
    print(f"model        {info['model']}")
    print(f"size         {info['file_size']} bytes ({info['tflite_size']} flatbuffer + "
          f"{info['file_size'] - info['tflite_size']} metadata)")
    print(f"format       {meta.get('format')}")
    print(f"backend      {info['backend']} {info['backend_version']}")
    print(f"charset      {rec.charset!r} ({len(rec.charset)} symbols + blank)")
    print(f"input        {info['input']['shape']} {info['input']['dtype']} "
          f"quant={info['input']['quantization']}  ({h}x{w}, {rec.recipe['resize']}, "
          f"{rec.recipe['resample']})")
    print(f"output       {info['output']['shape']} {info['output']['dtype']} "
          f"quant={info['output']['quantization']}")
    print(f"accuracy     {meta.get('accuracy')}")
    print(f"source run   {meta.get('source_run')}")
    print(f"version      {meta.get('package_version')}")
    print("ops          " + ", ".join(f"{k} x{v}" for k, v in info["ops"].items()))
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------------

EXAMPLES = {
    "predict": """examples:
  captcha-edge predict captcha.png
  captcha-edge predict shots/ 'more/**/*.png' --json
  curl -s https://example.org/captcha | captcha-edge predict -
  captcha-edge predict --model my_int8.tflite --beam-width 8 --allowed 0123456789 \\
      --min-length 4 --max-length 6 --threads 2 captchas/
output: one line per image "path<TAB>text" (errors on stderr, one line each), or with --json
  {"path": ..., "text": ..., "confidence": ..., "error": null}
exit status: 0 all read, 1 some inputs failed (the others are still answered),
  2 usage or model error""",
    "eval": """examples:
  captcha-edge eval labelled_captchas/
  captcha-edge eval data/ --label-pattern '^(?P<label>[a-z0-9]+)_' --json
  captcha-edge eval data/ --model run/model_int8.tflite --beam-width 8 --threads 2
labels come from the file name: the regex is searched in the stem; group "label", else group 1,
else the whole match is the label (default: the stem up to the first "_")""",
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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {value}")
    return value


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
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=_positive, default=1,
                         help="images read in parallel, one interpreter each (default 1)")

    def add(name: str, help_: str, parents: list[argparse.ArgumentParser]
            ) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES[name],
                              parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("predict", "read captcha images and print their text", [common, dec, threads])
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders, glob patterns, or - for image bytes on stdin")
    p.add_argument("--json", action="store_true", help="JSON lines instead of path<TAB>text")
    p.set_defaults(func=cmd_predict)

    p = add("eval", "measure accuracy, CER and latency on a folder of labelled images",
            [common, dec, threads])
    p.add_argument("dir", metavar="DIR", help="folder of images whose names carry the label")
    p.add_argument("--label-pattern", default=r"^[^_]+", metavar="REGEX",
                   help="regex searched in each file stem to get its label")
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

    from .serve import add_parser as add_serve  # stdlib-only; the app needs the [serve] extra
    add_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 usage/model error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ModelFormatError, ImportError) as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except ValueError as exc:  # a decoding option out of range, checked by the Recognizer
        _err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `captcha-edge predict dir/ | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- stays open until exit
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
