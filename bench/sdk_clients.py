"""Many concurrent openai-SDK clients against a running server, each answer checked.

Start the server first (``make serve``), then::

    .venv/bin/python bench/sdk_clients.py                 # 64, 128 and 200 clients
    .venv/bin/python bench/sdk_clients.py --levels 200:10000   # the keep-alive count

Every clip is first sent alone; then each level sends its requests from that many
concurrent clients (one process, ``openai.AsyncOpenAI``), and counts answers by
status and transcripts that differ from the clip's answer alone. Traffic goes only to
``--url`` (127.0.0.1 by default), and every level is bounded in requests.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

from bench.loadgen import MODEL_NAME  # noqa: E402
from espnet_serve.assets import load_heldout  # noqa: E402

LEVELS = ((64, 384), (128, 512), (200, 600))


async def transcribe(client: openai.AsyncOpenAI, name: str, data: bytes) -> str:
    result = await client.audio.transcriptions.create(model=MODEL_NAME, file=(name, data))
    return result.text


async def level(
    client: openai.AsyncOpenAI,
    clips: list[tuple[str, bytes]],
    alone: dict[str, str],
    concurrency: int,
    total: int,
) -> tuple[collections.Counter[str], int]:
    """``total`` requests from ``concurrency`` clients: answers by status, wrong transcripts."""
    statuses: collections.Counter[str] = collections.Counter()
    wrong = sent = 0

    async def worker() -> None:
        nonlocal wrong, sent
        while sent < total:
            name, data = clips[sent % len(clips)]
            sent += 1
            try:
                wrong += await transcribe(client, name, data) != alone[name]
                statuses["200"] += 1
            except openai.APIStatusError as exc:
                statuses[str(exc.status_code)] += 1
            except openai.APIConnectionError as exc:
                statuses[f"connection error ({exc.__cause__!r})"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, wrong


def parse_level(text: str) -> tuple[int, int]:
    """``CLIENTS:REQUESTS`` as two positive integers."""
    clients, _, requests = text.partition(":")
    level = int(clients), int(requests)
    if min(level) < 1:
        raise argparse.ArgumentTypeError(f"not CLIENTS:REQUESTS with both > 0: {text!r}")
    return level


async def run(url: str, levels: list[tuple[int, int]]) -> None:
    clips = [(clip.path.name, clip.path.read_bytes()) for clip in load_heldout(limit=64)]
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=256)) as http:
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, http_client=http)
        alone = {name: await transcribe(client, name, data) for name, data in clips}
        for concurrency, total in levels:
            started = time.perf_counter()
            statuses, wrong = await level(client, clips, alone, concurrency, total)
            print(
                f"{concurrency} clients, {total} requests: {dict(statuses)}, "
                f"wrong transcripts {wrong}, {time.perf_counter() - started:.1f} s",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:3000/v1")
    parser.add_argument(
        "--levels",
        nargs="+",
        type=parse_level,
        default=list(LEVELS),
        help="CLIENTS:REQUESTS for each level (default: 64:384 128:512 200:600)",
    )
    args = parser.parse_args()
    asyncio.run(run(args.url, args.levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
