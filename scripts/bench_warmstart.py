"""Benchmark: how many labelled images a style needs, with and without ``--init-from``.

    python scripts/bench_warmstart.py --style amazon --counts 100,200,400 \\
        --init-from runs/v2-defaults --minutes 5

For each count N, a labels file lists N training images of the style (a fixed, hash-ordered
subset of its training split) plus the style's whole validation split, so every run is scored
on the same held-out images. Each N is trained twice with the CLI defaults and the same CPU-time
budget: from scratch, and warm-started from ``--init-from`` (an earlier run; it fixes the input
geometry and colour). Per run: best validation sequence accuracy (Keras), and the epoch and
training CPU seconds at which 90 % and 95 % were first reached. Entries are appended to
``benchmarks/results/warmstart.json``; ``warmstart.md`` is rewritten from all of them.
"""
from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # noqa: E402 -- run from a checkout
sys.path.insert(0, str(ROOT / "scripts"))  # noqa: E402

from bench_styles import DATA, STYLES  # noqa: E402
from captcha_edge._common import atomic_write, atomic_write_json  # noqa: E402
from captcha_edge.train.data import find_samples, split_samples  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def style_options(style: str, data: Path) -> argparse.Namespace:
    """The label options bench_styles gives captcha-train for ``style``, parsed."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--labels", type=Path)
    ap.add_argument("--recursive", action="store_true")
    ap.add_argument("--label-pattern")
    return ap.parse_args([x.format(data=str(data)) for x in STYLES[style]])


def style_samples(style: str, data: Path) -> List[Any]:
    """The style's labelled samples, read as captcha-train reads them."""
    a = style_options(style, data)
    return find_samples(a.data_dir, labels_file=a.labels, recursive=a.recursive,
                        label_pattern=a.label_pattern)


def subset_labels(style: str, data: Path, n: int, path: Path) -> Dict[str, int]:
    """Write a labels file of ``n`` training samples + the whole validation split."""
    train, val = split_samples(style_samples(style, data), 0.2)
    train.sort(key=lambda s: hashlib.sha256(s.name.encode()).hexdigest())
    if n > len(train):
        raise SystemExit(f"--counts {n}: {style} has only {len(train)} training images")
    rows = [(s.name, s.label) for s in [*train[:n], *val]]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return {"train": n, "val": len(val)}


def reached(history: Path, threshold: float) -> Optional[Dict[str, float]]:
    for row in csv.DictReader(history.open()):
        if float(row["val_seq_acc"]) >= threshold:
            return {"epoch": int(row["epoch"]),
                    "train_cpu_seconds": float(row["train_cpu_seconds"])}
    return None


def train(style: str, data: Path, labels: Path, out: Path, a: argparse.Namespace,
          warm: bool) -> Dict[str, Any]:
    data_dir = str(style_options(style, data).data_dir)
    cmd = [sys.executable, "-m", "captcha_edge.train.cli", "--data-dir", data_dir,
           "--labels", str(labels), "--out", str(out), "--overwrite", "--threads",
           str(a.threads), "--max-minutes", str(a.minutes), "--budget-clock", "cpu", "-q"]
    if warm:
        cmd += ["--init-from", str(a.init_from)]
    t0 = time.monotonic()
    with (out.parent / f"{out.name}.log").open("w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    entry: Dict[str, Any] = {"exit_code": code, "wall_seconds": round(time.monotonic() - t0, 1)}
    if code == 0:
        m = json.loads((out / "metrics.json").read_text())
        meta = json.loads((out / "model.json").read_text())
        entry.update({
            "val_seq_acc": m["val_seq_acc"], "val_cer": m["val_cer"],
            "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
            "train_cpu_seconds": m.get("train_cpu_seconds"), "stop_reason": m["stop_reason"],
            "geometry": f"{meta['preprocess']['width']}x{meta['preprocess']['height']} "
                        f"{meta['preprocess'].get('color', 'L')}",
            "reached_90": reached(out / "history.csv", 0.90),
            "reached_95": reached(out / "history.csv", 0.95),
        })
    return entry


def write_md(entries: List[Dict[str, Any]], path: Path) -> None:
    def pct(x: Optional[float]) -> str:
        return "-" if x is None else f"{100 * x:.1f} %"

    def at(r: Optional[Dict[str, float]]) -> str:
        return "not reached" if r is None else f"epoch {r['epoch']}, {r['train_cpu_seconds']:.0f} s"

    lines = ["# Warm start: images needed per style (scripts/bench_warmstart.py)", "",
             "Each run: N training images of the style + its whole validation split (the same "
             "held-out images for every N), CLI defaults, the same CPU-time budget; warm = "
             "`--init-from` the source run. Accuracy = best validation sequence accuracy "
             "(Keras). CPU s = training CPU time when the threshold was first reached.", "",
             "| date (UTC) | style | source | N train | val | start | input | budget | best acc | "
             "90 % at | 95 % at |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        r = e["result"]
        lines.append(f"| {e['date_utc']} | {e['style']} | {e['source']} | {e['train']} | "
                     f"{e['val']} | {'warm' if e['warm'] else 'cold'} | {r.get('geometry', '-')} "
                     f"| {e['minutes']} CPU-min | {pct(r.get('val_seq_acc'))} | "
                     f"{at(r.get('reached_90'))} | {at(r.get('reached_95'))} |")
    atomic_write(path, "\n".join(lines) + "\n")


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--style", required=True, choices=sorted(STYLES))
    p.add_argument("--counts", default="100,200,400", help="training-image counts N")
    p.add_argument("--init-from", type=Path, required=True, help="source run for the warm start")
    p.add_argument("--minutes", type=float, default=5.0, help="CPU-time budget per run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=("cold", "warm"), help="run one of the two starts")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_warmstart")
    a = p.parse_args(argv)
    if not (a.init_from / "model.keras").is_file():
        p.error(f"--init-from {a.init_from}: not a captcha-train run folder")
    a.runs.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / "warmstart.json"
    for n in [int(c) for c in a.counts.split(",")]:
        labels = a.runs / f"{a.style}-{n}.csv"
        sizes = subset_labels(a.style, a.data, n, labels)
        for warm in ([a.only == "warm"] if a.only else [False, True]):
            out = a.runs / f"{a.style}-{n}-{'warm' if warm else 'cold'}"
            print(f"[{a.style} N={n} {'warm' if warm else 'cold'}] training", flush=True)
            result = train(a.style, a.data, labels, out, a, warm)
            entry = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "style": a.style, "source": a.init_from.name, "warm": warm,
                     "minutes": a.minutes, "threads": a.threads, "cores": os.cpu_count(),
                     **sizes, "result": result}
            with (a.runs / ".results.lock").open("w") as lock:  # cold and warm side by side
                fcntl.flock(lock, fcntl.LOCK_EX)
                entries = json.loads(out_json.read_text()) if out_json.is_file() else []
                entries.append(entry)
                atomic_write_json(out_json, entries)
                write_md(entries, RESULTS / "warmstart.md")
            print(json.dumps(entry), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
