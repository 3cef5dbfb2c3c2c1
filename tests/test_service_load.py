"""Serving that holds under load, against a real ``bentoml serve`` on 127.0.0.1.

Every transcript is checked against the one the same clip gets when sent alone.
Requests within capacity never fail; a burst past the admission limit gets only
200s and 503s with ``Retry-After`` and JSON; SIGTERM with clients mid-request
finishes every accepted request, under ``bentoml serve``, in split mode and with the
models in the API workers; clients that keep sending until the server has gone get an
answer or are refused at connect, never a reset.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import Counter

import httpx
import pytest
from bentoml._internal.resource import CpuResource

from bench.loadgen import OPENAI_ROUTE, Clip, Outcome, burst, closed_loop, send, session
from espnet_serve.assets import load_heldout
from tests.server import (
    BentoServer,
    import_default_model,
    serve_default_model,
    serve_split,
    service_workers,
)

pytestmark = pytest.mark.slow

CLIENTS = 64
ROUNDS = 3
BURST = 400
ADMISSION_LIMIT = 128
DRAIN_CLIENTS = 16
DRAIN_TIMEOUT_SECONDS = 20.0
SIGTERM_BURST = 60
# The models inside the API workers (ESPNET_SERVE_MODEL_IN_PROCESS), two workers of one torch
# thread each: what the default gives a CPU server on this machine's two cores, said outright.
IN_PROCESS = {"model_in_process": "1", "api_workers": "2", "model_threads": "1"}


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    return [
        Clip(clip.path.name, clip.path.read_bytes(), clip.text) for clip in load_heldout(limit=48)
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> BentoServer:
    server = serve_default_model(
        tmp_path_factory.mktemp("bentoml_home"),
        max_pending_requests=str(ADMISSION_LIMIT),
        retry_after_seconds="2",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alone(server: BentoServer, clips: list[Clip]) -> list[Clip]:
    """The clips, each with the transcript it gets when sent alone."""

    async def each_alone() -> list[Outcome]:
        async with session(1, timeout=60) as client:
            return [await send(client, server.url + OPENAI_ROUTE, clip) for clip in clips]

    outcomes = asyncio.run(each_alone())
    assert [o.status for o in outcomes] == [200] * len(clips)
    return [Clip(o.clip.name, o.clip.data, o.text or "") for o in outcomes]


def assert_all_ok(outcomes: list[Outcome]) -> None:
    failures = [(o.status, o.error, o.clip.name) for o in outcomes if not o.ok]
    assert not failures, failures[:5]


def test_64_clients_three_rounds_every_request_gets_its_own_transcript(server, alone):
    # Past BentoML's default of 100 calls per client session, which it used to recycle
    # with calls in flight (plain-text 500s).
    for _ in range(ROUNDS):
        outcomes = asyncio.run(
            closed_loop(server.url + OPENAI_ROUTE, alone, concurrency=CLIENTS, requests=2 * CLIENTS)
        )
        assert len(outcomes) == 2 * CLIENTS
        assert_all_ok(outcomes)


def test_burst_gets_only_200_or_503_json_then_serves_normally(server, alone):
    outcomes = asyncio.run(burst(server.url + OPENAI_ROUTE, alone, requests=BURST))
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= ADMISSION_LIMIT // 2, statuses
    for outcome in outcomes:
        if outcome.status == 200:
            assert outcome.ok, (outcome.text, outcome.clip.expected)
        else:
            assert outcome.content_type.startswith("application/json"), outcome.error
            assert outcome.error_code == "overloaded" and outcome.retry_after == "2"
    after = asyncio.run(closed_loop(server.url + OPENAI_ROUTE, alone, concurrency=8, requests=16))
    assert_all_ok(after)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'espnet_serve_errors_total{{code="overloaded"}} {float(statuses[503])}' in metrics


async def load_then_sigterm(url: str, clips: list[Clip], pids: list[int]) -> dict:
    """``DRAIN_CLIENTS`` clients in a loop; SIGTERM ``pids`` while all are mid-request.

    The clients stop sending once the signal is sent; each request already in
    flight must still be answered.
    """
    stop = asyncio.Event()
    route = url + OPENAI_ROUTE
    load = asyncio.create_task(
        closed_loop(route, clips, concurrency=DRAIN_CLIENTS, requests=10_000, stop=stop)
    )
    await asyncio.sleep(3.0)
    stop.set()
    signalled = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(timeout=10) as client:
        readyz = (await client.get(url + "/readyz")).status_code
    async with session(1, timeout=10) as client:
        late = await send(client, url + OPENAI_ROUTE, clips[0])
    outcomes = await load
    return {"outcomes": outcomes, "readyz": readyz, "late": late, "signalled": signalled}


def wait_exit(processes: list, signalled: float) -> float:
    for process in processes:
        process.wait(timeout=DRAIN_TIMEOUT_SECONDS + 30)
    return time.monotonic() - signalled


def assert_drained(seen: dict, clips: list[Clip]) -> None:
    outcomes: list[Outcome] = seen["outcomes"]
    assert len(outcomes) > DRAIN_CLIENTS
    # Nothing was dropped: every request got an answer. A request still on its way when
    # the signal came may be refused cleanly (503 draining, not accepted); every
    # accepted one got its transcript.
    assert all(o.status is not None for o in outcomes), [o.error for o in outcomes][:3]
    refused = [o for o in outcomes if o.status == 503]
    assert all(o.error_code == "draining" and o.retry_after for o in refused), refused[:3]
    assert len(refused) < DRAIN_CLIENTS
    assert_all_ok([o for o in outcomes if o.status != 503])
    assert seen["readyz"] == 503
    late: Outcome = seen["late"]
    assert late.status == 503 and late.error_code == "draining", late.error


async def loop_through_sigterm(url: str, clips: list[Clip], processes: list) -> list[Outcome]:
    """``DRAIN_CLIENTS`` clients that keep sending until every process in ``processes`` exited.

    Every process is sent SIGTERM at once (as the kubelet stops pods) when the clients are
    under way.
    """
    stop = asyncio.Event()
    load = asyncio.create_task(
        closed_loop(
            url + OPENAI_ROUTE, clips, concurrency=DRAIN_CLIENTS, requests=50_000, stop=stop
        )
    )
    await asyncio.sleep(3.0)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS + 30
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # a second of connects to the stopped server
    stop.set()
    return await load


def assert_answered_or_refused_at_connect(outcomes: list[Outcome]) -> None:
    statuses = Counter(
        "refused at connect" if o.refused_at_connect else o.status or o.error for o in outcomes
    )
    assert set(statuses) == {200, 503, "refused at connect"}, statuses
    assert_all_ok([o for o in outcomes if o.status == 200])
    refused = [o for o in outcomes if o.status == 503]
    assert all(o.error_code == "draining" and o.retry_after for o in refused), refused[:3]


def test_clients_sending_through_sigterm_are_answered_or_refused_at_connect(drain_home, alone):
    server = serve_default_model(
        drain_home, drain_timeout_seconds=str(DRAIN_TIMEOUT_SECONDS), drain_quiet_seconds="1"
    )
    try:
        outcomes = asyncio.run(loop_through_sigterm(server.url, alone, [server.process]))
    finally:
        server.stop()
    assert_answered_or_refused_at_connect(outcomes)
    assert server.process.returncode == 0, server.log()


def test_clients_sending_through_sigterm_in_split_mode(drain_home, alone):
    model, api = serve_split(
        drain_home, drain_timeout_seconds=str(DRAIN_TIMEOUT_SECONDS), drain_quiet_seconds="1"
    )
    try:
        outcomes = asyncio.run(loop_through_sigterm(api.url, alone, [api.process, model.process]))
    finally:
        api.stop()
        model.stop()
    assert_answered_or_refused_at_connect(outcomes)


@pytest.fixture()
def drain_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("drain_home")
    import_default_model(home)
    return home


@pytest.mark.parametrize("settings", [{}, IN_PROCESS], ids=["services", "models-in-api"])
def test_sigterm_drains_every_accepted_request(drain_home, alone, settings):
    server = serve_default_model(
        drain_home,
        drain_timeout_seconds=str(DRAIN_TIMEOUT_SECONDS),
        drain_quiet_seconds="1",
        **settings,
    )
    try:
        seen = asyncio.run(load_then_sigterm(server.url, alone, [server.process.pid]))
        exit_seconds = wait_exit([server.process], seen["signalled"])
    finally:
        server.stop()
    assert_drained(seen, alone)
    assert server.process.returncode == 0, server.log()
    assert exit_seconds < DRAIN_TIMEOUT_SECONDS, exit_seconds  # the drain bound, not a speed


async def burst_then_sigterm(url: str, clips: list[Clip], pid: int) -> list[Outcome]:
    """A burst of new connections, and SIGTERM once the server has admitted some of them."""
    sent = asyncio.create_task(burst(url + OPENAI_ROUTE, clips, requests=SIGTERM_BURST))
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            metrics = (await client.get(url + "/metrics")).text
            pending = re.search(r"^espnet_serve_pending_requests (\S+)$", metrics, re.M)
            if pending and float(pending.group(1)) >= 1:
                break
            await asyncio.sleep(0.01)
    os.kill(pid, signal.SIGTERM)  # some requests admitted, others maybe still arriving
    return await sent


def test_sigterm_during_a_burst_finishes_what_was_accepted(drain_home, alone):
    # The API worker needs new connections to the model service while it drains. Under
    # `bentoml serve` the model's unix socket file is gone by then; this pins service.py's
    # BENTOML_NO_UDS (loopback TCP), without which these requests got 503 model_unavailable.
    server = serve_default_model(drain_home, drain_timeout_seconds=str(DRAIN_TIMEOUT_SECONDS))
    try:
        outcomes = asyncio.run(burst_then_sigterm(server.url, alone, server.process.pid))
        wait_exit([server.process], time.monotonic())
    finally:
        server.stop()
    assert all(o.status is not None for o in outcomes), [o.error for o in outcomes][:3]
    refused = [o for o in outcomes if o.status == 503]
    assert all(o.error_code == "draining" for o in refused), [o.error for o in refused][:3]
    answered = [o for o in outcomes if o.status != 503]
    assert answered, "no request was admitted before SIGTERM"
    assert_all_ok(answered)


def test_sigterm_drains_in_split_mode(drain_home, alone):
    model, api = serve_split(
        drain_home, drain_timeout_seconds=str(DRAIN_TIMEOUT_SECONDS), drain_quiet_seconds="1"
    )
    try:
        # Each server exports its own series: the model server its batches.
        route = api.url + OPENAI_ROUTE
        answered = asyncio.run(closed_loop(route, alone, concurrency=4, requests=8))
        assert_all_ok(answered)
        model_metrics = httpx.get(f"{model.url}/metrics").text
        batches = re.search(
            r"^espnet_serve_batch_size_count\{model=\"[^\"]+\"\} (\S+)$", model_metrics, re.M
        )
        assert batches is not None and float(batches.group(1)) >= 1, model_metrics[-2000:]
        pids = [model.process.pid, api.process.pid]
        seen = asyncio.run(load_then_sigterm(api.url, alone, pids))
        exit_seconds = wait_exit([model.process, api.process], seen["signalled"])
    finally:
        api.stop()
        model.stop()
    assert_drained(seen, alone)
    assert exit_seconds < DRAIN_TIMEOUT_SECONDS, exit_seconds  # the drain bound, not a speed


def batches_of(url: str) -> tuple[float, float]:
    """The ``espnet_serve_batch_size`` series' sum and count of the embedded model."""
    metrics = httpx.get(f"{url}/metrics").text
    found = {
        part: re.search(
            rf"^espnet_serve_batch_size_{part}\{{model=\"espnet-digits-asr\"\}} (\S+)$",
            metrics,
            re.M,
        )
        for part in ("sum", "count")
    }
    assert all(found.values()), metrics[-2000:]
    return float(found["sum"].group(1)), float(found["count"].group(1))


