"""``captcha-export``: a captcha-train run folder -> self-contained, verified ``.tflite`` files.

This process never imports TensorFlow. It checks every argument, loads the calibration and
validation images (numpy + Pillow), and hands the conversion to a child process
(``_worker.py``) so that a native crash in the TFLite calibrator becomes a clear error naming the
format. Then it verifies each file with ai-edge-litert, the runtime's interpreter, embeds the
metadata and writes the result through a temporary file and a rename.

:func:`export` runs four stages: :func:`plan` -> :func:`convert` -> :func:`inspect` ->
:func:`package`. Nothing written carries an absolute path (``runfolder.portable_name``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import metadata as _metadata
from .._common import (
    CliParser,
    atomic_write,
    die_with_parent,
    package_version,
    seconds_option,
)
from ..metadata import ModelMeta
from . import routes

# As in captcha-train and the conversion child: TensorFlow's and TFLite's info lines off (the
# interpreters this process makes for verification print "INFO: Created TensorFlow Lite
# XNNPACK delegate"; export.verify.interpreter filters it at this level).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from .formats import FORMATS, INT8_OUTPUTS, parse_formats
from .runfolder import (
    ExportError,
    ImageSet,
    Run,
    load_dir,
    load_split,
    open_run,
    portable_name,
    synthetic,
)

MIN_CALIB = 10
RECOMMENDED_CALIB = 100

EPILOG = """\
examples:
  captcha-export runs/site-a --int8                 # -> runs/site-a/model_int8.tflite, verified
  captcha-export runs/site-a --formats all --out dist/
  captcha-export runs/site-a --formats float32,int8 --force
  captcha-export runs/site-a --int8 --calib-dir more_shots/ --calib-size 300
  captcha-export runs/site-a --int8 --calib-synthetic 500 --int8-output float32
  captcha-export runs/site-a --int8 --max-drop 0.5   # exit 1 if int8 loses > 0.5 pp vs Keras
                                                    # on every integer route it tries
  captcha-export runs/site-a --int8 --diagnose      # + where int8 loses accuracy, per layer
  captcha-export runs/site-a --int8 --int8-route equalize   # only the equalize route
  captcha-export runs/site-a --int8 --int8-route fine-tune  # 300 steps of quantization-aware
                                                    # fine-tuning (needs the training images)

formats:
""" + "\n".join(f"  {f.name:<8} {f.summary}" for f in FORMATS.values()) + """

