"""The serve Runner in-process: which requests share a worker job, and that each gets its answer.

A fake recognizer blocks its worker until released, so the requests that queue meanwhile are
known exactly; jobs are counted by wrapping ``recognize_chunk`` (one call = one job).
"""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from captcha_edge.serve import models, process  # noqa: E402
from captcha_edge.serve import runner as serve_runner  # noqa: E402
from captcha_edge.serve.metrics import Metrics  # noqa: E402


class SlowFake:
    """recognize() answers the image bytes as text; the first ``hold`` calls wait for ``go``."""

    def __init__(self, hold: int) -> None:
        self.go = threading.Event()
        self.hold = hold
        self.seen: list[bytes] = []
        self.lock = threading.Lock()

    def recognize(self, buf: Any, **opts: Any) -> Any:
        data = buf.read()
        with self.lock:
            self.seen.append(data)
            wait = len(self.seen) <= self.hold
        if wait and not self.go.wait(10):
            raise TimeoutError("never released")

        class P:
            text, confidence, alternatives = data.decode(), 1.0, ()
        return P()


def model_of(rec: SlowFake) -> models.LoadedModel:
    return models.LoadedModel("fake", Path("fake.tflite"), rec, (0, 0))  # type: ignore[arg-type]


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Images per worker job, in the order the jobs started."""
    sizes: list[int] = []
    real = serve_runner.recognize_chunk

    def counted(rec: Any, items: Any, opts: Any) -> Any:
        sizes.append(len(items))
        return real(rec, items, opts)

    monkeypatch.setattr(serve_runner, "recognize_chunk", counted)
    return sizes


async def until(cond: Any) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def scenario(runner: serve_runner.Runner, rec: SlowFake, busy: int, queued: int,
                   cancel: tuple[int, ...] = (), opts: Any = lambda i: {}) -> list[Any]:
    """``busy`` requests occupy the workers; ``queued`` more arrive; then the workers go free.
    Request ``i`` asks for the options ``opts(i)``."""
    runner.start()
    model = model_of(rec)
    try:
        def send(i: int) -> asyncio.Task[Any]:
            return asyncio.ensure_future(runner.run(model, [(f"r{i}", f"t{i}".encode())],
                                                    opts(i)))

        tasks = [send(i) for i in range(busy)]
        await until(lambda: len(rec.seen) == busy)  # every worker is now held
        tasks += [send(i) for i in range(busy, busy + queued)]
        await asyncio.sleep(0.05)
        for i in cancel:  # these clients go away while their requests wait
            tasks[i].cancel()
        rec.go.set()
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await runner.stop()


def texts(results: list[Any]) -> list[Any]:
    return [r if isinstance(r, BaseException) else [x["text"] for x in r] for r in results]


def test_requests_that_queue_while_the_worker_is_busy_run_as_one_job(jobs: list[int]) -> None:
    rec = SlowFake(hold=1)
    runner = serve_runner.Runner(1, Metrics(), batching=True)
    results = asyncio.run(scenario(runner, rec, busy=1, queued=4))
    assert texts(results) == [[f"t{i}"] for i in range(5)]
    assert jobs == [1, 4]


def test_without_batching_every_request_is_its_own_job(jobs: list[int]) -> None:
    rec = SlowFake(hold=1)
    runner = serve_runner.Runner(1, Metrics(), batching=False)
    results = asyncio.run(scenario(runner, rec, busy=1, queued=4))
    assert texts(results) == [[f"t{i}"] for i in range(5)]
    assert jobs == [1, 1, 1, 1, 1]


def test_a_job_takes_at_most_its_share_of_the_queue(jobs: list[int]) -> None:
    rec = SlowFake(hold=2)
    runner = serve_runner.Runner(2, Metrics(), batching=True)
    results = asyncio.run(scenario(runner, rec, busy=2, queued=6))
    assert texts(results) == [[f"t{i}"] for i in range(8)]
    assert jobs[:2] == [1, 1] and sum(jobs) == 8
    # The first worker to come free finds 6 waiting and takes half; the other takes the rest.
    assert max(jobs[2:]) == 3 and len(jobs) < 8, jobs


def test_a_request_whose_client_left_costs_no_work(jobs: list[int]) -> None:
    rec = SlowFake(hold=1)
    runner = serve_runner.Runner(1, Metrics(), batching=True)
    results = asyncio.run(scenario(runner, rec, busy=1, queued=3, cancel=(2,)))
    assert isinstance(results[2], asyncio.CancelledError)
    assert texts(results[:2] + results[3:]) == [["t0"], ["t1"], ["t3"]]
    assert b"t2" not in rec.seen and jobs == [1, 2]


def test_only_requests_with_the_same_options_share_a_job(jobs: list[int]) -> None:
    rec = SlowFake(hold=1)
    runner = serve_runner.Runner(1, Metrics(), batching=True)
    # The same two options in either order are the same options; top_k alone is not.
    asked = [{}, {"top_k": 2, "beam_width": 4}, {}, {"beam_width": 4, "top_k": 2}, {"top_k": 2}]
    results = asyncio.run(scenario(runner, rec, busy=1, queued=4, opts=lambda i: asked[i]))
    assert texts(results) == [[f"t{i}"] for i in range(5)]
    # One worker: the queued four split into groups, run in the order each group first came.
    assert jobs == [1, 2, 1, 1]
    assert rec.seen == [b"t0", b"t1", b"t3", b"t2", b"t4"]


@pytest.mark.parametrize("choice,workers,on", [("auto", 1, True), ("auto", 2, False),
                                               ("on", 2, True), ("off", 1, False)])
def test_batch_while_busy_choice(choice: str, workers: int, on: bool) -> None:
    assert process.batch_while_busy(choice, workers) is on
