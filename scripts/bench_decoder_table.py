#!/usr/bin/env python
"""Run the decoder benchmarks and print one table of µs/sample and ratios (one run, one JSON).

Examples:
    python scripts/bench_decoder_table.py                       # full run (~3 min), print table
    python scripts/bench_decoder_table.py --timer wall          # wall-clock instead of CPU time
    python scripts/bench_decoder_table.py --quick               # T=50 C=20 width 10 only (~1 min)
    python scripts/bench_decoder_table.py --write-docs docs/decoder.md
    python scripts/bench_decoder_table.py --from-json benchmarks/results/decoder.json

The default timer is the process's CPU time (time.process_time): on a shared, overcommitted
machine wall-clock times mostly measure the other jobs. CPU time still counts every thread of
the process, so the 2-thread batch row shows total CPU, not elapsed time (use --timer wall).

The table is also written to benchmarks/results/decoder-<timer>.md; with --write-docs the block between
``<!-- bench:decoder -->`` and ``<!-- /bench:decoder -->`` in that file is replaced. Every ratio
comes from the same run; the machine's load average at the start is printed beside it, because
timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "test_bench_decoder.py"
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- bench:decoder -->", "<!-- /bench:decoder -->"

# group -> list of (description, check(row) -> (measured text, ok))
TARGETS: dict[str, list[tuple[str, Any]]] = {}


def _target(group: str, text: str, fn: Any) -> None:
    TARGETS.setdefault(group, []).append((text, fn))


for _kind in ("peaky", "flat"):
    _g = f"greedy-T50-C20-{_kind}"
    _target(_g, "cython <= 1.5 µs", lambda r: r["cython"] <= 1.5)
    _target(_g, "python/cython >= 35x", lambda r: r["python"] / r["cython"] >= 35)
    _target(_g, "faster than fast-ctc-decode",
            lambda r: r["cython"] < r["fast-ctc-decode"])  # KeyError: not measured
    _target(f"beam10-exact-T50-C20-{_kind}", "cython <= 700 µs", lambda r: r["cython"] <= 700)
_target("beam10-pruned-T50-C20-peaky", "cython <= 70 µs (top-1 = exact: asserted)",
        lambda r: r["cython"] <= 70)
_target("beam10-exact-T200-C100-flat", "cython <= 40 ms", lambda r: r["cython"] <= 40_000)
for _g in ("beam10-exact-T50-C20-peaky", "beam10-exact-T50-C20-flat",
           "beam10-pruned-T50-C20-peaky", "beam10-exact-T200-C100-flat"):
    _target(_g, "python/cython >= 15x", lambda r: r["python"] / r["cython"] >= 15)

COLUMNS = ["cython", "python", "fast-ctc-decode", "tf", "numpy"]


TIMERS = {"cpu": "time.process_time", "wall": "time.perf_counter"}


def run_benchmarks(json_path: Path, quick: bool, timer: str) -> None:
    """Run pytest-benchmark on the decoder file, writing its JSON report to ``json_path``."""
    cmd = [sys.executable, "-m", "pytest", str(BENCH), "--benchmark-only", "-q",
           "-p", "no:cacheprovider", f"--benchmark-json={json_path}",
           "--benchmark-max-time=0.5", "--benchmark-min-rounds=5",
           f"--benchmark-timer={TIMERS[timer]}"]
    if quick:
        cmd += ["-k", "T50-C20 and (greedy or 10-) and not tf"]
    print("running:", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def load(json_path: Path, stat: str) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Return {group: {impl: µs per sample}} and the run's metadata."""
    data = json.loads(json_path.read_text())
    if any("data" in b.get("stats", {}) for b in data["benchmarks"]):
        # pytest-benchmark keeps every round's time (megabytes); the summary stats suffice.
        for b in data["benchmarks"]:
            b["stats"].pop("data", None)
        write_atomic(json_path, json.dumps(data, indent=1) + "\n")
    return summarize(data, stat)[0], data


def summarize(data: dict[str, Any], stat: str) -> tuple[dict[str, dict[str, float]], list[float]]:
    """{group: {impl: µs per sample}} of a pytest-benchmark report and each benchmark's 1-min
    load average, in the report's order; sets ``data["load_range"]`` for the table's header.
    (scripts/render_results.py reads the committed JSON through this too.)"""
    groups: dict[str, dict[str, float]] = {}
    loads = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "impl" not in info:
            continue
        loads.append(float(info.get("load1", "nan")))
        per = max(1, int(info.get("per_call", 1)))
        groups.setdefault(b["group"], {})[info["impl"]] = b["stats"][stat] * 1e6 / per
    data["load_range"] = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "unknown"
    return groups, loads


def _fmt(us: float | None) -> str:
    if us is None:
        return "–"
    if us >= 10_000:
        return f"{us / 1000:,.1f} ms"
    if us >= 100:
        return f"{us:,.0f}"
    return f"{us:.2f}" if us < 10 else f"{us:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.1f}×"