exit codes: 0 written (and verified); 1 a format failed or int8 lost more than --max-drop on
every integer route (the best one is written);
2 bad arguments or input files.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its choices come from the FORMATS table)."""
    p = CliParser(prog="captcha-export",
                description="Export a captcha-train run folder to self-contained, verified "
                            ".tflite files (the metadata the runtime needs is embedded).",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="RUN", help="run folder written by captcha-train")
    g = p.add_argument_group("formats")
    g.add_argument("--formats", default=None, metavar="LIST",
                   help=f"comma-separated subset of {', '.join(FORMATS)}, or all "
                        "(default: int8)")
    g.add_argument("--int8", action="store_true", help="shorthand for --formats int8")
    g.add_argument("--int8-output", choices=INT8_OUTPUTS, default="int8",
                   help="output tensor of the int8 model: int8 (default; its scale and zero "
                        "point go into the metadata) or float32 (adds a DEQUANTIZE op)")
    g.add_argument("--batch", type=int, default=1, metavar="N",
                   help="static batch size of the exported models (default 1; the runtime "
                        "reads one image per invoke)")
    g.add_argument("--route", choices=("tf_keras", "unroll"), default="tf_keras",
                   help="how the graph is rebuilt for conversion: tf_keras keeps the fused LSTM "
                        "op (default); unroll unrolls it into plain ops (see docs/export.md)")
    # -- int8 routes and diagnosis (export/routes.py, export/diagnose.py) --
    g.add_argument("--int8-route", choices=("auto", *routes.ROUTE_NAMES), default="auto",
                   help="auto (default): when the plain int8 model loses more than --max-drop, "
                        "try the other integer routes (docs/export.md) in the order the "
                        "diagnosis suggests and keep the first that holds, else the best; a "
                        "route's name: only that route (" + ", ".join(routes.ROUTE_NAMES) + ")")
    g.add_argument("--no-logit-clip", action="store_true",
                   help="keep the logits' full range in the integer models; by default they are "
                        "clipped to the range that decides each frame's argmax on the "
                        "calibration images, so int8 keeps their resolution (docs/export.md)")
    g.add_argument("--diagnose", action="store_true",
                   help="measure where int8 loses accuracy (per-layer quantization error, and "
                        "the gain when one layer is left in float); automatic when the plain "
                        "int8 model loses more than --max-drop")
    g.add_argument("--diagnose-images", type=int, default=200, metavar="N",
                   help="validation images the diagnosis runs on (default 200)")
    g = p.add_argument_group("calibration (int8)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--calib-dir", type=Path, metavar="DIR",
                     help="calibrate on images from DIR (default: the run's training split, "
                          "never its validation split)")
    src.add_argument("--calib-synthetic", type=int, metavar="N",
                     help="calibrate on N freshly drawn synthetic captchas")
    g.add_argument("--calib-size", type=int, default=200, metavar="N",
                   help=f"calibration images to use (default 200; error below {MIN_CALIB}, "
                        f"warning below {RECOMMENDED_CALIB})")
    g.add_argument("--seed", type=int, default=0, help="seed for picking calibration images")
    g = p.add_argument_group("output and verification")
    g.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder (default: the run folder); files are "
                        "model_<format>.tflite and export_report.json")
    g.add_argument("--force", action="store_true", help="overwrite existing output files")
    g.add_argument("--keep-tensor-names", action="store_true",
                   help="keep the tensor names in the .tflite files (for Netron and the like); "
                        "by default they are stripped, 3-4 KB the runtime never reads")
    g.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="where the run's images are now, if not where model.json says")
    g.add_argument("--no-verify", action="store_true",
                   help="skip the check on the validation split (no accuracy in the metadata)")
    g.add_argument("--max-drop", type=float, default=1.0, metavar="PP",
                   help="exit 1 when int8 sequence accuracy is more than PP percentage points "
                        "below the Keras model's (default 1.0)")
    seconds_option(g, "--timeout", 3600.0,
                   help="give up on the conversion process after S seconds (default 3600)")
    g.add_argument("-q", "--quiet", action="store_true", help="print only the result table")
    return p


def _say(a: argparse.Namespace, *msg: Any) -> None:
    if not a.quiet:
        print(*msg, flush=True)


def _warn(msg: str) -> None:
    print(f"captcha-export: warning: {msg}", file=sys.stderr, flush=True)


def check_args(a: argparse.Namespace) -> List[str]:
    """Check the options against each other; return the formats to write.

    Raises:
        ExportError: with the option name and the problem.
    """
    try:
        formats = parse_formats(a.formats) if a.formats is not None else ["int8"]
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if a.int8 and a.formats is not None and "int8" not in formats:
        raise ExportError(f"--int8 conflicts with --formats {a.formats}; add int8 to the list")
    if a.batch < 1:
        raise ExportError(f"--batch must be >= 1; got {a.batch}")
    if a.calib_size < MIN_CALIB:
        raise ExportError(f"--calib-size must be >= {MIN_CALIB}; got {a.calib_size}")
    if a.calib_synthetic is not None and a.calib_synthetic < MIN_CALIB:
        raise ExportError(f"--calib-synthetic must be >= {MIN_CALIB}; got {a.calib_synthetic}")
    if not 0 <= a.max_drop <= 100:
        raise ExportError(f"--max-drop must be between 0 and 100 percentage points; "
                          f"got {a.max_drop}")
    if a.diagnose_images < 1:
        raise ExportError(f"--diagnose-images must be >= 1; got {a.diagnose_images}")
    if a.diagnose and "int8" not in formats:
        raise ExportError(f"--diagnose only applies to the int8 format; formats: "
                          f"{', '.join(formats)}")
    if a.diagnose and a.no_verify:
        raise ExportError("--diagnose needs the validation images; drop --no-verify")
    if a.timeout <= 0:
        raise ExportError(f"--timeout must be > 0; got {a.timeout}")
    if "int8" not in formats:
        for opt, val in (("--calib-dir", a.calib_dir), ("--calib-synthetic", a.calib_synthetic)):
            if val is not None:
                raise ExportError(f"{opt} only applies to the int8 format; formats: "
                                  f"{', '.join(formats)}")
    forced = routes.get(a.int8_route) if a.int8_route != "auto" else None
    if forced is not None and forced.calibration == "wide":
        for opt, val in (("--calib-dir", a.calib_dir), ("--calib-synthetic", a.calib_synthetic)):
            if val is not None:
                raise ExportError(f"--int8-route {forced.name} calibrates on the run's training "
                                  f"images; drop {opt}")
    if a.calib_dir is not None and not a.calib_dir.is_dir():
        raise ExportError(f"--calib-dir {a.calib_dir}: no such folder")
    if a.data_dir is not None and not a.data_dir.is_dir():
        raise ExportError(f"--data-dir {a.data_dir}: no such folder")
    if a.out is not None and a.out.exists() and not a.out.is_dir():
        raise ExportError(f"--out {a.out}: exists and is not a folder")
    return formats


def output_path(out: Path, fmt: str, batch: int) -> Path:
    """``model_<format>[_b<batch>].tflite`` in ``out``."""
    return out / f"model_{FORMATS[fmt].suffix}{f'_b{batch}' if batch > 1 else ''}.tflite"


def _calibration(a: argparse.Namespace, run: Run) -> ImageSet:
    """Load the calibration images and check there are enough."""
    if a.calib_synthetic is not None:
        cal = synthetic(a.calib_synthetic, run, seed=a.seed)
    elif a.calib_dir is not None:
        cal = load_dir(a.calib_dir, run.recipe, limit=a.calib_size, seed=a.seed)
    else:
        cal = load_split(run, "train", a.data_dir, limit=a.calib_size, seed=a.seed)
    for why in cal.skipped[:5]:
        _warn(f"calibration image skipped: {why}")
    n = len(cal.names)
    if n < max(MIN_CALIB, a.batch):
        raise ExportError(f"calibration set from {cal.origin} has {n} usable image(s); int8 "
                          f"needs at least {max(MIN_CALIB, a.batch)} (aim for 200)")
    if n < RECOMMENDED_CALIB:
        _warn(f"only {n} calibration images from {cal.origin}; {RECOMMENDED_CALIB}+ recommended "
              "for stable int8 ranges")
    return cal


def _keep(log: Path, dest: Path) -> None:
    """Copy the worker's log out of the temporary folder so that error messages can point at it."""
    try:
        shutil.copyfile(log, dest)
    except OSError:
        pass


