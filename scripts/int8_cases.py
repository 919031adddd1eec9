"""Record integer-export regression cases (issue 12) in benchmarks/results/int8-cases.json.

    python scripts/int8_cases.py amazon-15min=runs/amazon-15min digits-color-15min=RUN2

For each NAME=RUN: unless RUN/export_report.json already holds a float32 and an int8 result,
export the run as a user would (``captcha-export RUN --formats float32,int8 --max-drop 0.5
--diagnose``: the int8 route ladder, and the diagnosis of every route tried), then add the case
(replacing an entry of the same name) with the figures the issue asks for: Keras, float32 and
int8 sequence accuracy and CER, frame agreement, sizes, export-time invoke latency, the route
chosen and every route tried, the diagnosis's worst layers, and the run's training time.
The written run folder is named by its base name only (no machine path).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "int8-cases.json"
sys.path.insert(0, str(ROOT))  # noqa: E402 -- run from a checkout

from captcha_edge._common import atomic_write_json  # noqa: E402


def _result(report: Dict[str, Any], fmt: str) -> Dict[str, Any]:
    return next((r for r in report.get("results", []) if r.get("format") == fmt), {})


def exported(run: Path) -> Dict[str, Any]:
    """The run's export report, exporting first when float32 or int8 is missing from it."""
    path = run / "export_report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    if not (_result(report, "float32").get("verification")
            and _result(report, "int8").get("verification")):
        cmd = [sys.executable, "-m", "captcha_edge.export.cli", str(run), "--formats",
               "float32,int8", "--max-drop", "0.5", "--diagnose", "--force", "-q"]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=False)  # exit 1 = over --max-drop: still a case to record
        report = json.loads(path.read_text())
    return report


def case(name: str, run: Path) -> Dict[str, Any]:
    report = exported(run)
    f32, i8 = _result(report, "float32"), _result(report, "int8")
    v32, v8 = f32["verification"], i8["verification"]
    metrics = json.loads((run / "metrics.json").read_text())

    def fmt_row(row: Dict[str, Any], v: Dict[str, Any]) -> Dict[str, Any]:
        return {"seq_acc": v["seq_acc"], "cer": v["cer"], "agreement": v["agreement"],
                "size": row["size_bytes"], "latency_ms": v.get("latency_ms")}

    return {
        "case": name, "run": run.name, "val_images": v8.get("images"),
        "train": {k: metrics.get(k) for k in ("train_seconds", "train_cpu_seconds",
                                              "epochs_run", "best_epoch", "stop_reason")},
        "keras": report["keras"],
        "route": report["int8_route"]["route"], "route_passed": report["int8_route"]["passed"],
        "trials": report["int8_route"]["trials"],
        "float32": fmt_row(f32, v32),
        "int8": {**fmt_row(i8, v8), "input_dtype": i8["input_dtype"],
                 "output_dtype": i8["output_dtype"],
                 "float_compute_ops": i8["float_compute_ops"]},
        "drop_pp": report["int8_drop_pp"],
        "diagnosis": report.get("int8_diagnosis"),
        "export_load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="+", metavar="NAME=RUN")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    entries: List[Dict[str, Any]] = json.loads(a.out.read_text()) if a.out.is_file() else []
    for spec in a.cases:
        name, sep, run = spec.partition("=")
        if not sep or not (Path(run) / "model.keras").is_file():
            p.error(f"{spec}: expected NAME=RUN with a captcha-train run folder")
        entry = case(name, Path(run))
        entries = [e for e in entries if e.get("case") != name] + [entry]
        atomic_write_json(a.out, entries)
        print(f"{name}: route {entry['route']} (passed {entry['route_passed']}), keras "
              f"{entry['keras']['seq_acc']:.4f}, float32 {entry['float32']['seq_acc']:.4f}, "
              f"int8 {entry['int8']['seq_acc']:.4f} ({entry['drop_pp']:+.2f} pp), agreement "
              f"{entry['int8']['agreement']:.4f}, size {entry['int8']['size']} B = "
              f"{entry['int8']['size'] / entry['float32']['size']:.1%} of float32", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
