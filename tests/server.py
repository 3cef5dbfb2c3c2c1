"""Run a real ``bentoml serve`` on 127.0.0.1 for a test, and stop it afterwards."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
BENTOML = str(Path(sys.executable).with_name("bentoml"))


BIND_ATTEMPTS = 3


def makefile_variable(name: str) -> str:
    """The value of ``NAME := value`` in the repository's Makefile."""
    text = (REPO_ROOT / "Makefile").read_text()
    match = re.search(rf"^{name}\s*:?=\s*(\S+)\s*$", text, re.MULTILINE)
    if match is None:
        raise LookupError(f"{name} is not set in the Makefile")
    return match.group(1)


# Servers under test keep idle connections as `make serve` does.
KEEP_ALIVE_ARGS = ("--timeout-keep-alive", makefile_variable("KEEP_ALIVE_SECONDS"))


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
    command: Sequence[str] = (BENTOML, "serve"),
    wait_ready: bool = True,
) -> BentoServer:
    """Start ``bentoml serve <target>`` (or ``command``) and wait until ``/readyz`` answers 200.

    Every ``/readyz`` status seen before that is recorded (503 while the model loads).
    With ``wait_ready=False`` it returns as soon as the process is started.
    """
    for attempt in range(BIND_ATTEMPTS):
        port = free_port()
        log = log_path.open("wb")
        process = subprocess.Popen(
            [
                *command,
                target,
                *("--host", "127.0.0.1", "--port", str(port)),
                *KEEP_ALIVE_ARGS,
                *extra_args,
            ],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = BentoServer(process=process, port=port, log_path=log_path)
        if not wait_ready:
            return server
        try:
            ready = wait_for(server, lambda response: response.status_code == 200, timeout)
        except RuntimeError:
            # A free port can be taken between free_port() and the bind (here or by BentoML's
            # own port choice for a service): start again on another one.
            if "Address already in use" not in server.log() or attempt == BIND_ATTEMPTS - 1:
                raise
            continue
        if ready is None:
            server.stop()
            raise TimeoutError(f"bentoml serve not ready after {timeout} s:\n{server.log()}")
        return server
    raise AssertionError("unreachable")


def wait_for(
    server: BentoServer, done: Callable[[httpx.Response], bool], timeout: float
) -> httpx.Response | None:
    """Poll ``/readyz`` (recording each status) until ``done`` holds for its response."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited early:\n{server.log()}")
            try:
                response = client.get(f"{server.url}/readyz")
            except httpx.TransportError:
                response = None
            if response is not None:
                server.readyz_statuses.append(response.status_code)
                if done(response):
                    return response
            time.sleep(0.25)
    return None


def service_workers(server: BentoServer, service: str) -> list[psutil.Process]:
    """The worker processes of ``service`` (``ApiService`` or ``ModelService``) of a server."""
    return [
        child
        for child in psutil.Process(server.process.pid).children(recursive=True)
        if "--service-name" in (command := child.cmdline()) and service in command
    ]


def service_worker(server: BentoServer, service: str) -> psutil.Process:
    """The (first) worker process of ``service`` of a server."""
    workers = service_workers(server, service)
    if not workers:
        raise AssertionError(f"no {service} worker found")
    return workers[0]


def serve_env(home: Path, **settings: str) -> dict[str, str]:
    """Environment of a CPU, offline server on ``home`` with ``ESPNET_SERVE_*`` settings.

    The models run in their own model services unless ``model_in_process`` says otherwise:
    on a CPU the default (``auto``) would put small models into the API workers, and the
    tests of that shape ask for it by name.
    """
    return {
        "BENTOML_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "ESPNET_SERVE_GPU_COUNT": "0",
        "ESPNET_SERVE_MODEL_IN_PROCESS": "false",
        **{f"ESPNET_SERVE_{name.upper()}": value for name, value in settings.items()},
    }


def import_default_model(home: Path) -> None:
    """Import the embedded model into the model store of ``home``."""
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    subprocess.run([cli, "import-default"], env={**os.environ, **serve_env(home)}, check=True)


def serve_default_model(home: Path, **settings: str) -> BentoServer:
    """Import the embedded model into a fresh ``BENTOML_HOME`` and serve it on CPU.

    Args:
        home: An empty directory used as ``BENTOML_HOME``.
        **settings: ``ESPNET_SERVE_*`` settings, by lower-case name (e.g. ``api_workers="2"``).
    """
    import_default_model(home)
    return start_server(
        "service:ApiService", env=serve_env(home, **settings), log_path=home / "serve.log"
    )


def serve_split(home: Path, **settings: str) -> tuple[BentoServer, BentoServer]:
    """Serve the stored model as the chart's split mode does: model and API processes apart.

    Both run ``start-http-server`` (one service each); the API reaches the model at its
    loopback URL through ``--depends``. Returns ``(model, api)``.

    As in the chart, each server has its own ``BENTOML_HOME`` (the API's holds a link to the
    model store): a server starting wipes its home's Prometheus multiprocess directory, so two
    servers on one home lose the first one's metrics.
    """
    env = serve_env(home, **settings)
    api_home = home / "api-home"
    api_home.mkdir(exist_ok=True)
    if not (api_home / "models").exists():
        (api_home / "models").symlink_to(home / "models", target_is_directory=True)
    start = (sys.executable, "-m", "bentoml_cli._internal.start", "start-http-server")
    model = start_server(
        "service:ApiService",
        env=env,
        log_path=home / "model.log",
        command=start,
        extra_args=("--service-name", "ModelService"),
    )
    try:
        api = start_server(
            "service:ApiService",
            env=serve_env(api_home, **settings),
            log_path=home / "api.log",
            command=start,
            extra_args=("--service-name", "ApiService", "--depends", f"ModelService={model.url}"),
        )
    except BaseException:
        model.stop()
        raise
    return model, api
