"""Benchmark: CPU-seconds per whole training epoch, this checkout against an earlier commit,
in one run on the same machine.

``bench_train_speed.py`` times the model's training step alone. This one times what a user
pays: ``captcha-train`` with the CLI defaults, on one thread, for a few epochs of a panel
style, the input pipeline and the per-epoch validation included. The earlier commit (default:
the code issue 22 was filed against) is checked out in a temporary git worktree and installed
into a temporary folder (pure-Python decoder; nothing is fetched), so both sides run from
source. The two sides alternate for ``--rounds`` rounds; each epoch's CPU-seconds come from the
run's ``history.csv`` (``epoch_cpu_seconds``, ``epoch_seconds``), and the first epoch
(tracing) is left out. ``--side-by-side`` measures as issue 22 did: two runs of a side at once
on the 2-core machine, each with the default threads (all cores) and a wall-clock budget.
Results are appended to ``benchmarks/results/epoch_cost.json``.

Examples:
  python scripts/bench_epoch_cost.py                       # scratch-grey, 3 epochs, 1 round
  python scripts/bench_epoch_cost.py --style wide-color --rounds 2
  python scripts/bench_epoch_cost.py --side-by-side            # as issue 22 measured
  python scripts/bench_epoch_cost.py --old-rev ef0c61d --epochs 4
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import _gitrev
from _results import append_result  # scripts/ is on sys.path when a script in it runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "epoch_cost.json"
#: The last commit before issue 22's work began: the defaults the issue measured.
ISSUE_22_BASE = "ef0c61d"


def start(pythonpath: Optional[Path], data: Path, out: Path, epochs: int, minutes: float,
          threads: Optional[int]) -> subprocess.Popen:
    """Start ``captcha-train`` with the CLI defaults for ``epochs``; ``threads`` None keeps the
    default (all cores) and the default wall-clock budget, as a user runs it."""
    cmd = [sys.executable, "-m", "captcha_edge.train.cli", "--data-dir", str(data), "--labels",
           str(data / "labels.csv"), "--out", str(out), "--epochs", str(epochs),
           "--max-minutes", f"{minutes:g}"]
    if threads is not None:
        cmd += ["--threads", str(threads), "--budget-clock", "cpu"]
    out.parent.mkdir(parents=True, exist_ok=True)
    # stderr to a file, not a pipe: two runs side by side are waited for one after the other,
    # and a full pipe would stall the second one's progress bars (and its timing)
    with _log(out).open("w") as log:
        # run from a neutral folder so the checkout beside it is not imported by accident
        return subprocess.Popen(cmd, cwd=out.parent, env=_gitrev.env_for(pythonpath),
                                stdout=subprocess.DEVNULL, stderr=log)


def _log(out: Path) -> Path:
    return out.parent / f"{out.name}.log"


def collect(proc: subprocess.Popen, out: Path) -> Dict[str, Any]:
    """Wait for a run; return its per-epoch wall and CPU seconds and the input it chose."""
    if proc.wait() != 0:
        raise SystemExit(f"bench_epoch_cost: captcha-train failed ({proc.returncode}):\n"
                         + _log(out).read_text()[-3000:])
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cfg = json.loads((out / "model.json").read_text()).get("model_config", {})
    return {"epoch_cpu_seconds": [float(r["epoch_cpu_seconds"]) for r in rows],
            "epoch_wall_seconds": [float(r["epoch_seconds"]) for r in rows],
            "geometry": f"{cfg.get('width')}x{cfg.get('height')}",
            "channels": cfg.get("channels"), "head": cfg.get("head", "lstm"),
            "stem": cfg.get("stem", "pool")}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--style", default="scratch-grey", help="synthetic panel style (default "
                   "scratch-grey: the issue's 240x64 grey case)")
    p.add_argument("--old-rev", default=ISSUE_22_BASE,
                   help=f"earlier commit to compare against (default {ISSUE_22_BASE})")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3; the first "
                   "is left out)")
    p.add_argument("--minutes", type=float, default=30.0,
                   help="--max-minutes both sides are given, which their geometry choice reads "
                        "(default 30; --epochs ends the run first)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--side-by-side", action="store_true",
                   help="the issue's condition: each side as two runs at once on this machine, "
                        "default threads and wall-clock budget (default: one run, one thread, "
                        "CPU clock)")
    p.add_argument("--no-record", dest="record", action="store_false")
    a = p.parse_args(argv)
    if a.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is left out)")
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_styles

    data = bench_styles.panel_folders(a.style)["train"]
    runs: Dict[str, List[Dict[str, Any]]] = {"old": [], "new": []}
    with _gitrev.installed_rev(a.old_rev) as old_pkg, \
            tempfile.TemporaryDirectory(prefix="epoch-cost-") as tmp:
        threads = None if a.side_by_side else 1
        for r in range(a.rounds):
            for side, path in (("old", old_pkg), ("new", None)):
                outs = [Path(tmp) / f"{side}-{r}-{i}" for i in range(2 if a.side_by_side else 1)]
                procs = [start(path, data, o, a.epochs, a.minutes, threads) for o in outs]
                for proc, o in zip(procs, outs):
                    res = collect(proc, o)
                    runs[side].append(res)
                    print(f"round {r + 1}/{a.rounds} {side}: {res['geometry']} {res['head']} "
                          f"epoch CPU-s {res['epoch_cpu_seconds']} wall-s "
                          f"{res['epoch_wall_seconds']}", flush=True)
    med = {s: statistics.median(e for x in runs[s] for e in x["epoch_cpu_seconds"][1:])
           for s in runs}
    med_wall = {s: statistics.median(e for x in runs[s] for e in x["epoch_wall_seconds"][1:])
                for s in runs}
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    entry = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "style": a.style, "old_rev": a.old_rev, "new_rev": head, "epochs": a.epochs,
        "rounds": a.rounds,
        "condition": ("two runs side by side, default threads, wall budget" if a.side_by_side
                      else "one run, --threads 1, CPU budget"), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "median_epoch_cpu_seconds": med,
        "ratio_old_over_new": round(med["old"] / med["new"], 2),
        "median_epoch_wall_seconds": med_wall,
        "wall_ratio_old_over_new": round(med_wall["old"] / med_wall["new"], 2),
        "runs": runs,
    }
    print(json.dumps({k: entry[k] for k in ("median_epoch_cpu_seconds", "ratio_old_over_new",
                                            "median_epoch_wall_seconds",
                                            "wall_ratio_old_over_new")}))
    if a.record:
        append_result(RESULTS, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
