"""The pure pieces of ``make e2e`` (e2e/), checked without a cluster.

``make e2e`` itself needs root and minutes (a real Kubernetes 1.20): it is not part of the test
suite. What is checked here: the e2e values render on 1.20 into pods that the e2e cluster's
PodSecurityPolicy (e2e/psp.yaml) admits and that fit its 2-core node during a rolling update,
and the report's timing and comparison helpers on pod objects as the API server returns them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from e2e import rollout
from tests.deploy.test_chart_kube_versions import OLDEST, render_for
from tests.deploy.test_helm_chart import CHART_DIR

E2E = Path(rollout.__file__).parent
NODE_CPU_MILLIS = 2000


@pytest.fixture(scope="module")
def chart():
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


def e2e_values(**extra: Any) -> dict[str, Any]:
    values = yaml.safe_load((E2E / "values-e2e.yaml").read_text())
    values["image"]["tag"] = "0.1.0"
    return {**values, **extra}


def deployments(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}


def millicpu(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def psp_violations(spec: dict[str, Any], psp: dict[str, Any]) -> list[str]:
    """What the restricted policy of e2e/psp.yaml would refuse in a pod spec."""
    rules, found = psp["spec"], []
    pod_context = spec.get("securityContext", {})
    for volume in spec.get("volumes", []):
        kind = next(k for k in volume if k != "name")
        if kind not in rules["volumes"]:
            found.append(f"volume {volume['name']}: {kind}")
    for container in spec["containers"]:
        context = container.get("securityContext", {})
        name = container["name"]
        if context.get("privileged", False):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation", True):
            found.append(f"{name}: privilege escalation allowed")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            found.append(f"{name}: capabilities not all dropped")
        user = context.get("runAsUser", pod_context.get("runAsUser"))
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if not (non_root or (user is not None and user != 0)):
            found.append(f"{name}: may run as root")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field, False):
            found.append(field)
    return found


@pytest.mark.parametrize("mode", ["combined", "split"])
def test_e2e_values_render_on_1_20_into_pods_the_e2e_policy_admits(chart, mode: str) -> None:
    psp = next(d for d in yaml.safe_load_all((E2E / "psp.yaml").read_text()) if d)
    assert psp["kind"] == "PodSecurityPolicy"
    objects = render_for(chart, e2e_values(mode=mode), OLDEST)
    rendered = deployments(objects)
    assert rendered, "no Deployment rendered"
    for deployment in rendered.values():
        spec = deployment["spec"]["template"]["spec"]
        assert psp_violations(spec, psp) == []
        (container,) = spec["containers"]
        assert container["image"] == "localhost/espnet-serve:0.1.0"
        assert container["imagePullPolicy"] == "Never"


def test_e2e_policy_check_refuses_a_privileged_variant(chart) -> None:
    psp = next(d for d in yaml.safe_load_all((E2E / "psp.yaml").read_text()) if d)
    (deployment,) = deployments(render_for(chart, e2e_values(), OLDEST)).values()
    spec = deployment["spec"]["template"]["spec"]
    spec["containers"][0]["securityContext"].update(privileged=True)
    assert psp_violations(spec, psp) == ["bentoml: privileged"]


def test_old_and_new_pods_of_a_rolling_update_fit_the_2_core_node(chart) -> None:
    for mode in ("combined", "split"):
        total = 0
        for deployment in deployments(render_for(chart, e2e_values(mode=mode), OLDEST)).values():
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            surge = 1 + (deployment["spec"]["replicas"] > 0)  # old pod + new pod
            total += surge * millicpu(container["resources"]["requests"]["cpu"])
        assert total < NODE_CPU_MILLIS, mode


def test_e2e_grace_period_covers_prestop_and_request_timeout(chart) -> None:
    values = e2e_values()
    (deployment,) = deployments(render_for(chart, values, OLDEST)).values()
    spec = deployment["spec"]["template"]["spec"]
    needed = values["gracefulShutdown"]["preStopSleepSeconds"] + values["requestTimeoutSeconds"]
    assert spec["terminationGracePeriodSeconds"] > needed
    (container,) = spec["containers"]
    assert "exec" in container["lifecycle"]["preStop"]  # the sleep action needs 1.30


POD = {
    "metadata": {
        "name": "asr-espnet-serve-5d9c7f-abcde",
        "uid": "0f9e1c52-7a0b-4c1e-9d5a-3b1f2e4d6c7a",
        "creationTimestamp": "2026-12-01T23:50:00Z",
    },
    "status": {
        "podIP": "127.1.0.3",
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-01T23:50:01Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T23:50:42Z"},
        ],
        "containerStatuses": [
            {
                "name": "bentoml",
                "restartCount": 0,
                "state": {"running": {"startedAt": "2026-12-01T23:50:05Z"}},
            }
        ],
    },
}


def test_start_to_ready_from_the_pods_own_timestamps() -> None:
    assert rollout.start_to_ready(POD) == {
        "pod": "asr-espnet-serve-5d9c7f-abcde",
        "ip": "127.1.0.3",
        "created_to_ready_s": 42.0,
        "container_started_to_ready_s": 37.0,
        "restarts": 0,
    }


def test_container_log_is_the_kubelets_file_of_the_current_restart() -> None:
    path = rollout.container_log(POD)
    assert path == Path(
        "/var/log/pods/speech_asr-espnet-serve-5d9c7f-abcde_0f9e1c52-7a0b-4c1e-9d5a-3b1f2e4d6c7a"
        "/bentoml/0.log"
    )


def test_compare_reports_every_difference_and_needs_every_clip() -> None:
    expected = {"u1": "one two", "u2": "three"}
    assert rollout.compare(expected, dict(expected))["transcripts_equal"]
    differ = rollout.compare(expected, {"u1": "one two", "u2": "tree"})
    assert not differ["transcripts_equal"]
    assert differ["mismatches"] == {"u2": ("three", "tree")}
    missing = rollout.compare(expected, {"u1": "one two"})
    assert not missing["transcripts_equal"]
    assert missing["mismatches"] == {"u2": ("three", None)}
    assert not rollout.compare({}, {})["transcripts_equal"]


def test_prestop_timing_from_the_deletion_and_the_kubelets_log_stamp() -> None:
    metadata = {"deletionTimestamp": "2026-12-02T00:35:46Z", "deletionGracePeriodSeconds": 60}
    log = (
        "2026-12-02T00:34:54.3Z stdout F [INFO] POST /transcribe 200 12116.8 ms\n"
        "2026-12-02T00:34:56.363412168Z stdout F [INFO] ModelService: SIGTERM; draining 0\n"
        "2026-12-02T00:34:56.364864181Z stdout F [INFO] ApiService: SIGTERM; draining 0\n"
    )
    timing = rollout.prestop_timing(metadata, log)
    assert timing["delete_to_sigterm_s"] == 10.4
    assert rollout.prestop_timing({}, log)["delete_to_sigterm_s"] is None
    assert rollout.prestop_timing(metadata, "no drain here\n")["sigterm_at"] is None
