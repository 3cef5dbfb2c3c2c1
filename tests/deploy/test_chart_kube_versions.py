"""The chart on Kubernetes 1.20 and on current versions: API versions chosen through .Capabilities.

Rendered offline by Helm's engine (helm-python-sdk) with a given Kubernetes version, as
``helm template --kube-version`` does. A real 1.20 API server checks the same objects in
``make e2e`` (e2e/rollout.py): there is no 1.20 schema in kubernetes-validate.
"""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import yaml
from helm_python import _native, errors

from tests.deploy.test_helm_chart import CHART_DIR, NAMESPACE, RELEASE, VALUE_SETS

OLDEST = "v1.20.2"
# (kind, API version on 1.20, API version from the version given)
VERSIONED_KINDS = {
    "PodDisruptionBudget": ("policy/v1beta1", {"v1.21.0": "policy/v1"}),
    "HorizontalPodAutoscaler": ("autoscaling/v2beta2", {"v1.23.0": "autoscaling/v2"}),
}
CURRENT = ("v1.30.0", "v1.36.0")


def render_for(chart: helm_python.Chart, values: dict[str, Any], kube_version: str) -> list[dict]:
    """Every object the chart renders for a cluster of ``kube_version``.

    helm-python-sdk 0.2.2's ``Chart.render`` does not expose the Kubernetes version; its native
    render call takes it (``kube_version``, as ``helm template --kube-version``).
    """
    opts = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": kube_version}
    rendered = _native.call_string(
        "helm_render", chart._raw(), json.dumps(values), json.dumps(opts)
    )
    return objects_of(json.loads(rendered))


def objects_of(manifests: dict[str, str]) -> list[dict]:
    """The Kubernetes objects of rendered templates (NOTES.txt left out)."""
    objects = []
    for path, text in sorted(manifests.items()):
        if not path.endswith("NOTES.txt"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def api_versions(objects: list[dict]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for obj in objects:
        found.setdefault(obj["kind"], set()).add(obj["apiVersion"])
    return found


def without_api_version(objects: list[dict]) -> list[dict]:
    return [{k: v for k, v in obj.items() if k != "apiVersion"} for obj in objects]


@pytest.fixture(scope="module")
def chart():
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_only_the_api_versions_differ_between_1_20_and_current(chart, name: str) -> None:
    values = VALUE_SETS[name]
    if values.get("gracefulShutdown", {}).get("useSleepAction"):
        pytest.skip("the sleep action needs 1.30 (tested below)")
    old = render_for(chart, values, OLDEST)
    new = render_for(chart, values, CURRENT[-1])
    assert without_api_version(old) == without_api_version(new)
    for kind, (oldest_version, _) in VERSIONED_KINDS.items():
        assert api_versions(old).get(kind, {oldest_version}) == {oldest_version}


def test_every_versioned_kind_switches_at_its_release(chart) -> None:
    values = VALUE_SETS["split-gpu-everything"] | {"gracefulShutdown": {}}
    seen = api_versions(render_for(chart, values, OLDEST))
    assert {kind: seen[kind] for kind in VERSIONED_KINDS} == {
        kind: {oldest} for kind, (oldest, _) in VERSIONED_KINDS.items()
    }
    for kind, (oldest, switch) in VERSIONED_KINDS.items():
        ((first_version, api_version),) = switch.items()
        major, minor, _ = first_version.removeprefix("v").split(".")
        just_before = f"v{major}.{int(minor) - 1}.9"
        assert api_versions(render_for(chart, values, just_before))[kind] == {oldest}
        for version in (first_version, *CURRENT):
            assert api_versions(render_for(chart, values, version))[kind] == {api_version}


def test_default_offline_render_uses_the_current_api_versions(chart) -> None:
    values = VALUE_SETS["split-gpu-everything"]
    manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    seen = api_versions(objects_of(manifests))
    assert seen["PodDisruptionBudget"] == {"policy/v1"}
    assert seen["HorizontalPodAutoscaler"] == {"autoscaling/v2"}


def test_sleep_action_refused_before_1_30(chart) -> None:
    values = {"gracefulShutdown": {"useSleepAction": True}}
    with pytest.raises(errors.HelmRenderError, match=r"useSleepAction needs Kubernetes >= 1.30"):
        render_for(chart, values, "v1.29.4")
    (deployment,) = [o for o in render_for(chart, values, "v1.30.0") if o["kind"] == "Deployment"]
    pre_stop = deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
    assert "sleep" in pre_stop


@pytest.mark.parametrize(
    "version, installable",
    [(OLDEST, True), ("v1.20.0", True), (CURRENT[-1], True), ("v1.19.16", False)],
)
def test_kube_version_constraint(chart, tmp_path, version: str, installable: bool) -> None:
    # helm install/template compare Chart.yaml's kubeVersion with the cluster's version using
    # Masterminds semver, as semverCompare does: evaluate the chart's own constraint with it.
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    constraint = chart.metadata["kubeVersion"]
    (probe / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "probe", "version": "0.1.0"})
    )
    (probe / "templates" / "ok.yaml").write_text(
        f"ok: {{{{ semverCompare {json.dumps(constraint)} .Capabilities.KubeVersion.Version }}}}\n"
    )
    with helm_python.Chart.load(probe) as loaded:
        opts = json.dumps({"kube_version": version})
        rendered = json.loads(_native.call_string("helm_render", loaded._raw(), None, opts))
    assert yaml.safe_load(rendered["probe/templates/ok.yaml"]) == {"ok": installable}


def test_model_url_override_reaches_the_api_pods(chart) -> None:
    url = "http://127.1.0.7:3000"
    values = {
        "mode": "split",
        "bento": {
            "modelServices": ["ModelService", "ModelService2"],
            "modelUrls": {"ModelService2": url},
        },
    }
    deployments = [o for o in render_for(chart, values, OLDEST) if o["kind"] == "Deployment"]
    args = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in deployments
    }
    api_args = args[f"{RELEASE}-espnet-serve-api"]
    depends = [api_args[i + 1] for i, arg in enumerate(api_args) if arg == "--depends"]
    # The overridden service goes to its URL; the other keeps its Service's DNS name.
    assert depends == [
        f"ModelService=http://{RELEASE}-espnet-serve-model.{NAMESPACE}.svc:3000",
        f"ModelService2={url}",
    ]
    for name in ("model", "model2"):
        assert "--depends" not in args[f"{RELEASE}-espnet-serve-{name}"]
