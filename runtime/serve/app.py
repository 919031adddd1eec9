"""The ASGI application behind ``captcha-edge serve``: Starlette routes, uvicorn, Prometheus.

Shape of the service:

- :class:`ModelSet` loads the served models (``--model`` files, or every ``*.tflite`` of
  ``--models DIR``, named by file stem) and re-reads them on a change or SIGHUP: new models are
  built first, then swapped in by replacing one dict, so a request in flight keeps the
  Recognizer it started with and nothing is dropped.
- :class:`Runner` keeps the interpreter work off the event loop: a thread pool of ``--workers``
  threads, and since a :class:`~captcha_edge.Recognizer` keeps one interpreter per thread, one
  interpreter per worker and model. Optional micro-batching gathers the images of requests that
  arrive within ``--batch-window-ms`` into one job per worker. The bundled models cannot run a
  batch in one invoke (their graph reshapes to batch 1, and XNNPACK refuses the resize), so a
  batch is one invoke per image.
- :class:`Guard` is pure ASGI middleware: bearer token, ``--max-bytes`` (413 from the
  Content-Length, or while the body streams in).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import io
import json
import logging
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._common import die_with_parent, package_version
from ..errors import CaptchaEdgeError
from ..recognizer import DEFAULT_MODEL, Recognizer

log = logging.getLogger("captcha_edge.serve")

#: Query / form fields of POST /v1/recognize besides the images.
OPTION_FIELDS = ("model", "beam_width", "allowed", "min_length", "max_length", "top_k")
_INT_OPTIONS = {"beam_width": 1, "min_length": 0, "max_length": 0, "top_k": 1}
#: Content types read as one raw image body.
_RAW_TYPES = ("image/", "application/octet-stream")
#: What ``curl --data-binary @x.png`` sends unless told otherwise: taken as a raw image too.
_CURL_DEFAULT = "application/x-www-form-urlencoded"
#: Pillow names an unnamed buffer by its repr; the part's name is more useful to a client.
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class HTTPError(Exception):
    """A request problem answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLarge(Exception):
    """Raised from ``receive`` when the streamed body passes ``--max-bytes``."""


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    """The one error shape: ``{"error": ..., "status": ...}`` (+ extra fields)."""
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


