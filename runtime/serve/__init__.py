"""``captcha-edge serve``: an HTTP recognition service (the ``[serve]`` extra).

This module holds only the command-line side (parser and dispatch) and imports nothing beyond
the standard library, so ``captcha-edge --help`` works without the extra. The service itself
(Starlette, uvicorn, prometheus-client) is split by job, and imports run one way, down::

    process   the HTTP stack, the socket, uvicorn and its signals, the --processes supervisor
      v
    http      the Starlette app and routes, option parsing, Guard (token, --max-bytes), Settings
      v
    runner    the worker threads and the batching of recognition jobs
      v
    models    the served models and their hot reload

and three leaves that import none of those: ``metrics`` (Prometheus) and ``errors``
(HTTPError, BodyTooLarge), which any of them may import, and ``openapi`` (the /openapi.json
document, for http). ``app`` only re-exports the names of the former single module.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .._common import number_arg, seconds_option

#: The modules the service needs, by the distribution that provides them.
REQUIRED = {"starlette": "starlette", "uvicorn": "uvicorn",
            "prometheus_client": "prometheus-client", "multipart": "python-multipart"}

EXTRA_HINT = 'pip install "captcha-edge[serve]"'

EPILOG = """examples:
  captcha-edge serve                                   # bundled models on http://127.0.0.1:8000
  captcha-edge serve --model a.tflite --model b.tflite --workers 2
  captcha-edge serve --models /srv/models --host 0.0.0.0 --token "$TOKEN"
  captcha-edge serve --processes 2 --workers 1          # 2 cores: one process per core
  curl --data-binary @captcha.png http://127.0.0.1:8000/v1/recognize
  curl -F file=@a.png -F file=@b.png 'http://127.0.0.1:8000/v1/recognize?model=b&top_k=3'
endpoints: POST /v1/recognize, GET /v1/models, GET /healthz, GET /metrics (Prometheus),
  GET /openapi.json. There is no authentication besides --token (a shared bearer token):
  keep the default 127.0.0.1 or put the service behind your own proxy.
signals: SIGHUP re-reads the models (so does a change of a model file); SIGTERM or Ctrl-C stop
  accepting, let in-flight requests finish (--drain-timeout), then exit."""


_positive = number_arg(int, 1)
_port = number_arg(int, 0, 65535, what="a port in 0..65535")
_nonneg_float = number_arg(float, 0)


def register(add: Callable[..., argparse.ArgumentParser],
             parents: dict[str, argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``serve`` to ``captcha-edge`` (the :data:`captcha_edge.cli.SUBCOMMAND_MODULES` hook).

    Args:
        add: ``add(name, help, parents, epilog)`` -> a new subparser.
        parents: the CLI's shared option groups; ``serve`` uses "backend".
    """
    help_ = "serve recognition over HTTP (needs the [serve] extra)"
    p = add("serve", help_, [parents["backend"]], EPILOG)
    m = p.add_argument_group("models")
    m.add_argument("--model", "-m", action="append", default=[], metavar="PATH",
                   help="a .tflite to serve, by its file stem; repeatable (default: the "
                        "bundled models, default_dynamic answering by default on x86-64, where "
                        "it is the fastest, default_int8 elsewhere; unless --models is given)")
    m.add_argument("--models", default=None, metavar="DIR",
                   help="serve every *.tflite in DIR by its file stem; re-read on change")
    m.add_argument("--default-model", default=None, metavar="NAME",
                   help="model used when a request names none (default: the first)")
    seconds_option(m, "--reload-interval", 2.0, kind=_nonneg_float,
                   help="seconds between checks of the model files for changes; 0 = only "
                        "on SIGHUP (default 2)")
    n = p.add_argument_group("network")
    n.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the service)")
    n.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0 = any)")
    n.add_argument("--token", default=os.environ.get("CAPTCHA_EDGE_TOKEN") or None,
                   help="require 'Authorization: Bearer TOKEN' on every endpoint but /healthz "
                        "(default: $CAPTCHA_EDGE_TOKEN; prefer it, argv is visible to ps)")
    w = p.add_argument_group("work")
    w.add_argument("--workers", type=_positive, default=os.cpu_count() or 1,
                   help="worker threads, one interpreter each per model (default: CPU count)")
    w.add_argument("--processes", type=number_arg(int, 1, 64), default=1, metavar="N",
                   help="server processes sharing the port, each with --workers threads "
                        "(default 1). More than one spreads the Python side of each request "
                        "(HTTP, image decoding) over the cores instead of one GIL; each "
                        "process holds its own models (~80 MB); /metrics sums them all")
    w.add_argument("--batch-window-ms", type=_nonneg_float, default=0.0, metavar="MS",
                   help="micro-batching: images of requests that arrive within MS ms run as "
                        "one job (default 0 = off)")
    w.add_argument("--batch-while-busy", choices=["auto", "on", "off"], default="auto",
                   help="requests that queue while every worker is busy run together as the "
                        "next free worker's job: no added wait, fewer thread hand-offs (7-30 %% "
                        "more requests/s measured with one worker per process). auto = on "
                        "when --workers is 1, as with --processes 2 --workers 1 (default auto)")
    w.add_argument("--max-batch", type=_positive, default=64,
                   help="most images in one micro-batch (default 64)")
    w.add_argument("--max-bytes", type=_positive, default=4 * 1024 * 1024,
                   help="largest request body in bytes; more gets 413 (default 4 MiB)")
    w.add_argument("--max-images", type=_positive, default=256,
                   help="most images in one request (default 256)")
    seconds_option(w, "--keep-alive", 75.0, kind=_nonneg_float,
                   help="seconds an idle client connection stays open (default 75: longer than "
                        "a load balancer's idle timeout, so the balancer closes first)")
    seconds_option(w, "--drain-timeout", 30.0, kind=_nonneg_float,
                   help="on SIGTERM, seconds to let in-flight requests finish (default 30)")
    w.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                   help="HTTP parser: httptools (C; the [serve-fast] extra) or h11 (pure "
                        "Python); auto = httptools when installed (default)")
    w.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop: uvloop (the [serve-fast] extra) or asyncio; auto = "
                        "uvloop when installed (default)")
    w.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default warning)")
    w.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)
    return p


def missing_modules() -> list[str]:
    """Distributions of the [serve] extra that cannot be imported."""
    import importlib

    missing = []
    for mod, dist in REQUIRED.items():
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(dist)
    return missing


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM/SIGINT; 2 on a usage or model error."""
    missing = missing_modules()
    if missing:
        print(f"captcha-edge serve: needs the [serve] extra ({', '.join(missing)} missing): "
              f"{EXTRA_HINT}", file=sys.stderr)
        return 2
    from .process import run

    return run(args)
