"""Running the service: the HTTP stack (``--http``, ``--loop``), the listening socket, uvicorn
with its signals and drain (:func:`run`), and for ``--processes N`` the supervisor that starts,
watches and restarts the child servers (:func:`run_processes`; a child is ``python -m
captcha_edge.serve.process``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable

from .._common import die_with_parent
from ..errors import CaptchaEdgeError
from .http import Settings, create_app
from .models import ModelSet


def server_stack(http: str, loop: str) -> tuple[str, str]:
    """``--http`` and ``--loop`` resolved: "auto" becomes the C implementation when installed.

    httptools and uvloop (the ``[serve-fast]`` extra) take about 0.3-0.5 ms of server CPU off
    each one-image request on x86 (docs/serve.md); h11 and asyncio need no compiler anywhere.

    Raises:
        ImportError: one line naming the extra, when an implementation asked for by name is
            not installed.
    """
    import importlib.util

    def pick(choice: str, fast: str, plain: str, flag: str) -> str:
        have = importlib.util.find_spec(fast) is not None
        if choice == "auto":
            return fast if have else plain
        if choice == fast and not have:
            raise ImportError(f"--{flag} {fast}: {fast} is not installed; "
                              'pip install "captcha-edge[serve-fast]"')
        return choice

    return pick(http, "httptools", "h11", "http"), pick(loop, "uvloop", "asyncio", "loop")


def listening_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket for uvicorn (port 0 picks a free one); OSError when it cannot bind.

    ``reuse_port``: SO_REUSEPORT, so that each ``--processes`` child binds its own socket to
    the one port and the kernel spreads new connections over them (by a hash of each
    connection's addresses: even on average, 7/9 or 6/10 for 16 connections).

    The proto is named on purpose: asyncio sets TCP_NODELAY only on sockets whose proto is
    IPPROTO_TCP, and accepted sockets inherit the listener's. With a 0 there, Nagle held every
    kept-alive answer until the client's delayed ACK: ~45 ms a request instead of ~4 ms.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _Refused(Exception):
    """A usage or model problem found before serving: one line, exit code 2."""


def _refuse(msg: object) -> int:
    """Print the one-line start-up error; the exit code 2."""
    print(f"captcha-edge serve: error: {msg}", file=sys.stderr)
    return 2


def _prepare(args: Any) -> tuple[ModelSet, str, str]:
    """Load the models and pick the HTTP stack; :class:`_Refused` on any problem."""
    try:
        models = ModelSet(args.model, args.models, args.default_model, args.backend)
    except (CaptchaEdgeError, ValueError, ImportError) as exc:
        raise _Refused(str(exc)) from None
    try:
        http, loop = server_stack(args.http, args.loop)
    except ImportError as exc:
        raise _Refused(str(exc)) from None
    return models, http, loop


def _bind(args: Any, reuse_port: bool = False) -> tuple[socket.socket, str]:
    """The listening socket and its ``http://host:port`` (the real port when 0 was asked)."""
    try:
        port = args.port
        if reuse_port:
            # A plain bind first: it fails when anything holds the port, including another
            # server's SO_REUSEPORT sockets, which a reuse-port bind would silently join.
            with listening_socket(args.host, port) as probe:
                port = probe.getsockname()[1]
        sock = listening_socket(args.host, port, reuse_port)
    except OSError as exc:
        raise _Refused(f"--host {args.host} --port {args.port}: cannot bind "
                       f"({exc.strerror})") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    return sock, f"http://{shown}:{port}"


def batch_while_busy(choice: str, workers: int) -> bool:
    """``--batch-while-busy``: on, off, or auto = on with one worker thread per process (with
    two, one worker's job holds up requests that the other could have started: 15-26 % more
    requests/s at 64 clients, but none at 16, where the p99 rose 3-5 ms in two of three runs)."""
    return choice == "on" or (choice == "auto" and workers == 1)


def _ready_line(args: Any, url: str, names: Sequence[str], http: str, loop: str) -> str:
    auth = "bearer token required" if args.token else "no authentication"
    procs = getattr(args, "processes", 1)
    work = f"{args.workers} workers" if procs == 1 else \
        f"{procs} processes x {args.workers} workers"
    if args.batch_window_ms > 0:
        work += f", {args.batch_window_ms:g} ms batch window"
    elif batch_while_busy(getattr(args, "batch_while_busy", "auto"), args.workers):
        work += ", batching while busy"
    return (f"captcha-edge serve: listening on {url} (models: {', '.join(names)}; {work}; "
            f"{auth}; {http} on {loop})")