# -- models ---------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """One served model: its Recognizer and the file facts used to notice a change."""

    name: str
    path: Path
    recognizer: Recognizer
    stamp: tuple[int, int]  # (mtime_ns, size)
    loaded_at: float = field(default_factory=time.time)

    def describe(self, default: bool) -> dict[str, Any]:
        rec = self.recognizer
        return {"name": self.name, "path": self.path.name, "default": default,
                "format": rec.metadata.get("format"), "charset": rec.charset,
                "input_size": list(rec.input_size), "time_steps": rec.time_steps,
                "size": rec.model_size, "backend": rec.backend,
                "accuracy": rec.metadata.get("accuracy"),
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def bundled_models() -> tuple[list[Path], str]:
    """The bundled models to serve when none is named, and which one requests get by default.

    All that ship are served (a request picks one with ``model=``). On x86-64 the default is the
    fastest twin there: ``default_dynamic`` (int8 weights, float activations; XNNPACK runs it in
    0.38 ms per invoke against float32's 0.58 and int8's 2.5, one thread, docs/serve.md), else
    ``default_float32``. Elsewhere (ARM: a Pi) it is the int8 model, ~4x faster than float32 there.
    """
    twins = [DEFAULT_MODEL.with_name(f"default_{f}.tflite") for f in ("dynamic", "float32")]
    twins = [t for t in twins if t.is_file()]
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    default = twins[0] if x86 and twins else DEFAULT_MODEL
    return [DEFAULT_MODEL, *twins], default.stem


class ModelSet:
    """The served models, re-read on demand without ever leaving the set empty mid-swap.

    Args:
        files: ``--model`` paths (served by file stem).
        folder: ``--models DIR``: every ``*.tflite`` in it, by file stem.
        default: name of the model for requests that name none (None: the first).
        backend: TFLite interpreter to use.

    Raises:
        ValueError: two models with the same stem, ``default`` not among them, no model at all.
        ModelFormatError: a model given at start-up cannot be loaded.
    """

    def __init__(self, files: Sequence[str] = (), folder: str | None = None,
                 default: str | None = None, backend: str | None = None) -> None:
        self.files = [Path(f) for f in files]
        self.folder = Path(folder) if folder else None
        if self.folder is not None and not self.folder.is_dir():
            raise ValueError(f"--models {self.folder}: not a directory")
        if not self.files and self.folder is None:
            self.files, bundled_default = bundled_models()
            default = default or bundled_default
        self.backend = backend
        self.default_name = default
        self.models: dict[str, LoadedModel] = {}
        self.reloads = 0
        self.last_errors: list[str] = []
        errors = self.reload(strict=True)
        if errors:  # pragma: no cover - strict raises instead
            raise ValueError(errors[0])
        if not self.models:
            raise ValueError(f"--models {self.folder}: no .tflite files to serve")
        if default is not None and default not in self.models:
            raise ValueError(f"--default-model {default!r} is not served; served: "
                             f"{', '.join(self.models)}")

    def _candidates(self) -> dict[str, Path]:
        """name -> path of every model that should be served now."""
        found: dict[str, Path] = {}
        paths = list(self.files)
        if self.folder is not None:
            paths += sorted(p for p in self.folder.glob("*.tflite") if p.is_file())
        for p in paths:
            if p.stem in found and found[p.stem] != p:
                raise ValueError(f"two models are named {p.stem!r}: {found[p.stem]} and {p}; "
                                 "rename one (models are served by file stem)")
            found[p.stem] = p
        return found

    def changed(self) -> bool:
        """Whether the files on disk differ from what is served (cheap: stat only)."""
        try:
            want = self._candidates()
        except ValueError:
            return True
        if set(want) != set(self.models):
            return True
        for name, path in want.items():
            try:
                if _stamp(path) != self.models[name].stamp:
                    return True
            except OSError:
                return True
        return False

    def reload(self, strict: bool = False) -> list[str]:
        """Load new and changed models, drop removed ones, then swap the set in one step.

        A model that fails to load keeps its previous version (if any) and is reported; with
        ``strict`` (start-up) the failure is raised instead.
        """
        want = self._candidates()
        current = self.models
        new: dict[str, LoadedModel] = {}
        errors: list[str] = []
        for name, path in want.items():
            try:
                stamp = _stamp(path)
            except OSError as exc:
                if strict:
                    raise CaptchaEdgeError(f"{path}: cannot read model ({exc.strerror})") \
                        from None
                errors.append(f"{path}: cannot read model ({exc.strerror})")
                if name in current:
                    new[name] = current[name]
                continue
            old = current.get(name)
            if old is not None and old.stamp == stamp and old.path == path:
                new[name] = old
                continue
            try:
                rec = Recognizer(path, num_threads=1, backend=self.backend)
            except (CaptchaEdgeError, ValueError, ImportError) as exc:
                if strict:
                    raise
                errors.append(str(exc))
                if old is not None:
                    new[name] = old
                continue
            new[name] = LoadedModel(name, path, rec, stamp)
        self.models = new  # one reference swap: requests in flight keep their Recognizer
        self.reloads += 1
        self.last_errors = errors
        for msg in errors:
            log.error("model reload: %s", msg)
        return errors

    @property
    def default(self) -> str | None:
        if self.default_name in self.models:
            return self.default_name
        return next(iter(self.models), None)

    def get(self, name: str | None) -> LoadedModel:
        models = self.models
        key = name if name is not None else self.default
        if key is None or key not in models:
            served = ", ".join(models) or "none"
            if name is None:
                raise HTTPError(503, "no model is loaded")
            raise HTTPError(404, f"unknown model {name!r}; served: {served}")
        return models[key]


# -- metrics --------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can coexist).

    With ``multiprocess_dir`` (``--processes N``: the parent sets ``PROMETHEUS_MULTIPROC_DIR``
    for its children), every process writes its values there and :meth:`exposition` sums them
    with prometheus-client's ``MultiProcessCollector``, so any process answers for all.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        r = self.registry = CollectorRegistry()
        self.requests = Counter("captcha_edge_requests", "HTTP requests to /v1/recognize, by "
                                "model and status code", ["model", "status"], registry=r)
        self.errors = Counter("captcha_edge_request_errors", "Requests answered with an error, "
                              "by model and reason", ["model", "reason"], registry=r)
        self.images = Counter("captcha_edge_images", "Images recognized, by model and outcome",
                              ["model", "outcome"], registry=r)
        self.duration = Histogram(
            "captcha_edge_request_duration_seconds", "Time from request start to response, "
            "POST /v1/recognize", ["model"], registry=r,
            buckets=(.001, .0025, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5,
                     1.0, 2.5, 5.0, 10.0))
        self.batch = Histogram("captcha_edge_batch_size", "Images per job given to a worker "
                               "thread", ["model"], registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.in_flight = Gauge("captcha_edge_requests_in_flight", "Requests being answered",
                               registry=r, multiprocess_mode="livesum")
        self.models = Gauge("captcha_edge_models_loaded", "Models being served", registry=r,
                            multiprocess_mode="livemax")
        self.reloads = Counter("captcha_edge_model_reloads", "Re-reads of the model files, by "
                               "result", ["result"], registry=r)

    def exposition(self) -> bytes:
        """The Prometheus text of this app, or of all processes of a ``--processes N`` server."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


# -- work -----------------------------------------------------------------------------------------


def recognize_chunk(rec: Recognizer, items: Sequence[tuple[str, bytes]],
                    opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Recognize ``(name, bytes)`` items in this thread; one bad image never stops the others."""
    out = []
    top_k = opts.get("top_k") or 1
    for name, data in items:
        res: dict[str, Any] = {"path": name, "text": None, "confidence": None, "error": None}
        buf = io.BytesIO(data)
        buf.name = name
        try:
            pred = rec.recognize(buf, **opts)
        except CaptchaEdgeError as exc:
            msg = _BUFFER_REPR.sub(repr(name), str(exc))
            res["error"] = msg if msg.startswith(name) else f"{name}: {msg}"
        except Exception as exc:  # noqa: BLE001 -- one odd image must not end the batch
            res["error"] = f"{name}: {type(exc).__name__}: {exc}"
        else:
            res["text"], res["confidence"] = pred.text, round(pred.confidence, 6)
            if top_k > 1:
                res["alternatives"] = [{"text": t, "confidence": round(c, 6)}
                                       for t, c in pred.alternatives]
        out.append(res)
    return out


def _chunks(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    """Split into at most ``n`` contiguous, nearly equal parts (order kept)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        parts.append(items[start:end])
        start = end
    return parts


@dataclass
class _Pending:
    model: LoadedModel
    opts_key: tuple[tuple[str, Any], ...]  # the options, sorted: requests that share it share a job
    opts: dict[str, Any]
    items: list[tuple[str, bytes]]
    future: asyncio.Future[list[dict[str, Any]]]


class Runner:
    """Runs recognition on ``workers`` threads, optionally batching requests into one job.

    Without batching, every request is one job (split over the workers when it has several
    images). With it, one consumer task per worker thread takes the next request from a queue,
    adds its fair share of the requests waiting behind it (with ``window_ms``, after waiting that
    long for more) and runs them all as one job on its thread, so at most ``workers`` jobs run
    at once. While they run, new requests queue up and the next free worker takes them
    together: an idle server adds no wait, and a busy one makes one thread hand-off and one
    event-loop wake-up per job instead of per request (measured with one worker per process:
    7-15 % more requests/s at 16 clients and 25-30 % at 64, p99 no worse). Each request is
    answered when its job ends; answering each as soon as its own images are done brings the
    hand-offs back and measured no faster than no batching.
    """

    def __init__(self, workers: int, metrics: Metrics, window_ms: float = 0.0,
                 max_batch: int = 64, batching: bool = False) -> None:
        self.workers = workers
        self.metrics = metrics
        self.window = window_ms / 1000.0
        self.max_batch = max_batch
        self.batching = batching or window_ms > 0
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="captcha-edge")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._idle = 0  # consumers waiting for a request

    def start(self) -> None:
        if self.batching:
            self._queue = asyncio.Queue()
            loop = asyncio.get_running_loop()
            self._consumers = [loop.create_task(self._consume()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        self.pool.shutdown(wait=True)

    async def _submit(self, model: LoadedModel, items: Sequence[tuple[str, bytes]],
                      opts: dict[str, Any], ways: int) -> list[dict[str, Any]]:
        """Run ``items`` as up to ``ways`` jobs on the pool; results in the order of ``items``."""
        loop = asyncio.get_running_loop()
        parts = _chunks(items, ways)
        for part in parts:
            self.metrics.batch.labels(model.name).observe(len(part))
        results = await asyncio.gather(*(
            loop.run_in_executor(self.pool, recognize_chunk, model.recognizer, part, opts)
            for part in parts))
        return [r for part in results for r in part]

    async def run(self, model: LoadedModel, items: list[tuple[str, bytes]],
                  opts: dict[str, Any]) -> list[dict[str, Any]]:
        """Recognize ``items`` with ``model``; results in the order of ``items``."""
        if self._queue is None:
            return await self._submit(model, items, opts, self.workers)
        fut: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        key = tuple(sorted(opts.items()))
        self._queue.put_nowait(_Pending(model, key, opts, items, fut))
        return await fut

    async def _consume(self) -> None:
        """One worker's loop: take a request, add its share of those waiting, run, repeat."""
        assert self._queue is not None
        queue = self._queue
        while True:
            self._idle += 1
            try:
                batch = [await queue.get()]
            finally:
                self._idle -= 1
            count = len(batch[0].items)
            if self.window > 0 and count < self.max_batch:
                # Sleep, then drain: no cancelled get() that could lose a request.
                await asyncio.sleep(self.window)
            # One job holds up every request in it until it ends, so no job takes more than
            # 1/workers of the queue: the other workers take the rest as they come free.
            share = -(-(queue.qsize() + 1) // self.workers)
            while len(batch) < share and count < self.max_batch and not queue.empty():
                nxt = queue.get_nowait()
                batch.append(nxt)
                count += len(nxt.items)
            groups: dict[tuple[int, Any], list[_Pending]] = {}
            for p in batch:
                if not p.future.done():  # a client that went away costs no work
                    groups.setdefault((id(p.model), p.opts_key), []).append(p)
            for group in groups.values():
                await self._run_group(group)

    async def _run_group(self, group: list[_Pending]) -> None:
        items = [it for p in group for it in p.items]
        # Workers with nothing to do share a big request.
        ways = min(self.workers, 1 + self._idle)
        try:
            results = await self._submit(group[0].model, items, group[0].opts, ways)
        except BaseException as exc:  # hand the failure to every waiting request
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for p in group:
            end = start + len(p.items)
            if not p.future.done():
                p.future.set_result(results[start:end])
            start = end


# -- request parsing ------------------------------------------------------------------------------


def parse_options(fields: dict[str, str]) -> tuple[str | None, dict[str, Any]]:
    """Query/form fields -> (model name, recognize() options); HTTPError 400 naming the field."""
    unknown = sorted(set(fields) - set(OPTION_FIELDS))
    if unknown:
        raise HTTPError(400, f"unknown parameter {unknown[0]!r}; valid: "
                             f"{', '.join(OPTION_FIELDS)}")
    opts: dict[str, Any] = {}
    for key, minimum in _INT_OPTIONS.items():
        raw = fields.get(key)
        if raw is None or raw == "":
            continue
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(400, f"{key} must be an integer >= {minimum}; got {raw!r}") from None
        if value < minimum:
            raise HTTPError(400, f"{key} must be an integer >= {minimum}; got {value}")
        opts[key] = value
    if fields.get("allowed"):
        opts["allowed"] = fields["allowed"]
    elif "allowed" in fields:
        raise HTTPError(400, "allowed must be a non-empty string of characters; got ''")
    return fields.get("model") or None, opts


async def read_images(request: Request, max_images: int
                      ) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The request's images as ``(name, bytes)`` and its form text fields.

    A raw body (``image/*``, ``application/octet-stream``, curl's default
    ``application/x-www-form-urlencoded`` or no content type) is one image named ``body``;
    ``multipart/form-data`` gives every file part, in order, named by its file name.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=max_images, max_fields=len(OPTION_FIELDS) * 4)
        except HTTPException as exc:  # starlette's own multipart limits and parse errors
            raise HTTPError(400, f"multipart body: {exc.detail}") from None
        try:
            images: list[tuple[str, bytes]] = []
            fields: dict[str, str] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    name = value.filename or key
                    images.append((name, await value.read()))
                elif key in fields:
                    raise HTTPError(400, f"form field {key!r} given twice")
                else:
                    fields[key] = value
        finally:
            await form.close()
        if not images:
            raise HTTPError(400, "multipart body has no file part; send images as files "
                                 "(curl -F file=@captcha.png)")
        return images, fields
    if ctype and not ctype.startswith(_RAW_TYPES) and ctype != _CURL_DEFAULT:
        raise HTTPError(415, f"unsupported content type {ctype!r}; send image bytes "
                             "(image/*, application/octet-stream) or multipart/form-data")
    body = await request.body()
    return [("body", body)], {}


# -- OpenAPI --------------------------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description served at /openapi.json."""
    err = {"description": "error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}

    def q(name: str, typ: str, desc: str, minimum: int | None = None) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": typ}
        if minimum is not None:
            schema["minimum"] = minimum
        return {"name": name, "in": "query", "required": False, "description": desc,
                "schema": schema}

    params = [
        q("model", "string", "served model name (GET /v1/models); default: the default model"),
        q("beam_width", "integer", "1 = greedy, > 1 = CTC prefix beam search", 1),
        q("allowed", "string", "only these characters may appear"),
        q("min_length", "integer", "shortest allowed text", 0),
        q("max_length", "integer", "longest allowed text", 0),
        q("top_k", "integer", "alternatives to return (beam search)", 1),
    ]
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "captcha-edge", "version": package_version(),
                 "description": "Read text captchas with captcha_edge TFLite models. No "
                                "authentication beyond an optional shared bearer token."},
        "paths": {
            "/v1/recognize": {"post": {
                "summary": "Recognize one or more captcha images",
                "description": "A raw image body (one image), or multipart/form-data with one "
                               "or more file parts (any field name) and optional text fields "
                               "with the same names as the query parameters.",
                "parameters": params,
                "requestBody": {"required": True, "content": {
                    "image/*": binary, "application/octet-stream": binary,
                    "multipart/form-data": {"schema": {"type": "object", "properties": {
                        "file": {"type": "array", "items": {"type": "string",
                                                            "format": "binary"}}}}}}},
                "responses": {
                    "200": {"description": "one result per image, in order (a bad image in a "
                                           "batch gets its own error)",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/Recognition"}}}},
                    "400": err, "401": err, "404": err, "413": err, "415": err, "422": err}}},
            "/v1/models": {"get": {"summary": "Served models", "responses": {"200": {
                "description": "models", "content": {"application/json": {}}}}}},
            "/healthz": {"get": {"summary": "Liveness and readiness (no token needed)",
                                 "responses": {"200": {"description": "ready"},
                                               "503": err}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "text format", "content": {"text/plain": {}}}}}},
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error", "status"], "properties": {
                    "error": {"type": "string"}, "status": {"type": "integer"}}},
                "Result": {"type": "object", "properties": {
                    "path": {"type": "string", "description": "file name of the part, or "
                                                               "'body'"},
                    "text": {"type": ["string", "null"]},
                    "confidence": {"type": ["number", "null"]},
                    "error": {"type": ["string", "null"]},
                    "model": {"type": "string"},
                    "alternatives": {"type": "array", "items": {"type": "object"}}}},
                "Recognition": {"type": "object", "properties": {
                    "model": {"type": "string"},
                    "results": {"type": "array",
                                "items": {"$ref": "#/components/schemas/Result"}}}},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


# -- middleware -----------------------------------------------------------------------------------

class Guard:
    """Bearer token and body-size limit, before any routing or body parsing."""

    OPEN_PATHS = frozenset({"/healthz"})

    def __init__(self, app: ASGIApp, token: str | None, max_bytes: int,
                 metrics: Metrics) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics
        self.token = token.encode() if token else None

    async def drain(self, receive: Receive, seen: int) -> None:
        """Read and drop the rest of a refused body (401 or 413), up to a cap, before answering.

        A server that answers and closes while the client is still uploading makes the
        client's TCP stack see a reset instead of the 413; reading the remainder (cheap for
        modest overruns) lets the client read the answer. Past the cap, the answer goes out
        anyway.
        """
        cap = min(8 * self.max_bytes, 64 * 1024 * 1024)
        while seen <= cap:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _reject(self, send: Send, status: int, message: str,
                      headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        body = json.dumps({"error": message, "status": status}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), *headers]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.token is not None and scope["path"] not in self.OPEN_PATHS:
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                self.metrics.errors.labels("-", "unauthorized").inc()
                await self.drain(receive, 0)  # else the client may see a reset, not the 401
                await self._reject(send, 401, "missing or wrong bearer token "
                                   "(Authorization: Bearer TOKEN)",
                                   [(b"www-authenticate", b'Bearer realm="captcha-edge"')])
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            self.metrics.errors.labels("-", "too_large").inc()
            await self.drain(receive, 0)
            await self._reject(send, 413, f"request body of {int(length)} bytes is over the "
                               f"limit of {self.max_bytes} bytes (--max-bytes)")
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if message.get("more_body", False):
                        await self.drain(receive, seen)
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


# -- the app --------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What the app needs from the command line."""

    workers: int = 2
    batch_window_ms: float = 0.0
    #: batch the requests that queue while the workers are busy (``--batch-while-busy``)
    batch_while_busy: bool = False
    max_batch: int = 64
    max_bytes: int = 4 * 1024 * 1024
    max_images: int = 256
    token: str | None = None
    reload_interval: float = 2.0
    #: ``--processes N``: this process's number (1..N), and the shared metrics folder.
    process: int | None = None
    metrics_dir: str | None = None


def create_app(models: ModelSet, settings: Settings,
               on_ready: Callable[[], None] | None = None) -> Any:
    """Build the ASGI app (Starlette wrapped in :class:`Guard`) over loaded ``models``."""
    metrics = Metrics(settings.metrics_dir)
    metrics.models.set(len(models.models))
    runner = Runner(settings.workers, metrics, settings.batch_window_ms, settings.max_batch,
                    settings.batch_while_busy)
    reload_now = asyncio.Event()
    state: dict[str, Any] = {}
    openapi = openapi_document()
    version = package_version()

    async def recognize(request: Request) -> Response:
        t0 = time.perf_counter()
        name = "-"
        metrics.in_flight.inc()
        try:
            try:
                images, form = await read_images(request, settings.max_images)
                query = dict(request.query_params)
                both = sorted(set(query) & set(form))
                if both:
                    raise HTTPError(400, f"{both[0]!r} is given both in the query and the form")
                model_name, opts = parse_options({**query, **form})
                model = models.get(model_name)
                name = model.name
                if len(images) > settings.max_images:
                    raise HTTPError(413, f"{len(images)} images in one request; the limit is "
                                         f"{settings.max_images} (--max-images)")
                empty = [n for n, data in images if not data]
                if len(images) == 1 and empty:
                    raise HTTPError(400, "empty body: send the image bytes"
                                    if empty[0] == "body" else f"{empty[0]}: empty file part")
                try:
                    model.recognizer.check_options(**opts)
                except (ValueError, TypeError) as exc:
                    raise HTTPError(400, str(exc)) from None
            except BodyTooLarge:
                raise HTTPError(413, f"request body is over the limit of {settings.max_bytes} "
                                     "bytes (--max-bytes)") from None
            results = await runner.run(model, images, opts)
            for r in results:
                r["model"] = name
            failed = sum(r["error"] is not None for r in results)
            metrics.images.labels(name, "ok").inc(len(results) - failed)
            metrics.images.labels(name, "error").inc(failed)
            if failed == len(results):
                status = 422
                metrics.errors.labels(name, "bad_image").inc()
                resp: Response = error_response(
                    422, results[0]["error"] if len(results) == 1 else
                    f"none of the {len(results)} images could be read; first: "
                    f"{results[0]['error']}", model=name, results=results)
            else:
                status = 200
                resp = JSONResponse({"model": name, "results": results})
        except HTTPError as exc:
            status = exc.status
            reason = {400: "bad_request", 404: "unknown_model", 413: "too_large",
                      415: "unsupported_media_type", 503: "no_model"}.get(status, str(status))
            metrics.errors.labels(name, reason).inc()
            resp = error_response(status, str(exc))
        except ClientDisconnect:
            status = 499  # nginx's "client closed request"; nobody reads this response
            metrics.errors.labels(name, "client_disconnected").inc()
            resp = Response(status_code=400)
        finally:
            metrics.in_flight.dec()
        metrics.requests.labels(name, str(status)).inc()
        metrics.duration.labels(name).observe(time.perf_counter() - t0)
        return resp

    async def list_models(request: Request) -> Response:
        current, default = models.models, models.default
        return JSONResponse({"default": default, "reloads": models.reloads,
                             "last_reload_errors": models.last_errors,
                             "models": [m.describe(m.name == default)
                                        for m in current.values()]})

    async def healthz(request: Request) -> Response:
        n = len(models.models)
        body: dict[str, Any] = {"status": "ok" if n else "no models", "models": n,
                                "version": version}
        if settings.process is not None:
            body["process"] = settings.process  # which of --processes N answered
        return JSONResponse(body, status_code=200 if n else 503)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    async def reload_models() -> None:
        loop = asyncio.get_running_loop()
        try:
            errors = await loop.run_in_executor(None, models.reload)
        except Exception as exc:  # noqa: BLE001 -- e.g. two files with one stem: keep serving
            log.error("model reload: %s", exc)
            models.last_errors = [str(exc)]
            errors = [str(exc)]
        metrics.reloads.labels("error" if errors else "ok").inc()
        metrics.models.set(len(models.models))

    async def watch() -> None:
        """Re-read the models on SIGHUP, or when a poll sees the files change."""
        interval = settings.reload_interval or None
        while True:
            try:
                await asyncio.wait_for(reload_now.wait(), interval)
            except asyncio.TimeoutError:
                if not models.changed():
                    continue
            reload_now.clear()
            await reload_models()

    async def lifespan(app: Any) -> Any:
        runner.start()
        loop = asyncio.get_running_loop()
        state["watch"] = loop.create_task(watch())
        if hasattr(signal, "SIGHUP"):
            try:
                loop.add_signal_handler(signal.SIGHUP, reload_now.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        if on_ready is not None:
            on_ready()
        yield
        state["watch"].cancel()
        await runner.stop()

    from contextlib import asynccontextmanager

    app = Starlette(routes=[
        Route("/v1/recognize", recognize, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ], lifespan=asynccontextmanager(lifespan), exception_handlers={
        404: lambda req, exc: error_response(404, f"no such endpoint: {req.url.path}"),
        405: lambda req, exc: error_response(405, f"method {req.method} not allowed on "
                                                  f"{req.url.path}"),
    })
    app.state.models = models
    app.state.metrics = metrics
    app.state.reload = reload_now
    return Guard(app, settings.token, settings.max_bytes, metrics)


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

#: The environment variable that makes ``python -m captcha_edge.serve.app`` a child server.
_CHILD_ENV = "CAPTCHA_EDGE_SERVE_CHILD"
#: Seconds a child gets to load its models and report ready.
_CHILD_START_S = 120.0
#: Where SO_REUSEPORT balances connections over the sockets bound to one port (Linux); the
#: BSDs and macOS accept the option but do not balance, so there the children share one socket.
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class _Children:
    """The parent's side of ``--processes N``: start, watch, restart, signal and reap children.

    Each child is a fresh interpreter (``python -m captcha_edge.serve.app``). On Linux each
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
        return subprocess.Popen([sys.executable, "-m", "captcha_edge.serve.app"], env=env,
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
