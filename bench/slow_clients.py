"""A normal client's latency while many slow uploads (a slowloris) trickle in.

Serves the embedded model (``bentoml serve``, in model services: ``tests/server.py``) on
127.0.0.1, then times ``--requests`` sequential transcriptions of held-out clips from one
client (the openai SDK): first alone, then while ``--slow`` connections each send a
transcription's headers and form head and then one byte a second. Every answer is checked
against the clip's answer alone; the slow connections' answers (408 once the upload grace
has passed) are counted. Traffic goes only to 127.0.0.1, bounded in requests and time::

    .venv/bin/python bench/slow_clients.py --out bench/results/slow-clients.json
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import openai  # noqa: E402

from bench.loadgen import MODEL_NAME  # noqa: E402
from bench.report import emit  # noqa: E402
from espnet_serve.assets import load_heldout  # noqa: E402
from tests.server import serve_default_model  # noqa: E402

FORM_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'


def open_slow(port: int) -> socket.socket:
    """A transcription whose headers and form head are sent, and nothing more yet."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=60)
    conn.sendall(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        + FORM_HEAD
    )
    return conn


def timed(client: openai.OpenAI, clips: list, alone: dict[str, str]) -> dict:
    """Sequential transcriptions: latency percentiles and wrong answers."""
    latencies, wrong = [], 0
    for clip in clips:
        started = time.perf_counter()
        text = client.audio.transcriptions.create(
            model=MODEL_NAME, file=(clip.path.name, clip.path.read_bytes()), response_format="text"
        )
        latencies.append(time.perf_counter() - started)
        wrong += text.strip() != alone[clip.path.name]
    latencies.sort()
    return {
        "requests": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
        "wrong": wrong,
    }


def slow_answers(slow: list[socket.socket], wait_s: float) -> Counter[str]:
    """The status line each slow connection got before it was closed (or ``none``)."""
    deadline = time.monotonic() + wait_s
    statuses: Counter[str] = Counter()
    for conn in slow:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            first = conn.recv(65536)
        except OSError:
            first = b""
        statuses[first.split(b" ", 2)[1].decode() if first else "none"] += 1
    return statuses


def run(requests: int, slow_count: int) -> dict:
    clips = load_heldout(limit=requests)
    with tempfile.TemporaryDirectory() as home:
        server = serve_default_model(Path(home))
        try:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
            alone = {
                clip.path.name: client.audio.transcriptions.create(
                    model=MODEL_NAME, file=(clip.path.name, clip.path.read_bytes())
                ).text
                for clip in clips
            }
            result = {"alone": timed(client, clips, alone)}
            started = time.monotonic()
            slow = [open_slow(server.port) for _ in range(slow_count)]
            stop = threading.Event()

            def trickle() -> None:
                while not stop.wait(1.0):
                    for conn in slow:
                        with contextlib.suppress(OSError):
                            conn.send(b"\0")

            trickler = threading.Thread(target=trickle, daemon=True)
            trickler.start()
            try:
                result["with_slow_uploads"] = timed(client, clips, alone)
                result["with_slow_uploads"]["seconds_after_slow_connects"] = (
                    time.monotonic() - started
                )
                result["slow_uploads"] = {"count": slow_count, **slow_answers(slow, 30.0)}
                result["slow_uploads"]["cut_off_after_s"] = time.monotonic() - started
            finally:
                stop.set()
                trickler.join()
                for conn in slow:
                    conn.close()
        finally:
            server.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.requests, args.slow)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
