"""Memory of the server under many concurrent long uploads.

Serves the embedded model (``bentoml serve``, in model services: ``tests/server.py``) on
127.0.0.1 and sends ``--uploads`` concurrent transcriptions of one ``--minutes``-long 16 kHz
16-bit WAV (two minutes of held-out-style digit strings, repeated). Samples the resident
memory of the API and the model workers (each service's workers summed) every 0.2 s, and the
API's ``espnet_serve_upload_bytes_held``; reports each service's idle and peak RSS (the bound
is in the README, "Capacity, admission and shutdown"), and checks every transcript equals
the first one's. Loopback only, bounded::

    .venv/bin/python bench/long_uploads.py --out bench/results/long-uploads.json
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "recipes" / "digits")]

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from digits_recipe.longfile import write_long_file  # noqa: E402

from bench.report import emit  # noqa: E402
from tests.server import serve_default_model, service_workers  # noqa: E402

MIB = 1024 * 1024
SAMPLE_S = 0.2


def long_wav(work: Path, minutes: float) -> Path:
    """A 16 kHz 16-bit WAV of ``minutes``: two minutes of digit strings, repeated."""
    piece = work / "piece.flac"
    write_long_file(piece, minutes=2.0, seed=4404)
    audio, rate = sf.read(piece, dtype="int16")
    repeats = int(np.ceil(minutes * 60 * rate / len(audio)))
    path = work / f"long-{minutes:g}min.wav"
    sf.write(path, np.tile(audio, repeats)[: int(minutes * 60 * rate)], rate, subtype="PCM_16")
    return path


def upload_bytes_held(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^espnet_serve_upload_bytes_held (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def measure(server, path: Path, uploads: int) -> dict:
    workers = {name: service_workers(server, name) for name in ("ApiService", "ModelService")}

    def rss(name: str) -> int:
        return sum(process.memory_info().rss for process in workers[name])

    idle = {name: rss(name) for name in workers}
    peak = dict(idle)
    held_peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal held_peak
        while not done.wait(SAMPLE_S):
            for name in workers:
                peak[name] = max(peak[name], rss(name))
            held_peak = max(held_peak, upload_bytes_held(server.url))

    def send(_: int) -> tuple[int, str]:
        with path.open("rb") as audio:
            response = httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": (path.name, audio, "audio/wav")},
                data={"model": "whisper-1", "response_format": "text"},
                timeout=1800,
            )
        return response.status_code, response.text

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=uploads) as pool:
        answers = list(pool.map(send, range(uploads)))
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    statuses = [status for status, _ in answers]
    return {
        "uploads": uploads,
        "upload_mib": path.stat().st_size / MIB,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "same_transcript": len({text for _, text in answers}) == 1,
        "seconds": seconds,
        "idle_rss_mib": {name: rss / MIB for name, rss in idle.items()},
        "peak_rss_mib": {name: rss / MIB for name, rss in peak.items()},
        "growth_mib": {name: (peak[name] - idle[name]) / MIB for name in idle},
        "peak_upload_bytes_held_mib": held_peak / MIB,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = long_wav(Path(work), args.minutes)
        home = Path(work) / "home"
        home.mkdir()
        server = serve_default_model(home)
        try:
            levels = [measure(server, path, uploads) for uploads in args.uploads]
        finally:
            server.stop()
    result = {"minutes": args.minutes, "levels": levels}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
