"""Run a real ``bentoml serve`` on 127.0.0.1 for a test, and stop it afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
BENTOML = str(Path(sys.executable).with_name("bentoml"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BentoServer:
    """A ``bentoml serve`` subprocess and what was seen while it started."""

    process: subprocess.Popen
    port: int
    log_path: Path
    readyz_statuses: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_server(
    target: str,
    *,
    env: Mapping[str, str],
    log_path: Path,
    extra_args: Sequence[str] = (),
    timeout: float = 300.0,
    cwd: Path = REPO_ROOT,
) -> BentoServer:
    """Start ``bentoml serve <target>`` and wait until ``/readyz`` answers 200.

    Every ``/readyz`` status seen before that is recorded (503 while the model loads).
    """
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port), *extra_args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = BentoServer(process=process, port=port, log_path=log_path)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited early:\n{server.log()}")
            try:
                status = client.get(f"{server.url}/readyz").status_code
            except httpx.TransportError:
                status = None
            if status is not None:
                server.readyz_statuses.append(status)
                if status == 200:
                    return server
            time.sleep(0.25)
    server.stop()
    raise TimeoutError(f"bentoml serve not ready after {timeout} s:\n{server.log()}")


def serve_default_model(home: Path, **settings: str) -> BentoServer:
    """Import the embedded model into a fresh ``BENTOML_HOME`` and serve it on CPU.

    Args:
        home: An empty directory used as ``BENTOML_HOME``.
        **settings: ``ESPNET_SERVE_*`` settings, by lower-case name (e.g. ``api_workers="2"``).
    """
    env = {
        "BENTOML_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "ESPNET_SERVE_GPU_COUNT": "0",
        **{f"ESPNET_SERVE_{name.upper()}": value for name, value in settings.items()},
    }
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    subprocess.run([cli, "import-default"], env={**os.environ, **env}, check=True)
    return start_server("service:Transcriber", env=env, log_path=home / "serve.log")
