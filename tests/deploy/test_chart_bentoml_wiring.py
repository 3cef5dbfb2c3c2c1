"""Run the chart's BentoML command lines for real, on this machine, against a stand-in Bento.

The rendered container args and BENTOML_CONFIG file are started exactly as the image's entrypoint
starts them (`bentoml serve ...` / `python -m bentoml_cli._internal.start start-http-server ...`),
with only the listen address changed (127.0.0.1 and free ports instead of 0.0.0.0:3000) and the
model Service's DNS name pointed at the local model server. The stand-in services carry the names
the chart wires (ApiService depends on ModelService), so this checks that split mode's `--depends`
and `--service-name` really connect the two servers, and that SIGTERM stops them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import psutil
import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "espnet-serve"
RELEASE = "asr"
NAMESPACE = "speech"
FULLNAME = "asr-espnet-serve"

pytestmark = pytest.mark.slow

STAND_IN_SERVICE = textwrap.dedent(
    '''
    """Stand-in for the real service module: the same service names, no model.

    STAND_IN_MODELS model services (ModelService, ModelService2, ...), as a Bento that serves
    that many models has; each answers with its name. The API depends on every one.
    """

    import os

    import bentoml


    def model_service(name):
        class Model:
            @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=100)
            def transcribe(self, clips: list[str]) -> list[str]:
                return [f"{clip.upper()} ({name})" for clip in clips]

        return bentoml.service(name=name, workers=1)(Model)


    MODELS = [
        model_service("ModelService" if i == 0 else f"ModelService{i + 1}")
        for i in range(int(os.environ.get("STAND_IN_MODELS", "1")))
    ]
    ModelService = MODELS[0]


    class _ApiService:
        @bentoml.api
        async def transcribe(self, text: str, model: int = 0) -> str:
            dependency = getattr(self, "model" if model == 0 else f"model{model + 1}")
            (result,) = await dependency.to_async.transcribe([text])
            return result


    for _i, _model in enumerate(MODELS):
        setattr(_ApiService, "model" if _i == 0 else f"model{_i + 1}", bentoml.depends(_model))
    ApiService = bentoml.service(name="ApiService", workers=1)(_ApiService)
    '''
)
# Short, so that SIGTERM's graceful shutdown (request timeout + 5 s) ends soon.
REQUEST_TIMEOUT_S = 10
STARTUP_WAIT_S = 120
STOP_WAIT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render_split_or_combined(mode: str) -> tuple[dict[str, list[str]], str]:
    """Container args per component and the BentoML configuration file of ``mode``."""
    objects = render_objects({"mode": mode})
    args = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
        for o in objects
        if o["kind"] == "Deployment"
    }
    return args, config_map(objects, "bentoml")["bentoml_configuration.yaml"]


def config_map(objects: list[dict[str, Any]], suffix: str) -> dict[str, str]:
    """The data of the release's ConfigMap ``<fullname>-<suffix>``."""
    (data,) = [
        o["data"]
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{FULLNAME}-{suffix}"
    ]
    return data