def _serve(args: Any, models: ModelSet, http: str, loop: str, sock: socket.socket,
           ready: Callable[[], None], process: int | None = None,
           metrics_dir: str | None = None) -> None:
    """Run uvicorn on ``sock`` until SIGTERM/SIGINT, then drain."""
    import uvicorn

    settings = Settings(workers=args.workers, batch_window_ms=args.batch_window_ms,
                        batch_while_busy=batch_while_busy(
                            getattr(args, "batch_while_busy", "auto"), args.workers),
                        max_batch=args.max_batch, max_bytes=args.max_bytes,
                        max_images=args.max_images, token=args.token,
                        reload_interval=args.reload_interval, process=process,
                        metrics_dir=metrics_dir)
    app = create_app(models, settings, on_ready=ready)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log,
                            timeout_keep_alive=max(1, round(args.keep_alive)),
                            lifespan="on", timeout_graceful_shutdown=args.drain_timeout or None,
                            ws="none", http=http, loop=loop)
    server = uvicorn.Server(config)
    # uvicorn re-raises a captured SIGTERM after its graceful shutdown, which would end the
    # process by the signal; with this no-op handler in place, a drained stop exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # Start-up objects (modules, models) leave the cyclic GC's view: a full collection under
    # load then scans only what requests made. Measured at 16 clients, 10 s: the longest GC
    # pause went from 22 ms (a gen-2 pass over everything) to 0.8 ms.
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def run(args: Any) -> int:
    """``captcha-edge serve``: load the models, bind, serve until SIGTERM (then drain)."""
    if getattr(args, "processes", 1) > 1:
        return run_processes(args)
    try:
        models, http, loop = _prepare(args)
        sock, url = _bind(args)
    except _Refused as exc:
        return _refuse(exc)

    def ready() -> None:
        print(_ready_line(args, url, list(models.models), http, loop), file=sys.stderr,
              flush=True)

    _serve(args, models, http, loop, sock, ready)
    print("captcha-edge serve: stopped", file=sys.stderr, flush=True)
    return 0


# -- --processes N: one listening socket shared by N server processes -------------------------