def _follow(a: argparse.Namespace, proc: "subprocess.Popen[bytes]", progress: Path,
            results: Dict[str, Any], log: Path, keep_log: Path,
            deadline: float) -> Tuple[int, List[Dict[str, Any]]]:
    """Wait for the worker, echoing its progress events; return (exit code, all events)."""
    seen = 0
    events: List[Dict[str, Any]] = []
    while True:
        try:
            rc = proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            rc = None
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                _keep(log, keep_log)
                raise ExportError(f"conversion took longer than --timeout {a.timeout:g}s;"
                                  f" stopped (log: {keep_log})")
        # Only complete lines: the worker may be half-way through writing the last one.
        events = [json.loads(ln) for ln in
                  progress.read_text(encoding="utf-8").split("\n")[:-1] if ln.strip()]
        for ev in events[seen:]:
            step = str(ev.get("step"))
            if ev["event"] == "start":
                what = ("running the Keras model on the validation images"
                        if step == "reference" else "converting")
                _say(a, f"[{step}] {what} ...")
            elif ev["event"] == "done":
                results[step] = ev
                _say(a, f"[{step}] done in {ev['seconds']:.1f}s")
            elif ev["event"] == "error":
                results[step] = f"conversion failed: {ev['message']}"
                _warn(f"{step}: {results[step]}")
                with log.open("a", encoding="utf-8") as lf2:
                    lf2.write(ev.get("trace", ""))
            elif ev["event"] == "fatal":
                proc.wait()
                _keep(log, keep_log)
                raise ExportError(ev["message"])
        seen = len(events)
        if rc is not None:
            break
    return rc, events


