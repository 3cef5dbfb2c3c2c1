"""Realtime transcription: the recipe's long file streamed at real-time pace to ``/v1/realtime``.

Each session is the openai SDK's realtime client (``client.realtime.connect``, intent
``transcription``) with OpenAI's defaults: 24 kHz 16-bit PCM and server VAD. It appends the
long file (digit strings with pauses, exact word times: ``digits_recipe.longfile``) 100 ms at
a time, each chunk once it would have been recorded, and records when each server event
arrives. Two decoding modes, each a session's transcription model:

- ``vad``: the embedded model (``Speech2Text``); each utterance the VAD closes is decoded whole,
  so its deltas come at its end;
- ``streaming``: the embedded streaming model (``Speech2TextStreaming``); the utterance's audio
  reaches the model as it arrives, and its partial hypotheses are sent as deltas.

At 1 and 16 concurrent sessions (all on the same file, started together):

- **word latency**: for each word, from its end in the audio to the first transcription delta
  that holds it: the k-th word of an utterance (the utterance whose speech_started /
  speech_stopped span holds the word's middle) is held by the first delta after which the
  utterance's text has k words (or, if it never has, by ``.completed``); a word in no
  utterance is counted as missed;
- **completion latency**: from the end of each digit string to its utterance's ``.completed``;
- **WER** of the completed transcripts, joined, against the truth;
- **keeping up**: how late the sender's appends ran behind their schedule, and how long after
  the last audio the last transcript came.

Without ``--url`` it serves both embedded ASR models (``bentoml serve``, a fresh model store)
for the run. Writes ``<out>/realtime.json`` and ``<out>/realtime.png``. Traffic goes only to
127.0.0.1.

Example:
    python bench/realtime.py --out bench/results/realtime
    python bench/realtime.py --url http://127.0.0.1:3000 --minutes 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "recipes" / "digits")]

import editdistance  # noqa: E402
import numpy as np  # noqa: E402
import openai  # noqa: E402
import soundfile  # noqa: E402
import soxr  # noqa: E402
from digits_recipe.longfile import TimedString, write_long_file  # noqa: E402

from bench.report import emit  # noqa: E402
from espnet_serve.bundle.store import DEFAULT_MODEL_NAME, DEFAULT_STREAMING_NAME  # noqa: E402
from tests.server import serve_default_model  # noqa: E402

LEVELS = (1, 16)
CHUNK_SECONDS = 0.1
STREAM_RATE = 24000  # OpenAI's PCM rate
LONG_FILE_SEED = 5505
DRAIN_SECONDS = 30.0  # longest wait for the last transcripts after the audio ends
MODES = {"vad": DEFAULT_MODEL_NAME, "streaming": DEFAULT_STREAMING_NAME}  # mode: its model


@dataclass
class Item:
    """One utterance as the session saw it (times in seconds from the session's start)."""

    start: float = 0.0  # audio time
    end: float = 0.0  # audio time
    text: str = ""  # the deltas so far
    word_times: list[float] = field(default_factory=list)  # wall time the text got word k
    completed: float | None = None  # wall time
    transcript: str = ""

    def add_delta(self, delta: str, now: float) -> None:
        """Append a delta; note when the text first holds each new word."""
        self.text += delta
        count = len(self.text.split())
        self.word_times += [now] * (count - len(self.word_times))

    def word_time(self, index: int) -> float | None:
        """When the ``index``-th word of the utterance was first in a delta (else completed)."""
        return self.word_times[index] if index < len(self.word_times) else self.completed


@dataclass
class SessionLog:
    """What one session sent and received."""

    items: dict[str, Item] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    send_lag: list[float] = field(default_factory=list)
    audio_end: float = 0.0  # wall time the last chunk was due
    errors: list[str] = field(default_factory=list)


def pcm24k(path: Path) -> bytes:
    """The file as 16-bit PCM at 24 kHz (what an OpenAI client sends)."""
    audio, rate = soundfile.read(path, dtype="float32")
    resampled = soxr.resample(audio, rate, STREAM_RATE, quality="HQ")
    return (np.clip(resampled, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


async def one_session(url: str, stream: bytes, api_key: str, model: str) -> SessionLog:
    """Stream ``stream`` at real-time pace to ``model``; log every utterance's events."""
    log = SessionLog()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
    chunk = int(CHUNK_SECONDS * STREAM_RATE) * 2
    chunks = [stream[at : at + chunk] for at in range(0, len(stream), chunk)]
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created", created
        transcription = {"input": {"transcription": {"model": model}}}
        await conn.session.update(session={"type": "transcription", "audio": transcription})
        began = time.monotonic()

        async def receive() -> None:
            async for event in conn:
                now = time.monotonic() - began
                kind = event.type
                if kind == "input_audio_buffer.speech_started":
                    log.items[event.item_id] = Item(start=event.audio_start_ms / 1000)
                    log.order.append(event.item_id)
                elif kind == "input_audio_buffer.speech_stopped":
                    log.items[event.item_id].end = event.audio_end_ms / 1000
                elif kind.endswith("transcription.delta"):
                    log.items.setdefault(event.item_id, Item()).add_delta(event.delta, now)
                elif kind.endswith("transcription.completed"):
                    item = log.items.setdefault(event.item_id, Item())
                    item.completed, item.transcript = now, event.transcript
                elif kind in ("error", "conversation.item.input_audio_transcription.failed"):
                    log.errors.append(str(event))

        receiver = asyncio.create_task(receive())
        for index, data in enumerate(chunks):
            due = began + (index + 1) * CHUNK_SECONDS  # once the chunk would have been recorded
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            log.send_lag.append(time.monotonic() - due)
            await conn.input_audio_buffer.append(audio=base64.b64encode(data).decode())
        log.audio_end = len(chunks) * CHUNK_SECONDS
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and any(
            log.items[i].completed is None for i in log.order
        ):
            await asyncio.sleep(0.05)
        receiver.cancel()
    return log


def measure(logs: list[SessionLog], truth: list[TimedString]) -> dict[str, Any]:
    """Latencies, WER and pace of ``logs`` against the file's truth."""
    word_latency, completion_latency, missed = [], [], 0
    word_errors = reference_words = 0
    reference = " ".join(s.text for s in truth).split()
    for log in logs:
        spans = [(i, log.items[i]) for i in log.order]
        held: dict[str, int] = {}  # utterance: its words seen so far
        for string in truth:
            for word in string.words:
                middle = (word.start + word.end) / 2
                holder = next((i for i, it in spans if it.start <= middle <= it.end), None)
                index = held[holder] = held.get(holder, -1) + 1
                at = None if holder is None else log.items[holder].word_time(index)
                if at is None:
                    missed += 1
                    continue
                word_latency.append(at - word.end)
            holders = [it for _, it in spans if it.start < string.end and it.end > string.start]
            if holders and holders[-1].completed is not None:
                completion_latency.append(holders[-1].completed - string.end)
        hypothesis = " ".join(log.items[i].transcript for i in log.order).split()
        word_errors += editdistance.eval(hypothesis, reference)
        reference_words += len(reference)
    last = [
        max((it.completed or np.inf) for it in log.items.values()) - log.audio_end
        for log in logs
        if log.items
    ]
    return {
        "sessions": len(logs),
        "words": len(word_latency) + missed,
        "words_missed": missed,
        "word_latency_s": quantiles(word_latency),
        "completion_latency_s": quantiles(completion_latency),
        "wer": round(word_errors / max(1, reference_words), 5),
        "word_errors": word_errors,
        "reference_words": reference_words,
        "send_lag_max_s": round(max(max(log.send_lag) for log in logs), 4),
        "last_transcript_after_audio_end_s": round(max(last), 3) if last else None,
        "errors": [e for log in logs for e in log.errors][:10],
        "word_latency_samples_s": [round(v, 4) for v in word_latency],
    }


def quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "median": None, "p95": None, "max": None}
    array = np.asarray(values)
    return {
        "count": len(values),
        "median": round(float(np.median(array)), 4),
        "p95": round(float(np.percentile(array, 95)), 4),
        "max": round(float(array.max()), 4),
    }


async def level(
    url: str, stream: bytes, sessions: int, api_key: str, model: str
) -> list[SessionLog]:
    return list(
        await asyncio.gather(*(one_session(url, stream, api_key, model) for _ in range(sessions)))
    )


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for row in document["levels"]:
        values = np.sort(row["word_latency_samples_s"])
        if len(values):
            axis.plot(
                values,
                np.arange(1, len(values) + 1) / len(values),
                label=f"{row['mode']}, {row['sessions']}",
            )
    axis.set_xlabel("word end -> first delta holding it (s)")
    axis.set_ylabel("fraction of words")
    axis.set_title("Realtime transcription, server VAD: word latency")
    axis.legend(title="mode, sessions")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="directory for realtime.json/png")
    parser.add_argument("--url", help="a running server (default: serve the embedded model)")
    parser.add_argument("--api-key", default="unused")
    parser.add_argument("--minutes", type=float, default=2.0, help="length of the long file")
    parser.add_argument("--levels", type=int, nargs="*", default=list(LEVELS))
    parser.add_argument("--modes", nargs="*", choices=list(MODES), default=list(MODES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.flac"
        truth = write_long_file(path, minutes=args.minutes, seed=LONG_FILE_SEED)
        stream = pcm24k(path)
        models = ",".join(f"{name}:latest" for name in MODES.values())
        server = None if args.url else serve_default_model(Path(tmp) / "home", model_tag=models)
        url = args.url or server.url
        try:
            rows = []
            for mode in args.modes:
                for sessions in args.levels:
                    logs = asyncio.run(level(url, stream, sessions, args.api_key, MODES[mode]))
                    rows.append({"mode": mode, "model": MODES[mode], **measure(logs, truth)})
        finally:
            if server is not None:
                server.stop()
    document = {
        "label": f"realtime transcription, embedded models, server VAD, {args.minutes:g}-minute "
        f"long file at real-time pace, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "levels": rows,
    }
    emit(document, args.out / "realtime.json" if args.out else None)
    if args.out:
        plot(document, args.out / "realtime.png")


if __name__ == "__main__":
    main()
