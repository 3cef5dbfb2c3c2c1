"""``make image-check``: the image built by ``make image`` run as the chart runs it, measured.

1. ``make serve`` (the reference) on 127.0.0.1 in a scratch BentoML home: the held-out
   transcripts.
2. The image under podman as the chart runs it: uid 1034, read-only root filesystem, tmpfs at
   the chart's emptyDir paths, no capabilities, no-new-privileges, host network on 127.0.0.1.
   Cold start to Ready (``podman run`` to the first 200 on /readyz), PID 1, the held-out
   transcripts (must equal the reference's), then SIGTERM through ``podman stop`` while 16
   clients keep sending (issue 25): every request must be answered (200 with the clip's
   reference transcript, or 503 ``draining`` with ``Retry-After``) or refused at connect once
   the server has gone, never reset; and the exit must come from the server's own shutdown,
   not from the kill after the grace period.

Prints one JSON report; exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.loadgen import OPENAI_ROUTE, Clip, Outcome, closed_loop
from e2e.clients import heldout_transcripts, wait_ready
from e2e.reference import READY_TIMEOUT, reference_transcripts
from espnet_serve.assets import load_heldout

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = ROOT / "docker" / "containers.conf"
CONTAINER = "espnet-serve-image-check"
# The chart's writableDirs (values.yaml) and its pod user.
WRITABLE_DIRS = ("/tmp", "/home/bentoml/bentoml", "/home/bentoml/.cache")
UID = "1034"
STOP_GRACE = 60
# SIGTERM under load: clients looping through the stop, how long they send before it and how
# long they keep connecting after the container has exited.
STOP_CLIENTS = 16
LOAD_BEFORE_STOP_S = 3.0
CONNECTS_AFTER_EXIT_S = 1.0
CLEAN_STOP_OUTCOMES = {"200", "503 draining", "refused at connect"}


def podman(*args: str, check: bool = True) -> str:
    """Run podman with the project's containers.conf; its stdout."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    run = subprocess.run(["podman", *args], capture_output=True, text=True, env=env)
    if check and run.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {run.stderr.strip()}")
    return run.stdout.strip()


