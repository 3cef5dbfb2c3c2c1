"""Offline checks of the Helm chart in deploy/helm/espnet-serve.

Helm's own engine (v4, embedded in helm-python-sdk) lints and renders the chart; every rendered
object is validated against the Kubernetes OpenAPI schemas bundled with kubernetes-validate; the
container command lines are parsed by BentoML's own CLI and the generated BentoML configuration
by BentoML's own configuration loader. No cluster, no network, no helm binary.
"""

from __future__ import annotations

import base64
import configparser
import copy
import functools
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from espnet_serve.serving.settings import KEEP_ALIVE_SECONDS

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "espnet-serve"
MAKEFILE = REPO_ROOT / "Makefile"
CONTAINERFILE = REPO_ROOT / "docker" / "Containerfile"
RELEASE = "asr"
NAMESPACE = "speech"
FULLNAME = "asr-espnet-serve"
# The oldest Kubernetes the chart supports with every feature on, and the newest schema bundled.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
# Objects of CRDs that kubernetes-validate has no schema for: checked by hand below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# The Bento image's entrypoint appends $BENTO_PATH to `serve` / `start-http-server` args.
BENTO_PATH = "/home/bentoml/bento"
GPU = "nvidia.com/gpu"
# API keys (auth.*): where the pods that serve clients find the key hashes.
AUTH_DIR = "/etc/espnet-serve/auth"
AUTH_ENV = ("ESPNET_SERVE_API_KEY_HASHES_FILE", "ESPNET_SERVE_PROTECT_METRICS")
KEY_HASHES = [hashlib.sha256(key).hexdigest() for key in (b"client-key", b"prometheus-key")]

# Value sets covering both modes and every optional object.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "combined-defaults": {},
    "combined-gpu-autoscaling-monitoring": {
        "mode": "combined",
        "image": {"repository": "registry.example.com/asr/espnet-serve", "tag": "2024.1"},
        "gpu": {"enabled": True, "count": 1, "nodeSelector": {"nvidia.com/gpu.present": "true"}},
        "server": {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 3,
                "podsMetric": {"enabled": True},
            }
        },
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "networkPolicy": {"enabled": True},
    },
    "split-defaults": {"mode": "split"},
    "split-gpu-everything": {
        "mode": "split",
        "image": {
            "repository": "registry.example.com/asr/espnet-serve",
            "digest": "sha256:" + "ab" * 32,
        },
        "requestTimeoutSeconds": 300,
        "apiTimeoutSeconds": 7200,
        "gracefulShutdown": {"preStopSleepSeconds": 15, "useSleepAction": True},
        "gpu": {"enabled": True, "count": 2, "runtimeClassName": "nvidia"},
        "api": {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 20,
                "podsMetric": {"enabled": True, "targetAverageValue": "10"},
            },
            "pdb": {"maxUnavailable": None, "minAvailable": 1},
        },
        "model": {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 8,
                "targetCPUUtilizationPercentage": None,
                "podsMetric": {"enabled": True},
            },
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "asr"}],
        },
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "web"}}}
            ],
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
            ],
            "restrictEgress": True,
        },
        "settings": {"ESPNET_SERVE_MAX_BATCH_SIZE": 64, "ESPNET_SERVE_MODEL_TAG": "asr:v2"},
        "extraEnv": [{"name": "OMP_NUM_THREADS", "value": "4"}],
    },
    "split-cpu-no-autoscaling-no-pdb": {
        "mode": "split",
        "gpu": {"enabled": False},
        "api": {"replicas": 0, "pdb": {"enabled": False}},
        "model": {"replicas": 3, "pdb": {"enabled": False}},
        "serviceMonitor": {"enabled": False},
        "networkPolicy": {"enabled": True, "restrictEgress": True},
        "serviceAccount": {"create": False},
    },
    "combined-api-keys-protected-metrics": {
        "auth": {"enabled": True, "keyHashes": KEY_HASHES, "protectMetrics": True},
        "serviceMonitor": {
            "enabled": True,
            "authorization": {"secretName": "asr-metrics-key", "secretKey": "key"},
        },
    },
    # Three models (a Bento built with two --with-model): ModelService alone, the other two
    # sharing one model Deployment (and its GPU).
    "split-three-models-two-share-a-gpu": {
        "mode": "split",
        "bento": {"modelServices": ["ModelService", "ModelService2", "ModelService3"]},
        "modelGroups": [["ModelService2", "ModelService3"]],
        "gpu": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True, "restrictEgress": True},
    },
    "split-api-keys-existing-secret": {
        "mode": "split",
        "auth": {"enabled": True, "existingSecret": "asr-api-keys", "secretKey": "hashes"},
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True},
    },
}


