"""What crafted uploads cost the server: latency of each refusal and the API worker's memory.

Starts ``bentoml serve`` of the embedded model (CPU), sends each upload of
``tests/crafted.py`` ``--repeat`` times, then a held-out clip, and writes
``results/crafted.json``: per case the status, code and latency (p50, max),
and the API worker's RSS before and after.

    python bench/crafted.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench.loadgen import MODEL_NAME, OPENAI_ROUTE, percentile  # noqa: E402
from espnet_serve.assets import load_heldout  # noqa: E402
from tests.crafted import CRAFTED_UPLOADS  # noqa: E402
from tests.server import serve_default_model  # noqa: E402


def api_worker_rss(server_pid: int) -> int:
    for child in psutil.Process(server_pid).children(recursive=True):
        command = child.cmdline()
        if "--service-name" in command and "ApiService" in command:
            return child.memory_info().rss
    raise RuntimeError("no API worker")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args()
    clip = load_heldout(limit=1)[0]
    with tempfile.TemporaryDirectory(prefix="bench-crafted-") as home:
        server = serve_default_model(Path(home))
        try:
            url = server.url + OPENAI_ROUTE
            with httpx.Client(timeout=60) as client:

                def post(data: bytes, content_type: str) -> tuple[httpx.Response, float]:
                    started = time.perf_counter()
                    response = client.post(
                        url, files={"file": ("a", data, content_type)}, data={"model": MODEL_NAME}
                    )
                    return response, time.perf_counter() - started

                post(clip.path.read_bytes(), "audio/flac")
                rss_before = api_worker_rss(server.process.pid)
                cases = {}
                for name, (data, status, code) in CRAFTED_UPLOADS.items():
                    answers = [post(data, "audio/wav") for _ in range(args.repeat)]
                    latencies = [seconds for _, seconds in answers]
                    cases[name] = {
                        "expected": [status, code],
                        "got": sorted(
                            {(r.status_code, r.json()["error"]["code"]) for r, _ in answers}
                        ),
                        "bytes": len(data),
                        "p50_ms": 1000 * percentile(latencies, 0.5),
                        "max_ms": 1000 * max(latencies),
                    }
                rss_after = api_worker_rss(server.process.pid)
                good, _ = post(clip.path.read_bytes(), "audio/flac")
        finally:
            server.stop()
    document = {
        "repeat": args.repeat,
        "cases": cases,
        "api_worker_rss_mib": {"before": rss_before / 2**20, "after": rss_after / 2**20},
        "next_good_clip": {"status": good.status_code, "text": good.json().get("text")},
        "reference": clip.text,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crafted.json").write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