def run_container(image: str, port: int) -> float:
    """Start the image as the chart's pod runs it; the monotonic time ``podman run`` began."""
    podman("rm", "-f", CONTAINER, check=False)
    # U: owned by the container's user, as an emptyDir is writable through the pod's fsGroup.
    mounts = [arg for path in WRITABLE_DIRS for arg in ("--tmpfs", f"{path}:rw,size=2g,U")]
    started = time.monotonic()
    podman(
        "run", "-d", "--name", CONTAINER, "--network", "host", "--read-only",
        "--user", f"{UID}:{UID}", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        *mounts, image, "serve", "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    return started


def container_facts() -> dict[str, object]:
    """PID 1, the user, and whether the root filesystem refuses writes, seen from inside."""
    pid1 = podman("exec", CONTAINER, "cat", "/proc/1/cmdline").replace("\0", " ").strip()
    writable_root = podman(
        "exec",
        CONTAINER,
        "sh",
        "-c",
        "touch /home/bentoml/bento/x 2>/dev/null && echo yes || echo no",
    )
    return {
        "pid1": pid1,
        "uid": podman("exec", CONTAINER, "id", "-u"),
        "root_filesystem_writable": writable_root == "yes",
        "writable_dirs": {
            d: podman("exec", CONTAINER, "sh", "-c", f"touch {d}/probe && echo yes || echo no")
            == "yes"
            for d in WRITABLE_DIRS
        },
    }


def stop_container(log_path: Path) -> dict[str, object]:
    """SIGTERM through ``podman stop``; how long the exit took and its status.

    The container's whole log is written to ``log_path``.
    """
    started = time.monotonic()
    podman("stop", "-t", str(STOP_GRACE), CONTAINER)
    seconds = time.monotonic() - started
    exit_code = int(podman("inspect", "--format", "{{.State.ExitCode}}", CONTAINER))
    log = podman("logs", CONTAINER, check=False)
    log_path.write_text(log)
    return {"stop_seconds": round(seconds, 1), "exit_code": exit_code, "log_tail": log[-1500:]}


async def stop_under_load(
    url: str, clips: list[Clip], log_path: Path
) -> tuple[dict[str, object], Counter]:
    """:func:`stop_container` while ``STOP_CLIENTS`` clients keep sending.

    Returns:
        The stop's report, and what the requests got (counted by :func:`outcome_kind`).
    """
    stop = asyncio.Event()
    load = asyncio.create_task(
        closed_loop(url + OPENAI_ROUTE, clips, concurrency=STOP_CLIENTS, requests=50_000, stop=stop)
    )
    await asyncio.sleep(LOAD_BEFORE_STOP_S)
    stopped = await asyncio.to_thread(stop_container, log_path)
    await asyncio.sleep(CONNECTS_AFTER_EXIT_S)
    stop.set()
    return stopped, Counter(outcome_kind(outcome) for outcome in await load)


def outcome_kind(outcome: Outcome) -> str:
    """One request's outcome as the SIGTERM check counts it."""
    if outcome.refused_at_connect:
        return "refused at connect"
    if outcome.status == 200:
        return "200" if outcome.ok else "200 with another transcript"
    if outcome.status == 503 and outcome.error_code == "draining" and outcome.retry_after:
        return "503 draining"
    return f"{outcome.status} {outcome.error_code}" if outcome.status else f"{outcome.error}"[:80]


def main() -> int:
    """Run the checks; print the report; 0 when every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/espnet-serve:0.1.0")
    parser.add_argument("--reference-port", type=int, default=3101)
    parser.add_argument("--port", type=int, default=3102)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "image" / "check.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    expected, reference_start = reference_transcripts(
        args.reference_port, args.out.with_name("make-serve.log")
    )
    report: dict[str, object] = {
        "image": args.image,
        "make_serve_start_to_ready_s": round(reference_start, 1),
    }
    container_log = args.out.with_name("container.log")
    started = run_container(args.image, args.port)
    try:
        url = f"http://127.0.0.1:{args.port}"
        report["cold_start_to_ready_s"] = round(wait_ready(url, READY_TIMEOUT) - started, 1)
        report.update(container_facts())
        got = heldout_transcripts(url)
        clips = [
            Clip(clip.path.name, clip.path.read_bytes(), expected[clip.uttid])
            for clip in load_heldout()
            if clip.uttid in expected
        ]
        stopped, outcomes = asyncio.run(stop_under_load(url, clips, container_log))
        report.update(stopped, sigterm_under_load=dict(outcomes))
    finally:
        if "exit_code" not in report:
            report.update(stop_container(container_log))
        podman("rm", "-f", CONTAINER, check=False)
    mismatches = {u: (expected[u], got.get(u)) for u in expected if got.get(u) != expected[u]}
    report.update(clips=len(expected), transcripts_equal=not mismatches, mismatches=mismatches)
    failures = [
        name
        for name, ok in {
            "transcripts equal make serve's": not mismatches and len(got) == len(expected) > 0,
            "PID 1 is tini": report["pid1"].startswith("/usr/bin/tini"),
            "runs as uid 1034": report["uid"] == UID,
            "root filesystem read-only": not report["root_filesystem_writable"],
            "emptyDir paths writable": all(report["writable_dirs"].values()),
            "SIGTERM ends it before the kill": report["exit_code"] != 137
            and report["stop_seconds"] < STOP_GRACE,
            "SIGTERM under load: answered or refused at connect, never reset": set(
                report.get("sigterm_under_load") or {"none sent": 0}
            )
            <= CLEAN_STOP_OUTCOMES
            and "200" in report["sigterm_under_load"],
        }.items()
        if not ok
    ]
    report["failures"] = failures
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "log_tail"}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