#: The environment variable that makes ``python -m captcha_edge.serve.process`` a child server.
_CHILD_ENV = "CAPTCHA_EDGE_SERVE_CHILD"
#: Seconds a child gets to load its models and report ready.
_CHILD_START_S = 120.0
#: Where SO_REUSEPORT balances connections over the sockets bound to one port (Linux); the
#: BSDs and macOS accept the option but do not balance, so there the children share one socket.
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class _Children:
    """The parent's side of ``--processes N``: start, watch, restart, signal and reap children.

    Each child is a fresh interpreter (``python -m captcha_edge.serve.process``). On Linux each
    binds its own SO_REUSEPORT socket to the port the parent holds (bound, never listening),
    and the kernel spreads new connections over the children by a hash of their addresses
    (even on average): with one shared socket, whichever process woke first took most of a
    burst of new keep-alive connections, and two processes served 810 one-image requests/s at
    16 clients instead of 940 with the hashed split.
    Elsewhere the children inherit the parent's socket. A child writes its number to a pipe
    once it serves.
    """

    def __init__(self, args: Any, sock: socket.socket, metrics_dir: str) -> None:
        self.args, self.sock, self.metrics_dir = args, sock, metrics_dir
        self.ready_r, self.ready_w = os.pipe()
        self.procs: list[subprocess.Popen[bytes]] = []
        plain = (str, int, float, bool, list, type(None))
        self.argv = {k: v for k, v in vars(args).items() if isinstance(v, plain)}

    def start(self, index: int) -> subprocess.Popen[bytes]:
        host, port = self.sock.getsockname()[:2]
        spec = {"args": self.argv, "fd": None if REUSE_PORT else self.sock.fileno(),
                "host": host, "port": port, "ready_fd": self.ready_w,
                "process": index + 1, "metrics_dir": self.metrics_dir}
        env = {**os.environ, _CHILD_ENV: json.dumps(spec),
               "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}
        fds = (self.ready_w,) if REUSE_PORT else (self.sock.fileno(), self.ready_w)
        return subprocess.Popen([sys.executable, "-m", "captcha_edge.serve.process"], env=env,
                                pass_fds=fds,
                                start_new_session=True,  # Ctrl-C reaches the parent only
                                preexec_fn=die_with_parent)

    def wait_ready(self, count: int, timeout: float, stopping: Callable[[], bool]) -> bool:
        """Read ``count`` ready bytes; False when a child exits, ``stopping()`` turns true or
        time runs out first."""
        deadline = time.monotonic() + timeout
        while count > 0:
            if stopping() or any(p.poll() is not None for p in self.procs):
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if select.select([self.ready_r], [], [], min(left, 0.2))[0]:
                count -= len(os.read(self.ready_r, count))
        return True

    def signal_all(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)

    def stop(self, grace: float) -> list[int]:
        """SIGTERM every child, wait for their drain (then SIGKILL); their exit codes."""
        from prometheus_client import multiprocess

        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
            multiprocess.mark_process_dead(p.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        os.close(self.ready_r)
        os.close(self.ready_w)
        return codes


def run_processes(args: Any) -> int:
    """``serve --processes N``: N server processes on one socket, under this supervisor.

    Everything a user can get wrong (models, stack, port) is checked here first, so it fails
    with one line and exit code 2 before any child starts. Signals: SIGTERM/SIGINT stop every
    child (each drains its in-flight requests), SIGHUP is passed on (each re-reads the models).
    A child that dies after start is restarted; the socket stays open, so no connection waiting
    to be accepted is lost.
    """
    import shutil
    import tempfile

    if os.name != "posix":
        return _refuse(f"--processes {args.processes} needs a POSIX system (the children "
                       "inherit file descriptors); run one process per port behind a balancer")
    try:
        models, http, loop = _prepare(args)
        sock, url = _bind(args, reuse_port=REUSE_PORT)
    except _Refused as exc:
        return _refuse(exc)
    names = list(models.models)
    del models  # each child loads its own
    metrics_dir = tempfile.mkdtemp(prefix="captcha-edge-metrics-")
    kids = _Children(args, sock, metrics_dir)
    flags = {"stop": False, "hup": False}

    def on_stop(signum: int, frame: Any) -> None:
        flags["stop"] = True

    def on_hup(signum: int, frame: Any) -> None:
        flags["hup"] = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    grace = (args.drain_timeout or 30.0) + 10.0
    try:
        kids.procs = [kids.start(k) for k in range(args.processes)]
        if not kids.wait_ready(args.processes, _CHILD_START_S, lambda: flags["stop"]):
            kids.stop(grace)
            if flags["stop"]:  # SIGTERM or Ctrl-C while the children were starting
                print("captcha-edge serve: stopped", file=sys.stderr, flush=True)
                return 0
            return _refuse(f"a server process did not start (its error is above); "
                        f"--processes {args.processes}")
        print(_ready_line(args, url, names, http, loop), file=sys.stderr, flush=True)
        while not flags["stop"]:
            if flags["hup"]:
                flags["hup"] = False
                kids.signal_all(signal.SIGHUP)
            for k, p in enumerate(kids.procs):
                if p.poll() is not None and not flags["stop"]:
                    print(f"captcha-edge serve: process {k + 1} (pid {p.pid}) exited with "
                          f"code {p.returncode}; restarting it", file=sys.stderr, flush=True)
                    kids.procs[k] = kids.start(k)
            if select.select([kids.ready_r], [], [], 0.2)[0]:
                for k in os.read(kids.ready_r, 64):  # restarted children, serving again
                    print(f"captcha-edge serve: process {k} (pid {kids.procs[k - 1].pid}) is "
                          "serving again", file=sys.stderr, flush=True)
        codes = kids.stop(grace)
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    print("captcha-edge serve: stopped", file=sys.stderr, flush=True)
    # -SIGTERM: a restarted child stopped while it was still loading its models
    return 0 if all(c in (0, -signal.SIGTERM) for c in codes) else 1


def _child_main() -> int:
    """A ``--processes N`` child: serve on its port until the parent's SIGTERM."""
    spec = json.loads(os.environ.pop(_CHILD_ENV))
    args = argparse.Namespace(**spec["args"])
    ready_fd = spec["ready_fd"]
    try:
        models, http, loop = _prepare(args)
        if spec["fd"] is None:  # SO_REUSEPORT: a socket of its own on the parent's port
            sock = listening_socket(spec["host"], spec["port"], reuse_port=True)
        else:
            sock = socket.socket(fileno=spec["fd"])
    except OSError as exc:
        return _refuse(f"process {spec['process']}: cannot bind {spec['host']}:{spec['port']} "
                       f"({exc.strerror})")
    except _Refused as exc:
        return _refuse(f"process {spec['process']}: {exc}")

    def ready() -> None:
        os.write(ready_fd, bytes([spec["process"]]))

    _serve(args, models, http, loop, sock, ready, process=spec["process"],
           metrics_dir=spec["metrics_dir"])
    return 0


if __name__ == "__main__" and _CHILD_ENV in os.environ:
    sys.exit(_child_main())