def test_by_default_a_cpu_server_runs_the_models_in_its_api_workers(drain_home, alone):
    # Without a GPU, and with models as small as the embedded one, the default (auto) places
    # the models in the API workers, one per CPU: each loads the model and batches with
    # BentoML's batcher, no model service process runs, and under load every clip gets the
    # transcript the server with its own model service gave it alone.
    workers = max(1, int(CpuResource.from_system()))
    server = serve_default_model(drain_home, model_in_process="auto")
    try:
        assert len(service_workers(server, "ApiService")) == workers
        assert service_workers(server, "ModelService") == []
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        assert [m["id"].split(":")[0] for m in models] == ["espnet-digits-asr"]
        route = server.url + OPENAI_ROUTE
        outcomes = asyncio.run(closed_loop(route, alone, concurrency=32, requests=192))
        assert len(outcomes) == 192
        assert_all_ok(outcomes)
        total, batches = batches_of(server.url)
        assert total >= 192 and total > batches  # segments were decoded together
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "ModelService" not in log
    said = "Models in each API worker (auto: no GPU, the models take"
    assert log.count(said) == workers and f"{workers} API worker(s), model threads: " in log
    # The connections were spread over the workers (SpreadConnections), not left where the
    # first burst put them: each worker answered a fair part of the load.
    answered = Counter(re.findall(r"ApiService:(\d+)\] POST /v1/audio/transcriptions 200", log))
    assert sum(answered.values()) >= 192
    assert len(answered) == workers and min(answered.values()) >= 0.2 * 192 / workers, answered


