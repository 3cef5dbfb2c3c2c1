"""``make e2e``: the chart's pods on a real kubelet (Kubernetes 1.20, e2e/cluster.sh), measured.

Runs inside the cluster's network namespace (``e2e/cluster.sh run``), where pod addresses
(127.1.0.N) route. There is no kube-proxy: clients follow the ready, non-terminating pods of the
Service's selector (what its endpoints hold) and send each request to one of them.

1. The reference: the held-out transcripts through ``make serve``.
2. Combined mode: ``helm install``; the pod Running and Ready through the kubelet's probes (start
   to Ready timed from the pod's own timestamps); the held-out clips through the pod.
3. A rolling update (a new settings value, so a new ReplicaSet) while clients send requests:
   sent / answered / lost (must be 0); the old pod's log shows its drain after preStop + SIGTERM.
4. Admission: the chart's pod admitted, its privileged variant rejected by PodSecurityPolicy.
5. Split mode: the model pod first, then the API pod with ``bento.modelUrls.ModelService`` = the
   model pod's address (no Service routing), the held-out clips through the API pod.

Prints one JSON report (also written to --out); exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from e2e.clients import NoTarget, RequestStream, heldout_transcripts
from e2e.reference import ROOT, reference_transcripts

CHART = ROOT / "deploy" / "helm" / "espnet-serve"
VALUES = Path(__file__).with_name("values-e2e.yaml")
NAMESPACE = "speech"
PORT = 3000
ROLLOUT_TIMEOUT = "900s"
DRAIN_LOG_LINE = "drained; shutting down"
SIGTERM_LOG_LINE = "SIGTERM; draining"
# Where the kubelet keeps container logs, whatever its --root-dir.
POD_LOGS = Path("/var/log/pods")


def sh(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command (kubectl, helm); its completed process."""
    run = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if check and run.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {run.stderr.strip() or run.stdout.strip()}")
    return run


def kubectl_json(*args: str) -> dict[str, Any]:
    """``kubectl get ... -o json`` in the test namespace, parsed."""
    return json.loads(sh("kubectl", "-n", NAMESPACE, "get", *args, "-o", "json").stdout)


def seconds(stamp: str) -> float:
    """A Kubernetes timestamp as epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def pods_of(release: str, component: str) -> list[dict[str, Any]]:
    """The pods of one workload of a release (terminating ones included)."""
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component={component}"
    return kubectl_json("pods", "-l", selector)["items"]


def ready_pod(release: str, component: str) -> dict[str, Any]:
    """Wait for the workload's Deployment to finish rolling out; its one ready pod."""
    deployment = f"{release}-espnet-serve" + ("" if component == "server" else f"-{component}")
    sh("kubectl", "-n", NAMESPACE, "rollout", "status", f"deployment/{deployment}",
       f"--timeout={ROLLOUT_TIMEOUT}")  # fmt: skip
    (pod,) = [p for p in pods_of(release, component) if not p["metadata"].get("deletionTimestamp")]
    return pod


def start_to_ready(pod: dict[str, Any]) -> dict[str, Any]:
    """How long the pod took, from its own timestamps (whole seconds)."""
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    (container,) = pod["status"]["containerStatuses"]
    ready = seconds(conditions["Ready"]["lastTransitionTime"])
    return {
        "pod": pod["metadata"]["name"],
        "ip": pod["status"]["podIP"],
        "created_to_ready_s": ready - seconds(pod["metadata"]["creationTimestamp"]),
        "container_started_to_ready_s": ready - seconds(container["state"]["running"]["startedAt"]),
        "restarts": container["restartCount"],
    }


# The values of every release of the run: the e2e values file, then the image tag (main()).
HELM_VALUES = ["-f", str(VALUES)]


def helm(*args: str) -> None:
    """``helm`` on the test namespace with the run's values."""
    sh("helm", *args, "-n", NAMESPACE, *HELM_VALUES)


