"""The reference transcripts: the held-out clips through ``make serve``, as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from e2e.clients import heldout_transcripts, wait_ready

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 600.0


def reference_transcripts(port: int, log: Path) -> tuple[dict[str, str], float]:
    """``make serve`` in a scratch BentoML home: its held-out transcripts and start time."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "BENTOML_HOME": home, "HF_HUB_OFFLINE": "1"}
        started = time.monotonic()
        with log.open("w") as out:
            serve = subprocess.Popen(
                ["make", "-s", "serve", f"PORT={port}"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            ready = wait_ready(
                f"http://127.0.0.1:{port}", READY_TIMEOUT, lambda: serve.poll() is None
            )
            return heldout_transcripts(f"http://127.0.0.1:{port}"), ready - started
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=120)
