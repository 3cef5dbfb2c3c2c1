"""Limits on an upload while it arrives, in-process through the served app's real form parsing.

Too slow or stalled (a slowloris): 408 and the connection closed; past the worker's bytes held:
503 with ``Retry-After``, and the bytes are given back when a request ends; too large without
a declared length: 413. Each answer is the JSON error body, not FastAPI's bare 400 for a body
it failed to parse. The real server under 200 slow connections: ``test_service_guards.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from espnet_serve.serving.settings import ServeSettings
from tests.fakes import FakeModelClient
from tests.inprocess import served_app, wav

BOUNDARY = "upload-limits-test"
CLIP = wav(0.5)  # 16,044 bytes


def multipart(audio: bytes) -> tuple[bytes, bytes]:
    """The form's head (up to the file's bytes) and tail around ``audio``."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    return head, f"\r\n--{BOUNDARY}--\r\n".encode()


async def paced(audio: bytes, chunk: int, pause: float, hold: asyncio.Event | None = None):
    """The multipart body of ``audio`` in ``chunk``-byte pieces, ``pause`` s apart."""
    head, tail = multipart(audio)
    yield head
    for start in range(0, len(audio), chunk):
        if hold is not None and start >= len(audio) // 2:
            await hold.wait()
        yield audio[start : start + chunk]
        await asyncio.sleep(pause)
    yield tail


async def post(client: httpx.AsyncClient, body: AsyncIterator[bytes]) -> httpx.Response:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await client.post("/transcribe", content=body, headers=headers)


def run(settings: ServeSettings, scenario) -> object:
    app = served_app(settings, FakeModelClient())

    async def main() -> object:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await scenario(client)

    return asyncio.run(main())


PACE = {"upload_grace_seconds": 0.3, "min_upload_bytes_per_second": 4000}


@pytest.mark.parametrize(
    ("chunk", "pause"),
    [(1, 0.02), (2000, 5.0)],
    ids=["trickle of single bytes", "stalled after the first chunk"],
)
def test_an_upload_behind_the_pace_is_408_and_closed(chunk: int, pause: float):
    response = run(ServeSettings(**PACE), lambda client: post(client, paced(CLIP, chunk, pause)))
    assert response.status_code == 408, response.text
    error = response.json()["error"]
    assert error["code"] == "upload_too_slow" and "4000 bytes per second" in error["message"]
    assert response.headers["connection"] == "close"


def test_an_upload_at_the_pace_is_transcribed():
    # 4,000 bytes every 0.1 s (40 kB/s) for 0.4 s: past the grace, above the pace.
    response = run(ServeSettings(**PACE), lambda client: post(client, paced(CLIP, 4000, 0.1)))
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "8000 samples"


def test_bytes_held_past_the_cap_are_503_and_given_back():
    # One clip fits under the cap (plus the multipart allowance); a second at once does not.
    settings = ServeSettings(max_audio_bytes=200_000, max_upload_bytes_held=200_000)
    big = wav(6.0)  # 192,044 bytes

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        hold = asyncio.Event()
        first = asyncio.create_task(post(client, paced(big, 8000, 0.0, hold)))
        await asyncio.sleep(0.1)  # the first holds half its bytes
        second = await post(client, paced(big, 8000, 0.0))
        hold.set()
        first_done = await first
        third = await post(client, paced(big, 8000, 0.0))  # the first's bytes given back
        return [first_done, second, third]

    first, second, third = run(settings, scenario)
    assert first.status_code == 200 and third.status_code == 200, (first.text, third.text)
    assert second.status_code == 503 and second.json()["error"]["code"] == "overloaded"
    assert second.headers["retry-after"] == "1" and second.headers["connection"] == "close"


def test_an_upload_past_the_size_limit_without_a_length_is_413():
    settings = ServeSettings(max_audio_bytes=20_000, max_upload_bytes_held=20_000)
    response = run(settings, lambda client: post(client, paced(wav(3.0), 8000, 0.0)))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "audio_too_large"
