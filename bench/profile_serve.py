"""Where the served path's time goes: CPU seconds per request of each process, and what in them.

Serves the embedded model (``bentoml serve`` in one of ``bench/serve.py``'s modes), transcribes
every clip once alone (its expected answer), then drives ``--clients`` closed-loop clients
(``bench/loadgen.py``, in this process) for ``--requests`` requests while ``py-spy`` samples
the API worker and the model worker (``--nonblocking``: the workers are never paused). Reports,
per process (API worker, model worker, the ``bentoml`` arbiter, this load generator): CPU
seconds per request (``psutil``, over the driven requests only), and for the two workers the
share of their samples in each part of the path (:data:`PARTS`, matched on the sampled stacks'
frames, first match wins, innermost frame first; a thread waiting in epoll or on a lock is
counted apart as idle), and the model service's own series over the same requests (batches,
mean batch, queue wait, decode time, the model's busy share of the wall time). Every
transcript is checked against its clip's answer alone. ``--no-sampling`` leaves py-spy out.

Needs ``py-spy`` (a development tool, not in the lock: ``.venv/bin/pip install py-spy``) and
the right to trace the workers (root, or ``kernel.yama.ptrace_scope=0``).

    .venv/bin/python bench/profile_serve.py --label profile-32 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402

from bench.loadgen import OPENAI_ROUTE, closed_loop  # noqa: E402
from bench.serve import MODES, load_clips, metric_sum_count, with_alone_transcripts  # noqa: E402
from tests.server import serve_default_model, service_worker, service_workers  # noqa: E402

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
SAMPLE_RATE_HZ = 100
# The model service's series read before and after the driven requests.
SERIES = (
    "espnet_serve_batch_size",
    "espnet_serve_queue_wait_seconds",
    "espnet_serve_decode_seconds",
)
# Innermost frames of a thread that waits (an event loop in epoll, a pool thread for work).
IDLE_FRAMES = ("EpollSelector.select", "Condition.wait", "Event.wait", "Lock.acquire")
# Parts of the path, by a frame's text (``function (file:line)``), innermost frame first.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "model: encoder",
        ("encode_padded", "espnet2/asr/encoder/", "espnet/nets/pytorch_backend/", "espnet_model"),
    ),
    (
        "model: search",
        ("backends/beam_search", "backends/ctc_prefix", "backends/decoder_step", "greedy.py"),
    ),
    ("model: features", ("extract_features", "espnet2/asr/frontend/", "espnet2/layers/")),
    ("model: word alignment", ("pipeline/align.py",)),
    ("model: other decode", ("espnet_serve/backends/", "espnet_serve/pipeline/decode.py")),
    ("VAD check", ("audio/vad.py", "silero")),
    ("ingest (decode, resample)", ("audio/ingest.py", "soundfile", "soxr")),
    ("multipart parsing", ("multipart", "formparsers")),
    ("spooling", ("tempfile.py",)),
    ("BentoML: JSON schema per response", ("json_schema", "JsonSchema")),
    ("pickle / serde", ("pickle", "_bentoml_impl/serde", "pydantic")),
    ("BentoML client hop", ("_bentoml_impl/client", "aiohttp/")),
    ("BentoML batching", ("marshal/dispatcher", "runner/container")),
    ("our middlewares", ("espnet_serve/serving/middleware/",)),
    ("our handler", ("espnet_serve/serving/",)),
    ("HTTP server (uvicorn, starlette, otel)", ("uvicorn", "h11", "starlette", "opentelemetry")),
    ("metrics", ("prometheus_client",)),
    ("asyncio event loop", ("asyncio/",)),
    ("threads", ("threading.py", "concurrent/futures", "anyio/")),
)


def part_of(stack: list[str]) -> str:
    """The part of the path a sampled stack (outermost frame first) is in."""
    if stack and any(stack[-1].startswith(wait) for wait in IDLE_FRAMES):
        return "idle (py-spy counts a thread blocked here as active)"
    for frame in reversed(stack):
        for part, needles in PARTS:
            if any(needle in frame for needle in needles):
                return part
    return "other"


def parts(folded: Path) -> dict[str, float]:
    """Share of samples per part, from py-spy's raw (folded) output."""
    counts: collections.Counter[str] = collections.Counter()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            counts[part_of(stack.split(";")[1:])] += int(count)  # [0]: the thread
    total = sum(counts.values()) or 1
    return {part: round(count / total, 4) for part, count in counts.most_common()}


