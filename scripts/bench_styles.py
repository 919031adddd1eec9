"""Benchmark: train on each shared captcha style with the CLI defaults (or other settings),
export int8, and record accuracy, CER, wall and CPU time and the chosen input.

For every style the run trains on the hash split and is scored on the held-out part (the
validation split, which ``captcha-export`` verifies on). Each (style, config) appends one entry
to ``benchmarks/results/styles.json``; ``styles.md`` is rewritten from all entries. The machine
is shared, so the load average is sampled while each run trains and CPU seconds (the
``captcha-train`` child's user + system time) are recorded beside wall time.

Examples:
  python scripts/bench_styles.py                               # all styles, CLI defaults
  python scripts/bench_styles.py --styles swust --minutes 8 --clock cpu
  python scripts/bench_styles.py --styles digits-color --config deeper -- --convs 1,2,2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "bench_styles"

#: The label options a user has to give for each shared style (nothing else is style-specific).
STYLES: Dict[str, List[str]] = {
    "v2": ["--data-dir", "{data}/captcha_images_v2"],
    "amazon": ["--data-dir", "{data}/styles/amazon"],
    "digits-color": ["--data-dir", "{data}/styles/digits-color",
                     "--labels", "{data}/styles/digits-color/labels.csv"],
    "swust": ["--data-dir", "{data}/styles/swust", "--recursive",
              "--label-pattern", "^([0-9a-z]+)_"],
}


def _load_sampler(samples: List[float], stop: threading.Event) -> None:
    while not stop.wait(5.0):
        samples.append(os.getloadavg()[0])


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def _run(cmd: List[str], log: Path) -> Dict[str, Any]:
    """Run ``cmd`` with its output in ``log``; wall, CPU seconds and load average while it ran."""
    loads: List[float] = [os.getloadavg()[0]]
    stop = threading.Event()
    sampler = threading.Thread(target=_load_sampler, args=(loads, stop), daemon=True)
    sampler.start()
    cpu0, t0 = _children_cpu(), time.monotonic()
    with log.open("w") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    stop.set()
    return {"exit_code": code, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "load_avg_1min": {"mean": round(sum(loads) / len(loads), 2),
                              "max": round(max(loads), 2)}}


def bench_one(style: str, config: str, extra: List[str], a: argparse.Namespace) -> Dict[str, Any]:
    run = a.runs / f"{style}-{config}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    args = [x.format(data=str(a.data)) for x in STYLES[style]]
    budget = ["--max-minutes", str(a.minutes), "--budget-clock", a.clock] if a.minutes else []
    nice = ["nice", "-n", str(a.nice)] if a.nice else []
    cmd = [*nice, sys.executable, "-m", "captcha_edge.train.cli", *args, "--out", str(run),
           "--overwrite", "--threads", str(a.threads), *budget, *extra]
    print(f"[{style}/{config}] {' '.join(cmd)}", flush=True)
    tr = _run(cmd, run.parent / f"{run.name}.train.log")
    return describe(run, style, config, " ".join([*budget, *extra]) or "defaults", tr, a)


def describe(run: Path, style: str, config: str, options: str, tr: Dict[str, Any],
             a: argparse.Namespace) -> Dict[str, Any]:
    """The benchmark entry of a trained run folder (and its int8 export unless --no-export)."""
    nice = ["nice", "-n", str(a.nice)] if a.nice else []
    entry: Dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "style": style, "config": config,
        "options": options,
        "note": a.note, "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "threads": a.threads, "train": tr,
    }
    if tr["exit_code"] != 0 or not (run / "metrics.json").is_file():
        entry["error"] = f"captcha-train exited with {tr['exit_code']}"
        return entry
    m = json.loads((run / "metrics.json").read_text())
    meta = json.loads((run / "model.json").read_text())
    choice = meta.get("input_choice") or {}
    entry.update({
        "geometry": f"{meta['preprocess']['width']}x{meta['preprocess']['height']}",
        "color": meta["preprocess"].get("color", "L"),
        "choice_reasons": choice.get("reasons"),
        "model_config": meta["model_config"], "parameters": m["parameters"],
        "train_count": m["train_count"], "val_count": m["val_count"],
        "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
        "stop_reason": m["stop_reason"], "train_seconds": m["train_seconds"],
        "train_cpu_seconds": m.get("train_cpu_seconds"),
        "keras": {"seq_acc": m["val_seq_acc"], "cer": m["val_cer"]},
    })
    hist = (run / "history.csv").read_text().splitlines()
    entry["history_rows"] = len(hist) - 1
    if a.export:
        ex = _run([*nice, sys.executable, "-m", "captcha_edge.export.cli", str(run), "--int8",
                   "--max-drop", "100", "-q"], run.parent / f"{run.name}.export.log")
        entry["export"] = {k: ex[k] for k in ("exit_code", "wall_seconds", "cpu_seconds")}
        rep = run / "export_report.json"
        if rep.is_file():
            r = json.loads(rep.read_text())
            row = next((x for x in r["results"] if x["format"] == "int8"), {})
            v = row.get("verification")
            entry["int8"] = ({"seq_acc": v["seq_acc"], "cer": v["cer"],
                              "frame_agreement": v.get("agreement")} if v
                             else {"error": row.get("error", "no verification")})
    return entry


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def write_md(entries: List[Dict[str, Any]], path: Path) -> None:
    lines = ["# Any-style training benchmark (scripts/bench_styles.py)", "",
             "Train on the hash split of each style, score the held-out validation part. "
             "train CPU s = CPU time of the training loop (all threads; the JSON also has the "
             "whole process's); the 2-core machine was shared, so wall time mostly measures the "
             "other jobs (load column).", "",
             "| date (UTC) | style | config | options | geometry | colour | load mean/max | "
             "train wall s | train CPU s | epochs (best) | stop | Keras seq acc % | Keras CER % | "
             "int8 seq acc % | int8 CER % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if "error" in e:
            lines.append(f"| {e['date_utc']} | {e['style']} | {e['config']} | {e['options']} | "
                         f"{e['error']} |" + " |" * 10)
            continue
        i8 = e.get("int8") or {}
        lines.append(
            f"| {e['date_utc']} | {e['style']} | {e['config']} | {e['options']} | "
            f"{e['geometry']} | {e['color']} | {e['train']['load_avg_1min']['mean']}/"
            f"{e['train']['load_avg_1min']['max']} | {e['train']['wall_seconds']:.0f} | "
            f"{e.get('train_cpu_seconds') or 0:.0f} | {e['epochs_run']} ({e['best_epoch']}) | "
            f"{e['stop_reason']} | {_pct(e['keras']['seq_acc'])} | {_pct(e['keras']['cer'])} | "
            f"{_pct(i8.get('seq_acc'))} | {_pct(i8.get('cer'))} |")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--styles", default=",".join(STYLES),
                   help=f"comma-separated subset of {', '.join(STYLES)}")
    p.add_argument("--config", default="defaults", help="name recorded for these settings")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="pass --max-minutes M (default: the CLI's own budget)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                   help="--budget-clock for --minutes (default cpu: load-independent)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--nice", type=int, default=5, help="run the children with nice -n N")
    p.add_argument("--no-export", dest="export", action="store_false",
                   help="skip captcha-export --int8")
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument("--runs", type=Path, default=RUNS, help="where run folders go (git-ignored)")
    p.add_argument("--note", default="", help="free text stored with each entry")
    p.add_argument("--record", type=Path, metavar="RUN",
                   help="record an existing run folder instead of training (one style)")
    p.add_argument("extra", nargs="*", help="extra captcha-train options (after --)")
    a = p.parse_args(argv)
    styles = [s.strip() for s in a.styles.split(",") if s.strip()]
    bad = [s for s in styles if s not in STYLES]
    if bad:
        print(f"bench_styles: error: --styles: unknown {', '.join(bad)} (known: "
              f"{', '.join(STYLES)})", file=sys.stderr)
        return 2
    if not a.data.is_dir():
        print(f"bench_styles: error: --data {a.data}: no such folder", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "styles.json"
    if a.record is not None and len(styles) != 1:
        print("bench_styles: error: --record needs exactly one --styles entry", file=sys.stderr)
        return 2
    for style in styles:
        if a.record is not None:  # a run trained elsewhere (e.g. by an older version)
            m = json.loads((a.record / "metrics.json").read_text())
            tr = {"exit_code": 0, "wall_seconds": m["train_seconds"],
                  "cpu_seconds": m.get("train_cpu_seconds"),
                  "load_avg_1min": {"mean": None, "max": None}}
            entry = describe(a.record, style, a.config, a.note or "recorded run", tr, a)
        else:
            entry = bench_one(style, a.config, list(a.extra), a)
        entries = json.loads(out.read_text()) if out.exists() else []
        entries.append(entry)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(entries, indent=1) + "\n")
        os.replace(tmp, out)
        write_md(entries, RESULTS / "styles.md")
        print(json.dumps({k: entry.get(k) for k in ("style", "config", "geometry", "color",
                                                    "keras", "int8", "train")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