def _sort_key(group: str) -> tuple[int, int, str]:
    kind = 0 if group.startswith("greedy") else 1 if group.startswith("beam") else 2
    width = int(group.split("-")[0][4:]) if group.startswith("beam") else 0
    return kind, width, group


def make_table(groups: dict[str, dict[str, float]], meta: dict[str, Any], stat: str,
               load_avg: str) -> str:
    """Markdown: the main table, the batch table and the targets."""
    cpu = meta.get("machine_info", {}).get("cpu", {}).get("brand_raw", platform.machine())
    timer = meta.get("machine_info", {}).get("timer") or next(
        (b.get("options", {}).get("timer") for b in meta["benchmarks"]), "?")
    lines = [
        (f"µs per sample ({stat} of the rounds, timer `{timer}`), one run of "
         f"`{BENCH.relative_to(ROOT)}`; "
         f"{meta.get('datetime', '')[:19]} UTC, {cpu}, {os.cpu_count()} CPUs, 1-min load "
         f"average {meta['load_range']} during the run ({load_avg} at start)."),
        "",
        "| case | cython | python | py/cy | fast-ctc-decode | fast/cy | tf (batched) | numpy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    batch_rows = []
    for group in sorted(groups, key=_sort_key):
        r = groups[group]
        if group.startswith("batch-"):
            batch_rows.append((group, r))
            continue
        cy, py = r.get("cython"), r.get("python")
        fast = r.get("fast-ctc-decode")
        lines.append(
            f"| {group} | {_fmt(cy)} | {_fmt(py)} | {_ratio(py, cy)} | {_fmt(fast)} | "
            f"{_ratio(fast, cy)} | {_fmt(r.get('tf'))} | {_fmt(r.get('numpy'))} |"
        )
        extra = {k: v for k, v in r.items() if k not in COLUMNS}
        for impl, us in sorted(extra.items()):
            lines.append(f"| {group} ({impl}) | {_fmt(us)} | | | | | | |")
    if batch_rows:
        lines += ["", "Batch of 64 vs a Python loop of single calls (µs per sample):", "",
                  "| op | loop | batch, 1 thread | batch, 2 threads | 2 threads vs loop |",
                  "|---|---:|---:|---:|---:|"]
        for group, r in batch_rows:
            def get(how: str, r: dict[str, float] = r) -> float | None:
                return next((v for k, v in r.items() if k.endswith(how)), None)
            loop, one, two = get("-loop"), get("-batch-1thread"), get("-batch-2threads")
            lines.append(f"| {group[6:]} | {_fmt(loop)} | {_fmt(one)} | {_fmt(two)} | "
                         f"{_ratio(loop, two)} |")
    lines += ["", "Targets (issue 2), same run:", "", "| case | target | met? |", "|---|---|---|"]
    for group, checks in TARGETS.items():
        for text, fn in checks:
            try:
                ok = "yes" if fn(groups[group]) else "**no**"
            except (KeyError, ZeroDivisionError):
                ok = "not measured"
            lines.append(f"| {group} | {text} | {ok} |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)


def replace_block(doc: Path, table: str) -> None:
    """Replace the text between the bench markers in ``doc``."""
    text = doc.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"error: {doc} has no '{START}' ... '{END}' block to replace")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    write_atomic(doc, f"{head}{START}\n{table}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-json", type=Path, metavar="PATH",
                    help="build the table from an existing pytest-benchmark JSON; do not run")
    ap.add_argument("--quick", action="store_true",
                    help="only T=50 C=20, greedy and width 10, no TensorFlow (~1 min)")
    ap.add_argument("--timer", choices=list(TIMERS), default="cpu",
                    help="cpu: process CPU time (default; robust to other jobs), wall: elapsed")
    ap.add_argument("--stat", choices=["median", "min", "mean"], default="median",
                    help="which statistic of the rounds to report (default: median)")
    ap.add_argument("--write-docs", type=Path, metavar="FILE",
                    help=f"replace the {START} block in FILE with the table")
    args = ap.parse_args(argv)

    if args.from_json:
        if not args.from_json.is_file():
            ap.error(f"--from-json: {args.from_json} does not exist")
        json_path, load_avg = args.from_json, "not recorded"
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        json_path = RESULTS / f"decoder-{args.timer}{'-quick' if args.quick else ''}.json"
        load_avg = f"{os.getloadavg()[0]:.1f}"
        run_benchmarks(json_path, args.quick, args.timer)
    groups, meta = load(json_path, args.stat)
    table = make_table(groups, meta, args.stat, load_avg)
    print(table)
    write_atomic(json_path.with_suffix(".md"), table)
    if args.write_docs:
        replace_block(args.write_docs, table)
        print(f"updated {args.write_docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