@pytest.fixture(scope="module", autouse=True)
def cached_kubernetes_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads its multi-megabyte schema files on every call: cache them."""
    utils = kubernetes_validate.utils
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            utils, "schema_contents", functools.lru_cache(maxsize=64)(utils.schema_contents)
        )
        yield


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def defaults(chart: helm_python.Chart) -> dict[str, Any]:
    return chart.values


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Render the chart and return every Kubernetes object (NOTES.txt excluded)."""
    manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def merged(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, Any]:
    """The values a release would use (chart defaults coalesced with ``values``)."""
    return chart.merge_values(copy.deepcopy(values))


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def the_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(deployment)["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def runs_model(deployment: dict[str, Any]) -> bool:
    return component(deployment) == "server" or component(deployment).startswith("model")


def values_key(deployment: dict[str, Any]) -> str:
    """The values section of a Deployment: server, api, or model (every model Deployment)."""
    return "model" if component(deployment).startswith("model") else component(deployment)


def server_args(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> list[list[str]]:
    """The BentoML command line of each server in the Deployment's pods (circusd's watchers)."""
    args = the_container(deployment)["args"]
    if args[0] != "circusd":
        return [args]
    watchers = circus_watchers(objects, component(deployment))
    return [w["cmd"].split()[3:-1] for w in watchers.values()]


def serves_clients(deployment: dict[str, Any]) -> bool:
    return component(deployment) in {"server", "api"}


def volume_at(deployment: dict[str, Any], mount_path: str) -> tuple[dict, dict] | None:
    """The (volumeMount, volume) of the container mounted at ``mount_path``, if any."""
    container = the_container(deployment)
    mount = next((m for m in container["volumeMounts"] if m["mountPath"] == mount_path), None)
    if mount is None:
        return None
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    return mount, volumes[mount["name"]]


def model_layout(vals: dict[str, Any]) -> dict[str, list[str]]:
    """Split mode: the model services each model Deployment (by component) runs, in port order.

    ModelService runs in component ``model``, ModelService2 in ``model2``, ...; a modelGroups
    entry runs in the component of its first service.
    """
    own = model_components(vals)
    layout: dict[str, list[str]] = {}
    for service in vals["bento"]["modelServices"]:
        group = next((g for g in vals["modelGroups"] if service in g), [service])
        layout.setdefault(own[group[0]], list(group))
    return layout


def model_components(vals: dict[str, Any]) -> dict[str, str]:
    """Split mode: each model service's own component (its Service is <fullname>-<component>)."""
    services = vals["bento"]["modelServices"]
    return {s: "model" if i == 0 else f"model{i + 1}" for i, s in enumerate(services)}


def circus_watchers(objects: list[dict[str, Any]], key: str) -> dict[str, dict[str, str]]:
    """The circusd configuration of model Deployment ``key``, by watcher name."""
    (circus,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-circus")
    ]
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(circus["data"][f"{key}.ini"])
    assert parser["circus"]["endpoint"].startswith("ipc:///tmp/")
    return {
        name.removeprefix("watcher:"): dict(parser[name])
        for name in parser.sections()
        if name.startswith("watcher:")
    }


class Case(NamedTuple):
    """One rendered value set."""

    name: str
    vals: dict[str, Any]  # the values the release uses (defaults merged)
    objects: list[dict[str, Any]]


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def case(request: pytest.FixtureRequest, chart: helm_python.Chart) -> Case:
    values = VALUE_SETS[request.param]
    return Case(request.param, merged(chart, values), render(chart, values))


# --- lint -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_is_clean_in_strict_mode(name: str) -> None:
    report = helm_python.lint(CHART_DIR, values=VALUE_SETS[name], strict=True)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_metadata(chart: helm_python.Chart) -> None:
    meta = chart.metadata
    assert meta["name"] == "espnet-serve"
    assert meta["apiVersion"] == "v2"
    assert meta["version"] and meta["appVersion"]
    assert chart.schema is not None, "values.schema.json must ship with the chart"


# --- Kubernetes schema ----------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_kubernetes_schema(case: Case, version: str) -> None:
    objects = case.objects
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {err.message}")
        checked += 1
    assert checked >= 5


def test_every_object_has_standard_labels_and_namespace(case: Case) -> None:
    objects = case.objects
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "espnet-serve"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "espnet-serve"
        assert labels["app.kubernetes.io/version"]
        assert labels["helm.sh/chart"].startswith("espnet-serve-")
        assert obj["metadata"]["namespace"] == NAMESPACE


# --- workloads of each mode -----------------------------------------------------------------


def test_workloads_match_the_mode(case: Case) -> None:
    vals, objects = case.vals, case.objects
    deployments = of_kind(objects, "Deployment")
    services = of_kind(objects, "Service")
    if vals["mode"] == "combined":
        assert set(deployments) == {FULLNAME}
        assert component(deployments[FULLNAME]) == "server"
        assert set(services) == {FULLNAME}
    else:
        layout = model_layout(vals)
        assert set(deployments) == {f"{FULLNAME}-api"} | {f"{FULLNAME}-{k}" for k in layout}
        assert component(deployments[f"{FULLNAME}-api"]) == "api"
        for key in layout:
            assert component(deployments[f"{FULLNAME}-{key}"]) == key
        # Clients use the same Service name in both modes; every model service has its own.
        own = model_components(vals)
        assert set(services) == {FULLNAME} | {f"{FULLNAME}-{c}" for c in own.values()}
        assert component(services[FULLNAME]) == "api"
        for service, key in own.items():
            (group,) = [k for k, members in layout.items() if service in members]
            assert component(services[f"{FULLNAME}-{key}"]) == group


def test_selectors_match_pod_labels_and_only_their_own_pods(case: Case) -> None:
    objects = case.objects
    deployments = of_kind(objects, "Deployment")
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selects(selector, pod_labels(deployment)), name
        others = [d for n, d in deployments.items() if n != name]
        assert not any(selects(selector, pod_labels(o)) for o in others), name

    def targets(selector: dict[str, str]) -> list[str]:
        return [n for n, d in deployments.items() if selects(selector, pod_labels(d))]

    for service in of_kind(objects, "Service").values():
        assert targets(service["spec"]["selector"]) == [
            n for n, d in deployments.items() if component(d) == component(service)
        ]
        (port,) = service["spec"]["ports"]
        assert port["name"] == "http"  # what the ServiceMonitor scrapes
        (target,) = targets(service["spec"]["selector"])
        ports = {p["name"] for p in the_container(deployments[target])["ports"]}
        assert port["targetPort"] in ports
    for pdb in of_kind(objects, "PodDisruptionBudget").values():
        assert targets(pdb["spec"]["selector"]["matchLabels"]) == [pdb["metadata"]["name"]]
    for policy in of_kind(objects, "NetworkPolicy").values():
        assert targets(policy["spec"]["podSelector"]["matchLabels"]) == [policy["metadata"]["name"]]


def test_container_ports_and_probes(case: Case) -> None:
    vals, objects = case.vals, case.objects
    port = vals["bento"]["port"]
    layout = model_layout(vals) if vals["mode"] == "split" else {}
    for name, deployment in of_kind(objects, "Deployment").items():
        container = the_container(deployment)
        servers = len(layout.get(component(deployment), [None]))
        assert container["ports"] == [
            {
                "name": "http" if i == 0 else f"http-{i + 1}",
                "containerPort": port + i,
                "protocol": "TCP",
            }
            for i in range(servers)
        ], name
        expected = {
            "startupProbe": "/livez",
            "livenessProbe": "/livez",
            "readinessProbe": "/readyz",
        }
        for probe, path in expected.items():
            if servers == 1:
                assert container[probe]["httpGet"] == {"path": path, "port": "http"}, (name, probe)
            else:
                # A pod of several servers: one exec probe asks each of them.
                python, flag, _script, *args = container[probe]["exec"]["command"]
                assert (python, flag) == ("python", "-c")
                assert args == [path, *(str(port + i) for i in range(servers))], (name, probe)
        startup = container["startupProbe"]
        # Model loading gets minutes, not the liveness probe's seconds.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
        assert container["livenessProbe"]["failureThreshold"] >= 1


def test_bentoml_command_lines_parse_with_bentoml_cli(case: Case) -> None:
    from bentoml_cli._internal.start import build_start_command
    from bentoml_cli.serve import build_serve_command

    vals, objects = case.vals, case.objects
    commands = {
        "serve": build_serve_command().commands["serve"],
        "start-http-server": build_start_command().commands["start-http-server"],
    }
    deployments = of_kind(objects, "Deployment")
    parsed = {}
    for deployment in deployments.values():
        container = the_container(deployment)
        assert "command" not in container, "keep the image's entrypoint (venv, $BENTO_PATH)"
        key = component(deployment)
        if container["args"][0] == "circusd":
            # The image's entrypoint runs circusd as it is; each watcher runs what the
            # entrypoint runs for `start-http-server` ($BENTO_PATH from the image's env).
            assert container["args"][1] == f"/etc/espnet-serve/circus/{key}.ini"
            lines = []
            for service, watcher in circus_watchers(objects, key).items():
                python, flag, module, *args, bento = watcher["cmd"].split()
                assert (python, flag, module) == ("python", "-m", "bentoml_cli._internal.start")
                assert bento == "$(circus.env.bento_path)"
                assert watcher["stop_signal"] == "TERM" and watcher["copy_env"] == "True"
                lines.append((service, args))
        else:
            lines = [(key, container["args"])]
        for index, (server, (sub, *args)) in enumerate(lines):
            ctx = commands[sub].make_context(sub, [*args, BENTO_PATH])
            parsed[server] = (sub, ctx.params)
            assert ctx.params["host"] == "0.0.0.0"
            assert ctx.params["port"] == vals["bento"]["port"] + index
            assert ctx.params["bento"] == BENTO_PATH

    bento = vals["bento"]
    if vals["mode"] == "combined":
        assert parsed["server"][0] == "serve"
    else:
        sub, api = parsed["api"]
        assert sub == "start-http-server"
        assert api["service_name"] == bento["apiService"] == "ApiService"
        services = of_kind(objects, "Service")
        depends = []
        for service, key in model_components(vals).items():
            port = services[f"{FULLNAME}-{key}"]["spec"]["ports"][0]["port"]
            depends.append(f"{service}=http://{FULLNAME}-{key}.{NAMESPACE}.svc:{port}")
        assert api["depends"] == tuple(depends)
        assert bento["modelServices"][0] == "ModelService"
        for key, members in model_layout(vals).items():
            for service in members:
                server = service if len(members) > 1 else key
                sub, model = parsed[server]
                assert sub == "start-http-server"
                assert model["service_name"] == service
                assert not model["depends"]


def test_image_comes_from_values(case: Case, chart: helm_python.Chart) -> None:
    vals, objects = case.vals, case.objects
    image = vals["image"]
    if image.get("digest"):
        expected = f"{image['repository']}@{image['digest']}"
    else:
        expected = f"{image['repository']}:{image.get('tag') or chart.metadata['appVersion']}"
    for deployment in of_kind(objects, "Deployment").values():
        container = the_container(deployment)
        assert container["image"] == expected
        assert container["imagePullPolicy"] == image["pullPolicy"]


# --- GPU ------------------------------------------------------------------------------------


def test_gpu_requested_only_by_pods_that_run_the_model(case: Case) -> None:
    vals, objects = case.vals, case.objects
    gpu = vals["gpu"]
    for name, deployment in of_kind(objects, "Deployment").items():
        resources = the_container(deployment)["resources"]
        spec = pod_spec(deployment)
        tolerations = spec.get("tolerations", [])
        gpu_count = env_of(the_container(deployment))["ESPNET_SERVE_GPU_COUNT"]
        if gpu["enabled"] and runs_model(deployment):
            assert resources["limits"][GPU] == gpu["count"], name
            assert resources["requests"][GPU] == gpu["count"], name
            assert all(t in tolerations for t in gpu["tolerations"]), name
            assert gpu_count == str(gpu["count"])
            for key, value in gpu["nodeSelector"].items():
                assert spec["nodeSelector"][key] == value
            if gpu.get("runtimeClassName"):
                assert spec["runtimeClassName"] == gpu["runtimeClassName"]
        else:
            assert GPU not in resources.get("limits", {}), name
            assert GPU not in resources.get("requests", {}), name
            assert not any(t.get("key") == GPU for t in tolerations), name
            assert "runtimeClassName" not in spec
            assert gpu_count == "0"


def test_split_mode_api_pods_are_cpu_only_even_with_gpu(chart: helm_python.Chart) -> None:
    objects = render(chart, {"mode": "split", "gpu": {"enabled": True}})
    deployments = of_kind(objects, "Deployment")
    api = the_container(deployments[f"{FULLNAME}-api"])["resources"]
    model = the_container(deployments[f"{FULLNAME}-model"])["resources"]
    assert GPU not in api.get("limits", {}) and GPU not in api.get("requests", {})
    assert model["limits"][GPU] == 1
    assert "cpu" in api["requests"]


# --- Pod Security Standard "restricted" -----------------------------------------------------

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def test_every_pod_meets_the_restricted_pod_security_standard(case: Case) -> None:
    objects = case.objects
    for name, deployment in of_kind(objects, "Deployment").items():
        spec = pod_spec(deployment)
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["runAsUser"] != 0
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), (name, key)
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        for volume in spec["volumes"]:
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, (name, volume)
        containers = spec["containers"] + spec.get("initContainers", [])
        for container in containers:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc.get("privileged", False) is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["runAsNonRoot"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert not sc["capabilities"].get("add")
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "hostPort" not in str(container.get("ports", []))


def test_writable_paths_are_empty_dirs(case: Case) -> None:
    vals, objects = case.vals, case.objects
    dirs = vals["writableDirs"]
    for name, deployment in of_kind(objects, "Deployment").items():
        spec = pod_spec(deployment)
        volumes = {v["name"]: v for v in spec["volumes"]}
        container = the_container(deployment)
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        env = env_of(container)
        for path in ("/tmp", env["BENTOML_HOME"], env["XDG_CACHE_HOME"]):
            mount = mounts[path]
            assert "emptyDir" in volumes[mount["name"]], (name, path)
            assert not mount.get("readOnly", False)
        assert env["BENTOML_HOME"] == dirs["bentomlHome"]["mountPath"]
        # The Bento itself stays in the image: nothing may be mounted over it.
        assert not any(BENTO_PATH.startswith(p.rstrip("/") + "/") for p in mounts)
        assert BENTO_PATH not in mounts
        assert env["MPLCONFIGDIR"].startswith("/tmp/")
        assert env["NUMBA_CACHE_DIR"].startswith(env["XDG_CACHE_HOME"] + "/")


# --- configuration --------------------------------------------------------------------------


def test_settings_configmap_holds_espnet_serve_settings(case: Case) -> None:
    vals, objects = case.vals, case.objects
    configmaps = of_kind(objects, "ConfigMap")
    data = configmaps[f"{FULLNAME}-env"]["data"]
    assert all(isinstance(v, str) for v in data.values())
    assert all(k.startswith("ESPNET_SERVE_") for k in data)
    for key, value in vals["settings"].items():
        if value is None:
            assert key not in data
        else:
            assert data[key] == str(value)
    assert data["ESPNET_SERVE_REQUEST_TIMEOUT_SECONDS"] == str(vals["requestTimeoutSeconds"])
    assert data["ESPNET_SERVE_API_TIMEOUT_SECONDS"] == str(vals["apiTimeoutSeconds"])
    drain = int(data["ESPNET_SERVE_DRAIN_TIMEOUT_SECONDS"])
    assert drain == vals["requestTimeoutSeconds"] + 5
    quiet = 2  # ServeSettings.drain_quiet_seconds: a model pod's idle wait after draining
    for deployment in of_kind(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        pre_stop = vals["gracefulShutdown"]["preStopSleepSeconds"]
        # SIGTERM comes after preStop; the kubelet must not kill a pod that is still draining.
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + quiet
        sources = the_container(deployment)["envFrom"]
        assert {"configMapRef": {"name": f"{FULLNAME}-env"}} in sources


def test_settings_map_takes_new_keys_and_drops_nulls(chart: helm_python.Chart) -> None:
    objects = render(
        chart,
        {
            "settings": {
                "ESPNET_SERVE_BRAND_NEW_KNOB": "on",
                "ESPNET_SERVE_WARMUP": False,
                "ESPNET_SERVE_MAX_AUDIO_SECONDS": 12.5,
                "ESPNET_SERVE_MAX_BATCH_SIZE": None,
            }
        },
    )
    data = of_kind(objects, "ConfigMap")[f"{FULLNAME}-env"]["data"]
    assert data["ESPNET_SERVE_BRAND_NEW_KNOB"] == "on"
    assert data["ESPNET_SERVE_WARMUP"] == "false"
    assert data["ESPNET_SERVE_MAX_AUDIO_SECONDS"] == "12.5"
    assert data["ESPNET_SERVE_MAX_AUDIO_BYTES"] == "1073741824"  # no float formatting
    assert "ESPNET_SERVE_MAX_BATCH_SIZE" not in data


@pytest.mark.parametrize(
    ("mode", "value", "rendered"),
    [("combined", True, "true"), ("combined", "1", "1"), ("split", False, "false")],
)
def test_model_in_process_is_a_combined_mode_setting(
    chart: helm_python.Chart, mode: str, value: object, rendered: str
) -> None:
    # Split mode refuses it when true (TEMPLATE_REJECTS): its API pods would load the model.
    objects = render(chart, {"mode": mode, "settings": {"ESPNET_SERVE_MODEL_IN_PROCESS": value}})
    data = of_kind(objects, "ConfigMap")[f"{FULLNAME}-env"]["data"]
    assert data["ESPNET_SERVE_MODEL_IN_PROCESS"] == rendered


def test_where_the_models_run_follows_the_pod(chart: helm_python.Chart) -> None:
    # A CPU combined pod leaves it to the server (auto: small models in the API workers), one
    # API worker per CPU it requests, never per CPU of the node; a GPU pod and the split mode's
    # pods keep the model services (split: said outright, its API pods hold no model).
    def envs(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {
            name: {e["name"]: e for e in the_container(d).get("env", [])}
            for name, d in of_kind(render(chart, values), "Deployment").items()
        }

    [cpu] = envs({"mode": "combined"}).values()
    assert "ESPNET_SERVE_MODEL_IN_PROCESS" not in cpu
    assert cpu["ESPNET_SERVE_API_WORKERS"]["valueFrom"] == {
        "resourceFieldRef": {"containerName": "bentoml", "resource": "requests.cpu", "divisor": "1"}
    }
    [gpu] = envs({"mode": "combined", "gpu": {"enabled": True}}).values()
    assert "ESPNET_SERVE_API_WORKERS" not in gpu and "ESPNET_SERVE_MODEL_IN_PROCESS" not in gpu
    [chosen] = envs({"mode": "combined", "settings": {"ESPNET_SERVE_API_WORKERS": 3}}).values()
    assert "ESPNET_SERVE_API_WORKERS" not in chosen  # the ConfigMap's value stands
    unrequested = {"server": {"resources": {"requests": {"cpu": None, "memory": "4Gi"}}}}
    [bare] = envs({"mode": "combined", **unrequested}).values()
    assert "ESPNET_SERVE_API_WORKERS" not in bare  # no request: the server's own auto
    split = envs({"mode": "split"})
    assert len(split) >= 2
    for env in split.values():
        assert env["ESPNET_SERVE_MODEL_IN_PROCESS"]["value"] == "false"
        assert "ESPNET_SERVE_API_WORKERS" not in env


def test_bentoml_configuration_is_accepted_by_bentoml(case: Case, tmp_path: Path) -> None:
    from bentoml._internal.configuration.containers import BentoMLConfiguration

    vals, objects = case.vals, case.objects
    configmap = of_kind(objects, "ConfigMap")[f"{FULLNAME}-bentoml"]
    config_file = tmp_path / "bentoml_configuration.yaml"
    config_file.write_text(configmap["data"]["bentoml_configuration.yaml"])
    # BentoML reads BENTOML_CONFIG twice: with its v1 schema when bentoml is imported, and with
    # the v2 schema when a new-style service starts (Service.inject_config).
    BentoMLConfiguration(override_config_file=str(config_file), use_version=1)
    config = BentoMLConfiguration(override_config_file=str(config_file), use_version=2).to_dict()
    assert config["services"]["ApiService"]["traffic"]["timeout"] == vals["apiTimeoutSeconds"]
    assert config["services"]["ModelService"]["traffic"]["timeout"] == vals["requestTimeoutSeconds"]

    for name, deployment in of_kind(objects, "Deployment").items():
        container = the_container(deployment)
        env = env_of(container)
        config_path = Path(env["BENTOML_CONFIG"])
        mount = next(
            m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)
        )
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == f"{FULLNAME}-bentoml", name
        assert config_path.name in configmap["data"]


def test_extra_bentoml_config_is_merged(chart: helm_python.Chart) -> None:
    objects = render(chart, {"bento": {"config": {"services": {"ApiService": {"workers": 3}}}}})
    text = of_kind(objects, "ConfigMap")[f"{FULLNAME}-bentoml"]["data"][
        "bentoml_configuration.yaml"
    ]
    config = yaml.safe_load(text)
    assert config["services"]["ApiService"] == {"traffic": {"timeout": 3600}, "workers": 3}
    assert "version" not in config


def test_config_change_rolls_the_pods(chart: helm_python.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = of_kind(render(chart, values), "Deployment")[FULLNAME]
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"settings": {"ESPNET_SERVE_MAX_BATCH_SIZE": 8}})


# --- graceful termination -------------------------------------------------------------------


def grace_checks(vals: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    timeout = vals["requestTimeoutSeconds"]
    pre_stop_sleep = vals["gracefulShutdown"]["preStopSleepSeconds"]
    for name, deployment in of_kind(objects, "Deployment").items():
        spec = pod_spec(deployment)
        container = the_container(deployment)
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > pre_stop_sleep + timeout, name
        pre_stop = container["lifecycle"]["preStop"]
        if vals["gracefulShutdown"]["useSleepAction"]:
            assert pre_stop == {"sleep": {"seconds": pre_stop_sleep}}
        else:
            assert pre_stop == {"exec": {"command": ["sleep", str(pre_stop_sleep)]}}
        for args in server_args(objects, deployment):
            shutdown = int(args[args.index("--timeout-graceful-shutdown") + 1])
            # BentoML waits out the longest request, and Kubernetes waits for BentoML.
            assert timeout < shutdown < grace - pre_stop_sleep, name
        if container["args"][0] == "circusd":
            # circusd gives each server its graceful shutdown before it kills it.
            for watcher in circus_watchers(objects, component(deployment)).values():
                assert shutdown < int(watcher["graceful_timeout"]) < grace - pre_stop_sleep


def test_every_server_keeps_idle_connections_as_make_serve_does(case: Case) -> None:
    """One keep-alive timeout everywhere uvicorn is started.

    The chart, the image's CMD, ``make serve`` and the command ``espnet-serve build`` prints.
    """
    makefile = re.search(r"^KEEP_ALIVE_SECONDS := (\d+)$", MAKEFILE.read_text(), re.MULTILINE)
    containerfile = re.search(r'"--timeout-keep-alive", "(\d+)"', CONTAINERFILE.read_text())
    assert makefile and containerfile
    assert (
        makefile.group(1)
        == containerfile.group(1)
        == str(case.vals["bento"]["keepAliveSeconds"])
        == str(KEEP_ALIVE_SECONDS)  # what `espnet-serve build --bento` tells to run
    )
    for name, deployment in of_kind(case.objects, "Deployment").items():
        for args in server_args(case.objects, deployment):
            assert args[args.index("--timeout-keep-alive") + 1] == makefile.group(1), name


def test_termination_grace_outlasts_the_longest_request(case: Case) -> None:
    vals, objects = case.vals, case.objects
    grace_checks(vals, objects)


@pytest.mark.parametrize("timeout", [1, 30, 600, 3600])
@pytest.mark.parametrize("mode", ["combined", "split"])
def test_termination_grace_follows_request_timeout(
    chart: helm_python.Chart, timeout: int, mode: str
) -> None:
    values = {"mode": mode, "requestTimeoutSeconds": timeout}
    grace_checks(merged(chart, values), render(chart, values))


def test_explicit_grace_period_is_used_when_long_enough(chart: helm_python.Chart) -> None:
    values = {
        "requestTimeoutSeconds": 60,
        "gracefulShutdown": {"terminationGracePeriodSeconds": 80},
    }
    deployment = of_kind(render(chart, values), "Deployment")[FULLNAME]
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] == 80


# --- autoscaling, disruption budget, monitoring, network policy -----------------------------


def test_hpa_targets_its_deployment(case: Case) -> None:
    vals, objects = case.vals, case.objects
    deployments = of_kind(objects, "Deployment")
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    for name, deployment in deployments.items():
        autoscaling = vals[values_key(deployment)]["autoscaling"]
        if not autoscaling["enabled"]:
            assert name not in hpas
            assert deployment["spec"]["replicas"] == vals[values_key(deployment)]["replicas"]
            continue
        hpa = hpas[name]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert component(hpa) == component(deployment)
        # The HPA owns the replica count.
        assert "replicas" not in deployment["spec"]
        assert hpa["spec"]["minReplicas"] == autoscaling["minReplicas"]
        assert hpa["spec"]["maxReplicas"] == autoscaling["maxReplicas"]
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        cpu = autoscaling.get("targetCPUUtilizationPercentage")
        if cpu is None:
            assert "Resource" not in metrics
        else:
            assert metrics["Resource"]["resource"]["target"]["averageUtilization"] == cpu
            assert the_container(deployment)["resources"]["requests"]["cpu"]
        if autoscaling["podsMetric"]["enabled"]:
            pods = metrics["Pods"]["pods"]
            assert pods["metric"]["name"] == autoscaling["podsMetric"]["name"]
            assert pods["target"] == {
                "type": "AverageValue",
                "averageValue": str(autoscaling["podsMetric"]["targetAverageValue"]),
            }
        else:
            assert "Pods" not in metrics
    assert set(hpas) <= set(deployments)


def test_pdb_per_workload(case: Case) -> None:
    vals, objects = case.vals, case.objects
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for name, deployment in of_kind(objects, "Deployment").items():
        pdb_values = vals[values_key(deployment)]["pdb"]
        if not pdb_values["enabled"]:
            assert name not in pdbs
            continue
        spec = pdbs[name]["spec"]
        limits = {k: spec[k] for k in ("maxUnavailable", "minAvailable") if k in spec}
        assert len(limits) == 1
        ((key, value),) = limits.items()
        assert pdb_values[key] == value


def test_service_monitor_scrapes_metrics_of_every_service(case: Case) -> None:
    vals, objects = case.vals, case.objects
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    if not vals["serviceMonitor"]["enabled"]:
        assert monitors == []
        return
    (monitor,) = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) == {"namespaceSelector", "selector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == vals["serviceMonitor"]["interval"]
    for key, value in vals["serviceMonitor"]["labels"].items():
        assert monitor["metadata"]["labels"][key] == value
    services = of_kind(objects, "Service").values()
    selector = spec["selector"]["matchLabels"]
    assert all(selects(selector, s["metadata"]["labels"]) for s in services)
    assert all(any(p["name"] == "http" for p in s["spec"]["ports"]) for s in services)
    credentials = vals["serviceMonitor"].get("authorization")
    if credentials:
        assert endpoint["authorization"] == {
            "type": "Bearer",
            "credentials": {"name": credentials["secretName"], "key": credentials["secretKey"]},
        }
    else:
        assert "authorization" not in endpoint
        assert not (vals["auth"]["enabled"] and vals["auth"]["protectMetrics"])


def test_network_policy(case: Case) -> None:
    vals, objects = case.vals, case.objects
    policies = of_kind(objects, "NetworkPolicy")
    np_values = vals["networkPolicy"]
    if not np_values["enabled"]:
        assert policies == {}
        return
    deployments = of_kind(objects, "Deployment")
    assert set(policies) == set(deployments)
    for name, policy in policies.items():
        spec = policy["spec"]
        (rule,) = spec["ingress"]
        port_names = [p["name"] for p in the_container(deployments[name])["ports"]]
        assert rule["ports"] == [{"port": n, "protocol": "TCP"} for n in port_names]
        if values_key(policy) == "model":
            peers = rule["from"]
            (api_deployment,) = [d for d in deployments.values() if component(d) == "api"]
            assert selects(peers[0]["podSelector"]["matchLabels"], pod_labels(api_deployment))
            assert peers[1:] == np_values["metricsFrom"]
        elif np_values["ingressFrom"]:
            assert rule["from"] == np_values["ingressFrom"] + np_values["metricsFrom"]
        else:
            assert "from" not in rule  # any source may call the API
        if np_values["restrictEgress"]:
            assert "Egress" in spec["policyTypes"]
            ports = [p["port"] for r in spec["egress"] for p in r.get("ports", [])]
            assert 53 in ports
            if component(policy) == "api":
                (to_model,) = [r for r in spec["egress"] if "to" in r]
                (peer,) = to_model["to"]
                reached = [
                    d
                    for d in deployments.values()
                    if selects(peer["podSelector"]["matchLabels"], pod_labels(d))
                    and all(
                        pod_labels(d).get(e["key"]) in e["values"]
                        for e in peer["podSelector"].get("matchExpressions", [])
                    )
                ]
                assert reached and all(values_key(d) == "model" for d in reached)
                assert len(reached) == len(
                    [d for d in deployments.values() if values_key(d) == "model"]
                )
                model_ports = {
                    p["containerPort"] for d in reached for p in the_container(d)["ports"]
                }
                assert {p["port"] for p in to_model["ports"]} == model_ports
        else:
            assert "egress" not in spec
            assert spec["policyTypes"] == ["Ingress"]


def test_service_account(case: Case) -> None:
    vals, objects = case.vals, case.objects
    accounts = of_kind(objects, "ServiceAccount")
    expected = FULLNAME if vals["serviceAccount"]["create"] else "default"
    if vals["serviceAccount"]["create"]:
        assert accounts[FULLNAME]["automountServiceAccountToken"] is False
    else:
        assert accounts == {}
    for deployment in of_kind(objects, "Deployment").values():
        assert pod_spec(deployment)["serviceAccountName"] == expected


# --- API keys -------------------------------------------------------------------------------


def test_api_keys_only_on_pods_that_serve_clients(case: Case) -> None:
    vals, objects = case.vals, case.objects
    auth = vals["auth"]
    secrets = of_kind(objects, "Secret")
    if not auth["enabled"]:
        assert secrets == {}
    elif auth["existingSecret"]:
        assert secrets == {}, "an existing Secret is used, not created"
    else:
        assert set(secrets) == {f"{FULLNAME}-api-keys"}
    secret_name = auth["existingSecret"] or f"{FULLNAME}-api-keys"
    for name, deployment in of_kind(objects, "Deployment").items():
        container = the_container(deployment)
        env = env_of(container)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        at_auth_dir = volume_at(deployment, AUTH_DIR)
        if not (auth["enabled"] and serves_clients(deployment)):
            # Keys off, or a split-mode model pod (only the API pods call it): nothing added.
            assert not any(key in env for key in AUTH_ENV), name
            assert at_auth_dir is None, name
            assert not any("secret" in v for v in pod_spec(deployment)["volumes"]), name
            assert "checksum/api-keys" not in annotations, name
            continue
        assert at_auth_dir is not None, name
        mount, volume = at_auth_dir
        assert mount["readOnly"] is True
        key = auth["secretKey"]
        assert volume["secret"] == {
            "secretName": secret_name,
            "items": [{"key": key, "path": key}],
        }, name
        assert env["ESPNET_SERVE_API_KEY_HASHES_FILE"] == f"{AUTH_DIR}/{key}"
        assert env["ESPNET_SERVE_PROTECT_METRICS"] == str(auth["protectMetrics"]).lower()
        assert ("checksum/api-keys" in annotations) == (not auth["existingSecret"]), name
        # The read-only root filesystem and the probes stay as they are: probes need no key.
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert "httpHeaders" not in container["livenessProbe"]["httpGet"]


@pytest.mark.parametrize("mode", ["combined", "split"])
def test_key_hashes_become_the_mounted_secret(chart: helm_python.Chart, mode: str) -> None:
    values = {"mode": mode, "auth": {"enabled": True, "keyHashes": KEY_HASHES}}
    objects = render(chart, values)
    secret = of_kind(objects, "Secret")[f"{FULLNAME}-api-keys"]
    assert secret["type"] == "Opaque"
    assert set(secret["data"]) == {"api-key-hashes"}
    assert base64.b64decode(secret["data"]["api-key-hashes"]).decode() == "\n".join(KEY_HASHES)
    deployments = of_kind(objects, "Deployment")
    public = FULLNAME if mode == "combined" else f"{FULLNAME}-api"
    mount, volume = volume_at(deployments[public], AUTH_DIR)
    assert mount == {"name": mount["name"], "mountPath": AUTH_DIR, "readOnly": True}
    assert volume["secret"]["secretName"] == f"{FULLNAME}-api-keys"
    env = env_of(the_container(deployments[public]))
    assert env["ESPNET_SERVE_API_KEY_HASHES_FILE"] == f"{AUTH_DIR}/api-key-hashes"
    assert env["ESPNET_SERVE_PROTECT_METRICS"] == "false"
    if mode == "split":
        model = deployments[f"{FULLNAME}-model"]
        assert volume_at(model, AUTH_DIR) is None
        assert "ESPNET_SERVE_API_KEY_HASHES_FILE" not in env_of(the_container(model))


def test_existing_secret_is_mounted_not_created(chart: helm_python.Chart) -> None:
    values = {"auth": {"enabled": True, "existingSecret": "asr-api-keys", "protectMetrics": True}}
    objects = render(chart, values)
    assert of_kind(objects, "Secret") == {}
    deployment = of_kind(objects, "Deployment")[FULLNAME]
    _, volume = volume_at(deployment, AUTH_DIR)
    assert volume["secret"]["secretName"] == "asr-api-keys"
    env = env_of(the_container(deployment))
    assert env["ESPNET_SERVE_API_KEY_HASHES_FILE"] == f"{AUTH_DIR}/api-key-hashes"
    assert env["ESPNET_SERVE_PROTECT_METRICS"] == "true"


def test_auth_values_change_nothing_while_disabled(chart: helm_python.Chart) -> None:
    for mode in ("combined", "split"):
        idle = {
            "enabled": False,
            "keyHashes": KEY_HASHES,
            "secretKey": "other",
            "protectMetrics": True,
        }
        assert render(chart, {"mode": mode, "auth": idle}) == render(chart, {"mode": mode})


def test_a_key_hash_change_rolls_the_pods(chart: helm_python.Chart) -> None:
    def annotations(hashes: list[str]) -> dict[str, str]:
        objects = render(chart, {"auth": {"enabled": True, "keyHashes": hashes}})
        return of_kind(objects, "Deployment")[FULLNAME]["spec"]["template"]["metadata"][
            "annotations"
        ]

    one, both = annotations(KEY_HASHES[:1]), annotations(KEY_HASHES)
    assert one["checksum/api-keys"] != both["checksum/api-keys"]
    assert one["checksum/config"] == both["checksum/config"]


def test_protected_metrics_scraped_with_a_key(chart: helm_python.Chart) -> None:
    values = {
        "mode": "split",
        "auth": {"enabled": True, "keyHashes": KEY_HASHES, "protectMetrics": True},
        "serviceMonitor": {
            "enabled": True,
            "authorization": {"secretName": "asr-metrics-key", "secretKey": "key"},
        },
    }
    (monitor,) = [o for o in render(chart, values) if o["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "asr-metrics-key", "key": "key"},
    }


def readme_values_examples() -> dict[str, dict[str, Any]]:
    """The ```yaml blocks under the "Values example" headings of deploy/README.md and README.md."""
    pattern = r"^### (Values example[^\n]*)\n.*?^```yaml\n(.*?)^```"
    examples = {}
    for readme in (CHART_DIR.parents[1] / "README.md", CHART_DIR.parents[2] / "README.md"):
        for title, body in re.findall(pattern, readme.read_text(), re.M | re.S):
            examples[f"{readme}: {title}"] = yaml.safe_load(body)
    return examples


def test_readme_values_examples_render_and_validate(chart: helm_python.Chart) -> None:
    examples = readme_values_examples()
    assert len(examples) == 5, list(examples)
    assert {v["mode"] for v in examples.values()} == {"combined", "split"}
    for title, values in examples.items():
        objects = render(chart, values)
        for obj in objects:
            if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
                kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
        grace_checks(merged(chart, values), objects)
        assert of_kind(objects, "Deployment"), title


def test_notes_render_for_both_modes(chart: helm_python.Chart) -> None:
    for mode in ("combined", "split"):
        notes = chart.render(values={"mode": mode}, name=RELEASE, namespace=NAMESPACE)
        text = next(v for k, v in notes.items() if k.endswith("NOTES.txt"))
        assert f"{mode} mode" in text
        assert f"service/{FULLNAME}" in text


# --- rejected values ------------------------------------------------------------------------

SCHEMA_REJECTS = [
    ({"server": {"replicas": -1}}, r"/server/replicas': minimum: got -1, want 0"),
    ({"api": {"replicas": -3}}, r"/api/replicas': minimum: got -3, want 0"),
    ({"model": {"replicas": "2"}}, r"/model/replicas': got string, want integer"),
    ({"mode": "distributed"}, r"/mode': value must be one of 'combined', 'split'"),
    ({"gpu": {"enabled": "yes"}}, r"/gpu/enabled': got string, want boolean"),
    ({"gpu": {"count": 0}}, r"/gpu/count': minimum: got 0, want 1"),
    ({"requestTimeoutSeconds": "60s"}, r"/requestTimeoutSeconds': got string, want integer"),
    ({"image": {"pullPolicy": "Sometimes"}}, r"/image/pullPolicy': value must be one of"),
    ({"image": {"digest": "latest"}}, r"/image/digest': 'latest' does not match pattern"),
    ({"replicas": 2}, r"additional properties 'replicas' not allowed"),
    ({"server": {"replica": 2}}, r"additional properties 'replica' not allowed"),
    ({"settings": {"MAX_BATCH_SIZE": 8}}, r"'MAX_BATCH_SIZE' does not match pattern"),
    ({"settings": {"ESPNET_SERVE_X": [1]}}, r"/settings/ESPNET_SERVE_X': got array"),
    ({"securityContext": {"runAsUser": 0}}, r"/securityContext/runAsUser': minimum: got 0"),
    ({"api": {"service": {"type": "ExternalName"}}}, r"/api/service/type': value must be one of"),
    ({"server": {"autoscaling": {"minReplicas": 0}}}, r"minReplicas': minimum: got 0, want 1"),
    ({"server": {"tolerations": [{"operator": "Maybe"}]}}, r"operator': value must be one of"),
    ({"serviceMonitor": {"interval": "often"}}, r"/serviceMonitor/interval': 'often' does not"),
    ({"auth": {"enabled": "yes"}}, r"/auth/enabled': got string, want boolean"),
    ({"auth": {"keys": ["secret"]}}, r"additional properties 'keys' not allowed"),
    # A hash must be sha256sum's 64 lowercase hex digits, without its "  -" suffix.
    ({"auth": {"keyHashes": ["AB" * 32]}}, r"/auth/keyHashes/0': '(AB){32}' does not match"),
    ({"auth": {"keyHashes": ["ab" * 31]}}, r"/auth/keyHashes/0': '(ab){31}' does not match"),
    (
        {"auth": {"keyHashes": ["ab" * 32 + "  -"]}},
        r"/auth/keyHashes/0': '(ab)+  -' does not match pattern",
    ),
    ({"auth": {"existingSecret": "My_Keys"}}, r"/auth/existingSecret': 'My_Keys' does not match"),
    ({"auth": {"secretKey": "a/b"}}, r"/auth/secretKey': 'a/b' does not match pattern"),
    (
        {"serviceMonitor": {"authorization": {"secretName": "asr-metrics-key"}}},
        r"/serviceMonitor/authorization': missing property 'secretKey'",
    ),
    ({"bento": {"modelServices": []}}, r"/bento/modelServices': minItems"),
    ({"modelGroups": [["ModelService"]]}, r"/modelGroups/0': minItems"),
    ({"bento": {"modelUrls": {"ModelService": "10.0.0.1:3000"}}}, r"does not match pattern"),
]


@pytest.mark.parametrize(("values", "message"), SCHEMA_REJECTS)
def test_schema_rejects_bad_values(chart: helm_python.Chart, values, message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=message) as caught:
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    assert "values don't meet the specifications of the schema" in str(caught.value)
    # The same check runs without rendering and in `helm lint`.
    with pytest.raises(helm_python.HelmValuesError, match=message):
        chart.validate_schema(chart.merge_values(values))
    report = helm_python.lint(CHART_DIR, values=values, strict=True)
    assert re.search(message, "\n".join(report["errors"])), report


TEMPLATE_REJECTS = [
    (
        {"gracefulShutdown": {"terminationGracePeriodSeconds": 60}},
        r"terminationGracePeriodSeconds \(60\) must be longer than .*\(135\)",
    ),
    (
        {"server": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
        r"server.autoscaling.minReplicas \(5\) must not exceed server.autoscaling.maxReplicas",
    ),
    (
        {"server": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
        r"server.autoscaling is enabled but has no metric",
    ),
    (
        {"server": {"pdb": {"minAvailable": 1}}},
        r"server.pdb: set exactly one of maxUnavailable and minAvailable",
    ),
    (
        {"mode": "split", "api": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
        r"api.resources must not request nvidia.com/gpu: API pods are CPU-only",
    ),
    (
        {"bento": {"config": {"version": 2}}},
        r"bento.config must not set version",
    ),
    (
        {"settings": {"ESPNET_SERVE_REQUEST_TIMEOUT_SECONDS": 5}},
        r"settings.ESPNET_SERVE_REQUEST_TIMEOUT_SECONDS is set by the chart from "
        r"requestTimeoutSeconds",
    ),
    (
        {"settings": {"ESPNET_SERVE_API_TIMEOUT_SECONDS": 5}},
        r"settings.ESPNET_SERVE_API_TIMEOUT_SECONDS is set by the chart from apiTimeoutSeconds",
    ),
    (
        {"settings": {"ESPNET_SERVE_DRAIN_TIMEOUT_SECONDS": 5}},
        r"settings.ESPNET_SERVE_DRAIN_TIMEOUT_SECONDS is set by the chart from "
        r"requestTimeoutSeconds",
    ),
    (
        {
            "mode": "split",
            "model": {
                "resources": {"requests": {"cpu": None}},
                "autoscaling": {"enabled": True},
            },
        },
        r"model.autoscaling.targetCPUUtilizationPercentage needs model.resources.requests.cpu",
    ),
    (
        {"auth": {"enabled": True}},
        r"auth.enabled needs the key hashes: set auth.existingSecret .* or auth.keyHashes",
    ),
    (
        {"auth": {"enabled": True, "existingSecret": "asr-api-keys", "keyHashes": KEY_HASHES}},
        r"auth: set only one of auth.existingSecret and auth.keyHashes",
    ),
    (
        {
            "mode": "split",
            "auth": {"enabled": True, "existingSecret": "asr-api-keys", "protectMetrics": True},
            "serviceMonitor": {"enabled": True},
        },
        r"auth.protectMetrics with serviceMonitor.enabled needs serviceMonitor.authorization",
    ),
    (
        {"settings": {"ESPNET_SERVE_API_KEYS": "plain-key"}},
        r"settings.ESPNET_SERVE_API_KEYS would put plain API keys into a ConfigMap",
    ),
    (
        {"mode": "split", "settings": {"ESPNET_SERVE_MODEL_IN_PROCESS": True}},
        r"settings.ESPNET_SERVE_MODEL_IN_PROCESS loads the model into the API pods",
    ),
    (
        {"mode": "split", "settings": {"ESPNET_SERVE_MODEL_IN_PROCESS": "1"}},
        r"settings.ESPNET_SERVE_MODEL_IN_PROCESS loads the model into the API pods",
    ),
    (
        {"settings": {"ESPNET_SERVE_API_KEY_HASHES_FILE": "/keys"}},
        r"settings.ESPNET_SERVE_API_KEY_HASHES_FILE is set by the chart from auth.enabled",
    ),
    (
        {"settings": {"ESPNET_SERVE_PROTECT_METRICS": True}},
        r"settings.ESPNET_SERVE_PROTECT_METRICS is set by the chart from auth.protectMetrics",
    ),
    (
        {"mode": "split", "modelGroups": [["ModelService", "ModelService2"]]},
        r"modelGroups: ModelService2 is not one of bento.modelServices \(ModelService\)",
    ),
    (
        {
            "mode": "split",
            "bento": {"modelServices": ["ModelService", "ModelService2", "ModelService3"]},
            "modelGroups": [["ModelService", "ModelService2"], ["ModelService2", "ModelService3"]],
        },
        r"modelGroups: ModelService2 is in more than one group",
    ),
    (
        {
            "bento": {"modelServices": ["ModelService", "ModelService2"]},
            "modelGroups": [["ModelService", "ModelService2"]],
        },
        r"modelGroups applies to split mode only",
    ),
    (
        {"mode": "split", "bento": {"modelServices": ["ModelService", "ModelService"]}},
        r"bento.modelServices lists a service twice",
    ),
    (
        {"mode": "split", "bento": {"modelUrls": {"ModelService9": "http://10.0.0.1:3000"}}},
        r"bento.modelUrls: ModelService9 is not one of bento.modelServices",
    ),
]


@pytest.mark.parametrize(("values", "message"), TEMPLATE_REJECTS)
def test_inconsistent_values_fail_rendering(chart: helm_python.Chart, values, message) -> None:
    # These pass the schema; the chart's own checks refuse them with a message naming the value.
    chart.validate_schema(chart.merge_values(values))
    with pytest.raises(helm_python.HelmRenderError, match=message):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_schema_covers_every_default_value(chart: helm_python.Chart, defaults) -> None:
    schema = chart.schema
    assert schema is not None

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref:
            return schema["definitions"][ref.rsplit("/", 1)[-1]]
        return node

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        node = resolve(node)
        assert "type" in node or "oneOf" in node or "const" in node, f"{path}: untyped"
        if isinstance(value, dict) and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: open object"
            for key, item in value.items():
                assert key in node["properties"], f"{path}.{key} missing from the schema"
                walk(node["properties"][key], item, f"{path}.{key}")

    walk(schema, defaults, "values")