def _worker(a: argparse.Namespace, run: Run, formats: List[str], work: Path,
            calib: Optional[Path], reference: Optional[Dict[str, str]],
            keep_log: Path) -> Dict[str, Any]:
    """Run the conversion child process(es); return {step: done-event | error message}.

    If the child dies natively, the format it was converting is marked as crashed and a fresh
    child takes the formats left.
    """
    results: Dict[str, Any] = {}
    todo = list(formats)
    need_ref = reference
    progress = work / "progress.jsonl"
    log = work / "worker.log"
    deadline = time.monotonic() + a.timeout
    while todo or need_ref:
        job = {"model": str(run.model), "keras": run.info.keras,
               "model_config": run.info.model_config.to_dict(), "route": a.route,
               "batch": a.batch,
               "formats": todo, "calibration": str(calib) if calib else None,
               "reference": need_ref, "int8_output": a.int8_output, "workdir": str(work),
               "keep_names": getattr(a, "keep_tensor_names", False),
               "transform": getattr(a, "transform", "none"),
               "fine_tune": getattr(a, "fine_tune", None),
               "logit_clip": not getattr(a, "no_logit_clip", False),
               "progress": str(progress)}
        job_file = work / "job.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        progress.write_text("", encoding="utf-8")
        with log.open("ab") as lf:
            proc = subprocess.Popen([sys.executable, "-m", "captcha_edge.export._worker",
                                     str(job_file)], stdout=lf, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)
            try:
                rc, events = _follow(a, proc, progress, results, log, keep_log, deadline)
            except BaseException:
                # Ctrl-C, a timeout or a fatal event: never leave the child running.
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                raise
        finished = set(results)
        if rc != 0:
            in_flight = [ev["step"] for ev in events if ev["event"] == "start"
                         and ev["step"] not in finished]
            how = (f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}")
            if not in_flight:
                _keep(log, keep_log)
                raise ExportError(f"the conversion process died before it started ({how}); "
                                  f"log: {keep_log}")
            step = in_flight[-1]
            results[step] = (f"the TFLite converter crashed natively ({how}) while converting "
                             f"{step}; nothing was written for it" +
                             (" (try --route unroll)" if a.route == "tf_keras" else ""))
            _warn(results[step])
        if need_ref:
            ref = results.pop("reference", None)
            if not isinstance(ref, dict):
                _keep(log, keep_log)
                raise ExportError(f"running the Keras model on the validation images failed "
                                  f"({ref or 'no result'}); log: {keep_log}")
            need_ref = None
        todo = [f for f in todo if f not in results]
        if rc == 0 and todo:
            _keep(log, keep_log)
            raise ExportError(f"the conversion process skipped {', '.join(todo)}; "
                              f"log: {keep_log}")
    if any(isinstance(r, str) for r in results.values()):
        _keep(log, keep_log)
    return results


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def format_table(rows: List[Dict[str, Any]], keras_acc: Optional[float]) -> str:
    """The printed result table."""
    head = f"{'format':<8} {'size KB':>8} {'seq acc %':>9} {'CER %':>6} {'agree %':>8} " \
           f"{'ms/call':>7}  file"
    lines = [head, "-" * len(head)]
    if keras_acc is not None:
        lines.append(f"{'keras':<8} {'':>8} {_pct(keras_acc):>9} {'':>6} {'100.00':>8} "
                     f"{'':>7}  (reference, model.keras)")
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['format']:<8} FAILED: {r['error']}")
            continue
        v = r.get("verification") or {}
        lat = v.get("latency_ms")
        lines.append(f"{r['format']:<8} {r['size_bytes'] / 1024:>8.1f} "
                     f"{_pct(v.get('seq_acc')):>9} {_pct(v.get('cer')):>6} "
                     f"{_pct(v.get('agreement')):>8} "
                     f"{'-' if lat is None else f'{lat:.2f}':>7}  {r['path']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """Everything decided before TensorFlow runs: inputs checked and loaded, outputs named."""

    args: argparse.Namespace
    formats: List[str]
    run: Run
    out: Path
    targets: Dict[str, Path]
    report_path: Path
    cal: Optional[ImageSet]  # int8 calibration images
    val: Optional[ImageSet]  # labelled validation images (None with --no-verify)

    @property
    def val_labels(self) -> List[str]:
        return [] if self.val is None else [str(x) for x in self.val.labels]


@dataclass(frozen=True)
class Converted:
    """What the conversion child produced: per format a done event or an error message."""

    results: Dict[str, Any]
    keras_probs: Optional[np.ndarray]  # the Keras model on the validation images
    keras_acc: Optional[float]
    keras_cer: Optional[float]
    int8_choice: Optional[Dict[str, Any]] = None  # export/routes.py: the integer route chosen


def plan(a: argparse.Namespace, formats: List[str]) -> Plan:
    """Stage 1: check the environment and the run folder, load the images, name the outputs.

    Raises:
        ExportError: anything the user must fix; nothing has been written yet.
    """
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise ExportError('captcha-export needs TensorFlow: pip install "captcha-edge[train]"')
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise ExportError("captcha-export checks its files with ai-edge-litert, the runtime's "
                          "interpreter: pip install ai-edge-litert")
    run = open_run(a.run)
    out = a.out if a.out is not None else a.run
    targets = {f: output_path(out, f, a.batch) for f in formats}
    report_path = out / "export_report.json"
    if not a.force:
        existing = [str(p) for p in [*targets.values(), report_path] if p.exists()]
        if existing:
            raise ExportError(f"{existing[0]} already exists; pass --force to overwrite")
    cal = _calibration(a, run) if "int8" in formats else None
    forced = routes.get(a.int8_route) if a.int8_route != "auto" else None
    # A route asked for by name is the first (and only) conversion: its weight transform and
    # its calibration images.
    a.transform = forced.transform if forced is not None else "none"
    if cal is not None and forced is not None and forced.calibration == "wide":
        cal = routes.wide_calibration(run, a.data_dir, a.seed)
    val = None
    if not a.no_verify:
        val = load_split(run, "val", a.data_dir)
        for why in val.skipped[:5]:
            _warn(f"validation image skipped: {why}")
        if not val.names:
            raise ExportError(f"no readable validation images for {run.path}; pass --data-dir "
                              "or --no-verify")
        if any(lbl is None for lbl in val.labels):
            raise ExportError("validation images have no labels; use --no-verify")
    if cal is not None:
        shown = ", ".join(cal.names[:5]) + (", ..." if len(cal.names) > 5 else "")
        _say(a, f"calibration: {len(cal.names)} images from {cal.origin} ({shown})")
    if val is not None:
        _say(a, f"verification: {len(val.names)} images from {val.origin}")
    out.mkdir(parents=True, exist_ok=True)
    return Plan(a, formats, run, out, targets, report_path, cal, val)


def convert(p: Plan, work: Path) -> Converted:
    """Stage 2: the TensorFlow child converts every format and runs the Keras reference."""
    from . import verify

    calib_file = None
    if p.cal is not None:
        calib_file = work / "calib.npy"
        np.save(calib_file, p.cal.images)
    ref = None
    if p.val is not None:
        np.save(work / "val.npy", p.val.images)
        ref = {"images": str(work / "val.npy"), "out": str(work / "keras_probs.npy")}
    if "int8" in p.formats and getattr(p.args, "transform", "none") == "fine-tune":
        # --int8-route fine-tune: the first conversion trains on (export/finetune.py).
        from . import routes

        check = (work / "val.npy", p.val_labels) if p.val is not None else None
        p.args.fine_tune = routes.fine_tune_job(p.args, p.run, work, p.args.route, check)
    results = _worker(p.args, p.run, p.formats, work, calib_file, ref,
                      p.out / "export_worker.log")
    if p.val is None:
        return Converted(results, None, None, None)
    keras_probs = np.load(work / "keras_probs.npy")
    acc, cer = verify.scores(keras_probs, p.val_labels, p.run.charset, p.run.blank)
    choice = None
    if "int8" in p.formats and p.cal is not None:
        # The integer route ladder and the diagnosis (export/routes.py) may replace
        # results["int8"] with a better route's file.
        from . import routes

        choice = routes.choose_for_cli(
            p.args, p.run, work, results, p.cal, p.val, keras_probs, acc, worker=_worker,
            keep_log=p.out / "export_worker.log", say=lambda m: _say(p.args, m))
    return Converted(results, keras_probs, acc, cer, choice)


def inspect(p: Plan, c: Converted, fmt: str, flat: bytes) -> Tuple[Dict[str, Any], Any]:
    """Stage 3: one inspection of the file (tensors, ops, state), then the verification run.

    Returns:
        The report row so far and the :class:`verify.Verification` (None with --no-verify).
    """
    from . import verify

    seen = verify.inspect(flat)
    row: Dict[str, Any] = {"format": fmt, "path": p.targets[fmt].name,
                           "convert_seconds": c.results[fmt]["seconds"], **seen.io}
    if isinstance(c.results.get(fmt), dict) and "logit_clip" in c.results[fmt]:
        row["logit_clip"] = c.results[fmt]["logit_clip"]  # of the route that wrote the file
    row["ops"] = len(seen.ops)
    row["op_counts"] = dict(sorted(Counter(o["op"] for o in seen.ops).items()))
    if fmt == "int8":
        bad = seen.float_compute_ops
        row["float_compute_ops"] = bad
        if bad:
            _warn(f"int8: float ops left in the model: {', '.join(sorted(set(bad)))}")
    row["stateful"] = seen.stateful
    v = None
    if p.val is not None:
        _say(p.args, f"[{fmt}] verifying on {len(p.val.names)} validation images ...")
        v = verify.evaluate(fmt, flat, len(flat), p.val.images, p.val_labels, p.run.charset,
                            p.run.blank, c.keras_probs, stateful=seen.stateful)
        row["verification"] = v.to_dict()
    return row, v


def package(p: Plan, c: Converted, fmt: str, flat: bytes, row: Dict[str, Any],
            v: Any) -> None:
    """Stage 4: embed the metadata (through ModelMeta) and write the file atomically."""
    accuracy = v.accuracy(c.keras_acc) if v is not None else None
    cal = p.cal if fmt == "int8" else None
    choice = c.int8_choice if fmt == "int8" else None
    calibration = None
    if cal is not None:
        calibration = ((choice or {}).get("calibration")
                       or {"source": cal.source, "images": len(cal.names)})
    meta = ModelMeta(
        charset=p.run.charset, blank=p.run.blank, preprocess=p.run.recipe,
        input_shape=p.run.info.input_shape, time_steps=p.run.info.time_steps, format=fmt,
        input_dtype=row["input_dtype"], output_dtype=row["output_dtype"],
        input_quant=row["input_quant"], output_quant=row["output_quant"],
        # True: the fused LSTM keeps its state in variable tensors, so a caller must run
        # interpreter.reset_all_variables() before every invoke (docs/export.md).
        stateful=row["stateful"], batch=p.args.batch,
        calibration=calibration, route=choice["graph"] if choice else p.args.route,
        int8_route=choice["route"] if choice else None,
        label_lengths=p.run.info.label_lengths, exported=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source_run=portable_name(p.run.path), package_version=package_version(),
        accuracy=accuracy,
    )
    data = _metadata.embed(flat, meta)
    atomic_write(p.targets[fmt], data)
    row["size_bytes"] = len(data)
    row["tflite_size"] = len(flat)


def _outcome(p: Plan, c: Converted, rows: List[Dict[str, Any]],
             t_start: float) -> Tuple[int, List[str], Dict[str, Any]]:
    """Exit code, closing messages and the export_report.json contents."""
    a = p.args
    code = 0
    messages: List[str] = []
    failed = [r["format"] for r in rows if r.get("error")]
    if failed:
        code = 1
        messages.append(f"failed: {', '.join(failed)}")
    int8 = next((r for r in rows if r["format"] == "int8" and not r.get("error")), None)
    drop = None
    if int8 is not None and c.keras_acc is not None and "verification" in int8:
        drop = 100 * (c.keras_acc - int8["verification"]["seq_acc"])
        if drop > a.max_drop:
            code = 1
            tried = ", ".join(t["route"] for t in (c.int8_choice or {}).get("trials", []))
            messages.append(f"int8 sequence accuracy is {drop:.2f} pp below the Keras model's "
                            f"(--max-drop {a.max_drop:g}) on every route tried ({tried}); the "
                            "best was written, check it before shipping; the diagnosis is in "
                            "export_report.json")
    cal, val = p.cal, p.val
    report = {
        "run": portable_name(p.run.path), "formats": p.formats, "route": a.route,
        "batch": a.batch, "int8_output": a.int8_output,
        "keras": None if c.keras_acc is None else {"seq_acc": c.keras_acc, "cer": c.keras_cer},
        "calibration": None if cal is None else {"source": cal.source, "images": cal.names,
                                                  "seed": a.seed, "skipped": cal.skipped},
        "verification_images": None if val is None else len(val.names),
        "results": rows, "int8_drop_pp": drop,
        "int8_route": None if c.int8_choice is None else {
            k: c.int8_choice[k]
            for k in ("route", "graph", "passed", "trials", "order", "transforms", "logit_clips")
            if k in c.int8_choice},
        "int8_diagnosis": None if c.int8_choice is None else c.int8_choice["diagnosis"],
        "max_drop_pp": a.max_drop,
        "exit_code": code, "seconds": round(time.monotonic() - t_start, 1),
    }
    return code, messages, report


def export(a: argparse.Namespace, formats: List[str]) -> int:
    """Do the export described by the parsed arguments; return the exit code.

    Four stages: :func:`plan` (no TensorFlow), :func:`convert` (the child process), then per
    written format :func:`inspect` and :func:`package`; last the report.
    """
    t_start = time.monotonic()
    p = plan(a, formats)
    with tempfile.TemporaryDirectory(prefix="captcha-export-") as tmp:
        c = convert(p, Path(tmp))
        rows: List[Dict[str, Any]] = []
        for fmt in formats:
            res = c.results.get(fmt)
            if not isinstance(res, dict):
                rows.append({"format": fmt, "error": str(res)})
                continue
            flat = Path(res["path"]).read_bytes()
            row, v = inspect(p, c, fmt, flat)
            package(p, c, fmt, flat, row, v)
            rows.append(row)
    code, messages, report = _outcome(p, c, rows, t_start)
    atomic_write(p.report_path, (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    shown = [{**r, "path": str(p.targets[r["format"]])} if not r.get("error") else r
             for r in rows]
    print(format_table(shown, c.keras_acc), flush=True)
    print(f"report: {p.report_path} ({time.monotonic() - t_start:.0f}s)", flush=True)
    for m in messages:
        print(f"captcha-export: {m}", file=sys.stderr, flush=True)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``captcha-export``; returns the exit code."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        formats = check_args(a)
        return export(a, formats)
    except ExportError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