def readyz_until(url: str, done, timeout: float = 60.0) -> httpx.Response:
    """Poll ``/readyz`` on a new connection each time (any worker may answer) until ``done``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/readyz", headers={"Connection": "close"})
        if done(response):
            return response
        time.sleep(0.05)
    raise AssertionError(f"/readyz never got there: {response.status_code} {response.text}")


def test_a_restarted_api_worker_holding_the_models_keeps_the_server_unready_until_loaded(
    drain_home, alone
):
    # With the models in the API workers, each worker loads them itself: /readyz, whichever
    # worker answers it, is 200 only while every worker has its models, so a probe never lets
    # traffic in that would reach a worker still loading (503 model_unavailable).
    server = serve_default_model(drain_home, **IN_PROCESS)
    try:
        workers = service_workers(server, "ApiService")
        assert len(workers) == 2
        workers[1].kill()  # SIGKILL: the arbiter starts another, which loads the models again
        loading = readyz_until(server.url, lambda r: "still loading" in r.text)
        assert loading.status_code == 503
        assert re.fullmatch(r".*API worker\(s\) [12] still loading their models\..*", loading.text)
        readyz_until(server.url, lambda r: r.status_code == 200)
        restarted = service_workers(server, "ApiService")
        assert len(restarted) == 2 and workers[1].pid not in {w.pid for w in restarted}
        # New connections reach both workers at once: every one is answered.
        route = server.url + OPENAI_ROUTE
        outcomes = asyncio.run(closed_loop(route, alone, concurrency=16, requests=64))
        assert len(outcomes) == 64
        assert_all_ok(outcomes)
    finally:
        server.stop()
