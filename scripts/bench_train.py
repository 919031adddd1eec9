"""Benchmark: train the default model on the shared 840 real captchas on this CPU.

Runs ``captcha-train`` once (a subprocess, so its CPU time can be measured), samples the machine's
load average while it runs (the CPU is shared), and writes the wall time, CPU time, validation
sequence accuracy/CER and the time to reach the accuracy target to
``benchmarks/results/train_cpu.json`` (one entry appended per run) and ``train_cpu.md``.

Examples:
  python scripts/bench_train.py                                  # default model, default options
  python scripts/bench_train.py --keep runs/real840        # keep the trained run folder
  python scripts/bench_train.py -- --size small --epochs 30      # extra captcha-train options
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "captcha_images_v2"
RESULTS = ROOT / "benchmarks" / "results"
TARGET_ACC = 0.99
TARGET_SECONDS = 600


def _load_sampler(samples: List[float], stop: threading.Event) -> None:
    while not stop.wait(5.0):
        samples.append(os.getloadavg()[0])


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--keep", type=Path, help="keep the run folder here (replaced if present)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--note", default="", help="free text stored with the result")
    p.add_argument("extra", nargs="*", help="extra captcha-train options (after --)")
    a = p.parse_args(argv)
    if not a.data_dir.is_dir():
        print(f"bench_train: error: --data-dir {a.data_dir}: no such folder", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    run = tmp / "run"
    cmd = [sys.executable, "-m", "captcha_edge.train.cli", "--data-dir", str(a.data_dir),
           "--out", str(run), "--threads", str(a.threads), *a.extra]
    print("running:", " ".join(cmd), flush=True)
    loads: List[float] = [os.getloadavg()[0]]
    stop = threading.Event()
    sampler = threading.Thread(target=_load_sampler, args=(loads, stop), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    code = subprocess.call(cmd)
    wall = time.monotonic() - t0
    stop.set()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        print(f"bench_train: captcha-train exited with {code}", file=sys.stderr)
        return code
    metrics = json.loads((run / "metrics.json").read_text())
    rows = list(csv.DictReader((run / "history.csv").open()))
    hit = next((r for r in rows if float(r["val_seq_acc"]) >= TARGET_ACC), None)
    within = [r for r in rows if float(r["train_seconds"]) <= TARGET_SECONDS]
    # 10 minutes of this 2-core CPU to ourselves = 1200 CPU-seconds: the load-independent budget.
    cpu_budget = TARGET_SECONDS * (os.cpu_count() or 2)
    within_cpu = [r for r in rows if float(r.get("train_cpu_seconds", "inf")) <= cpu_budget]
    model = json.loads((run / "model.json").read_text())
    entry: Dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # No machine paths in a committed result: the data folder relative to the repo, RUN for --out.
        "command": " ".join(["captcha-train", "--data-dir",
                             os.path.relpath(a.data_dir, Path(__file__).resolve().parents[1]),
                             "--out", "RUN", *cmd[7:]]),
        "note": a.note,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": a.threads,
        "load_avg_1min": {"start": round(loads[0], 2), "mean": round(sum(loads) / len(loads), 2),
                          "max": round(max(loads), 2)},
        "wall_seconds": round(wall, 1),
        "train_seconds": metrics["train_seconds"],
        "process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "parameters": metrics["parameters"],
        "model_config": model["model_config"],
        "train_count": metrics["train_count"],
        "val_count": metrics["val_count"],
        "val_seq_acc": metrics["val_seq_acc"],
        "val_cer": metrics["val_cer"],
        "first_epoch_at_99": ({"epoch": int(hit["epoch"]),
                               "train_seconds": float(hit["train_seconds"]),
                               "train_cpu_seconds": float(hit.get("train_cpu_seconds", "nan"))}
                              if hit else None),
        "train_cpu_seconds": metrics.get("train_cpu_seconds"),
        "best_val_seq_acc_within_cpu_budget": (max(float(r["val_seq_acc"]) for r in within_cpu)
                                               if within_cpu else None),
        "cpu_budget_seconds": cpu_budget,
        "best_val_seq_acc_within_600s": (max(float(r["val_seq_acc"]) for r in within)
                                         if within else None),
        "confusions": metrics["confusions"][:5],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "train_cpu.json"
    history = json.loads(out.read_text()) if out.exists() else []
    history.append(entry)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(history, indent=1) + "\n")
    os.replace(tmp_out, out)
    lines = ["# captcha-train CPU benchmark (scripts/bench_train.py)", "",
             ("| date (UTC) | options | load avg (mean/max) | train s (wall) | train CPU s | "
              "epochs | val seq acc | val CER | 99% reached at | best acc <= 600 s wall | "
              "best acc <= 1200 CPU s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in history:
        h = e["first_epoch_at_99"]
        reached = (f"epoch {h['epoch']} ({h['train_seconds']:.0f} s wall, "
                   f"{h.get('train_cpu_seconds', float('nan')):.0f} CPU s)" if h else "no")
        lines.append(
            f"| {e['date_utc']} | {' '.join(e['command'].split()[5:]) or 'defaults'} "
            f"| {e['load_avg_1min']['mean']}/{e['load_avg_1min']['max']} | {e['train_seconds']} "
            f"| {e.get('train_cpu_seconds')} | {e['epochs_run']} | {e['val_seq_acc']:.4f} "
            f"| {e['val_cer']:.4f} | {reached} "
            f"| {e['best_val_seq_acc_within_600s']} "
            f"| {e.get('best_val_seq_acc_within_cpu_budget')} |")
    md = RESULTS / "train_cpu.md"
    md.with_suffix(".md.tmp").write_text("\n".join(lines) + "\n")
    os.replace(md.with_suffix(".md.tmp"), md)
    print(json.dumps(entry, indent=1))
    if a.keep:
        if a.keep.exists():
            shutil.rmtree(a.keep)
        a.keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run), str(a.keep))
        print(f"run folder kept at {a.keep}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
