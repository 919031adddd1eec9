#!/usr/bin/env python3
"""Issue 23's search for a natural int8 collapse: train under-trained models of hard panel styles
with the earlier defaults stretched to 200x50 grey, stop each one as a user would (Ctrl-C) once its
validation accuracy enters a window (default 20-40 %), export it with the plain int8 route only and
record how much the int8 file loses against Keras.

Each case appends one entry to ``benchmarks/results/int8-collapse-search.json``: the style, seed,
epochs run, Keras and int8 sequence accuracy on the validation split, the drop, the frame
agreement and the layer the diagnosis names. A case that loses >= 10 pp is the one to add to
``benchmarks/test_bench_int8_collapse.py`` as a trained regression case.

The panel comes from ``python scripts/style_panel.py --out runs/panel``; runs go to
``runs/int8-collapse-search/`` (git-ignored).

    python scripts/int8_collapse_search.py --styles scratch-grey,varlen --seeds 0,1
    python scripts/int8_collapse_search.py --styles wide-color --seeds 3 --window 0.1,0.3
    python scripts/int8_collapse_search.py --styles wide-color --seeds 0,1 --train-rev eb19e12
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import _gitrev  # scripts/ is on sys.path when a script in it runs
from _results import append_result

ROOT = Path(__file__).resolve().parents[1]
PANEL = ROOT / "runs" / "panel"
RUNS = ROOT / "runs" / "int8-collapse-search"
RESULTS = ROOT / "benchmarks" / "results" / "int8-collapse-search.json"
#: the earlier defaults at the issue's input: 200x50 grey, pool stem, 4x time pooling, no skip,
#: the BiLSTM head, a 40-epoch schedule with no time budget (the run is stopped by hand)
#: the last commit before the any-style work (auto geometry): what "the earlier defaults" were
BEFORE_STYLES = "eb19e12"
EARLIER = ["--width", "200", "--height", "50", "--color", "L", "--stem", "pool", "--time-pool",
           "4", "--skip", "off", "--head", "lstm", "--contrast", "none", "--epochs", "40",
           "--warmup-epochs", "2", "--max-minutes", "0", "--patience", "0"]


def val_history(run: Path) -> List[float]:
    """Validation accuracy per epoch: history.csv once the run has finished, the checkpoint's
    state (written after every epoch) while it runs."""
    path, state = run / "history.csv", run / "checkpoint" / "state.json"
    if path.is_file():
        with path.open(newline="") as f:
            return [float(r["val_seq_acc"]) for r in csv.DictReader(f) if r.get("val_seq_acc")]
    try:
        return [float(h["val_seq_acc"]) for h in json.loads(state.read_text())["history"]]
    except (OSError, ValueError, KeyError):
        return []


def train_until(style: str, seed: int, low: float, high: float, max_epochs: int,
                threads: int, code: Optional[Path] = None,
                tag: str = "") -> tuple[Path, List[float]]:
    """Train a case and interrupt it (SIGINT, as Ctrl-C) at the first epoch whose validation
    accuracy reaches ``low``, or after ``max_epochs``; past ``high`` is recorded as such."""
    data = PANEL / style / "train-8000-s0"
    if not (data / "labels.csv").is_file():
        sys.exit(f"{data}: no style panel (python scripts/style_panel.py --out runs/panel)")
    run = RUNS / f"{style}-s{seed}{tag}"
    # an earlier commit's code trains at its own defaults (what a user of it got)
    recipe = EARLIER if code is None else ["--epochs", "40", "--patience", "0"]
    cmd = [sys.executable, "-m", "captcha_edge.train.cli", "--data-dir", str(data), "--labels",
           str(data / "labels.csv"), "--out", str(run), "--overwrite", "--seed", str(seed),
           "--threads", str(threads), "-q", *recipe]
    RUNS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run, ignore_errors=True)
    with (RUNS / f"{run.name}.train.log").open("w") as log:
        # SIGINT back to its default in the child: a shell starts background jobs with it
        # ignored, and a Python started so never raises KeyboardInterrupt (Ctrl-C's path)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=_gitrev.env_for(code), cwd=RUNS, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        seen = 0
        while proc.poll() is None:
            time.sleep(5)
            hist = val_history(run)
            if len(hist) > seen:
                seen = len(hist)
                print(f"  {run.name}: epoch {seen} val {hist[-1]:.1%}", flush=True)
                if hist[-1] >= low or seen >= max_epochs:
                    proc.send_signal(signal.SIGINT)
                    proc.wait()
        if proc.returncode not in (0, 130):
            sys.exit(f"{run.name}: captcha-train exit {proc.returncode} (see its .train.log)")
    return run, val_history(run)


def export_plain(run: Path) -> Dict[str, Any]:
    out = run / "plain"
    cmd = [sys.executable, "-m", "captcha_edge.export.cli", str(run), "--int8", "--int8-route",
           "plain", "--diagnose", "--max-drop", "100", "--out", str(out), "--force", "-q"]
    with (RUNS / f"{run.name}.export.log").open("w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    return json.loads((out / "export_report.json").read_text())


def entry(style: str, seed: int, hist: List[float], report: Dict[str, Any],
          recipe: str) -> Dict[str, Any]:
    i8 = next(r for r in report["results"] if r["format"] == "int8")
    # a named route's diagnosis is filed as "chosen" (with --int8-route plain: the plain file)
    diag = report.get("int8_diagnosis", {})
    worst: Optional[Dict[str, Any]] = next(iter((diag.get("plain") or diag.get("chosen")
                                                 or {}).get("worst", [])), None)
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "style": style, "seed": seed, "recipe": recipe, "epochs_run": len(hist),
        "val_history": [round(v, 4) for v in hist],
        "keras_seq_acc": report["keras"]["seq_acc"],
        "int8_seq_acc": i8["verification"]["seq_acc"], "int8_drop_pp": report["int8_drop_pp"],
        "frame_agreement": i8["verification"]["agreement"],
        "worst_layer": None if worst is None else {
            "op": worst["op"], "tensor": worst["tensor"].split(";")[0],
            "rel_error_pct": round(100 * worst["rel_error"], 2),
            "seq_gain_pp": round(worst["gain_pp"], 2),
            "agreement_gain_pp": round(worst["agreement_gain_pp"], 2)},
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Examples:\n" + __doc__.rsplit("\n\n", 1)[1])
    p.add_argument("--styles", default="scratch-grey,varlen,mixed-case,dotted-digits",
                   help="comma-separated panel styles")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--window", default="0.2,0.4",
                   help="stop at the first epoch whose validation accuracy reaches LOW "
                   "(LOW,HIGH; HIGH only marks an overshoot in the output)")
    p.add_argument("--max-epochs", type=int, default=20, help="stop here whatever the accuracy")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-rev", metavar="REV",
                   help="train with the code of this earlier commit at its own defaults (e.g. "
                   f"{BEFORE_STYLES}: fixed 200x50 grey, before the any-style work); the export "
                   "is always this checkout's")
    a = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        code = None if a.train_rev is None else stack.enter_context(
            _gitrev.installed_rev(a.train_rev))
        return search(a, code)


def search(a: argparse.Namespace, code: Optional[Path]) -> int:
    low, high = (float(x) for x in a.window.split(","))
    os.chdir(ROOT)
    for style in a.styles.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            print(f"[{style} seed {seed}] training (stops at val >= {low:.0%})", flush=True)
            tag = "" if code is None else f"-r{a.train_rev}"
            recipe = (" ".join(EARLIER) if code is None
                      else f"the defaults of commit {a.train_rev} (200x50 grey, stretched)")
            run, hist = train_until(style, seed, low, high, a.max_epochs, a.threads, code, tag)
            e = entry(style, seed, hist, export_plain(run), recipe)
            append_result(RESULTS, e)
            over = " (past the window)" if e["keras_seq_acc"] > high else ""
            print(f"[{style} seed {seed}] Keras {e['keras_seq_acc']:.1%}{over}, plain int8 "
                  f"{e['int8_seq_acc']:.1%} ({e['int8_drop_pp']:+.2f} pp), agreement "
                  f"{e['frame_agreement']:.2%}, worst {e['worst_layer']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
