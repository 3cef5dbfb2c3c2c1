"""Served-load benchmark: the real server against in-process batching and a naive peer.

One run, on the same held-out clips, in this order (one heavy process at a time):

1. ``bentoml serve`` of the embedded model (CPU), driven by ``bench/loadgen.py`` at
   1, 8, 32 and 128 concurrent clients; every transcript is checked against the one
   the clip gets alone. Per level: requests, failures by status, p50/p95/p99 latency,
   served audio-s/s and the mean adaptive batch size (from the server's
   ``espnet_serve_batch_size`` series). Each of ``--modes`` in turn (:data:`MODES`;
   all three unless told).
2. In-process ``BatchedSpeech2Text`` (same model, same load path and options as
   the server) on consecutive batches of each level's mean batch size, and one
   clip at a time (the latency floor), with torch's default threads and with one
   thread: the faster of the two is the reference.
3. The naive peer (``bench/naive_peer.py``: FastAPI + ``Speech2Text``, one decode
   per request behind a lock), driven the same way.

Writes ``results/<label>.json`` and ``results/<label>.png`` (throughput and p95
latency against concurrency, the three side by side).

    python bench/serve.py --label cpu-serve
    python bench/serve.py --label cpu-serve-default --modes services
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.loadgen import (  # noqa: E402
    OPENAI_ROUTE,
    Clip,
    Outcome,
    closed_loop,
    percentile,
    send,
    session,
)
from espnet_serve.assets import load_heldout  # noqa: E402
from tests.server import (  # noqa: E402
    free_port,
    import_default_model,
    serve_default_model,
    serve_env,
    serve_split,
)

LEVELS = (1, 8, 32, 128)
# Enough for a steady state: 6 a client (192 at 32) left a level mostly ramp-up and tail.
REQUESTS_PER_CLIENT = 20
MIN_REQUESTS = 96
SAMPLE_RATE = 16000
CLIPS = 96
IN_PROCESS_ROUNDS = 5


def requests_at(level: int) -> int:
    return max(MIN_REQUESTS, REQUESTS_PER_CLIENT * level)


def load_clips() -> list[Clip]:
    return [Clip(c.path.name, c.path.read_bytes(), c.text) for c in load_heldout(limit=CLIPS)]


def metric_sum_count(url: str, name: str) -> tuple[float, float]:
    """Sum and count of histogram ``name`` at ``url``, added up over its label sets (models)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = []
    for suffix in ("_sum", "_count"):
        found = re.findall(rf"^{name}{suffix}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M)
        values.append(sum(float(value) for value in found))
    return values[0], values[1]


def with_alone_transcripts(url: str, clips: list[Clip]) -> list[Clip]:
    async def each() -> list[Outcome]:
        async with session(1, timeout=60) as client:
            return [await send(client, url + OPENAI_ROUTE, clip) for clip in clips]

    outcomes = asyncio.run(each())
    bad = [o for o in outcomes if o.status != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} clips failed alone: {bad[0].error}")
    return [Clip(o.clip.name, o.clip.data, o.text or "") for o in outcomes]


def drive(
    url: str,
    clips: list[Clip],
    durations: dict[str, float],
    level: int,
    *,
    metrics_url: str | None = None,
) -> dict:
    """One concurrency level against a running server (batch sizes read from ``metrics_url``)."""
    batch_before = metric_sum_count(metrics_url, "espnet_serve_batch_size") if metrics_url else None
    started = time.perf_counter()
    outcomes = asyncio.run(
        closed_loop(url + OPENAI_ROUTE, clips, concurrency=level, requests=requests_at(level))
    )
    wall = time.perf_counter() - started
    ok = [o for o in outcomes if o.status == 200]
    failures: dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.ok:
            key = "wrong_transcript" if outcome.status == 200 else str(outcome.status)
            failures[key] = failures.get(key, 0) + 1
    latencies = [o.latency_seconds for o in ok]
    result = {
        "concurrency": level,
        "requests": len(outcomes),
        "failures": failures,
        "p50_seconds": percentile(latencies, 0.50),
        "p95_seconds": percentile(latencies, 0.95),
        "p99_seconds": percentile(latencies, 0.99),
        "audio_seconds_per_second": sum(durations[o.clip.name] for o in ok) / wall,
        "wall_seconds": wall,
    }
    if metrics_url is not None and batch_before is not None:
        total, count = metric_sum_count(metrics_url, "espnet_serve_batch_size")
        calls = count - batch_before[1]
        result["mean_batch_size"] = (total - batch_before[0]) / calls if calls else 0.0
    return result


# How the server runs, and its settings: the model services (API and model services, two
# workers of one server); the models inside each API worker, one worker and one torch thread
# per CPU (what the default, auto, gives a CPU server with small models:
# ``serving/placement.py``); the chart's split mode (two servers, the API reaching the model
# over loopback HTTP, ``tests.server.serve_split``; batch sizes read from the model server's
# metrics).
MODES: dict[str, dict[str, str]] = {
    "services": {"model_in_process": "false"},
    "in-process": {"model_in_process": "true"},
    "split": {},
}


def served(clips: list[Clip], home: Path, durations: dict[str, float], *, mode: str) -> dict:
    """The levels against ``bentoml serve`` in one of :data:`MODES`."""
    if mode == "split":
        model, api = serve_split(home)
        servers, metrics_url = [api, model], model.url
    else:
        api = serve_default_model(home, **MODES[mode])
        servers, metrics_url = [api], api.url
    try:
        clips = with_alone_transcripts(api.url, clips)
        levels = [
            drive(api.url, clips, durations, level, metrics_url=metrics_url) for level in LEVELS
        ]
    finally:
        for server in servers:
            server.stop()
    return {"levels": levels, "clips": clips, "mode": mode, "settings": MODES[mode]}


def in_process(home: Path, waves: list[np.ndarray], batch_sizes: list[int]) -> dict:
    """``BatchedSpeech2Text`` loaded as the model service loads it, on consecutive batches.

    Each batch size's throughput is the median of ``IN_PROCESS_ROUNDS`` passes over the
    clips, every size once per round (one pass was the earlier figure: it moved by up to 18 %
    between runs, the whole of the margin the served/in-process target is judged by), with
    torch's default thread count and with one thread; each figure is the faster of the two
    (on two cores one thread was faster at every batch size: 1.2-2x with
    ``OMP_WAIT_POLICY=PASSIVE``).
    """
    os.environ["BENTOML_HOME"] = str(home)
    from espnet_serve.bundle.store import load_session
    from espnet_serve.serving.settings import get_settings

    settings = get_settings()
    session = load_session(
        "espnet-digits-asr:latest",
        prefer_model_batch=True,
        batched_backend=True,
        max_bucket_size=settings.max_batch_size,
    )
    session.forward_batch(waves[:2])
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    threads = {"default": torch.get_num_threads(), "one": 1}
    walls = {(name, size): [] for name in threads for size in batch_sizes}
    one_clip: dict[str, list[float]] = {name: [] for name in threads}
    for _ in range(IN_PROCESS_ROUNDS):  # interleaved: the machine's drift reaches every size
        for name, count in threads.items():
            torch.set_num_threads(count)
            for size in batch_sizes:
                started = time.perf_counter()
                for start in range(0, len(waves), size):
                    session.forward_batch(waves[start : start + size], return_exceptions=True)
                walls[name, size].append(time.perf_counter() - started)
            for wave in waves[:12]:
                started = time.perf_counter()
                session.forward_batch([wave])
                one_clip[name].append(time.perf_counter() - started)
    by_threads = {
        name: {str(size): audio / float(np.median(walls[name, size])) for size in batch_sizes}
        for name in threads
    }
    fastest = min(threads, key=lambda name: percentile(one_clip[name], 0.95))
    return {
        "audio_seconds_per_second": {
            str(size): max(by_threads[name][str(size)] for name in threads) for size in batch_sizes
        },
        "by_torch_threads": {"threads": threads, "audio_seconds_per_second": by_threads},
        "one_clip_threads": fastest,
        "one_clip_p50_seconds": percentile(one_clip[fastest], 0.5),
        "one_clip_p95_seconds": percentile(one_clip[fastest], 0.95),
    }


def naive_peer(clips: list[Clip], durations: dict[str, float], workdir: Path) -> dict:
    port = free_port()
    log = (workdir / "naive.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "bench" / "naive_peer.py"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **serve_env(workdir)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        return {"levels": [drive(url, clips, durations, level) for level in LEVELS]}
    finally:
        process.terminate()
        process.wait(timeout=30)


def plot(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    peer_levels = document["naive_peer"]["levels"]
    x = [level["concurrency"] for level in peer_levels]
    for mode, run in document["served_modes"].items():
        levels = run["levels"]
        left.plot(x, [lv["audio_seconds_per_second"] for lv in levels], "o-", label=mode)
        left.plot(
            x,
            [lv["in_process_same_batch_audio_seconds_per_second"] for lv in levels],
            "^--",
            label=f"in-process, {mode}'s mean batch",
        )
        right.plot(x, [lv["p95_seconds"] for lv in levels], "o-", label=mode)
    left.plot(x, [lv["audio_seconds_per_second"] for lv in peer_levels], "s-", label="naive peer")
    left.set(xscale="log", xlabel="concurrent clients", ylabel="audio-s/s", title="Throughput")
    right.plot(x, [lv["p95_seconds"] for lv in peer_levels], "s-", label="naive peer")
    right.axhline(
        document["in_process"]["one_clip_p95_seconds"],
        linestyle="--",
        color="gray",
        label="in-process one clip",
    )
    right.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p95 latency (s)")
    right.set_title("p95 latency")
    for axes in (left, right):
        axes.set_xticks(x, [str(v) for v in x])
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(document["label"])
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default="cpu-serve")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="served in turn"
    )
    args = parser.parse_args()
    clips = load_clips()
    from espnet_serve.audio.ingest import read_audio_file

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        import_default_model(home)
        heldout = {c.path.name: c.path for c in load_heldout(limit=CLIPS)}
        waves = [read_audio_file(heldout[c.name], target_rate=SAMPLE_RATE) for c in clips]
        durations = {c.name: len(w) / SAMPLE_RATE for c, w in zip(clips, waves, strict=True)}
        runs = {mode: served(clips, home, durations, mode=mode) for mode in args.modes}
        alone = [run.pop("clips") for run in runs.values()]
        batches = {round(lv["mean_batch_size"]) for run in runs.values() for lv in run["levels"]}
        sizes = sorted({1, 8, 16, 32} | {max(1, size) for size in batches})
        local = in_process(home, waves, sizes)
        peer = naive_peer(alone[0], durations, Path(tmp))
    best = max(local["audio_seconds_per_second"].values())
    for run in runs.values():
        for level, peer_level in zip(run["levels"], peer["levels"], strict=True):
            same = local["audio_seconds_per_second"][str(max(1, round(level["mean_batch_size"])))]
            level["in_process_same_batch_audio_seconds_per_second"] = same
            level["served_over_in_process"] = level["audio_seconds_per_second"] / same
            level["served_over_best_in_process"] = level["audio_seconds_per_second"] / best
            level["served_over_naive_peer"] = (
                level["audio_seconds_per_second"] / peer_level["audio_seconds_per_second"]
            )
    document: dict[str, Any] = {
        "label": args.label,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "python": platform.python_version(),
        },
        "clips": len(clips),
        "served": runs[args.modes[0]],
        "served_modes": runs,
        "in_process": local,
        "naive_peer": peer,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(document, args.out / f"{args.label}.png")
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