class ReadyPods:
    """The addresses a Service would route to, polled as kube-proxy watches its endpoints.

    The endpoints controller of 1.20 lists a pod when it is Ready and not terminating; it cannot
    write this cluster's loopback-range pod addresses into an Endpoints object (the API refuses
    127.0.0.0/8), so the same rule is applied here to the pods of the Service's selector.
    """

    def __init__(self, service: str, period: float = 0.25) -> None:
        config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        self._client = httpx.Client(
            base_url=cluster["server"],
            verify=cluster["certificate-authority"],
            headers={"Authorization": f"Bearer {user['token']}"},
        )
        selector = kubectl_json("service", service)["spec"]["selector"]
        self._params = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())}
        self._path = f"/api/v1/namespaces/{NAMESPACE}/pods"
        self._period = period
        self._ready: list[str] = []
        self._turn = itertools.count()
        self.seen: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._refresh()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def next_url(self) -> str:
        """Base URL of the next ready pod (round robin)."""
        ready = self._ready
        if not ready:
            raise NoTarget
        return f"http://{ready[next(self._turn) % len(ready)]}:{PORT}"

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join()
        self._client.close()

    def _refresh(self) -> None:
        pods = self._client.get(self._path, params=self._params).json()["items"]
        ready = sorted(
            p["status"]["podIP"]
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        )
        if ready != self._ready:
            self.seen.append((time.time(), ready))
        self._ready = ready

    def _poll(self) -> None:
        while not self._stop.wait(self._period):
            self._refresh()


