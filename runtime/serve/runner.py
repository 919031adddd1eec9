"""The interpreter work, kept off the event loop: :class:`Runner`.

A thread pool of ``--workers`` threads, and since a :class:`~captcha_edge.Recognizer` keeps one
interpreter per thread, one interpreter per worker and model. Optional micro-batching gathers
the images of requests that arrive within ``--batch-window-ms`` (or that queue while every
worker is busy) into one job per worker. The bundled models cannot run a batch in one invoke
(their graph reshapes to batch 1, and XNNPACK refuses the resize), so a batch is one invoke per
image.
"""
from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import CaptchaEdgeError
from ..recognizer import Recognizer
from .metrics import Metrics
from .models import LoadedModel

#: Pillow names an unnamed buffer by its repr; the part's name is more useful to a client.
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


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
