"""``captcha-edge serve`` as a real process on a free loopback port, driven by real HTTP requests.

Every endpoint, every bad input, token auth, hot reload (file change and SIGHUP) and the SIGTERM
drain. Answers are checked against an in-process Recognizer on the same model. Skipped without
the [serve] extra and httpx (the dev extra installs both).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

from captcha_edge import Recognizer  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
MODEL = DATA / "tiny_int8.tflite"
MODEL_F32 = DATA / "tiny_float32.tflite"
GOOD = sorted((DATA / "images" / "good").iterdir())
BAD = DATA / "images" / "bad"
START_TIMEOUT = 60.0


class Server:
    """A ``captcha-edge serve`` child process; ``url`` once it says it is listening."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = tmp / f"serve-{time.monotonic_ns()}.log"
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "captcha_edge.cli", "serve", "--port", "0",
             "--workers", "2", *args],
            stdout=subprocess.DEVNULL, stderr=self._log_fh, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.text())
            if m:
                self.url = m.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.text()}")
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"serve did not start in {START_TIMEOUT} s: {self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)  # type: ignore[arg-type]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    s = Server(tmp, "--model", str(MODEL), "--model", str(MODEL_F32),
               "--max-bytes", "200000", "--max-images", "8")
    yield s
    assert s.stop() == 0, s.text()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer(MODEL)


def expected(rec: Recognizer, path: Path, **opts: object) -> tuple[str, float]:
    p = rec.recognize(path, **opts)  # type: ignore[arg-type]
    return p.text, round(p.confidence, 6)


# -- happy paths -----------------------------------------------------------------------------------


