"""Speech synthesis at full size: served == ``Text2Speech`` in-process, then time to first byte.

For each recipe (LJSpeech's VITS, ``egs2/ljspeech/tts1/conf/tuning/train_vits.yaml``, and
Conformer FastSpeech2 + HiFi-GAN, ``train_joint_conformer_fastspeech2_hifigan.yaml``), a model
is built at the config's real size with random weights, packed by espnet2's packer as published
TTS models are, and then:

1. spoken by ``Text2Speech`` in-process (``always_fix_seed=True``), one call per sentence: the
   reference samples and the in-process real-time factor;
2. imported with ``espnet-serve build``, served with ``bentoml serve``, and each sentence asked
   of ``/v1/audio/speech`` with the openai SDK (``wav``): its 16-bit samples compared with the
   reference's;
3. at 1, 8 and 32 concurrent clients (``httpx``, streamed ``pcm``), each sending requests in a
   loop: time to the first audio byte, the real-time factor of each request (its wall time over
   its audio's length) and the server's audio seconds per second.

With ``--url``, only step 3, against a server already running (``make serve``: the default
voice, asked digit strings).

Writes ``<out>/tts.json`` and ``<out>/tts.png``. Traffic goes only to 127.0.0.1; every level is
bounded in requests.

Example:
    python bench/tts.py --out bench/results/tts
    python bench/tts.py --url http://127.0.0.1:3000 --out bench/results/tts-default-voice
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import openai  # noqa: E402
import soundfile  # noqa: E402

from bench.report import emit  # noqa: E402
from bench.voice_roundtrip import digit_strings  # noqa: E402
from devkit.publish import pack_published  # noqa: E402
from devkit.random_init import write_random_tts_experiment  # noqa: E402
from devkit.recipes import JOINT_FASTSPEECH2_HIFIGAN_LJSPEECH, VITS_LJSPEECH, Recipe  # noqa: E402
from devkit.reference import text2speech  # noqa: E402
from espnet_serve.audio.encode import PCM_RATE, pcm16  # noqa: E402
from tests.server import serve_env, start_server  # noqa: E402

RECIPES = {"vits": VITS_LJSPEECH, "fastspeech2_hifigan": JOINT_FASTSPEECH2_HIFIGAN_LJSPEECH}
SENTENCES = (
    "Printing, in the only sense with which we are at present concerned.",
    "The earliest book printed with movable types, the Gutenberg Bible.",
    "And it is worth mention in passing that, as an example of fine typography.",
    "Differs from most if not from all the arts and crafts represented in the exhibition.",
    "In being comparatively modern.",
    "For although the Chinese took impressions from wood blocks engraved in relief.",
    "The first books were printed in black letter.",
    "Now, as all books not primarily intended as picture books consist principally of types.",
)
LEVELS = ((1, 8), (8, 32), (32, 64))  # clients, requests


def published(recipe: Recipe, root: Path) -> Path:
    """The recipe's full-size random model, packed by espnet2's packer."""
    return pack_published(
        root / "recipe",
        lambda out: write_random_tts_experiment(out, **recipe.options),
        root / "published.tar.gz",
    )


def reference(archive: Path, root: Path) -> Any:
    """``Text2Speech`` on the published files, seeded on every call."""
    return text2speech(archive, root / "unpacked")


async def one_request(client: httpx.AsyncClient, url: str, text: str) -> dict[str, float]:
    """One streamed ``pcm`` request: time to first byte, wall time, audio seconds."""
    started = time.perf_counter()
    first = None
    size = 0
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}
    async with client.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            if first is None and chunk:
                first = time.perf_counter() - started
            size += len(chunk)
    wall = time.perf_counter() - started
    audio = size / 2 / PCM_RATE
    return {"ttfb": first or wall, "wall": wall, "audio": audio}


async def level(
    url: str, clients: int, requests: int, sentences: tuple[str, ...] = SENTENCES
) -> dict[str, Any]:
    """``requests`` requests from ``clients`` concurrent clients, sentences in turn."""
    queue = list(range(requests))
    results: list[dict[str, float]] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while queue:
            index = queue.pop()
            results.append(await one_request(client, url, sentences[index % len(sentences)]))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ttfb = sorted(r["ttfb"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "ttfb_p50_seconds": statistics.median(ttfb),
        "ttfb_p95_seconds": ttfb[min(len(ttfb) - 1, int(0.95 * len(ttfb)))],
        "rtf_mean": statistics.mean(r["wall"] / r["audio"] for r in results),
        "audio_seconds_per_second": sum(r["audio"] for r in results) / elapsed,
    }


def run(name: str, recipe: Recipe, root: Path) -> dict[str, Any]:
    """One recipe's row: exactness over HTTP, in-process RTF, served load levels."""
    archive = published(recipe, root)
    speaker = reference(archive, root)
    params = sum(p.numel() for p in speaker.tts.parameters()) / 1e6
    expected, seconds = [], 0.0
    for text in SENTENCES:
        started = time.perf_counter()
        expected.append(speaker(text)["wav"].numpy().reshape(-1))
        seconds += time.perf_counter() - started
    audio_seconds = sum(len(w) for w in expected) / speaker.fs
    del speaker

    home = root / "home"
    home.mkdir()
    env = serve_env(home, model_tag="tts:latest")
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    subprocess.run(
        [cli, "build", str(archive), "--name", "tts"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    server = start_server("service:ApiService", env=env, log_path=home / "serve.log", timeout=900)
    try:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        equal = 0
        for text, wave in zip(SENTENCES, expected, strict=True):
            wav = sdk.audio.speech.create(
                model="tts-1", voice="alloy", input=text, response_format="wav"
            ).content
            served, _ = soundfile.read(io.BytesIO(wav), dtype="int16")
            equal += bool(np.array_equal(served, np.frombuffer(pcm16(wave), dtype="<i2")))
        levels = [asyncio.run(level(server.url, c, n)) for c, n in LEVELS]
    finally:
        server.stop()
    row = {
        "model": name,
        "config": recipe.config,
        "tts_parameters_millions": round(params, 1),
        "sentences": len(SENTENCES),
        "served_equal_to_text2speech": equal,
        "in_process_rtf": seconds / audio_seconds,
        "levels": levels,
    }
    print(row, flush=True)
    return row


def plot(document: dict[str, Any], path: Path) -> None:
    """Time to first byte and throughput by concurrency, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for row in document["rows"]:
        x = [lv["clients"] for lv in row["levels"]]
        left.plot(x, [lv["ttfb_p50_seconds"] for lv in row["levels"]], "o-", label=row["model"])
        right.plot(
            x, [lv["audio_seconds_per_second"] for lv in row["levels"]], "o-", label=row["model"]
        )
    left.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p50 TTFB (s)")
    right.set(xscale="log", xlabel="concurrent clients", ylabel="audio s / s (served)")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(document["label"])
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="directory for tts.json/png")
    parser.add_argument("--models", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--url", help="only the load levels, against this running server")
    args = parser.parse_args()
    rows = []
    if args.url:
        strings = tuple(digit_strings(len(SENTENCES)))
        levels = [asyncio.run(level(args.url, c, n, strings)) for c, n in LEVELS]
        rows.append({"model": f"tts-1 at {args.url}", "sentences": strings, "levels": levels})
    for name in [] if args.url else args.models:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run(name, RECIPES[name], Path(tmp)))
    document = {
        "label": f"speech synthesis, full-size random models, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores",
        "rows": rows,
    }
    out = args.out / "tts.json" if args.out else None
    emit(document, out)
    if args.out:
        plot(document, args.out / "tts.png")


if __name__ == "__main__":
    main()
