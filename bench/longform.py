"""Long recordings: accuracy and times against exact truth, memory, throughput, streaming.

One run, one heavy process at a time:

1. Writes the synthetic files (``digits_recipe.longfile``: held-out espeak-ng voices,
   digit strings with pauses, each word's start and end): ``--minutes`` (default 10,
   seed 4404) and ``--long-minutes`` (default 60, seed 6606).
2. Library (``Transcriber``, batched backend, batch 16) on the short file with
   word times: WER and time errors (segment and word start/end, median and p95), beside
   the short-clip held-out WER and the 16-clip batched throughput on the same session.
3. Server (``bentoml serve`` of the embedded model, default settings): the short and the
   long file through the openai SDK (``verbose_json`` with word times), the RSS of each
   process sampled every 0.2 s during each request (its peak per file), audio-s/s, and the
   time to the first ``transcript.text.delta`` of ``stream=True`` on the short file. The short
   file is sent twice more before the long one, to see whether memory settles.
4. ``--compare-vad``: Silero (ours), webrtcvad and an energy threshold on the short file,
   each region list padded and decoded the same way: regions, matched strings, WER.

Writes ``results/<label>.json`` and ``.png``.

    python bench/longform.py --compare-vad
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "recipes" / "digits")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import editdistance  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from digits_recipe.longfile import read_truth, write_long_file  # noqa: E402
from digits_recipe.longscore import score  # noqa: E402

from espnet_serve import InferenceSession  # noqa: E402
from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE, load_heldout  # noqa: E402
from espnet_serve.audio.ingest import decode_audio  # noqa: E402
from espnet_serve.audio.segmenter import AudioSegment, SegmentationOptions  # noqa: E402
from espnet_serve.pipeline.transcriber import Transcriber  # noqa: E402
from tests.server import serve_default_model  # noqa: E402

SAMPLE_RATE = 16000
BATCH = 16
MODEL = "espnet-digits-asr"
SHORT_SEED, LONG_SEED = 4404, 6606
RSS_INTERVAL_S = 0.2
VAD_FRAME_S = 0.03
SHORT_REPEATS = 2  # the short file again: does memory settle or keep growing?


def long_file(work: Path, minutes: float, seed: int) -> Path:
    """The synthetic file of ``minutes`` (written once into ``work``)."""
    path = work / f"long-{minutes:g}min-seed{seed}.flac"
    if not path.exists():
        started = time.perf_counter()
        write_long_file(path, minutes=minutes, seed=seed)
        print(f"wrote {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def load_session(cache: Path) -> InferenceSession:
    return InferenceSession.from_pretrained(
        str(DEFAULT_MODEL_ARCHIVE),
        trust_user_code=True,
        batched_backend=True,
        prefer_model_batch=True,
        downloader_kwargs={"cachedir": str(cache)},
    )


def library(session: InferenceSession, path: Path) -> dict:
    """The short file through the library, and the held-out set in batches of 16."""
    transcriber = Transcriber(session, batch_size=BATCH)
    started = time.perf_counter()
    transcript = transcriber.transcribe(path, word_timestamps=True)
    seconds = time.perf_counter() - started
    result = score(transcript.segments, read_truth(path)).summary()
    clips = load_heldout()
    waves = [clip.read_audio(SAMPLE_RATE) for clip in clips]
    started = time.perf_counter()
    texts = []
    for first in range(0, len(waves), BATCH):
        texts += [o["text"] for o in session.forward_batch(waves[first : first + BATCH])]
    batched_seconds = time.perf_counter() - started
    errors = sum(
        editdistance.eval(t.split(), c.text.split()) for t, c in zip(texts, clips, strict=True)
    )
    words = sum(len(c.text.split()) for c in clips)
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    return {
        "file_seconds": transcript.duration,
        "wall_s": round(seconds, 2),
        "audio_s_per_s": round(transcript.duration / seconds, 1),
        **result,
        "heldout_short_clips": {
            "clips": len(clips),
            "wer": round(errors / words, 5),
            "word_errors": errors,
            "reference_words": words,
            "batch": BATCH,
            "audio_s_per_s": round(audio / batched_seconds, 1),
        },
    }


class RssSampler:
    """Peak RSS of every process of a server tree, sampled while it runs."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def label(process: psutil.Process) -> str:
        command = process.cmdline()
        if "--service-name" in command:
            return f"{command[command.index('--service-name') + 1]} (pid {process.pid})"
        return f"{process.name()} (pid {process.pid})"

    def _run(self) -> None:
        while not self._stop.is_set():
            for process in [self.root, *self.root.children(recursive=True)]:
                try:
                    key, rss = self.label(process), process.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[key] = max(self.peaks.get(key, 0), rss)
            self._stop.wait(RSS_INTERVAL_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def megabytes(self) -> dict[str, float]:
        return {key: round(rss / 2**20, 1) for key, rss in sorted(self.peaks.items())}


def served_file(client, server, path: Path) -> dict:
    """One file through the SDK (verbose_json, word times) with each process's peak RSS."""
    with RssSampler(server.process.pid) as rss, path.open("rb") as audio:
        started = time.perf_counter()
        verbose = client.audio.transcriptions.create(
            model=MODEL,
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
        seconds = time.perf_counter() - started
    segments = [
        SimpleNamespace(
            start=s.start,
            end=s.end,
            text=s.text,
            words=[w for w in verbose.words if s.start - 0.25 <= w.start < s.end + 0.1],
        )
        for s in verbose.segments
    ]
    return {
        "file_seconds": verbose.duration,
        "bytes": path.stat().st_size,
        "wall_s": round(seconds, 2),
        "audio_s_per_s": round(verbose.duration / seconds, 1),
        "peak_rss_mb": rss.megabytes(),
        **score(segments, read_truth(path)).summary(),
    }


def first_delta(client, path: Path) -> dict:
    """Time to the first delta and to the end of ``stream=True``."""
    started = time.perf_counter()
    first = None
    deltas = 0
    with path.open("rb") as audio:
        for event in client.audio.transcriptions.create(model=MODEL, file=audio, stream=True):
            if event.type == "transcript.text.delta":
                deltas += 1
                first = first or time.perf_counter() - started
    return {
        "first_delta_s": round(first, 3),
        "done_s": round(time.perf_counter() - started, 2),
        "deltas": deltas,
    }


def served(work: Path, short: Path, long: Path) -> dict:
    import openai

    home = Path(tempfile.mkdtemp(prefix="bench-longform-", dir=work))
    server = serve_default_model(home)
    try:
        client = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=7200
        )
        result = {"short": served_file(client, server, short)}
        result["short_again"] = [
            served_file(client, server, short)["peak_rss_mb"] for _ in range(SHORT_REPEATS)
        ]
        result["stream_short"] = first_delta(client, short)
        result["long"] = served_file(client, server, long)
        return result
    finally:
        server.stop()


def regions_to_segments(
    regions: list[tuple[float, float]], audio: np.ndarray, options: SegmentationOptions
) -> list[AudioSegment]:
    """Cut ``audio`` at ``regions`` (seconds) with our padding and length cap."""
    segments = []
    for start, end in regions:
        pieces = max(1, int(np.ceil((end - start) / options.max_segment_seconds)))
        bounds = np.linspace(start, end, pieces + 1)
        for a, b in itertools.pairwise(bounds):
            lead = max(0.0, a - options.pad_before_seconds)
            tail = b + options.pad_after_seconds
            samples = audio[round(lead * SAMPLE_RATE) : round(tail * SAMPLE_RATE)]
            segments.append(AudioSegment(len(segments), a, b, lead, samples, 0.0))
    return segments


def frame_regions(flags: np.ndarray, options: SegmentationOptions) -> list[tuple[float, float]]:
    """Speech frames to regions: gaps under ``min_silence`` bridged, short regions dropped."""
    regions: list[list[float]] = []
    for index in np.flatnonzero(flags):
        start = index * VAD_FRAME_S
        if regions and start - regions[-1][1] < options.min_silence_seconds:
            regions[-1][1] = start + VAD_FRAME_S
        else:
            regions.append([start, start + VAD_FRAME_S])
    return [(a, b) for a, b in regions if b - a >= options.min_speech_seconds]


def frames(audio: np.ndarray) -> np.ndarray:
    size = round(VAD_FRAME_S * SAMPLE_RATE)
    count = len(audio) // size
    return audio[: count * size].reshape(count, size)


def energy_flags(audio: np.ndarray) -> np.ndarray:
    """Frames 12 dB above the recording's 10th-percentile frame energy."""
    power = 10 * np.log10(np.mean(frames(audio) ** 2, axis=1) + 1e-12)
    return power > np.percentile(power, 10) + 12.0


def webrtc_flags(audio: np.ndarray) -> np.ndarray:
    """webrtcvad (aggressiveness 2) on 30 ms frames of 16-bit PCM."""
    import webrtcvad

    vad = webrtcvad.Vad(2)
    pcm = (np.clip(frames(audio), -1, 1) * 32767).astype("<i2")
    return np.array([vad.is_speech(frame.tobytes(), SAMPLE_RATE) for frame in pcm])


def compare_vad(session: InferenceSession, path: Path) -> dict:
    """Each VAD's regions on ``path``, decoded the same way, scored against the truth."""
    transcriber = Transcriber(session, batch_size=BATCH)
    audio = decode_audio(path, target_rate=SAMPLE_RATE, limits=transcriber.limits).samples
    truth = read_truth(path)
    options = transcriber.options
    detectors: dict[str, Callable[[], list[AudioSegment]]] = {
        "silero (ours)": lambda: list(transcriber_segments(transcriber, path)),
        "webrtcvad": lambda: regions_to_segments(
            frame_regions(webrtc_flags(audio), options), audio, options
        ),
        "energy": lambda: regions_to_segments(
            frame_regions(energy_flags(audio), options), audio, options
        ),
    }
    results = {}
    for name, detect in detectors.items():
        segments = detect()
        decoded = []
        for first in range(0, len(segments), BATCH):
            decoded += transcriber.decode(segments[first : first + BATCH])
        summary = score(decoded, truth).summary()
        summary["time_errors_s"].pop("word_start"), summary["time_errors_s"].pop("word_end")
        results[name] = summary
        print(f"vad {name}: {summary}", flush=True)
    return results


def transcriber_segments(transcriber: Transcriber, path: Path):
    from espnet_serve.audio.ingest import open_audio_stream
    from espnet_serve.audio.segmenter import segment_stream

    with open_audio_stream(path, target_rate=SAMPLE_RATE, limits=transcriber.limits) as audio:
        yield from segment_stream(audio, SAMPLE_RATE, transcriber.options)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if "vad" in result else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    served_result = result["server"]
    names = sorted(
        set(served_result["short"]["peak_rss_mb"]) | set(served_result["long"]["peak_rss_mb"])
    )
    x = np.arange(len(names))
    for offset, key in ((-0.2, "short"), (0.2, "long")):
        minutes = served_result[key]["file_seconds"] / 60
        values = [served_result[key]["peak_rss_mb"].get(n, 0) for n in names]
        axes[0].bar(x + offset, values, 0.4, label=f"{minutes:.0f}-min file")
    axes[0].set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    axes[0].set_ylabel("peak RSS during the request (MiB)")
    axes[0].legend()
    speeds = {
        "16-clip batches\n(library)": result["library"]["heldout_short_clips"]["audio_s_per_s"],
        "10-min file\n(library)": result["library"]["audio_s_per_s"],
        "short file\n(server)": served_result["short"]["audio_s_per_s"],
        "long file\n(server)": served_result["long"]["audio_s_per_s"],
    }
    axes[1].bar(list(speeds), list(speeds.values()))
    axes[1].set_ylabel("audio-s/s")
    axes[1].tick_params(axis="x", labelsize=7)
    if "vad" in result:
        vads = result["vad"]
        axes[2].bar(list(vads), [100 * v["wer"] for v in vads.values()])
        axes[2].set_ylabel("WER % on the 10-min file")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--long-minutes", type=float, default=60.0)
    parser.add_argument("--compare-vad", action="store_true")
    parser.add_argument("--label", default="cpu-longform")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "bench" / "work")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    short = long_file(args.work_dir, args.minutes, SHORT_SEED)
    long = long_file(args.work_dir, args.long_minutes, LONG_SEED)
    result: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "files": {"short": short.name, "long": long.name},
    }
    session = load_session(args.work_dir / "model_cache")
    result["library"] = library(session, short)
    print(f"library: {json.dumps(result['library'])}", flush=True)
    if args.compare_vad:
        result["vad"] = compare_vad(session, short)
    del session
    result["server"] = served(args.work_dir, short, long)
    print(f"server: {json.dumps(result['server'])}", flush=True)
    out = REPO_ROOT / "bench" / "results" / args.label
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