def container_log(pod: dict[str, Any]) -> Path:
    """The kubelet's log file of the pod's container.

    Read directly: the node has no address the API server could reach it at for ``kubectl logs``.
    """
    meta = pod["metadata"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    return POD_LOGS / f"{NAMESPACE}_{meta['name']}_{meta['uid']}" / "bentoml" / f"{restarts}.log"


def prestop_timing(metadata: dict[str, Any], log: str) -> dict[str, Any]:
    """When the old pod was deleted and when its server got SIGTERM (after the preStop hook).

    ``deletionTimestamp`` is the deletion time plus the grace period; the SIGTERM time is the
    kubelet's timestamp of the first drain line in the container's log.
    """
    timing: dict[str, Any] = {"deleted_at": None, "sigterm_at": None, "delete_to_sigterm_s": None}
    if metadata.get("deletionTimestamp"):
        grace = metadata.get("deletionGracePeriodSeconds", 0)
        timing["deleted_at"] = seconds(metadata["deletionTimestamp"]) - grace
    for line in log.splitlines():
        if SIGTERM_LOG_LINE in line:
            stamp = line.split(" ", 1)[0]  # RFC 3339 with nanoseconds
            timing["sigterm_at"] = seconds(stamp[:26] + "+00:00" if "." in stamp else stamp)
            break
    if timing["deleted_at"] is not None and timing["sigterm_at"] is not None:
        timing["delete_to_sigterm_s"] = round(timing["sigterm_at"] - timing["deleted_at"], 1)
    return timing


def rolling_update(release: str, expected: dict[str, str], out_dir: Path) -> dict[str, Any]:
    """Change a setting while clients send requests; what they got and how the old pod went."""
    old = ready_pod(release, "server")
    old_name = old["metadata"]["name"]
    log_path = out_dir / f"{old_name}.log"
    endpoints = ReadyPods(f"{release}-espnet-serve")
    with log_path.open("w") as log_file:
        follower = subprocess.Popen(
            ["tail", "-n", "+1", "-F", str(container_log(old))], stdout=log_file, stderr=log_file
        )
        stream = RequestStream(endpoints.next_url, expected, clients=4).start()
        time.sleep(10)  # steady traffic on the old pod first
        started = time.time()
        helm("upgrade", release, str(CHART), "--reuse-values",
             "--set", "settings.ESPNET_SERVE_MAX_BATCH_SIZE=16")  # fmt: skip
        new = ready_pod(release, "server")
        deadline = time.time() + 300
        deleted: dict[str, Any] = {}
        while olds := [p for p in pods_of(release, "server") if p["metadata"]["name"] == old_name]:
            deleted = olds[0]["metadata"] if "deletionTimestamp" in olds[0]["metadata"] else deleted
            if time.time() > deadline:
                raise TimeoutError(f"{old_name} still there 300 s after the update")
            time.sleep(0.5)
        rolled = time.time() - started
        time.sleep(10)  # and steady traffic on the new pod
        counts = stream.stop()
        follower.terminate()
        follower.wait(timeout=30)
    endpoints.close()
    old_log = log_path.read_text(errors="replace")
    return {
        **counts,
        "old_pod": old_name,
        **prestop_timing(deleted, old_log),
        "new_pod": start_to_ready(new),
        "update_to_old_pod_gone_s": round(rolled, 1),
        "endpoint_changes": [(round(t - started, 1), ips) for t, ips in endpoints.seen],
        "old_pod_drained": DRAIN_LOG_LINE in old_log,
        "old_pod_log_tail": old_log[-1200:],
    }


def admission(release: str) -> dict[str, Any]:
    """The chart's pod template as a Pod (server dry run), then its privileged variant."""
    deployment = kubectl_json("deployment", f"{release}-espnet-serve")
    template = deployment["spec"]["template"]
    metadata = {"name": "admission-probe", "namespace": NAMESPACE}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    privileged = copy.deepcopy(pod)
    privileged["metadata"]["name"] = "admission-probe-privileged"
    context = privileged["spec"]["containers"][0]["securityContext"]
    context.update(privileged=True, allowPrivilegeEscalation=True)
    restricted_run = sh("kubectl", "apply", "--dry-run=server", "-f", "-",
                        stdin=json.dumps(pod), check=False)  # fmt: skip
    privileged_run = sh("kubectl", "apply", "--dry-run=server", "-f", "-",
                        stdin=json.dumps(privileged), check=False)  # fmt: skip
    return {
        "restricted_admitted": restricted_run.returncode == 0,
        "privileged_rejected": privileged_run.returncode != 0,
        "rejection_message": privileged_run.stderr.strip(),
    }


def split_mode(release: str, expected: dict[str, str]) -> dict[str, Any]:
    """The model pod, then the API pod pointed at its address; the held-out clips through it."""
    helm("install", release, str(CHART), "--set", "mode=split", "--set", "api.replicas=0")
    model = start_to_ready(ready_pod(release, "model"))
    model_url = f"http://{model['ip']}:{PORT}"
    model_url_value = f"bento.modelUrls.ModelService={model_url}"
    helm("upgrade", release, str(CHART), "--reuse-values",
         "--set", "api.replicas=1", "--set", model_url_value)  # fmt: skip
    api = start_to_ready(ready_pod(release, "api"))
    got = heldout_transcripts(f"http://{api['ip']}:{PORT}")
    return {"model_pod": model, "api_pod": api, "model_url": model_url, **compare(expected, got)}


def compare(expected: dict[str, str], got: dict[str, str]) -> dict[str, Any]:
    """Whether the transcripts equal the reference's, with the differences."""
    mismatches = {u: (expected[u], got.get(u)) for u in expected if got.get(u) != expected[u]}
    equal = not mismatches and len(got) == len(expected) > 0
    return {"clips": len(got), "transcripts_equal": equal, "mismatches": mismatches}


def main() -> int:
    """Run the e2e checks; print the report; 0 when every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-tag", required=True)
    parser.add_argument("--reference-port", type=int, default=3101)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "e2e" / "report.json")
    parser.add_argument("--no-split", action="store_true", help="skip split mode")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    HELM_VALUES.extend(["--set", f"image.tag={args.image_tag}"])
    server = json.loads(sh("kubectl", "version", "-o", "json").stdout)["serverVersion"][
        "gitVersion"
    ]
    report: dict[str, Any] = {"server_version": server}
    expected, _ = reference_transcripts(args.reference_port, args.out.with_name("make-serve.log"))
    sh("kubectl", "create", "namespace", NAMESPACE)
    helm("install", "asr", str(CHART))
    report["combined_pod"] = start_to_ready(ready_pod("asr", "server"))
    got = heldout_transcripts(f"http://{report['combined_pod']['ip']}:{PORT}")
    report["combined_heldout"] = compare(expected, got)
    report["rolling_update"] = rolling_update("asr", expected, args.out.parent)
    report["admission"] = admission("asr")
    sh("helm", "uninstall", "asr", "-n", NAMESPACE, "--wait")
    if not args.no_split:
        report["split"] = split_mode("asrsplit", expected)
        sh("helm", "uninstall", "asrsplit", "-n", NAMESPACE, "--wait")
    update = report["rolling_update"]
    checks = {
        "combined transcripts equal make serve's": report["combined_heldout"]["transcripts_equal"],
        "rolling update lost nothing": update["lost"] == 0
        and update["wrong"] == 0
        and update["sent"] > 0,
        "old pod drained": update["old_pod_drained"],
        "SIGTERM only after the preStop sleep": (update["delete_to_sigterm_s"] or 0)
        >= yaml.safe_load(VALUES.read_text())["gracefulShutdown"]["preStopSleepSeconds"] - 1,
        "restricted pod admitted": report["admission"]["restricted_admitted"],
        "privileged pod rejected": report["admission"]["privileged_rejected"],
    }
    if "split" in report:
        checks["split transcripts equal make serve's"] = report["split"]["transcripts_equal"]
    report["failures"] = [name for name, ok in checks.items() if not ok]
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