def render_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (with this module's request timeout)."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        manifests = chart.render(
            values={"requestTimeoutSeconds": REQUEST_TIMEOUT_S, **values},
            name=RELEASE,
            namespace=NAMESPACE,
        )
    return [
        doc
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def localize(args: list[str], port: int, model_port: int | None = None) -> list[str]:
    """Listen on 127.0.0.1:port; point the model Service URL at the local model server."""
    out = []
    for arg in args:
        if arg == "0.0.0.0":
            arg = "127.0.0.1"
        elif arg == "3000":
            arg = str(port)
        elif model_port is not None and arg.startswith("ModelService=http://"):
            assert arg == f"ModelService=http://{FULLNAME}-model.{NAMESPACE}.svc:3000"
            arg = f"ModelService=http://127.0.0.1:{model_port}"
        out.append(arg)
    return out


def entrypoint(args: list[str], workdir: Path) -> list[str]:
    """What the image's entrypoint runs for ``args`` (with the Bento replaced by the stand-in)."""
    bento = ["--working-dir", str(workdir), "service:ApiService"]
    if args[0] == "serve":
        return [sys.executable, "-m", "bentoml", *args, *bento]
    assert args[0] == "start-http-server"
    return [sys.executable, "-m", "bentoml_cli._internal.start", *args, *bento]


class Server:
    def __init__(
        self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> int | None:
        """SIGTERM the server (as the kubelet does); return its exit code, None if it hung."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                return None
        return self.proc.returncode

    def kill_all(self) -> None:
        """Kill the server and every process it started (BentoML workers have their own groups)."""
        try:
            family = [*psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        self.proc.kill()
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.proc.wait()


def get(url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> tuple[int, str]:
    """GET ``url``, or POST ``body`` as JSON; returns (status, text), status 0 when unreachable."""
    request = urllib.request.Request(url)
    if body is not None:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def wait_ready(url: str, servers: list[Server]) -> None:
    deadline = time.monotonic() + STARTUP_WAIT_S
    while time.monotonic() < deadline:
        if get(url)[0] == 200:
            return
        for server in servers:
            if server.proc.poll() is not None:
                pytest.fail(f"server exited early:\n{server.log.read_text()[-3000:]}")
        time.sleep(0.5)
    logs = "\n".join(s.log.read_text()[-2000:] for s in servers)
    pytest.fail(f"{url} never became ready:\n{logs}")


@pytest.fixture
def bento_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], list[Server]]]:
    workdir = tmp_path / "bento"
    workdir.mkdir()
    (workdir / "service.py").write_text(STAND_IN_SERVICE)
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    servers: list[Server] = []
    yield workdir, env, servers
    for server in servers:
        server.kill_all()


def write_config(tmp_path: Path, env: dict[str, str], config: str) -> None:
    path = tmp_path / "bentoml_configuration.yaml"
    path.write_text(config)
    env["BENTOML_CONFIG"] = str(path)


def test_split_mode_args_wire_the_api_to_the_model_service(bento_env, tmp_path: Path) -> None:
    workdir, env, servers = bento_env
    args, config = render_split_or_combined("split")
    write_config(tmp_path, env, config)
    model_port, api_port = free_port(), free_port()
    model = Server(entrypoint(localize(args["model"], model_port), workdir), env, tmp_path / "m")
    servers.append(model)
    api_args = localize(args["api"], api_port, model_port)
    api = Server(entrypoint(api_args, workdir), env, tmp_path / "a")
    servers.append(api)

    wait_ready(f"http://127.0.0.1:{model_port}/readyz", servers)
    wait_ready(f"http://127.0.0.1:{api_port}/readyz", servers)
    status, text = get(f"http://127.0.0.1:{api_port}/transcribe", {"text": "through the api"})
    assert (status, text) == (200, "THROUGH THE API (ModelService)")
    # The request went API pod -> model pod: the model server counted it.
    status, metrics = get(f"http://127.0.0.1:{model_port}/metrics")
    assert status == 200
    assert 'service_name="ModelService"' in metrics
    assert "bentoml_service_request_total" in metrics

    # Without the model service the API stays alive (no restart) but is not ready (no traffic):
    # its /readyz fails or hangs past the probe's timeout. (Killing the whole process tree is
    # what removing a pod does.)
    model.kill_all()
    deadline = time.monotonic() + STOP_WAIT_S
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status, _ = get(f"http://127.0.0.1:{api_port}/readyz", timeout=6)
    assert status != 200, "API still ready without its model service"
    assert get(f"http://127.0.0.1:{api_port}/livez", timeout=10)[0] == 200
    # SIGTERM ends the server once in-flight requests (here the hung /readyz) finish or the
    # chart's --timeout-graceful-shutdown runs out.
    assert api.stop() is not None, "API server ignored SIGTERM"


def test_combined_mode_args_serve_the_whole_bento(bento_env, tmp_path: Path) -> None:
    workdir, env, servers = bento_env
    args, config = render_split_or_combined("combined")
    write_config(tmp_path, env, config)
    port = free_port()
    server = Server(entrypoint(localize(args["server"], port), workdir), env, tmp_path / "s")
    servers.append(server)
    wait_ready(f"http://127.0.0.1:{port}/readyz", servers)
    assert get(f"http://127.0.0.1:{port}/livez")[0] == 200
    status, text = get(f"http://127.0.0.1:{port}/transcribe", {"text": "one pod"})
    assert (status, text) == (200, "ONE POD (ModelService)")
    assert_keeps_idle_connection(port, idle_seconds=UVICORN_DEFAULT_KEEP_ALIVE_S + 1.5)
    assert server.stop() is not None, "server ignored SIGTERM"


# uvicorn's (and so BentoML's) idle keep-alive timeout when none is given.
UVICORN_DEFAULT_KEEP_ALIVE_S = 5


def assert_keeps_idle_connection(port: int, idle_seconds: float) -> None:
    """One keep-alive connection answers, idles ``idle_seconds``, then answers again."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for attempt in range(2):
            if attempt:
                time.sleep(idle_seconds)
            conn.request("GET", "/livez")  # closed by the server: RemoteDisconnected
            response = conn.getresponse()
            response.read()
            assert response.status == 200, attempt
            assert not response.will_close, attempt
    finally:
        conn.close()


THREE_MODELS = {
    "mode": "split",
    "bento": {"modelServices": ["ModelService", "ModelService2", "ModelService3"]},
    "modelGroups": [["ModelService2", "ModelService3"]],
}


def test_split_mode_serves_three_models_two_sharing_one_pod(bento_env, tmp_path: Path) -> None:
    """ModelService in its own pod; ModelService2 and 3 in one pod under circusd, as rendered.

    The API reaches each through its Service's target port; a server of the shared pod that dies
    is started again by circusd; SIGTERM stops circusd and both its servers.
    """
    workdir, env, servers = bento_env
    env["STAND_IN_MODELS"] = "3"
    # The image puts its venv first on PATH: circusd's watchers run `python` from there.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    objects = render_objects(THREE_MODELS)
    write_config(tmp_path, env, config_map(objects, "bentoml")["bentoml_configuration.yaml"])
    deployments = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o
        for o in objects
        if o["kind"] == "Deployment"
    }
    assert set(deployments) == {"api", "model", "model2"}

    # Each container port of the model pods gets a free local port.
    local: dict[tuple[str, str], int] = {}  # (component, port name) -> local port
    container_ports: dict[tuple[str, int], int] = {}  # (component, container port) -> local
    for key in ("model", "model2"):
        (container,) = deployments[key]["spec"]["template"]["spec"]["containers"]
        for port in container["ports"]:
            local[key, port["name"]] = container_ports[key, port["containerPort"]] = free_port()
    # The API's --depends URL of each model service -> the local port its Service targets.
    urls = {}
    for service in (o for o in objects if o["kind"] == "Service"):
        key = service["spec"]["selector"]["app.kubernetes.io/component"]
        if key != "api":
            (port,) = service["spec"]["ports"]
            name = service["metadata"]["name"]
            url = f"http://{name}.{NAMESPACE}.svc:{port['port']}"
            urls[url] = f"http://127.0.0.1:{local[key, port['targetPort']]}"

    (model_container,) = deployments["model"]["spec"]["template"]["spec"]["containers"]
    model_port = local["model", "http"]
    servers.append(
        Server(
            entrypoint(localize(model_container["args"], model_port), workdir), env, tmp_path / "m"
        )
    )

    (shared,) = deployments["model2"]["spec"]["template"]["spec"]["containers"]
    assert shared["args"][0] == "circusd"
    ini = config_map(objects, "circus")[Path(shared["args"][1]).name]
    control = Path(tempfile.mkdtemp(prefix="circus", dir="/tmp"))  # short: ipc paths <= 107
    ini = ini.replace("ipc:///tmp/", f"ipc://{control}/").replace("0.0.0.0", "127.0.0.1")
    for (key, container_port), port in container_ports.items():
        if key == "model2":
            ini = ini.replace(f"--port {container_port} ", f"--port {port} ")
    (tmp_path / "model2.ini").write_text(ini)
    circus_env = {**env, "BENTO_PATH": "service:ApiService"}  # what the image's BENTO_PATH names
    circus = Server(
        [str(Path(sys.executable).parent / "circusd"), str(tmp_path / "model2.ini")],
        circus_env,
        tmp_path / "c",
        cwd=workdir,
    )
    servers.append(circus)

    api_port = free_port()
    api_args = []
    (api_container,) = deployments["api"]["spec"]["template"]["spec"]["containers"]
    for arg in localize(api_container["args"], api_port):
        service, _, url = arg.partition("=")
        api_args.append(f"{service}={urls[url]}" if url in urls else arg)
    assert sum(arg.startswith("ModelService") for arg in api_args) == 3
    servers.append(Server(entrypoint(api_args, workdir), env, tmp_path / "a"))
    wait_ready(f"http://127.0.0.1:{api_port}/readyz", servers)

    for index, name in enumerate(["ModelService", "ModelService2", "ModelService3"]):
        status, text = get(
            f"http://127.0.0.1:{api_port}/transcribe", {"text": "hi", "model": index}
        )
        assert (status, text) == (200, f"HI ({name})")

    # The shared pod's exec probe, as the kubelet runs it, passes while both servers answer.
    python, flag, script, path, *ports = shared["readinessProbe"]["exec"]["command"]
    assert (python, path, ports) == ("python", "/readyz", ["3000", "3001"])
    probe = [sys.executable, flag, script, path]
    probe += [str(container_ports["model2", int(port)]) for port in ports]
    assert subprocess.run(probe, env=env, timeout=30).returncode == 0

    # A server of the shared pod dies, its worker with it (a worker left alone would outlive the
    # test, adopted by init): circusd starts it again, the other keeps answering.
    (victim,) = [
        p for p in psutil.Process(circus.proc.pid).children() if "ModelService3" in p.cmdline()
    ]
    dying = [victim, *victim.children(recursive=True)]
    for process in dying:
        process.kill()
    psutil.wait_procs(dying, timeout=10)
    assert get(f"http://127.0.0.1:{api_port}/transcribe", {"text": "on", "model": 1}) == (
        200,
        "ON (ModelService2)",
    )
    deadline = time.monotonic() + STARTUP_WAIT_S
    while get(f"http://127.0.0.1:{local['model2', 'http-2']}/readyz")[0] != 200:
        assert time.monotonic() < deadline, circus.log.read_text()[-3000:]
        assert circus.proc.poll() is None
        time.sleep(0.5)
    assert get(f"http://127.0.0.1:{api_port}/transcribe", {"text": "back", "model": 2}) == (
        200,
        "BACK (ModelService3)",
    )

    # SIGTERM (the kubelet stopping the pod) stops circusd and every server it runs.
    children = psutil.Process(circus.proc.pid).children(recursive=True)
    assert len(children) >= 2
    assert circus.stop() is not None, "circusd ignored SIGTERM"
    _gone, alive = psutil.wait_procs(children, timeout=STOP_WAIT_S)
    assert not alive, [p.cmdline() for p in alive]