def spy(pid: int, output: Path) -> tuple[Path, subprocess.Popen]:
    """Start ``py-spy record`` on ``pid``, writing folded stacks to ``output`` when stopped."""
    command = [PY_SPY, "record", "--pid", str(pid), "--nonblocking", "--format", "raw"]
    command += ["--rate", str(SAMPLE_RATE_HZ), "--output", str(output)]
    return output, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mean(sum_count: list[float]) -> float:
    """The mean of a Prometheus series from its ``_sum`` and ``_count``."""
    return round(sum_count[0] / sum_count[1], 4) if sum_count[1] else 0.0


def folded_path(out: Path, label: str, process: str) -> Path:
    """Where a worker's sampled stacks are written (py-spy's raw format, one stack a line)."""
    return out / f"{label}-{process.replace(' ', '-')}.folded.txt"


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default="profile-serve")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument(
        "--no-sampling", action="store_true", help="CPU seconds and series only (no py-spy)"
    )
    parser.add_argument(
        "--mode",
        choices=("services", "in-process"),
        default="services",
        help="bench/serve.py's MODES (in-process: the first API worker, holding its model)",
    )
    parser.add_argument(
        "--stacks", type=Path, default=None, help="keep the sampled stacks here (folded text)"
    )
    args = parser.parse_args()
    clips = load_clips()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        server = serve_default_model(home, **MODES[args.mode])
        try:
            clips = with_alone_transcripts(server.url, clips)
            api = service_workers(server, "ApiService")
            workers = {
                "api worker" + (f" {index + 1}" if len(api) > 1 else ""): process
                for index, process in enumerate(api)
            }
            if args.mode == "services":
                workers["model worker"] = service_worker(server, "ModelService")
            processes = {
                **workers,
                "bentoml arbiter": psutil.Process(server.process.pid),
                "load generator": psutil.Process(),
            }
            stacks = args.stacks or Path(tmp)
            stacks.mkdir(parents=True, exist_ok=True)
            spies = {
                name: spy(processes[name].pid, folded_path(stacks, args.label, name))
                for name in workers
                if not args.no_sampling
            }
            metrics_before = {name: metric_sum_count(server.url, name) for name in SERIES}
            time.sleep(2)  # py-spy attached
            before = {name: cpu_seconds(p) for name, p in processes.items()}
            started = time.perf_counter()
            outcomes = asyncio.run(
                closed_loop(
                    server.url + OPENAI_ROUTE,
                    clips,
                    concurrency=args.clients,
                    requests=args.requests,
                )
            )
            wall = time.perf_counter() - started
            used = {name: cpu_seconds(p) - before[name] for name, p in processes.items()}
            series = {
                name: [
                    after - at_start
                    for after, at_start in zip(
                        metric_sum_count(server.url, name), earlier, strict=True
                    )
                ]
                for name, earlier in metrics_before.items()
            }
            for _, recording in spies.values():
                recording.send_signal(signal.SIGINT)  # py-spy writes its output and exits
                recording.wait(timeout=60)
            sampled = {name: parts(path) for name, (path, _) in spies.items()}
        finally:
            server.stop()
    wrong = sum(not o.ok for o in outcomes)
    document = {
        "label": args.label,
        "clients": args.clients,
        "requests": len(outcomes),
        "not_ok": wrong,
        "wall_seconds": round(wall, 3),
        "requests_per_second": round(len(outcomes) / wall, 2),
        "batches": series["espnet_serve_batch_size"][1],
        "mean_batch_size": mean(series["espnet_serve_batch_size"]),
        "mean_queue_wait_seconds": mean(series["espnet_serve_queue_wait_seconds"]),
        "mean_batch_decode_seconds": mean(series["espnet_serve_decode_seconds"]),
        "model_busy_share_of_wall": round(series["espnet_serve_decode_seconds"][0] / wall, 3),
        "cpu_ms_per_request": {
            name: round(1000 * seconds / len(outcomes), 2) for name, seconds in used.items()
        },
        "cpu_share_of_wall": {name: round(seconds / wall, 3) for name, seconds in used.items()},
        "sampled_parts": sampled,
        "py_spy_rate_hz": SAMPLE_RATE_HZ,
        "cpus": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.json").write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return 0 if wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
