"""Overload: past ``ESPNET_SERVE_MAX_PENDING_REQUESTS`` the API refuses at once with 503.

A real ``bentoml serve`` (one API worker, two pending slots) gets a burst of
concurrent requests; the excess is refused with ``Retry-After`` and a JSON
body, the admitted ones are transcribed, and the server keeps serving.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from espnet_serve.assets import HeldoutClip, load_heldout
from tests.server import BentoServer, serve_default_model

pytestmark = pytest.mark.slow

PENDING_SLOTS = 2
BURST = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> BentoServer:
    server = serve_default_model(
        tmp_path_factory.mktemp("bentoml_home"),
        api_workers="1",
        max_pending_requests=str(PENDING_SLOTS),
        retry_after_seconds="3",
        max_latency_ms="5000",
    )
    yield server
    server.stop()


def test_burst_past_the_pending_bound_is_refused_early(server: BentoServer):
    clip: HeldoutClip = load_heldout(limit=1)[0]
    payload = clip.path.read_bytes()
    start = threading.Barrier(BURST)

    def send(_: int) -> httpx.Response:
        start.wait()
        return httpx.post(
            f"{server.url}/transcribe",
            files={"file": (clip.path.name, payload, "audio/flac")},
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        responses = list(pool.map(send, range(BURST)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    admitted = [r for r in responses if r.status_code == 200]
    assert refused and admitted, statuses
    for response in refused:
        assert response.headers["retry-after"] == "3"
        assert response.json()["error"]["code"] == "overloaded"
    assert {r.json()["text"] for r in admitted} == {clip.text}

    after = httpx.post(
        f"{server.url}/transcribe",
        files={"file": (clip.path.name, payload, "audio/flac")},
        timeout=120,
    )
    assert after.status_code == 200 and after.json()["text"] == clip.text
    metrics = httpx.get(f"{server.url}/metrics").text
    overloaded = re.search(r'espnet_serve_errors_total\{code="overloaded"\} ([0-9.]+)', metrics)
    assert overloaded and float(overloaded.group(1)) == len(refused)
