"""A soak with faults: looping clients while the model worker is killed and an API worker restarts.

Serves the embedded model (``bentoml serve``, two API workers) on 127.0.0.1; ``--clients``
aiohttp clients send held-out clips in a loop for ``--minutes``. Every ``--kill-every`` seconds
the model worker is killed (``kill -9``, as the OOM killer would); once, halfway, one API worker
is sent SIGTERM (it drains, exits and BentoML's arbiter starts another). Each answer is checked:
200 with the transcript the clip gets alone, or 503 with ``Retry-After``; anything else
(a 500, a reset, a wrong transcript) is a failure. Counts are reported per status and per
fault (the window from a fault to the next). Bounded in time and on loopback only::

    .venv/bin/python bench/soak.py --out bench/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.loadgen import OPENAI_ROUTE, Clip, Outcome, send, session  # noqa: E402
from bench.report import emit  # noqa: E402
from espnet_serve.assets import load_heldout  # noqa: E402
from tests.server import serve_default_model, service_workers  # noqa: E402


def verdict(outcome: Outcome) -> str:
    """``200``, ``503`` (with Retry-After), or what went wrong."""
    if outcome.status == 200:
        return "200" if outcome.ok else "200 wrong transcript"
    if outcome.status == 503:
        return "503" if outcome.retry_after else "503 without Retry-After"
    if outcome.status is None:
        return f"no answer: {(outcome.error or '')[:60]}"
    return f"{outcome.status} {outcome.error_code}"


async def soak(url: str, clips: list[Clip], server, args: argparse.Namespace) -> dict:
    faults: list[tuple[float, str]] = [(time.monotonic(), "start")]
    answers: list[tuple[float, str]] = []
    end = time.monotonic() + 60 * args.minutes

    async def client(index: int, http) -> None:
        sent = index
        while time.monotonic() < end:
            outcome = await send(http, url + OPENAI_ROUTE, clips[sent % len(clips)])
            answers.append((time.monotonic(), verdict(outcome)))
            sent += args.clients
            if outcome.status == 503:
                await asyncio.sleep(float(outcome.retry_after or 1))

    async def inject() -> None:
        api_restarted = False
        while True:
            await asyncio.sleep(args.kill_every)
            if time.monotonic() >= end - 5:
                return
            if not api_restarted and time.monotonic() >= end - 30 * args.minutes:
                api_restarted = True
                (worker, *_) = service_workers(server, "ApiService")
                os.kill(worker.pid, signal.SIGTERM)
                faults.append((time.monotonic(), f"API worker {worker.pid} SIGTERM"))
                await asyncio.sleep(args.kill_every / 2)
            (model, *_) = service_workers(server, "ModelService")
            os.kill(model.pid, signal.SIGKILL)
            faults.append((time.monotonic(), f"model worker {model.pid} kill -9"))

    async with session(args.clients, timeout=180) as http:
        injector = asyncio.create_task(inject())
        await asyncio.gather(*(client(i, http) for i in range(args.clients)))
        injector.cancel()
    by_fault: dict[str, Counter[str]] = defaultdict(Counter)
    for at, answer in answers:
        window = max((f for f in faults if f[0] <= at), key=lambda f: f[0])
        by_fault[f"{window[0] - faults[0][0]:6.1f} s {window[1]}"][answer] += 1
    return {
        "minutes": args.minutes,
        "clients": args.clients,
        "total": dict(Counter(answer for _, answer in answers)),
        "by_fault": {window: dict(counts) for window, counts in sorted(by_fault.items())},
    }


async def each_alone(url: str, clips: list[Clip]) -> list[Clip]:
    async with session(1, timeout=60) as http:
        outcomes = [await send(http, url + OPENAI_ROUTE, clip) for clip in clips]
    assert all(o.status == 200 for o in outcomes), [o.error for o in outcomes][:3]
    return [Clip(o.clip.name, o.clip.data, o.text or "") for o in outcomes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--kill-every", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    raw = [Clip(c.path.name, c.path.read_bytes(), c.text) for c in load_heldout(limit=48)]
    with tempfile.TemporaryDirectory() as home:
        server = serve_default_model(Path(home), api_workers="2")
        try:
            clips = asyncio.run(each_alone(server.url, raw))
            result = asyncio.run(soak(server.url, clips, server, args))
        finally:
            server.stop()
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
