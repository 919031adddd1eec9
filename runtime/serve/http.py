"""The HTTP side of the service: the Starlette app and its routes (:func:`create_app`), request
parsing, :class:`Guard` (pure ASGI middleware: bearer token, and ``--max-bytes``: 413 from the
Content-Length, or while the body streams in) and the :class:`Settings` it is built from.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._common import package_version
from .errors import BodyTooLarge, HTTPError
from .metrics import Metrics
from .models import ModelSet
from .openapi import openapi_document
from .runner import Runner

log = logging.getLogger("captcha_edge.serve")

#: Query / form fields of POST /v1/recognize besides the images.
OPTION_FIELDS = ("model", "beam_width", "allowed", "min_length", "max_length", "top_k")
_INT_OPTIONS = {"beam_width": 1, "min_length": 0, "max_length": 0, "top_k": 1}
#: Content types read as one raw image body.
_RAW_TYPES = ("image/", "application/octet-stream")
#: What ``curl --data-binary @x.png`` sends unless told otherwise: taken as a raw image too.
_CURL_DEFAULT = "application/x-www-form-urlencoded"


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    """The one error shape: ``{"error": ..., "status": ...}`` (+ extra fields)."""
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)



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
