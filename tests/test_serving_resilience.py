"""The serving layer's defences, in-process, and the BentoML behaviours they work around.

The BentoML tests are minimal reproductions on real aiohttp servers on
127.0.0.1: if an upgrade changes the behaviour, they fail, and the workaround
they name can be reconsidered.
"""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import httpx
import numpy as np
import pytest
from aiohttp import web
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from espnet_serve.serving.drain import SigtermDrain
from espnet_serve.serving.errors import ApiError, install_error_handlers
from espnet_serve.serving.middleware.admission import AdmissionMiddleware
from espnet_serve.serving.middleware.inflight import InFlight
from espnet_serve.serving.model_client import BentoModelClient, call_model
from espnet_serve.serving.rpc import Readiness, SegmentRequest


async def slow_server(delay: float) -> tuple[web.AppRunner, str]:
    async def handler(_: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(text="done")

    app = web.Application()
    app.router.add_post("/work", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def test_bentoml_session_manager_closes_sessions_with_calls_in_flight():
    """Why ``model_service.NEVER_RECYCLE`` exists (bentoml 1.4.40 ``proxy2.SessionManager``)."""
    from _bentoml_impl.client.proxy2 import SessionManager

    async def scenario() -> BaseException | str:
        runner, url = await slow_server(0.5)
        manager = SessionManager(url, timeout=10, headers={}, max_requests=1)
        try:
            first = await manager.get_session()
            in_flight = asyncio.create_task(first.post("/work"))
            await asyncio.sleep(0.1)
            await manager.get_session()
            await manager.get_session()  # past max_requests: the first session is closed
            try:
                response = await in_flight
                return await response.text()
            except aiohttp.ClientError as exc:
                return exc
        finally:
            await manager.close()
            await runner.cleanup()

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, aiohttp.ClientError), (
        "BentoML no longer fails calls in flight when it recycles its client session; "
        "model_service.NEVER_RECYCLE may no longer be needed."
    )


def test_never_recycle_reaches_the_dependency_client():
    from _bentoml_impl.client.proxy2 import RemoteProxy

    from espnet_serve.serving.model_service import NEVER_RECYCLE, ModelService

    ModelService.inject_config()
    manager = RemoteProxy("http://127.0.0.1:9", service=ModelService)._async._session_manager
    assert (manager.max_requests, manager.max_age) == (
        NEVER_RECYCLE["max_requests"],
        NEVER_RECYCLE["max_age"],
    )


def test_bentoml_dispatcher_drops_queued_jobs_past_max_latency():
    """Why the model service's ``max_latency_ms`` is the request timeout, not a batching window."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    async def scenario() -> list[object]:
        dispatcher = CorkDispatcher(
            max_latency_in_ms=200,
            max_batch_size=1,
            fallback=lambda: "dropped",
            get_batch_size=lambda _: 1,
        )

        async def slow_batch(items):
            await asyncio.sleep(0.15)
            return list(items)

        call = dispatcher(slow_batch)
        results = await asyncio.gather(*(call(i) for i in range(12)))
        dispatcher.shutdown()
        return results

    results = asyncio.run(scenario())
    assert "dropped" in results, (
        "BentoML's CorkDispatcher no longer drops queued jobs it predicts will miss "
        "max_latency_ms; the model service's deadline may be revisited."
    )


def test_model_service_batcher_never_drops_before_the_request_timeout():
    from espnet_serve.serving.model_service import ModelService
    from espnet_serve.serving.settings import get_settings

    timeout_ms = get_settings().request_timeout_seconds * 1000
    assert ModelService.apis["decode"].max_latency_ms >= timeout_ms


class Calls:
    """A model-service call that raises the given errors first, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.count = 0

    async def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


def run_call(calls: Calls) -> str:
    return asyncio.run(call_model(calls, what="test", retry_after_seconds=3))


def test_a_connection_error_is_retried_once():
    calls = Calls(aiohttp.ServerDisconnectedError())
    assert run_call(calls) == "answer" and calls.count == 2


def test_two_connection_errors_are_503_with_retry_after():
    calls = Calls(aiohttp.ClientOSError(), aiohttp.ClientConnectionError("Connector is closed"))
    with pytest.raises(ApiError) as raised:
        run_call(calls)
    assert raised.value.status == 503 and raised.value.headers["Retry-After"] == "3"
    assert calls.count == 2


def test_a_timeout_is_504_and_never_retried():
    calls = Calls(TimeoutError())
    with pytest.raises(ApiError) as raised:
        run_call(calls)
    assert raised.value.status == 504 and calls.count == 1


def test_model_not_ready_is_503_and_a_model_failure_is_500():
    with pytest.raises(ApiError) as unready:
        run_call(Calls(ServiceUnavailable("The model is not ready: loading.")))
    assert unready.value.status == 503
    failure = Calls(BentoMLException("Internal Server Error"))
    with pytest.raises(ApiError) as failed:
        run_call(failure)
    assert failed.value.status == 500 and failed.value.error_id
    assert failure.count == 1


class LosingDependency:
    """A model-service dependency whose decode fails as ``decode_errors`` say, then answers;
    its readiness answers ``readiness`` in turn (then ready). Control flow only: the real
    worker kill is in ``test_service_faults.py``."""

    def __init__(self, decode_errors: list[BaseException], readiness: list[object]) -> None:
        self.to_async = self
        self.decode_errors, self.readiness_answers = decode_errors, readiness
        self.decodes = self.polls = 0

    async def decode(self, requests: list) -> list:
        self.decodes += 1
        if self.decode_errors:
            raise self.decode_errors.pop(0)
        return ["decoded"]

    async def readiness(self) -> Readiness:
        self.polls += 1
        answer = self.readiness_answers.pop(0) if self.readiness_answers else True
        if isinstance(answer, BaseException):
            raise answer
        return Readiness(ready=bool(answer), reason="" if answer else "loading")


def decode_with(dependency: LosingDependency, timeout: float = 30.0) -> object:
    client = BentoModelClient(dependency, retry_after_seconds=3, request_timeout_seconds=timeout)
    request = SegmentRequest(samples=np.zeros(160, dtype=np.float32), index=4)
    return asyncio.run(client.decode(request))


def test_a_segment_lost_with_its_worker_is_sent_again_once_a_worker_is_ready(monkeypatch):
    monkeypatch.setattr("espnet_serve.serving.model_client.READY_POLL_SECONDS", 0.01)
    lost = LosingDependency(
        [aiohttp.ServerDisconnectedError(), ServiceUnavailable("The model is not ready.")],
        [aiohttp.ClientOSError(), False, False, True],  # unreachable, loading, loading, ready
    )
    assert decode_with(lost) == "decoded"
    assert lost.decodes == 3 and lost.polls == 5  # 4 until the first resend, 1 after the second


def test_a_lost_segment_whose_worker_never_comes_back_is_a_503_at_its_timeout(monkeypatch):
    monkeypatch.setattr("espnet_serve.serving.model_client.READY_POLL_SECONDS", 0.01)
    gone = LosingDependency([aiohttp.ServerDisconnectedError()], [False] * 1000)
    with pytest.raises(ApiError) as raised:
        decode_with(gone, timeout=0.2)
    assert raised.value.status == 503 and raised.value.headers["Retry-After"] == "3"
    assert "none was ready again within the request timeout" in raised.value.message
    assert gone.decodes == 1


def test_a_segment_sent_while_no_worker_is_ready_is_refused_at_once():
    unready = LosingDependency([ServiceUnavailable("The model is not ready: loading.")], [])
    with pytest.raises(ApiError) as raised:
        decode_with(unready)
    assert raised.value.status == 503 and unready.decodes == 1 and unready.polls == 0


def gated_app(in_flight: InFlight, limit: int, draining: list[bool]) -> tuple[FastAPI, list]:
    refusals: list[str] = []
    release = asyncio.Event()
    app = FastAPI()

    @app.post("/work")
    async def work(request: Request) -> PlainTextResponse:
        await request.body()  # as the transcription routes read their form
        await release.wait()
        return PlainTextResponse("done")

    @app.post("/crash")
    async def crash() -> PlainTextResponse:
        raise KeyError("a bug")

    app.add_middleware(
        AdmissionMiddleware,
        routes=("/work", "/crash"),
        in_flight=in_flight,
        limit=limit,
        retry_after_seconds=1,
        is_draining=lambda: draining[0],
        on_refused=refusals.append,
        on_admitted=lambda _: None,
    )
    install_error_handlers(app)
    app.state.release = release
    return app, refusals


def test_admission_refuses_past_the_limit_and_while_draining():
    in_flight, draining = InFlight(), [False]
    app, refusals = gated_app(in_flight, 2, draining)

    async def scenario() -> tuple[list[int], int, int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            admitted = [asyncio.create_task(client.post("/work", content=b"x")) for _ in range(2)]
            await asyncio.sleep(0.05)
            refused = await client.post("/work", content=b"x" * 1000)
            app.state.release.set()
            statuses = [(await task).status_code for task in admitted]
            draining[0] = True
            late = await client.post("/work")
            return [*statuses, refused.status_code], late.status_code, in_flight.count

    statuses, late, remaining = asyncio.run(scenario())
    assert statuses == [200, 200, 503] and late == 503 and remaining == 0
    assert refusals == ["overloaded", "draining"]


def test_a_body_still_arriving_holds_no_admission_slot():
    in_flight = InFlight()
    app, refusals = gated_app(in_flight, 1, [False])
    more = asyncio.Event()

    async def trickle():
        yield b"first part"
        await more.wait()
        yield b"the rest"

    async def scenario() -> tuple[int, int, int, int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            slow = asyncio.create_task(client.post("/work", content=trickle()))
            await asyncio.sleep(0.05)
            counted_while_arriving = in_flight.count
            app.state.release.set()
            normal = await client.post("/work", content=b"x")
            more.set()
            return (
                counted_while_arriving,
                normal.status_code,
                (await slow).status_code,
                in_flight.count,
            )

    counted, normal, slow, remaining = asyncio.run(scenario())
    # The one slot went to the complete request; the arriving one counted for the drain only.
    assert (counted, normal, slow, remaining) == (1, 200, 200, 0) and refusals == []


def test_an_unexpected_exception_is_a_json_500_with_an_error_id():
    app, _ = gated_app(InFlight(), 2, [False])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/crash")

    response = asyncio.run(scenario())
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error" and error["type"] == "server_error"
    assert error["error_id"] and error["error_id"] in error["message"]


def test_sigterm_is_handed_on_only_after_the_requests_in_flight():
    in_flight = InFlight()
    handed_on: list[float] = []

    async def scenario() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        previous = signal.signal(signal.SIGTERM, lambda *_: handed_on.append(loop.time()))
        try:
            drain = SigtermDrain("test", in_flight, timeout_seconds=5, quiet_seconds=0.2)
            drain.install()
            in_flight.enter()
            signal.raise_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            early = bool(handed_on)
            finished = loop.time()
            in_flight.exit()
            while not handed_on:
                await asyncio.sleep(0.02)
            return early or not drain.draining, handed_on[0] - finished
        finally:
            signal.signal(signal.SIGTERM, previous)

    early, after_finish = asyncio.run(scenario())
    assert not early
    assert after_finish >= 0.2  # the quiet period
