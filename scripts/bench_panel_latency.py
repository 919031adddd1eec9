"""Benchmark: end-to-end latency of panel models (issue 22: <= 2 ms on one x86 core), each beside
the bundled default model in the same ``captcha-edge bench`` run.

For each run folder, ``captcha-edge bench --model BUNDLED --model RUN/model_int8.tflite
--threads 1 --json`` times PNG bytes -> text (decode, preprocess, invoke, CTC) on the style's own
unseen test images when the panel has them (else on the bench's synthetic PNGs). The p50 and
p95 of each stage, the ratio to the bundled model and the machine's load average are appended
to ``benchmarks/results/panel_latency.json`` under ``runs`` (one entry per invocation).

Examples:
  python scripts/bench_panel_latency.py runs/bench_styles/*-conv-30min-cpu
  python scripts/bench_panel_latency.py --n 400 --note "quiet machine" runs/bench_styles/v2-x
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "panel_latency.json"
BUNDLED = ROOT / "runtime" / "models" / "default_int8.tflite"
PANEL = ROOT / "runs" / "panel"


def test_images(run: Path) -> Optional[Path]:
    """The unseen test folder of the run's panel style, if it was drawn."""
    for name in sorted((p.name for p in PANEL.iterdir()), key=len, reverse=True) \
            if PANEL.is_dir() else []:
        if run.name.startswith(name + "-"):
            tests = sorted((PANEL / name).glob("test-*"))
            return tests[0] if tests else None
    return None


def bench(run: Path, n: int) -> Dict[str, Any]:
    model = run / "model_int8.tflite"
    cmd = [sys.executable, "-m", "captcha_edge.cli", "bench", "--model", str(BUNDLED),
           "--model", str(model), "--threads", "1", "--n", str(n), "--json"]
    images = test_images(run)
    if images is not None:
        cmd += ["--images", str(images)]
    load0 = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = json.loads(out)
    bundled, mine = res["results"]
    meta = json.loads((run / "model.json").read_text())
    cfg = meta["model_config"]

    def stages(r: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
        return {k: {q: round(v[q], 4) for q in ("p50", "p95")} for k, v in r["stages_ms"].items()}

    return {
        # no absolute path of this machine in the committed results
        "run": run.name, "images": res["images"].replace(f"{ROOT}/", ""), "n": n,
        "input": meta["input_shape"], "frames": meta["time_steps"],
        "head": cfg.get("head", "lstm"), "stem": cfg.get("stem", "pool"),
        "size_bytes": mine["size"], "stages_ms": stages(mine),
        "bundled_stages_ms": stages(bundled),
        "ratio_to_bundled_p50": round(mine["stages_ms"]["total"]["p50"]
                                      / bundled["stages_ms"]["total"]["p50"], 2),
        "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders with model_int8.tflite")
    p.add_argument("--n", type=int, default=200, help="timed runs per stage (default 200)")
    p.add_argument("--note", default="", help="free text stored with the entry")
    p.add_argument("--no-record", dest="record", action="store_false")
    a = p.parse_args(argv)
    missing = [str(r) for r in a.runs if not (r / "model_int8.tflite").is_file()]
    if missing:
        print(f"bench_panel_latency: error: no model_int8.tflite in {', '.join(missing)}",
              file=sys.stderr)
        return 2
    models: List[Dict[str, Any]] = []
    for run in a.runs:
        m = bench(run, a.n)
        models.append(m)
        print(f"{m['run']}: {m['stages_ms']['total']['p50']:.2f} ms end to end (p50; invoke "
              f"{m['stages_ms']['invoke']['p50']:.2f}), bundled "
              f"{m['bundled_stages_ms']['total']['p50']:.2f} ms, x{m['ratio_to_bundled_p50']}",
              flush=True)
    if a.record:
        from captcha_edge._common import atomic_write_json

        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        data.setdefault("runs", []).append({
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "captcha-edge bench --model BUNDLED --model RUN/model_int8.tflite "
                       f"--threads 1 --n {a.n} --json (--images: the style's unseen test PNGs)",
            "cpu": os.uname().machine, "note": a.note, "models": models})
        atomic_write_json(RESULTS, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
