"""A bounded async load generator for a transcription server on this machine.

One process, one event loop, ``httpx.AsyncClient``: it steals as little CPU
from the server as a Python client can. Every request is bounded (count and
timeout) and goes to the URL given, which tests and benchmarks keep on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

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


async def send(client: httpx.AsyncClient, url: str, clip: Clip) -> Outcome:
    """POST one clip to ``url`` (the OpenAI route's form) and record the answer."""
    started = time.perf_counter()
    try:
        response = await client.post(
            url,
            files={"file": (clip.name, clip.data, clip.content_type)},
            data={"model": MODEL_NAME, "response_format": "json"},
        )
    except httpx.HTTPError as exc:
        return Outcome(clip, None, None, time.perf_counter() - started, error=repr(exc))
    latency = time.perf_counter() - started
    content_type = response.headers.get("content-type", "")
    text = code = None
    if content_type.startswith("application/json"):
        body = response.json()
        text = body.get("text")
        code = (body.get("error") or {}).get("code")
    return Outcome(
        clip,
        response.status_code,
        text,
        latency,
        error=None if response.status_code == 200 else response.text[:300],
        error_code=code,
        retry_after=response.headers.get("retry-after"),
        content_type=content_type,
    )


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
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

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
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
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