def test_healthz_and_models(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["models"] == 2
    models = client.get("/v1/models").json()
    assert [m["name"] for m in models["models"]] == ["tiny_int8", "tiny_float32"]
    assert models["default"] == "tiny_int8"
    first = models["models"][0]
    assert first["format"] == "int8" and first["default"] is True
    assert first["charset"] == Recognizer(MODEL).charset


def test_raw_body_matches_the_library(client: httpx.Client, rec: Recognizer) -> None:
    for img in GOOD:
        r = client.post("/v1/recognize", content=img.read_bytes(),
                        headers={"content-type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "tiny_int8"
        (res,) = body["results"]
        text, conf = expected(rec, img)
        assert res == {"path": "body", "text": text, "confidence": conf, "error": None,
                       "model": "tiny_int8"}


def test_curl_default_content_type_is_a_raw_image(client: httpx.Client, rec: Recognizer) -> None:
    img = GOOD[0]
    r = client.post("/v1/recognize", content=img.read_bytes(),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["results"][0]["text"] == expected(rec, img)[0]


def test_multipart_several_images_in_order(client: httpx.Client, rec: Recognizer) -> None:
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in GOOD[:3]]
    files.insert(1, ("file", ("text.png", (BAD / "text.png").read_bytes(), "image/png")))
    r = client.post("/v1/recognize", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["path"] for x in results] == [GOOD[0].name, "text.png", GOOD[1].name, GOOD[2].name]
    bad = results[1]
    assert bad["text"] is None and bad["error"].startswith("text.png: not a readable image")
    assert "0x" not in bad["error"]  # the part's name, not a buffer's address
    for res, img in zip([results[0], *results[2:]], GOOD[:3]):
        assert (res["text"], res["confidence"]) == expected(rec, img) and res["error"] is None


def test_second_model_by_name(client: httpx.Client) -> None:
    img = GOOD[0]
    r = client.post("/v1/recognize", params={"model": "tiny_float32"}, content=img.read_bytes())
    assert r.status_code == 200 and r.json()["model"] == "tiny_float32"
    assert r.json()["results"][0]["text"] == Recognizer(MODEL_F32).predict(img)


def test_options_in_query_and_form(client: httpx.Client, rec: Recognizer) -> None:
    img = GOOD[1]
    r = client.post("/v1/recognize", params={"top_k": 3, "beam_width": 5},
                    content=img.read_bytes())
    res = r.json()["results"][0]
    want = rec.recognize(img, top_k=3, beam_width=5)
    assert res["text"] == want.text
    assert [(a["text"], a["confidence"]) for a in res["alternatives"]] == \
        [(t, round(c, 6)) for t, c in want.alternatives]
    allowed = rec.charset[: len(rec.charset) // 2]
    r = client.post("/v1/recognize", files=[("file", (img.name, img.read_bytes()))],
                    data={"allowed": allowed, "min_length": "2", "max_length": "4"})
    res = r.json()["results"][0]
    want_text = rec.predict(img, allowed=allowed, min_length=2, max_length=4)
    assert res["text"] == want_text and set(res["text"]) <= set(allowed)
    assert 2 <= len(res["text"]) <= 4 or res["text"] == ""


def test_openapi_document(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/recognize", "/v1/models", "/healthz", "/metrics"} <= set(doc["paths"])
    names = {p["name"] for p in doc["paths"]["/v1/recognize"]["post"]["parameters"]}
    assert names == {"model", "beam_width", "allowed", "min_length", "max_length", "top_k"}


def test_metrics_count_requests_errors_latency_batches(client: httpx.Client) -> None:
    def sample(text: str, name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
            if m and ",".join(sorted(m.group(1).split(","))) == want:
                total += float(m.group(2))
        return total

    before = client.get("/metrics").text
    for _ in range(3):
        client.post("/v1/recognize", content=GOOD[0].read_bytes())
    client.post("/v1/recognize", params={"model": "nope"}, content=GOOD[0].read_bytes())
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = r.text
    ok = "captcha_edge_requests_total"
    assert sample(after, ok, model="tiny_int8", status="200") - \
        sample(before, ok, model="tiny_int8", status="200") == 3
    err = "captcha_edge_request_errors_total"
    assert sample(after, err, model="-", reason="unknown_model") - \
        sample(before, err, model="-", reason="unknown_model") == 1
    dur = "captcha_edge_request_duration_seconds_count"
    assert sample(after, dur, model="tiny_int8") - sample(before, dur, model="tiny_int8") == 3
    assert sample(after, "captcha_edge_batch_size_count", model="tiny_int8") >= 3
    assert "# TYPE captcha_edge_request_duration_seconds histogram" in after


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, content, status, words", [
    ({}, (BAD / "text.png").read_bytes(), 422, "not a readable image"),
    ({}, (BAD / "truncated.png").read_bytes(), 422, "body: truncated"),
    ({}, (BAD / "bomb.png").read_bytes(), 422, "too large"),
    ({}, b"", 400, "empty body"),
    ({"model": "nope"}, None, 404, "unknown model 'nope'; served: tiny_int8, tiny_float32"),
    ({"beam_width": "0"}, None, 400, "beam_width must be an integer >= 1; got 0"),
    ({"top_k": "many"}, None, 400, "top_k must be an integer >= 1; got 'many'"),
    ({"allowed": "\u2603"}, None, 400, "cannot emit"),
    ({"min_length": "5", "max_length": "2"}, None, 400, "max_length must be >= min_length (5)"),
    ({"beam": "3"}, None, 400, "unknown parameter 'beam'"),
    ({"top_k": "5", "beam_width": "2"}, None, 400, "top_k must be <= beam_width (2)"),
])
def test_bad_input_is_a_json_4xx(client: httpx.Client, params: dict[str, str],
                                 content: bytes | None, status: int, words: str) -> None:
    body = GOOD[0].read_bytes() if content is None else content
    r = client.post("/v1/recognize", params=params, content=body,
                    headers={"content-type": "image/png"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"] and r.json()["status"] == status


def test_wrong_content_type_is_415(client: httpx.Client) -> None:
    r = client.post("/v1/recognize", json={"image": "aGVsbG8="})
    assert r.status_code == 415 and "application/json" in r.json()["error"]


def test_over_max_bytes_is_413_by_header_and_by_stream(client: httpx.Client) -> None:
    big = b"\x89PNG" + bytes(300_000)
    r = client.post("/v1/recognize", content=big)
    assert r.status_code == 413 and "--max-bytes" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(30):
            yield bytes(10_000)

    r = client.post("/v1/recognize", content=chunks())
    assert r.status_code == 413 and "200000 bytes" in r.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_too_many_images_and_no_file_part(client: httpx.Client) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (20, 8), 255).save(buf, "PNG")
    data = buf.getvalue()  # 9 small images: under --max-bytes, over --max-images 8
    r = client.post("/v1/recognize", files=[("file", (f"{i}.png", data)) for i in range(9)])
    assert r.status_code == 400 and "Too many files" in r.json()["error"], r.text
    r = client.post("/v1/recognize", files={"x": (None, "text only")})  # a text part, no file
    assert r.status_code == 400 and "no file part" in r.json()["error"]


def test_unknown_endpoint_and_method(client: httpx.Client) -> None:
    assert client.get("/v2/anything").status_code == 404
    r = client.get("/v1/recognize")
    assert r.status_code == 405 and "GET" in r.json()["error"]


def test_client_disconnect_mid_request_keeps_serving(server: Server,
                                                     client: httpx.Client) -> None:
    data = GOOD[0].read_bytes()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(data))
            s.sendall(data[: len(data) // 2])  # then hang up
    r = client.post("/v1/recognize", content=data)
    assert r.status_code == 200 and r.json()["results"][0]["error"] is None
    assert server.proc.poll() is None


# -- token, binding, start-up errors ---------------------------------------------------------------


def test_token_auth(tmp_path: Path) -> None:
    s = Server(tmp_path, "--model", str(MODEL), env={"CAPTCHA_EDGE_TOKEN": "s3cret"})
    try:
        assert "bearer token required" in s.text()
        with s.client() as c:
            assert c.get("/healthz").status_code == 200  # load balancers probe without it
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = c.post("/v1/recognize", content=GOOD[0].read_bytes(), headers=headers)
                assert r.status_code == 401 and "bearer token" in r.json()["error"]
                assert r.headers["www-authenticate"].startswith("Bearer")
            assert c.get("/metrics").status_code == 401
            # a refused upload is read before the 401, so the client gets the answer, not a reset
            for _ in range(10):
                r = c.post("/v1/recognize", content=b"\0" * (4 * 1024 * 1024 - 1))
                assert r.status_code == 401
            good = {"Authorization": "Bearer s3cret"}
            assert c.post("/v1/recognize", content=GOOD[0].read_bytes(),
                          headers=good).status_code == 200
            assert c.get("/v1/models", headers=good).status_code == 200
    finally:
        assert s.stop() == 0


def test_accepted_connections_have_nagle_off() -> None:
    """Kept-alive answers must not wait for the client's delayed ACK (it cost ~45 ms a request)."""
    import asyncio

    from captcha_edge.serve.process import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    seen: list[int] = []

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)  # what uvicorn does with it
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
    with pytest.raises(OSError):  # the CLI turns it into one line naming --host and --port
        listening_socket("256.0.0.1", 0)


def test_without_a_model_every_bundled_model_is_served() -> None:
    import platform

    from captcha_edge.serve.models import ModelSet

    models = ModelSet()
    assert set(models.models) == {"default_int8", "default_float32", "default_dynamic"}
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert models.default == ("default_dynamic" if x86 else "default_int8")
    assert ModelSet(default="default_int8").default == "default_int8"  # the flag still wins


STACKS = [("h11", "asyncio"), ("httptools", "uvloop")]


@pytest.mark.parametrize("http,loop", STACKS, ids=["h11-asyncio", "httptools-uvloop"])
def test_both_http_stacks_answer_refuse_and_drain(tmp_path: Path, http: str, loop: str) -> None:
    """The pure-Python stack (what the [serve] extra and the Pi get) and the C one ([serve-fast],
    what the benchmark measures) behave alike on the paths where they differ most: kept-alive
    requests, refused uploads (401 and 413 read the body first), streamed bodies, SIGTERM."""
    import importlib.util

    if importlib.util.find_spec(http) is None or importlib.util.find_spec(loop) is None:
        pytest.skip(f"{http}/{loop} not installed (the [serve-fast] extra)")
    s = Server(tmp_path, "--model", str(MODEL), "--http", http, "--loop", loop,
               "--max-bytes", "200000", env={"CAPTCHA_EDGE_TOKEN": "t"})
    try:
        assert f"{http} on {loop}" in s.text()
        good = {"Authorization": "Bearer t"}
        with s.client() as c:
            for png in GOOD[:3]:  # one connection, kept alive
                r = c.post("/v1/recognize", content=png.read_bytes(), headers=good)
                assert r.status_code == 200 and r.json()["results"][0]["error"] is None
            assert c.post("/v1/recognize", content=bytes(150_000)).status_code == 401
            r = c.post("/v1/recognize", content=b"\x89PNG" + bytes(300_000), headers=good)
            assert r.status_code == 413

            def chunks() -> Iterator[bytes]:
                for _ in range(30):
                    yield bytes(10_000)
            r = c.post("/v1/recognize", content=chunks(), headers=good)
            assert r.status_code == 413 and "200000 bytes" in r.json()["error"]
            assert c.get("/healthz").status_code == 200
    finally:
        assert s.stop() == 0


def test_a_named_stack_that_is_missing_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from captcha_edge.serve.process import server_stack

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("httptools", "uvloop") else real(name))
    assert server_stack("auto", "auto") == ("h11", "asyncio")
    with pytest.raises(ImportError, match=r"--http httptools: .*captcha-edge\[serve-fast\]"):
        server_stack("httptools", "auto")
    with pytest.raises(ImportError, match="--loop uvloop"):
        server_stack("auto", "uvloop")


def test_binds_loopback_by_default() -> None:
    from captcha_edge.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.func.__name__ == "cmd_serve"


def run_cli(*args: str, pre: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    code = f"{pre}\nimport sys\nfrom captcha_edge.cli import main\nsys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)


def test_without_the_extra_says_which_to_install() -> None:
    r = run_cli("serve", pre="import sys; sys.modules['starlette'] = None")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        'captcha-edge serve: needs the [serve] extra (starlette missing): '
        'pip install "captcha-edge[serve]"']


@pytest.mark.parametrize("args, words", [
    (["--model", "nope.tflite"], "nope.tflite: cannot read model"),
    (["--models", "no_such_dir"], "--models no_such_dir: not a directory"),
    (["--model", str(MODEL), "--default-model", "x"], "--default-model 'x' is not served"),
    (["--model", str(MODEL), "--model", str(BAD / "text.png")], "text.png"),
    (["--processes", "2", "--model", "nope.tflite"], "nope.tflite: cannot read model"),
])
def test_startup_errors_are_one_line_exit_2(args: list[str], words: str) -> None:
    r = run_cli("serve", "--port", "0", *args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("INFO:")]
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_port_in_use_is_one_line_exit_2() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("serve", "--model", str(MODEL), "--port", str(port))
    assert r.returncode == 2 and f"--port {port}: cannot bind" in r.stderr


def test_a_second_multi_process_server_cannot_join_the_port(tmp_path: Path) -> None:
    """--processes binds with SO_REUSEPORT on Linux; a second such server on the same port must
    still be refused, not silently share it."""
    s = Server(tmp_path, "--model", str(MODEL), "--processes", "2", "--workers", "1")
    try:
        r = run_cli("serve", "--model", str(MODEL), "--processes", "2", "--port", str(s.port))
        assert r.returncode == 2 and f"--port {s.port}: cannot bind" in r.stderr, r.stderr
    finally:
        assert s.stop() == 0, s.text()


# -- hot reload and drain --------------------------------------------------------------------------


def _wait_for(pred: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_hot_reload_on_change_and_sighup_drops_no_request(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(MODEL, models / "a.tflite")
    s = Server(tmp_path, "--models", str(models), "--reload-interval", "0.1")
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with s.client() as c:
            while not stop.is_set():
                r = c.post("/v1/recognize", params={"model": "a"},
                           content=GOOD[0].read_bytes())
                statuses.append(r.status_code)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        with s.client() as c:
            def names() -> list[str]:
                return [m["name"] for m in c.get("/v1/models").json()["models"]]

            assert names() == ["a"]
            shutil.copy(MODEL_F32, models / "b.tflite")  # a new file is picked up
            assert _wait_for(lambda: names() == ["a", "b"]), names()
            (models / "b.tflite").unlink()  # a removed file is dropped
            assert _wait_for(lambda: names() == ["a"]), names()
            # A broken replacement keeps the old model serving and is reported.
            (models / "a.tflite").write_bytes(b"not a model")
            assert _wait_for(lambda: c.get("/v1/models").json()["last_reload_errors"])
            assert names() == ["a"]
            # Replacing it with a good model (float32 this time) swaps it in.
            tmp = models / ".a.tmp"
            shutil.copy(MODEL_F32, tmp)
            os.replace(tmp, models / "a.tflite")
            assert _wait_for(
                lambda: c.get("/v1/models").json()["models"][0]["format"] == "float32")
        stop.set()
        t.join(30)
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
    finally:
        stop.set()
        t.join(30)
        assert s.stop() == 0, s.text()

    # SIGHUP alone (no polling): a file added is served after the signal.
    s = Server(tmp_path, "--models", str(models), "--reload-interval", "0")
    try:
        shutil.copy(MODEL, models / "c.tflite")
        with s.client() as c:
            time.sleep(0.3)
            assert "c" not in [m["name"] for m in c.get("/v1/models").json()["models"]]
            s.proc.send_signal(signal.SIGHUP)
            assert _wait_for(lambda: "c" in [m["name"] for m in
                                             c.get("/v1/models").json()["models"]])
            assert c.post("/v1/recognize", params={"model": "c"},
                          content=GOOD[0].read_bytes()).status_code == 200
    finally:
        assert s.stop() == 0, s.text()


def test_sigterm_drains_in_flight_requests(tmp_path: Path, rec: Recognizer) -> None:
    s = Server(tmp_path, "--model", str(MODEL))
    data = GOOD[0].read_bytes()
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as conn:
        conn.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(data))
        conn.sendall(data[:100])  # the request is in flight: headers read, body half sent
        time.sleep(0.5)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert s.proc.poll() is None  # still waiting for our request
        conn.sendall(data[100:])
        buf = b""
        while chunk := conn.recv(65536):  # a draining server closes after the response
            buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["results"][0]["text"] == expected(rec, GOOD[0])[0]
    s.proc.wait(timeout=30)
    assert s.stop() == 0
    assert "stopped" in s.text()


def test_micro_batching_gives_the_same_answers(tmp_path: Path, rec: Recognizer) -> None:
    s = Server(tmp_path, "--model", str(MODEL), "--batch-window-ms", "20")
    try:
        results: dict[str, str] = {}

        def one(img: Path) -> None:
            with s.client() as c:
                results[img.name] = c.post("/v1/recognize",
                                           content=img.read_bytes()).json()["results"][0]["text"]

        threads = [threading.Thread(target=one, args=(img,)) for img in GOOD]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {img.name: expected(rec, img)[0] for img in GOOD}
        with s.client() as c:
            metrics = c.get("/metrics").text
        # Every image went through exactly one worker job, however the requests were grouped.
        total = re.search(r'captcha_edge_batch_size_sum\{model="tiny_int8"\} (\S+)', metrics)
        assert total and float(total.group(1)) == len(GOOD)
    finally:
        assert s.stop() == 0, s.text()


def test_rejects_pixels_over_the_guard_in_a_batch(client: httpx.Client) -> None:
    bomb = io.BytesIO((BAD / "bomb.png").read_bytes())
    r = client.post("/v1/recognize", files=[("file", ("bomb.png", bomb)),
                                            ("file", (GOOD[0].name, GOOD[0].read_bytes()))])
    results = r.json()["results"]
    assert r.status_code == 200 and "too large" in results[0]["error"]
    assert results[1]["error"] is None


def _children(pid: int) -> list[int]:
    """PIDs of a process's children (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_processes_share_one_port_and_one_metrics_view(tmp_path: Path, rec: Recognizer) -> None:
    """--processes 2: both processes answer on the one port, /metrics sums them, SIGHUP reaches
    both, a killed process is replaced, SIGTERM stops all with exit 0."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(MODEL, models / "a.tflite")
    s = Server(tmp_path, "--models", str(models), "--processes", "2", "--workers", "1",
               "--reload-interval", "0")
    try:
        assert "2 processes x 1 workers" in s.text()
        kids = _children(s.proc.pid)
        assert len(kids) == 2
        seen: set[int] = set()
        answers: dict[str, str] = {}

        def one(img: Path) -> None:  # a new connection each: the kernel picks the process
            with s.client() as c:
                seen.add(c.get("/healthz").json()["process"])
                r = c.post("/v1/recognize", params={"model": "a"}, content=img.read_bytes())
                answers[img.name] = r.json()["results"][0]["text"]

        imgs = (GOOD * 8)[:40]
        for start in range(0, len(imgs), 8):
            threads = [threading.Thread(target=one, args=(img,)) for img in imgs[start:start + 8]]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        assert seen == {1, 2}
        assert answers == {img.name: expected(rec, img)[0] for img in GOOD}
        with s.client() as c:
            metrics = c.get("/metrics").text
        total = re.search(r'captcha_edge_requests_total\{model="a",status="200"\} (\S+)', metrics)
        assert total and float(total.group(1)) == len(imgs), metrics  # both processes counted

        # SIGHUP to the parent: every process re-reads the folder.
        shutil.copy(MODEL_F32, models / "b.tflite")
        s.proc.send_signal(signal.SIGHUP)
        knows_b: dict[int, bool] = {}

        def both_know_b() -> bool:
            with s.client() as c:
                k = c.get("/healthz").json()["process"]
                knows_b[k] = "b" in [m["name"] for m in c.get("/v1/models").json()["models"]]
            return knows_b.get(1, False) and knows_b.get(2, False)

        assert _wait_for(both_know_b), knows_b

        # A process that dies is replaced; the others keep answering meanwhile.
        os.kill(kids[0], signal.SIGKILL)
        assert _wait_for(lambda: "is serving again" in s.text(), START_TIMEOUT), s.text()
        assert "restarting it" in s.text() and kids[0] not in _children(s.proc.pid)
        assert len(_children(s.proc.pid)) == 2
        with s.client() as c:
            assert c.post("/v1/recognize", params={"model": "a"},
                          content=GOOD[0].read_bytes()).status_code == 200
        kids = _children(s.proc.pid)
    finally:
        code = s.stop()
    assert code == 0, s.text()
    assert "stopped" in s.text()
    assert not any(Path(f"/proc/{k}").exists() for k in kids)  # no orphan left behind


def test_processes_without_reuseport_share_the_parents_socket(tmp_path: Path) -> None:
    """Where SO_REUSEPORT does not balance (macOS, BSD) the children inherit the parent's
    socket: the same service, forced here on Linux."""
    log = tmp_path / "serve.log"
    code = ("import sys\nimport captcha_edge.serve.process as process\nprocess.REUSE_PORT = False\n"
            "from captcha_edge.cli import main\n"
            f"sys.exit(main(['serve', '--port', '0', '--model', {str(MODEL)!r}, "
            "'--processes', '2', '--workers', '1']))")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=fh)
    try:
        assert _wait_for(lambda: "listening on" in log.read_text(), START_TIMEOUT), \
            log.read_text()
        url = re.search(r"listening on (http://\S+:\d+)", log.read_text()).group(1)  # type: ignore[union-attr]
        for img in GOOD:
            with httpx.Client(base_url=url, timeout=30) as c:
                assert c.get("/healthz").json()["process"] in (1, 2)
                assert c.post("/v1/recognize", content=img.read_bytes()).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
