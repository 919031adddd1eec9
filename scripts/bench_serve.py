"""Load-test ``captcha-edge serve`` over loopback HTTP, beside a FastAPI wrapper around ddddocr.

    python scripts/bench_serve.py                      # everything, results to benchmarks/results/
    python scripts/bench_serve.py --only serve --requests 2000
    DDDD_VENV=/tmp/dddd python scripts/bench_serve.py  # reuse a venv with ddddocr+fastapi+uvicorn

The load generator is an aiohttp client session (pinned in the dev extra) in this process: C
concurrent clients, each sending its next request as soon as the previous one is answered, until
a request count or a time bound is reached. Every request is checked (HTTP 200, a text per
image). Measured per configuration: requests/s, captchas/s, p50/p99 latency, errors. Both
servers, the client and anything else on the machine share its cores: the 1-minute load average
is recorded with every figure.

Because the machine is shared, each row also has the server's own CPU time per captcha (user +
system, from /proc): what a quiet machine's cores would bound (2 cores / CPU time per captcha).

Also: server RSS over many requests (sampled from /proc), and Ray Data images/s with 2 actors
vs ``captcha-edge predict --threads 2`` on the same folder.

ddddocr lives in a throwaway venv (never a project dependency), made like
scripts/bench_vs_ddddocr.sh does unless $DDDD_VENV names one.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # noqa: E402 -- run from a checkout

from captcha_edge._common import atomic_write_json  # noqa: E402

DEFAULT_IMAGES = ROOT / ".." / "shared" / "data" / "captcha_images_v2"

DDDD_APP = '''
import contextlib, io
import ddddocr
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

app = FastAPI()
with contextlib.redirect_stdout(io.StringIO()):
    ocr = ddddocr.DdddOcr(show_ad=False)

@app.post("/ocr")
async def read(request: Request):
    data = await request.body()
    return {"text": await run_in_threadpool(ocr.classification, data)}
'''


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def tree(pid: int) -> list[int]:
    """``pid`` and its live child processes (``serve --processes N`` runs N children)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid, *(int(k) for k in kids)]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its live children, MB."""
    total = 0
    for p in tree(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


class Proc:
    """A server child process on a free loopback port."""

    def __init__(self, argv: list[str], ready: str, env: dict[str, str] | None = None,
                 port_from_log: bool = True, port: int = 0) -> None:
        self.log = Path(tempfile.mkstemp(prefix="bench-serve-", suffix=".log")[1])
        self.fh = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.fh, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if port_from_log:
                m = re.search(ready, text)
                if m:
                    self.url = m.group(1)
                    return
            elif ready in text:
                self.url = f"http://127.0.0.1:{port}"
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited: {text[-2000:]}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()
        self.log.unlink(missing_ok=True)
        return self.proc.returncode


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its live children and its reaped ones (/proc)."""
    total = 0
    for p in tree(pid):
        fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        # utime, stime; for the top process also cutime, cstime (its reaped children)
        total += sum(int(x) for x in fields[11:15 if p == pid else 13])
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(url: str, bodies: list[Any], concurrency: int, requests: int, seconds: float,
               per_request: int, kind: str, pid: int) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` clients until ``requests`` sent or ``seconds`` pass."""
    lat: list[float] = []
    errors: list[str] = []
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60.0)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
        for b in bodies[:concurrency]:  # warm-up: connections, interpreters
            await send(client, kind, b)
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                s = time.perf_counter()
                try:
                    ok = await send(client, kind, body)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    ok = f"{type(exc).__name__}: {exc}"
                lat.append(time.perf_counter() - s)
                if ok is not True:
                    errors.append(str(ok))

        load_start = load_avg()
        cpu0, client0 = cpu_seconds(pid), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        cpu, client_cpu = cpu_seconds(pid) - cpu0, time.process_time() - client0
    lat.sort()
    n = len(lat)
    return {"concurrency": concurrency, "requests": n, "images_per_request": per_request,
            "seconds": round(wall, 3), "requests_per_s": round(n / wall, 1),
            "captchas_per_s": round(n * per_request / wall, 1),
            "p50_ms": round(1000 * lat[n // 2], 2) if n else None,
            "p99_ms": round(1000 * lat[min(n - 1, int(n * 0.99))], 2) if n else None,
            "mean_ms": round(1000 * statistics.fmean(lat), 2) if n else None,
            "server_cpu_ms_per_captcha": round(1000 * cpu / max(1, n * per_request), 3),
            "server_cpu_cores_used": round(cpu / wall, 2),
            "client_cpu_ms_per_request": round(1000 * client_cpu / max(1, n), 3),
            "errors": len(errors), "first_error": errors[0] if errors else None,
            "load_avg_1m": [load_start, load_avg()]}


async def send(client: aiohttp.ClientSession, kind: str, body: Any) -> bool | str:
    """One request; True when answered 200 with a text for every image."""
    if kind == "dddd":
        async with client.post("/ocr", data=body) as r:
            if r.status != 200 or "text" not in await r.json():
                return f"HTTP {r.status}: {(await r.text())[:200]}"
            return True
    if kind == "ours":
        data: Any = body
        headers = {"content-type": "image/png"}
    else:  # "ours-batch": several images in one multipart request
        data, headers = aiohttp.FormData(), {}
        for name, png in body:
            data.add_field("file", png, filename=name, content_type="image/png")
    async with client.post("/v1/recognize", data=data, headers=headers) as r:
        if r.status != 200:
            return f"HTTP {r.status}: {(await r.text())[:200]}"
        res = (await r.json())["results"]
    want = 1 if kind == "ours" else len(body)
    return True if len(res) == want and all(x["error"] is None for x in res) else str(res)[:200]


def dddd_venv() -> tuple[Path, bool]:
    given = os.environ.get("DDDD_VENV")
    if given:
        return Path(given), False
    venv = Path(tempfile.mkdtemp()) / "dddd"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ddddocr", "fastapi>=0.110,<1",
                    "uvicorn>=0.30,<1"], check=True)
    return venv, True


def start_dddd(venv: Path, probe: bytes) -> tuple[Proc, Path]:
    """The FastAPI wrapper around ddddocr on a free port, answering; and its app folder."""
    app_dir = Path(tempfile.mkdtemp())
    (app_dir / "dddd_app.py").write_text(DDDD_APP)
    port = free_port()
    srv = Proc([str(venv / "bin" / "python"), "-m", "uvicorn", "dddd_app:app", "--host",
                "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--app-dir", str(app_dir)], "", port_from_log=False, port=port)
    # uvicorn at log level warning prints nothing when ready: poll the port instead.
    for _ in range(600):
        try:
            urllib.request.urlopen(srv.url + "/ocr", data=probe, timeout=5).read()
            break
        except OSError:
            time.sleep(0.2)
    return srv, app_dir


def dddd_versions(venv: Path) -> str:
    """ddddocr's, onnxruntime's, FastAPI's and uvicorn's versions in the ddddocr venv."""
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from importlib.metadata import version as v; "
         "print('ddddocr', v('ddddocr'), 'onnxruntime', v('onnxruntime'), 'fastapi', "
         "v('fastapi'), 'uvicorn', v('uvicorn'))"],
        capture_output=True, text=True).stdout.strip()


def serve_argv(args: argparse.Namespace, extra: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "captcha_edge.cli", "serve", "--port", "0",
            "--workers", str(args.workers), "--processes", str(args.processes),
            "--max-images", "256", *extra]
    if args.model:
        argv += ["--model", args.model]
    return argv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--model", default=None, help="default: the bundled int8 model")
    ap.add_argument("--workers", type=int, default=2, help="serve --workers (threads per process)")
    ap.add_argument("--processes", type=int, default=1, help="serve --processes")
    ap.add_argument("--window-ms", type=float, default=2.0,
                    help="--batch-window-ms of the micro-batched run (default 2)")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--requests", type=int, default=3000, help="per configuration (bound)")
    ap.add_argument("--seconds", type=float, default=20.0, help="per configuration (bound)")
    ap.add_argument("--batch", type=int, default=16, help="images per batch-endpoint request")
    ap.add_argument("--rss-requests", type=int, default=20000)
    ap.add_argument("--rss-seconds", type=float, default=240.0)
    ap.add_argument("--only", choices=["serve", "dddd", "rss", "ray"], action="append")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = ap.parse_args()
    only = set(args.only or ["serve", "dddd", "rss", "ray"])
    files = sorted(Path(args.images).glob("*.png"))
    if not files:
        ap.error(f"--images {args.images}: no PNG files")
    pngs = [f.read_bytes() for f in files]
    levels = [int(c) for c in args.concurrency.split(",")]
    out: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "uptime_at_start": subprocess.run(["uptime"], capture_output=True,
                                          text=True).stdout.strip(),
        "images": f"{len(files)} PNGs from {Path(args.images).name}",
        "model": args.model or "the bundled models; default_dynamic answers on x86-64",
        "workers": args.workers, "processes": args.processes,
        "client": f"aiohttp {aiohttp.__version__} ClientSession, same host",
        "bounds": {"requests": args.requests, "seconds": args.seconds},
    }
    try:
        prev = __import__("json").loads(Path(args.out).read_text())
        out = {**prev, **out}  # keep sections not rerun
    except (OSError, ValueError):
        pass

    def save() -> None:
        atomic_write_json(args.out, out)

    if "serve" in only:
        for label, extra in (("serve", []), (f"serve_microbatch_{args.window_ms:g}ms",
                                             ["--batch-window-ms", str(args.window_ms)])):
            srv = Proc(serve_argv(args, extra), r"listening on (http://127\.0\.0\.1:\d+)")
            try:
                rows = []
                for c in levels:
                    rows.append(asyncio.run(load(srv.url, pngs, c, args.requests, args.seconds,
                                                 1, "ours", srv.proc.pid)))
                    print(label, rows[-1], flush=True)
                batches = [[(f"{i}.png", pngs[(k * args.batch + i) % len(pngs)])
                            for i in range(args.batch)] for k in range(64)]
                for c in levels:
                    rows.append(asyncio.run(load(srv.url, batches, c,
                                                 max(1, args.requests // args.batch),
                                                 args.seconds, args.batch, "ours-batch",
                                                 srv.proc.pid)))
                    print(label, "batch", rows[-1], flush=True)
                out[label] = rows
                out[label + "_rss_mb_after"] = rss_mb(srv.proc.pid)
            finally:
                out[label + "_exit"] = srv.stop()
            save()

    if "dddd" in only:
        venv, made = dddd_venv()
        srv, app_dir = start_dddd(venv, pngs[0])
        try:
            rows = []
            for c in levels:
                rows.append(asyncio.run(load(srv.url, pngs, c, max(200, args.requests // 10),
                                             args.seconds, 1, "dddd", srv.proc.pid)))
                print("ddddocr", rows[-1], flush=True)
            out["ddddocr_fastapi"] = rows
            out["ddddocr_versions"] = dddd_versions(venv)
        finally:
            srv.stop()
            shutil.rmtree(app_dir, ignore_errors=True)
            if made:
                shutil.rmtree(venv.parent, ignore_errors=True)
        save()

    if "rss" in only:
        srv = Proc(serve_argv(args, []), r"listening on (http://127\.0\.0\.1:\d+)")
        try:
            samples = [(0, rss_mb(srv.proc.pid))]
            done = errors = 0
            error_samples: list[str] = []
            chunk = max(1, args.rss_requests // 10)
            t0 = time.monotonic()
            while done < args.rss_requests and time.monotonic() - t0 < args.rss_seconds:
                r = asyncio.run(load(srv.url, pngs, 16, chunk, args.rss_seconds, 1, "ours",
                                     srv.proc.pid))
                done += r["requests"]
                samples.append((done, rss_mb(srv.proc.pid)))
                errors += r["errors"]
                if r["first_error"]:
                    error_samples.append(r["first_error"])
                print("rss", samples[-1], "errors", r["errors"], r["first_error"], flush=True)
            out["rss"] = {"requests": done, "errors": errors, "first_errors": error_samples,
                          "concurrency": 16, "samples_requests_mb": samples,
                          "growth_mb_after_first_chunk": round(samples[-1][1] - samples[1][1], 1)
                          if len(samples) > 2 else None}
        finally:
            srv.stop()
        save()

    if "ray" in only:
        out["ray"] = ray_vs_predict(args.images, args.model)
        print("ray", out["ray"], flush=True)
        save()
    print(f"wrote {args.out}")
    return 0


def ray_vs_predict(folder: str, model: str | None) -> dict[str, Any]:
    """Ray Data with 2 actors vs ``captcha-edge predict --threads 2``, same folder."""
    import importlib.util

    import ray
    from captcha_edge import Recognizer

    spec = importlib.util.spec_from_file_location("ray_folder", ROOT / "examples" / "ray_folder.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    n = len(list(Path(folder).glob("*.png")))
    argv = [sys.executable, "-m", "captcha_edge.cli", "predict", "--threads", "2", folder]
    if model:
        argv[4:4] = ["--model", model]
    t0 = time.perf_counter()
    subprocess.run(argv, check=False, capture_output=True)
    predict_s = time.perf_counter() - t0
    rec = Recognizer(model)
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        example.recognize_folder(folder, rec, actors=2)  # warm-up: actors, imports
        t0 = time.perf_counter()
        rows = example.recognize_folder(folder, rec, actors=2)
        ray_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"images": n, "ray_2_actors_images_per_s": round(len(rows) / ray_s, 1),
            "ray_seconds": round(ray_s, 2),
            "predict_threads_2_images_per_s": round(n / predict_s, 1),
            "predict_seconds_incl_startup": round(predict_s, 2), "load_avg_1m": load_avg()}


if __name__ == "__main__":
    sys.exit(main())
