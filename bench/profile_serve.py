"""Where the served path's time goes: CPU seconds per request of each process, and what in them.

Serves the embedded model (``bentoml serve``, default settings, as ``make serve``), transcribes
every clip once alone (its expected answer), then drives ``--clients`` closed-loop clients
(``bench/loadgen.py``, in this process) for ``--requests`` requests while ``py-spy`` samples
the API worker and the model worker (``--nonblocking``: the workers are never paused). Reports,
per process (API worker, model worker, the ``bentoml`` arbiter, this load generator): CPU
seconds per request (``psutil``, over the driven requests only), and for the two workers the
share of their samples in each part of the path (:data:`PARTS`, matched on the sampled stacks'
frames, first match wins, innermost frame first). Every transcript is checked against its
clip's answer alone.

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
from bench.serve import load_clips, with_alone_transcripts  # noqa: E402
from tests.server import serve_default_model, service_worker  # noqa: E402

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
SAMPLE_RATE_HZ = 100
# Parts of the path, by a frame's text (``function (file:line)``), innermost frame first.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model: encoder", ("encode_padded", "asr_model.py", "/encoder/", "conformer")),
    ("model: search", ("beam_search.py", "ctc_prefix.py", "decoder_step.py", "greedy.py")),
    ("model: features", ("extract_features", "/frontend/", "stft")),
    ("model: word alignment", ("align.py",)),
    ("model: other decode", ("espnet_serve/backends/", "espnet_serve/pipeline/decode.py")),
    ("VAD check", ("vad.py", "silero")),
    ("ingest (decode, resample)", ("audio/ingest.py", "soundfile", "soxr")),
    ("multipart parsing", ("multipart", "formparsers")),
    ("spooling", ("tempfile.py", "SpooledTemporaryFile")),
    ("pickle / serde", ("pickle", "serde", "pydantic", "_bentoml_impl/serde")),
    ("BentoML client hop", ("_bentoml_impl/client", "aiohttp/client")),
    ("BentoML batching", ("dispatcher", "marshal", "container.py")),
    ("our middlewares", ("espnet_serve/serving/middleware",)),
    ("our handler", ("espnet_serve/serving/",)),
    ("HTTP server (uvicorn, starlette)", ("uvicorn", "h11", "httptools", "starlette")),
    ("metrics", ("prometheus_client",)),
    ("asyncio event loop", ("asyncio/",)),
    ("threads", ("threading.py", "concurrent/futures")),
)


def part_of(stack: list[str]) -> str:
    """The part of the path a sampled stack (outermost frame first) is in."""
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


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default="profile-serve")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args()
    clips = load_clips()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        server = serve_default_model(home)
        try:
            clips = with_alone_transcripts(server.url, clips)
            processes = {
                "api worker": service_worker(server, "ApiService"),
                "model worker": service_worker(server, "ModelService"),
                "bentoml arbiter": psutil.Process(server.process.pid),
                "load generator": psutil.Process(),
            }
            spies = {
                name: spy(processes[name].pid, Path(tmp) / f"{name.replace(' ', '-')}.txt")
                for name in ("api worker", "model worker")
            }
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
