"""A guarded real ``bentoml serve``: API keys, the admission limit, slow uploads.

The keys guard BentoML's own routes too (``/metrics`` here, with ``protect_metrics``), while
the probes answer without a key, as the kubelet calls them; /v1/models, model names and
languages behind them. Past ``ESPNET_SERVE_MAX_PENDING_REQUESTS`` (one API worker, two
pending slots) a burst's excess is refused at once with 503, ``Retry-After`` and a JSON body,
the admitted requests are transcribed, and the server keeps serving. 200 slowloris uploads
hold no admission slot: a normal client is answered while they trickle, and each of them is
cut off with 408 after the upload grace. One server for all.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from espnet_serve.assets import HeldoutClip, load_heldout
from tests.server import BentoServer, serve_default_model

pytestmark = pytest.mark.slow

KEY = "test-key-8c1f"
AUTHORIZED = {"Authorization": f"Bearer {KEY}"}
PENDING_SLOTS = 2
BURST = 16
SLOWLORIS = 200
UPLOAD_GRACE_S = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> BentoServer:
    server = serve_default_model(
        tmp_path_factory.mktemp("bentoml_home"),
        api_keys=KEY,
        protect_metrics="true",
        api_workers="1",
        max_pending_requests=str(PENDING_SLOTS),
        retry_after_seconds="3",
        upload_grace_seconds=str(UPLOAD_GRACE_S),
    )
    yield server
    server.stop()


def sdk(server: BentoServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_probes_answer_without_a_key_and_metrics_need_one(server: BentoServer):
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    refused = httpx.get(f"{server.url}/metrics")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    allowed = httpx.get(f"{server.url}/metrics", headers=AUTHORIZED)
    assert allowed.status_code == 200 and "espnet_serve_model_info" in allowed.text


def test_the_sdk_with_and_without_the_key(server: BentoServer):
    clip = load_heldout(limit=1)[0]
    (model,) = sdk(server, KEY).models.list().data
    assert model.id.startswith("espnet-digits-asr:")
    assert sdk(server, KEY).models.retrieve("whisper-1").id == model.id
    with clip.path.open("rb") as audio:
        verbose = sdk(server, KEY).audio.transcriptions.create(
            model=model.id, file=audio, response_format="verbose_json"
        )
    assert verbose.text == clip.text and verbose.language == "english"
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "wrong-key").models.list()
    with pytest.raises(openai.NotFoundError):
        sdk(server, KEY).models.retrieve("nonexistent-model")


def test_a_language_the_model_does_not_take_is_400(server: BentoServer):
    clip = load_heldout(limit=1)[0]
    with clip.path.open("rb") as audio, pytest.raises(openai.BadRequestError) as raised:
        sdk(server, KEY).audio.transcriptions.create(
            model="espnet-digits-asr", file=audio, language="de"
        )
    assert raised.value.body["code"] == "unsupported_language"


def test_burst_past_the_pending_bound_is_refused_early(server: BentoServer):
    clip: HeldoutClip = load_heldout(limit=1)[0]
    payload = clip.path.read_bytes()
    start = threading.Barrier(BURST)

    def send(_: int) -> httpx.Response:
        start.wait()
        return httpx.post(
            f"{server.url}/transcribe",
            files={"file": (clip.path.name, payload, "audio/flac")},
            headers=AUTHORIZED,
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
        headers=AUTHORIZED,
        timeout=120,
    )
    assert after.status_code == 200 and after.json()["text"] == clip.text
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTHORIZED).text
    overloaded = re.search(r'espnet_serve_errors_total\{code="overloaded"\} ([0-9.]+)', metrics)
    assert overloaded and float(overloaded.group(1)) == len(refused)


def slowloris(server: BentoServer) -> socket.socket:
    """A connection that sends a transcription's headers and form head, then one byte a second."""
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'
    conn.sendall(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {KEY}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        + head
    )
    return conn


def read_until_closed(conn: socket.socket) -> bytes:
    """All the server sends before it closes the connection.

    A slow client that keeps sending after the server answered and closed gets a reset for
    those bytes (the kernel's answer to data sent to a closed socket): what arrived before
    it is the answer. A reset before any answer is a failure.
    """
    received = b""
    try:
        while chunk := conn.recv(65536):
            received += chunk
    except ConnectionResetError:
        if not received:
            raise
    return received


def test_slowloris_uploads_hold_no_slot_and_are_cut_off_with_408(server: BentoServer):
    clip = load_heldout(limit=1)[0]
    started = time.monotonic()
    slow = [slowloris(server) for _ in range(SLOWLORIS)]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for conn in slow:
                with contextlib.suppress(OSError):  # once cut off
                    conn.send(b"\0")

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(1.0)  # every slow upload is in (2 admission slots, 200 of them)
        with clip.path.open("rb") as audio:
            answer = sdk(server, KEY).audio.transcriptions.create(
                model="whisper-1", file=audio, response_format="text"
            )
        assert answer.strip() == clip.text
        # Answered while every slow upload still held its connection (nothing sent to them yet).
        readable, _, _ = select.select(slow, [], [], 0)
        assert readable == []
        answers = []
        for conn in slow:
            conn.settimeout(max(1.0, started + UPLOAD_GRACE_S + 20 - time.monotonic()))
            answers.append(read_until_closed(conn))
    finally:
        stop.set()
        trickler.join()
        for conn in slow:
            conn.close()
    statuses = [answer.split(b" ", 2)[1] for answer in answers]
    assert statuses == [b"408"] * SLOWLORIS, set(statuses)
    assert all(b'"upload_too_slow"' in answer for answer in answers)
    assert all(b"connection: close" in answer.lower() for answer in answers)
