"""``captcha-edge serve`` layouts under wrk, a C load generator: the server without its client.

    python scripts/bench_serve_wrk.py               # results to benchmarks/results/serve_wrk.json
    python scripts/bench_serve_wrk.py --layouts 2x1,2x1-off --clients 16 --rounds 3

Why: the aiohttp client of ``scripts/bench_serve.py`` spends ~0.35 ms of CPU per request on the
same two cores as the server; wrk spends a few microseconds, so what it measures is closer to the
server alone (and to a real deployment, whose clients are other machines). Needs ``wrk``, Debian's
package (run as root, the script installs it with apt-get; else ``apt install wrk``); the
request script is ``scripts/wrk_recognize.lua``.

Every layout is started at once, each on its own port (idle ones cost nothing), then the
measurements are interleaved: per round and client count, each layout gets ``--seconds`` of wrk
in a fresh random order, so the slow drifts of a shared VM hit them alike. Reported per layout
and client count: requests/s, p50 and p99 of every round and their medians, and the server's
CPU time per request (all its processes, from /proc).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve as bench  # noqa: E402 -- server process and /proc helpers
from bench_serve_processes import LAYOUT_ENV, LAYOUTS  # noqa: E402

LUA = Path(__file__).resolve().parent / "wrk_recognize.lua"


def wrk(url: str, clients: int, seconds: float, paths: Path) -> dict[str, Any]:
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "-s", str(LUA), url,
                          "--", str(paths)], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def install_wrk() -> bool:
    """Debian's ``wrk`` package, the way scripts/bare-check.sh installs mmdebstrap: only as root
    where apt-get exists. True when wrk is on PATH afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    print("bench_serve_wrk: installing Debian's wrk (apt-get install wrk)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]):
        if subprocess.run(argv, env=env, check=False).returncode != 0:
            return False
    return shutil.which("wrk") is not None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(bench.DEFAULT_IMAGES))
    ap.add_argument("--layouts", default="2x1,2x1-off,1x2,1x2-on",
                    help=f"layouts of bench_serve_processes.py (any of {','.join(LAYOUTS)})")
    ap.add_argument("--model", default="default_dynamic", help="bundled model that answers")
    ap.add_argument("--clients", default="16,64", help="wrk connections (default 16,64)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement (default 4)")
    ap.add_argument("--out", default=str(bench.ROOT / "benchmarks" / "results"
                                         / "serve_wrk.json"))
    args = ap.parse_args()
    if shutil.which("wrk") is None and not install_wrk():
        print("bench_serve_wrk: wrk is not on PATH (Debian/Ubuntu: apt install wrk; as root this "
              "script installs it)", file=sys.stderr)
        return 2
    for key in args.layouts.split(","):
        if key not in LAYOUTS:
            ap.error(f"--layouts: unknown {key!r}; valid: {', '.join(LAYOUTS)}")
    files = sorted(Path(args.images).resolve().glob("*.png"))
    if not files:
        ap.error(f"--images {args.images}: no PNG files")
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(f"{p}\n" for p in files))
        paths = Path(f.name)
    servers: dict[str, bench.Proc] = {}
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for key in args.layouts.split(","):
            name, flags = LAYOUTS[key]
            servers[name] = bench.Proc(
                [sys.executable, "-m", "captcha_edge.cli", "serve", "--port", "0", *flags,
                 "--default-model", args.model], r"listening on (http://127\.0\.0\.1:\d+)",
                env=LAYOUT_ENV.get(key))
        for srv in servers.values():
            wrk(srv.url, max(clients), 2, paths)  # warm-up: connections, interpreters
        for rnd in range(args.rounds):
            for c in clients:
                for name in random.sample(list(servers), len(servers)):
                    srv = servers[name]
                    cpu0 = bench.cpu_seconds(srv.proc.pid)
                    r = wrk(srv.url, c, args.seconds, paths)
                    cpu = bench.cpu_seconds(srv.proc.pid) - cpu0
                    r["requests_per_s"] = round(r["requests"] / r["seconds"], 1)
                    r["server_cpu_ms_per_request"] = round(1000 * cpu / max(1, r["requests"]), 3)
                    rows.setdefault((name, c), []).append(r)
                    print(f"round {rnd + 1} | {name} | {c} clients: {r['requests_per_s']:.0f} "
                          f"req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                          f"errors {r['non_2xx'] + r['socket_errors']}", flush=True)
    finally:
        for srv in servers.values():
            srv.stop()
        paths.unlink(missing_ok=True)
    version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    out: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "images": f"{len(files)} PNGs from {Path(args.images).name}, one image per request",
        "model": args.model, "client": f"wrk {version[1] if len(version) > 1 else '?'}, one "
        "thread, same host, same cores", "rounds": args.rounds, "seconds": args.seconds,
        "results": []}
    for (name, c), rs in rows.items():
        med = {k: round(statistics.median(r[k] for r in rs), 2)
               for k in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request")}
        out["results"].append({
            "layout": name, "clients": c, "median": med,
            **{k: [r[k] for r in rs] for k in ("requests_per_s", "p50_ms", "p99_ms",
                                                "server_cpu_ms_per_request")},
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in rs)})
        print(f"{name:48} {c:3} clients  median {med['requests_per_s']:7.1f} req/s  "
              f"p99 {med['p99_ms']:6.2f} ms  cpu {med['server_cpu_ms_per_request']:.3f} ms/req")
    bench.atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
