"""The models inside the API workers: ``InProcessModelClient`` and the connection spread.

Control flow over a stand-in model (the batcher, the model thread, the error mapping) and
over a stand-in app (the workers' shared counts, which answers close their connection); the
real model served this way, under load and SIGTERM, is in ``tests/test_service_load.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest
from bentoml.exceptions import ServiceUnavailable
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from espnet_serve.pipeline.types import Segment
from espnet_serve.serving.errors import ApiError
from espnet_serve.serving.local_model import InProcessModelClient
from espnet_serve.serving.middleware.spread import SLACK, SpreadConnections
from espnet_serve.serving.rpc import Readiness, SegmentRequest, SegmentResult
from espnet_serve.serving.workers import WorkerBoard

REQUESTS = 48


class RecordingModel:
    """Answers each segment with its own index; records batches, threads and overlap."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def decode(self, requests: list[SegmentRequest]) -> list[SegmentResult]:
        if self.fail:
            raise ServiceUnavailable("The model is not ready: the model is loading.")
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.threads.add(threading.current_thread().name)
        time.sleep(0.01)  # a batch takes a while: the next segments queue up meanwhile
        self.batches.append(len(requests))
        with self._lock:
            self.running -= 1
        return [
            SegmentResult(segment=Segment(id=r.index, start=0.0, end=1.0, text=f"clip {r.index}"))
            for r in requests
        ]

    def readiness(self) -> Readiness:
        return Readiness(ready=not self.fail, reason="the model is loading" if self.fail else None)


def client_of(model: RecordingModel) -> InProcessModelClient:
    return InProcessModelClient(
        model,  # type: ignore[arg-type]
        max_batch_size=8,
        max_latency_ms=60_000,
        retry_after_seconds=3,
    )


def request(index: int) -> SegmentRequest:
    return SegmentRequest(samples=np.zeros(1600, dtype=np.float32), index=index)


def test_segments_waiting_together_are_decoded_in_batches_one_at_a_time():
    model = RecordingModel()

    async def run() -> list[SegmentResult]:
        client = client_of(model)
        return await asyncio.gather(*(client.decode(request(i)) for i in range(REQUESTS)))

    results = asyncio.run(run())
    assert [r.segment.text for r in results] == [f"clip {i}" for i in range(REQUESTS)]
    assert sum(model.batches) == REQUESTS
    assert max(model.batches) > 1  # BentoML's batcher merged waiting segments
    assert max(model.batches) <= 8
    assert model.most_running == 1  # one batch at a time
    assert len(model.threads) == 1 and next(iter(model.threads)).startswith("model")


def test_a_model_that_is_not_ready_is_a_503_with_retry_after():
    model = RecordingModel(fail=True)

    async def run() -> None:
        client = client_of(model)
        assert not (await client.readiness()).ready
        await client.decode(request(0))

    with pytest.raises(ApiError) as caught:
        asyncio.run(run())
    assert caught.value.code == "model_unavailable"
    assert caught.value.status == 503
    assert caught.value.headers == {"Retry-After": "3"}


def test_a_cancelled_caller_is_cancelled_not_answered_503():
    # BentoML's batcher turns a caller's cancellation into its fallback; a request whose
    # client went away must not become a "model overloaded" 503.
    model = RecordingModel()

    async def run() -> None:
        client = client_of(model)
        busy = [asyncio.create_task(client.decode(request(i))) for i in range(16)]
        waiting = asyncio.create_task(client.decode(request(16)))
        await asyncio.sleep(0.001)  # queued behind the first batches
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert [r.segment.text for r in await asyncio.gather(*busy)] == [
            f"clip {i}" for i in range(16)
        ]

    asyncio.run(run())


def test_worker_loads_are_shared_through_their_file(tmp_path):
    path = tmp_path / "workers.bin"
    first = WorkerBoard(path, workers=2, index=0)
    second = WorkerBoard(path, workers=2, index=1)
    first.add(3)
    second.add(1)
    assert first.over_share(SLACK) and not second.over_share(SLACK)  # 3 > 1 + SLACK
    second.add(1)
    assert not first.over_share(SLACK)  # 3 is within SLACK of 2
    restarted = WorkerBoard(path, workers=2, index=0)  # the first worker again, empty
    assert not restarted.over_share(SLACK) and second.over_share(SLACK)  # 2 > 0 + SLACK


def test_the_server_is_ready_once_every_worker_has_loaded_its_models(tmp_path):
    path = tmp_path / "workers.bin"
    first = WorkerBoard(path, workers=3, index=0)
    second = WorkerBoard(path, workers=3, index=1)
    assert first.unready() == [1, 2, 3]  # the third worker has not even started
    first.set_ready()
    third = WorkerBoard(path, workers=3, index=2)
    third.set_ready()
    assert second.unready() == [2] == third.unready()
    second.add(4)  # requests in flight are not readiness
    assert first.unready() == [2]
    second.set_ready()
    assert first.unready() == []
    WorkerBoard(path, workers=3, index=2)  # the third worker restarted: loading again
    assert first.unready() == [3]


@pytest.mark.parametrize(("own", "other", "closes"), [(2, 0, True), (0, 0, False), (2, 5, False)])
def test_a_worker_over_its_share_closes_the_connections_it_answers(tmp_path, own, other, closes):
    path = tmp_path / "workers.bin"
    mine = WorkerBoard(path, workers=2, index=0)
    WorkerBoard(path, workers=2, index=1).add(other)
    mine.add(own)  # requests already in flight here

    async def answer(request):
        return PlainTextResponse("ok")

    app = SpreadConnections(
        Starlette(routes=[Route("/", answer, methods=["GET", "POST"])]), board=mine
    )

    async def run() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/"), await client.get("/")

    posted, probed = asyncio.run(run())
    assert (posted.headers.get("connection") == "close") is closes
    assert "connection" not in probed.headers  # probes and metrics are neither counted nor closed
    assert mine.over_share(SLACK) is (own > other + SLACK)  # the request's count was given back
