"""A bounded async load generator for a transcription server on this machine.

One process, one event loop, ``aiohttp``: it steals as little CPU from the server as a
Python client can. httpx's ``AsyncClient`` was measured at 3-4 ms of CPU per request at 32
connections and 16.5 ms at 128 (a whole core, more than the API worker's 6.8 ms: the
benchmark measured its own client), aiohttp at 0.6-0.8 ms (``bench/profile_serve.py``).
Every request is bounded (count and timeout) and goes to the URL given, which tests and
benchmarks keep on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

OPENAI_ROUTE = "/v1/audio/transcriptions"
MODEL_NAME = "espnet-digits-asr"  # the embedded default model


@dataclass(frozen=True)
class Clip:
    """One upload: file name, bytes, content type and the transcript it gets alone."""

    name: str
    data: bytes
    expected: str = ""
    content_type: str = "audio/flac"


@dataclass
class Outcome:
    """What one request got back."""

    clip: Clip
    status: int | None
    text: str | None
    latency_seconds: float
    error: str | None = None
    error_code: str | None = None
    retry_after: str | None = None
    content_type: str = ""

    @property
    def ok(self) -> bool:
        """200 with the transcript this clip gets alone."""
        return self.status == 200 and self.text == self.clip.expected

    @property
    def refused_at_connect(self) -> bool:
        """Whether the connection was refused (nothing sent: safe to send elsewhere)."""
        return self.status is None and (self.error or "").startswith("ClientConnectorError")


async def send(session: aiohttp.ClientSession, url: str, clip: Clip) -> Outcome:
    """POST one clip to ``url`` (the OpenAI route's form) and record the answer."""
    started = time.perf_counter()
    form = aiohttp.FormData()
    form.add_field("file", clip.data, filename=clip.name, content_type=clip.content_type)
    form.add_field("model", MODEL_NAME)
    form.add_field("response_format", "json")
    try:
        async with session.post(url, data=form) as response:
            body = await response.read()
            status, headers = response.status, response.headers
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(clip, None, None, time.perf_counter() - started, error=repr(exc))
    latency = time.perf_counter() - started
    content_type = headers.get("content-type", "")
    text = code = None
    if content_type.startswith("application/json"):
        document = json.loads(body)
        text = document.get("text")
        code = (document.get("error") or {}).get("code")
    return Outcome(
        clip,
        status,
        text,
        latency,
        error=None if status == 200 else body[:300].decode(errors="replace"),
        error_code=code,
        retry_after=headers.get("retry-after"),
        content_type=content_type,
    )


def session(connections: int, timeout: float, *, keep_alive: bool = True) -> aiohttp.ClientSession:
    """A client session of at most ``connections`` connections, each request ``timeout`` s."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=not keep_alive)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


async def closed_loop(
    url: str,
    clips: Sequence[Clip],
    *,
    concurrency: int,
    requests: int,
    timeout: float = 120.0,
    stop: asyncio.Event | None = None,
) -> list[Outcome]:
    """``concurrency`` clients, each sending its next clip as soon as the last is answered.

    Args:
        url: Full URL of the route.
        clips: Sent round-robin.
        concurrency: Clients in flight at once.
        requests: Total requests (the bound).
        timeout: Per-request timeout in seconds.
        stop: When set, clients send nothing new (those in flight finish).

    Returns:
        list[Outcome]: One per request sent, in completion order.
    """
    outcomes: list[Outcome] = []
    next_index = 0

    async with session(concurrency, timeout) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests and not (stop and stop.is_set()):
                clip = clips[next_index % len(clips)]
                next_index += 1
                outcomes.append(await send(client, url, clip))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


async def burst(url: str, clips: Sequence[Clip], *, requests: int, timeout: float = 120.0):
    """``requests`` requests sent at once, each on its own connection."""
    async with session(requests, timeout, keep_alive=False) as client:
        return await asyncio.gather(
            *(send(client, url, clips[i % len(clips)]) for i in range(requests))
        )


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]
