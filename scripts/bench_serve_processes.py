"""A/B of ``captcha-edge serve`` layouts on one machine: processes x worker threads x model.

    python scripts/bench_serve_processes.py                    # 3 rounds, results to benchmarks/results/
    python scripts/bench_serve_processes.py --rounds 1 --sizes 16 --layouts 2x1 --models default_dynamic

Each round starts every layout in turn (so slow drifts of a shared machine hit them alike) and
loads it with the aiohttp client of ``scripts/bench_serve.py``: one image per request at 16
clients (``--single-clients``), then multipart requests of each ``--sizes`` images at 64
clients. Reported per layout and load: captchas/s of every round and their median, p50 and p99
latency, and the server's CPU time per captcha and cores used (all its processes, from /proc).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve as bench  # noqa: E402 -- the load generator and /proc helpers live there

LAYOUTS = {"1x2": ("1 process x 2 workers", ["--workers", "2"]),
           "2x1": ("2 processes x 1 worker", ["--processes", "2", "--workers", "1"]),
           "2x2": ("2 processes x 2 workers", ["--processes", "2", "--workers", "2"]),
           # --batch-while-busy's A/B: its default (auto) is on with one worker, off with two.
           "2x1-off": ("2 processes x 1 worker, --batch-while-busy off",
                       ["--processes", "2", "--workers", "1", "--batch-while-busy", "off"]),
           "1x2-on": ("1 process x 2 workers, --batch-while-busy on",
                      ["--workers", "2", "--batch-while-busy", "on"]),
           # the PNG decoder's A/B: Pillow for every image, as without pyspng installed
           "2x1-pillow": ("2 processes x 1 worker, PNGs by Pillow (CAPTCHA_EDGE_PNG=pillow)",
                          ["--processes", "2", "--workers", "1"])}
#: Environment of a layout's server, beyond this process's own.
LAYOUT_ENV = {"2x1-pillow": {"CAPTCHA_EDGE_PNG": "pillow"}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(bench.DEFAULT_IMAGES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="16,32", help="images per batch request (default 16,32)")
    ap.add_argument("--single-clients", default="16",
                    help="client counts for one image per request (default 16)")
    ap.add_argument("--captchas", type=int, default=12000,
                    help="captchas per measurement (bound; default 12000)")
    ap.add_argument("--seconds", type=float, default=30.0, help="per measurement (bound)")
    ap.add_argument("--layouts", default="1x2,2x1,2x2",
                    help=f"processes x workers to run (default all: {','.join(LAYOUTS)})")
    ap.add_argument("--models", default="default_dynamic,default_float32",
                    help="bundled models that answer (--default-model), each with every layout")
    ap.add_argument("--dddd", action="store_true",
                    help="also load the ddddocr FastAPI wrapper in every round")
    ap.add_argument("--out", default=str(bench.ROOT / "benchmarks" / "results"
                                         / "serve_processes.json"))
    args = ap.parse_args()
    files = sorted(Path(args.images).glob("*.png"))
    if not files:
        ap.error(f"--images {args.images}: no PNG files")
    pngs = [(f.name, f.read_bytes()) for f in files]
    loads = [(f"1 image/request, {c} clients", 1, c)
             for c in map(int, args.single_clients.split(","))] + [
        (f"{n} images/request, 64 clients", n, 64) for n in map(int, args.sizes.split(","))]
    layouts = {}
    for key in args.layouts.split(","):
        if key not in LAYOUTS:
            ap.error(f"--layouts: unknown {key!r}; valid: {', '.join(LAYOUTS)}")
        for model in args.models.split(","):
            name, flags = LAYOUTS[key]
            layouts[f"{name}, {model}"] = ([*flags, "--default-model", model],
                                           LAYOUT_ENV.get(key))
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    venv, made = bench.dddd_venv() if args.dddd else (None, False)
    for rnd in range(args.rounds):
        if venv is not None:
            srv, app_dir = bench.start_dddd(venv, pngs[0][1])
            try:
                for clients in (16, 64):
                    label = f"1 image/request, {clients} clients"
                    r = asyncio.run(bench.load(srv.url, [d for _, d in pngs], clients,
                                               args.captchas // 4, args.seconds, 1, "dddd",
                                               srv.proc.pid))
                    rows.setdefault(("ddddocr FastAPI wrapper", label), []).append(r)
                    print(f"round {rnd + 1} | ddddocr | {label}: {r['captchas_per_s']:.0f} "
                          f"captchas/s, p99 {r['p99_ms']} ms, errors {r['errors']}", flush=True)
            finally:
                srv.stop()
                bench.shutil.rmtree(app_dir, ignore_errors=True)
        for layout, (flags, env) in layouts.items():
            srv = bench.Proc([sys.executable, "-m", "captcha_edge.cli", "serve", "--port", "0",
                              "--max-images", "256", *flags],
                             r"listening on (http://127\.0\.0\.1:\d+)", env=env)
            try:
                for label, n, clients in loads:
                    if n == 1:
                        bodies: list[Any] = [data for _, data in pngs]
                        kind = "ours"
                    else:
                        bodies = [pngs[i:i + n] for i in range(0, len(pngs) - n, n)]
                        kind = "ours-batch"
                    r = asyncio.run(bench.load(srv.url, bodies, clients, args.captchas // n,
                                               args.seconds, n, kind, srv.proc.pid))
                    rows.setdefault((layout, label), []).append(r)
                    print(f"round {rnd + 1} | {layout} | {label}: {r['captchas_per_s']:.0f} "
                          f"captchas/s, p99 {r['p99_ms']} ms, {r['server_cpu_cores_used']} "
                          f"cores, errors {r['errors']}", flush=True)
            finally:
                srv.stop()
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
           "images": f"{len(files)} PNGs from {Path(args.images).name}",
           "model": "the bundled v2 model; the layout names the twin that answers (x86-64's "
                    "default is default_dynamic)",
           "client": f"aiohttp {bench.aiohttp.__version__}, same host, same cores",
           "rounds": args.rounds, "results": []}
    for (layout, label), rs in rows.items():
        out["results"].append({
            "layout": layout, "load": label,
            "captchas_per_s": [r["captchas_per_s"] for r in rs],
            "median_captchas_per_s": round(statistics.median(r["captchas_per_s"] for r in rs), 1),
            "p50_ms": [r["p50_ms"] for r in rs],
            "p99_ms": [r["p99_ms"] for r in rs],
            "server_cpu_ms_per_captcha": [r["server_cpu_ms_per_captcha"] for r in rs],
            "server_cpu_cores_used": [r["server_cpu_cores_used"] for r in rs],
            "errors": sum(r["errors"] for r in rs)})
        print(f"{layout:42} {label:30} median {out['results'][-1]['median_captchas_per_s']:7.1f}")
    if venv is not None:
        best = max((r for r in out["results"] if not r["layout"].startswith("ddddocr")),
                   key=lambda r: r["median_captchas_per_s"])
        dddd = max((r for r in out["results"] if r["layout"].startswith("ddddocr")),
                   key=lambda r: r["median_captchas_per_s"])
        same = next(r for r in out["results"] if r["layout"].startswith("ddddocr")
                    and r["load"].endswith("64 clients"))
        out["best_vs_ddddocr"] = {
            "ours": f"{best['layout']}, {best['load']}", "ddddocr": dddd["load"],
            "ratio_of_medians": round(best["median_captchas_per_s"]
                                      / dddd["median_captchas_per_s"], 1),
            "ratio_at_64_clients": round(best["median_captchas_per_s"]
                                         / same["median_captchas_per_s"], 1)}
        print("best vs ddddocr:", out["best_vs_ddddocr"])
        out["ddddocr_versions"] = bench.dddd_versions(venv)
        if made:
            bench.shutil.rmtree(venv.parent, ignore_errors=True)
    bench.atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
