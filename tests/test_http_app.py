"""The API's HTTP behaviour in-process: routes, formats, limits and errors, in milliseconds.

The app is the one the BentoML service runs (``create_app``); a fake model client stands in
for the model service (control flow only: the real model and server are tested in
``test_service*.py``). It answers each clip with its length, so a test sees what reached it.
"""

from __future__ import annotations

import asyncio
import io

import aiohttp
import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from espnet_serve.serving.drain import InFlight
from espnet_serve.serving.http_app import create_app
from espnet_serve.serving.model_client import call_model
from espnet_serve.serving.schemas import ClipRequest, ClipResult, ModelInfo, Readiness
from espnet_serve.serving.settings import ServeSettings
from tests.crafted import CRAFTED_UPLOADS

MIN_SAMPLES = 960


class FakeModelClient:
    """Answers ``"<n> samples"``; or a chosen ``ClipResult``; or not ready; or raises."""

    def __init__(self) -> None:
        self.ready = Readiness(ready=True)
        self.result: ClipResult | None = None
        self.failures: list[BaseException] = []
        self.clips: list[ClipRequest] = []

    async def readiness(self) -> Readiness:
        return self.ready

    async def model_info(self) -> ModelInfo:
        return ModelInfo(
            name="fake", version="1", sha256="0" * 64, sample_rate=16000, min_samples=MIN_SAMPLES
        )

    async def transcribe(self, clip: ClipRequest) -> ClipResult:
        async def once() -> ClipResult:
            if self.failures:
                raise self.failures.pop(0)
            self.clips.append(clip)
            return self.result or ClipResult(text=f"{len(clip.audio)} samples")

        return await call_model(once, what="transcribe", retry_after_seconds=1)


def wav(seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone] * channels, axis=1), rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture()
def fake() -> FakeModelClient:
    return FakeModelClient()


@pytest.fixture()
def settings() -> ServeSettings:
    return ServeSettings(max_audio_bytes=400_000, max_audio_seconds=5, retry_after_seconds=4)


@pytest.fixture()
def client(settings: ServeSettings, fake: FakeModelClient) -> AsyncBridge:
    app = create_app(settings, in_flight=InFlight(), is_draining=lambda: False)
    app.state.model_client = fake
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return AsyncBridge(transport)


class AsyncBridge:
    """``post`` through an ASGI transport from synchronous tests."""

    def __init__(self, transport: httpx.ASGITransport) -> None:
        self.transport = transport

    def post(self, path: str, data: bytes, content_type: str = "audio/wav", **form: str):
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as c:
                return await c.post(path, files={"file": ("a", data, content_type)}, data=form)

        return asyncio.run(send())


def test_transcribe_resamples_and_mixes_down_before_the_model(client, fake):
    response = client.post("/transcribe", wav(1.0, rate=44100, channels=2))
    assert response.status_code == 200, response.text
    assert response.json() == {"text": "16000 samples", "duration_seconds": 1.0, "model": "fake"}
    (clip,) = fake.clips
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (16000,)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [("json", {"text": "8000 samples"}), ("text", "8000 samples")],
)
def test_openai_formats(client, response_format, expected):
    response = client.post(
        "/v1/audio/transcriptions", wav(0.5), model="m", response_format=response_format
    )
    assert response.status_code == 200
    assert (response.json() if response_format == "json" else response.text) == expected


def test_openai_verbose_json(client):
    body = client.post(
        "/v1/audio/transcriptions", wav(0.5), model="m", response_format="verbose_json"
    ).json()
    assert body["task"] == "transcribe" and body["duration"] == 0.5
    assert body["segments"][0]["start"] == 0.0 and body["segments"][0]["end"] == 0.5


@pytest.mark.parametrize(
    "form", [{"model": "m", "response_format": "xml"}, {"model": "m", "temperature": "3"}, {}]
)
def test_bad_parameters_are_422_json(client, form):
    response = client.post("/v1/audio/transcriptions", wav(), **form)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_parameters"


def test_limits_and_content_types(client):
    too_big = client.post("/transcribe", b"\0" * 500_000)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "audio_too_large"
    too_long = client.post("/transcribe", wav(6.0, rate=8000))
    assert too_long.status_code == 413 and "limit is 5 s" in too_long.json()["error"]["message"]
    not_audio = client.post("/transcribe", b"hello", content_type="text/plain")
    assert not_audio.status_code == 415
    too_short = client.post("/transcribe", wav(0.05))
    assert too_short.status_code == 400
    assert too_short.json()["error"]["message"] == (
        "audio too short: 800 samples (50 ms); the model needs at least 60 ms"
    )


@pytest.mark.parametrize("name", sorted(CRAFTED_UPLOADS))
def test_crafted_uploads_get_their_4xx(client, fake, name):
    data, status, code = CRAFTED_UPLOADS[name]
    response = client.post("/v1/audio/transcriptions", data, model="m")
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert not fake.clips


def test_a_clip_the_model_refuses_is_400_and_a_model_failure_is_500(client, fake):
    fake.result = ClipResult(error_kind="invalid_audio", error="too short", client_error=True)
    refused = client.post("/transcribe", wav())
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_audio"
    fake.result = ClipResult(error_kind="decode_failed", error="CUDA out of memory")
    failed = client.post("/transcribe", wav())
    error = failed.json()["error"]
    assert failed.status_code == 500 and error["code"] == "decode_failed"
    assert error["type"] == "server_error" and error["error_id"] in error["message"]


def test_model_not_ready_is_503_with_the_reason(client, fake):
    fake.ready = Readiness(ready=False, reason="warm-up failed: broken")
    response = client.post("/transcribe", wav())
    assert response.status_code == 503 and response.headers["retry-after"] == "4"
    assert "warm-up failed: broken" in response.json()["error"]["message"]


def test_a_dropped_connection_to_the_model_is_retried_once(client, fake):
    fake.failures = [aiohttp.ServerDisconnectedError()]
    assert client.post("/transcribe", wav()).status_code == 200
    fake.failures = [aiohttp.ClientOSError(), aiohttp.ClientOSError()]
    response = client.post("/transcribe", wav())
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"


def test_draining_refuses_with_503_before_reading_the_upload(settings, fake):
    app = create_app(settings, in_flight=InFlight(), is_draining=lambda: True)
    app.state.model_client = fake
    response = AsyncBridge(httpx.ASGITransport(app=app)).post("/transcribe", wav())
    assert response.status_code == 503 and response.json()["error"]["code"] == "draining"
    assert response.headers["connection"] == "close" and not fake.clips


def test_the_openai_sdk_talks_to_the_app(settings, fake):
    app = create_app(settings, in_flight=InFlight(), is_draining=lambda: False)
    app.state.model_client = fake

    async def ask() -> str:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t/v1")
        sdk = openai.AsyncOpenAI(base_url="http://t/v1", api_key="unused", http_client=http)
        result = await sdk.audio.transcriptions.create(model="m", file=("a.wav", wav(0.25)))
        return result.text

    assert asyncio.run(ask()) == "4000 samples"
