"""Server faults are 5xx, never the client's: a real ``bentoml serve``, models broken on purpose.

Both models are the tiny random-init test model with a recipe ``output_fn``
that raises: one only for clips longer than two seconds (a backend failure on
valid input), one always (so warm-up fails and the service must stay unready).
And the embedded model's worker killed under load: no request lost.
"""

from __future__ import annotations

import collections
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from devkit.publish import write_bundle
from devkit.random_init import AsrExperiment
from espnet_serve.assets import load_heldout
from tests.conftest import TINY_DECODING
from tests.server import (
    BentoServer,
    serve_default_model,
    serve_env,
    service_worker,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.slow

FAILING_OUTPUT_FN = textwrap.dedent(
    '''
    """An output function that fails for some inputs (a model bug, on purpose)."""

    LIMIT_SAMPLES = {limit}


    def _one(uttid, speech, nbest):
        if len(speech) > LIMIT_SAMPLES:
            raise RuntimeError("broken on purpose")
        return {{"uttid": uttid, "text": nbest[0][0]}}


    def output_fn(*, data, model_output, idx):
        if isinstance(idx, list):
            return [_one(i, d["speech"], out) for i, d, out in zip(idx, data, model_output)]
        return _one(idx, data["speech"], model_output)
    '''
)


def faulty_bundle(root: Path, experiment: AsrExperiment, limit_samples: int) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "output.py").write_text(FAILING_OUTPUT_FN.format(limit=limit_samples))
    return write_bundle(
        root / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        decoding=TINY_DECODING,
        output_fn="src.output.output_fn",
        user_code_dir=src,
    )


def serve_bundle(home: Path, bundle: Path, name: str, *, wait_ready: bool = True) -> BentoServer:
    env = serve_env(home, model_tag=f"{name}:latest")
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    subprocess.run(
        [cli, "build", str(bundle), "--name", name, "--trust-user-code"],
        env={**os.environ, **env},
        check=True,
    )
    return start_server(
        "service:ApiService", env=env, log_path=home / "serve.log", wait_ready=wait_ready
    )


def wav_bytes(seconds: float) -> bytes:
    noise = np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.05
    buffer = io.BytesIO()
    sf.write(buffer, noise.astype(np.float32), 16000, format="WAV")
    return buffer.getvalue()


def post(server: BentoServer, data: bytes, request_id: str = "") -> httpx.Response:
    return httpx.post(
        f"{server.url}/transcribe",
        files={"file": ("a.wav", data, "audio/wav")},
        headers={"X-Request-ID": request_id} if request_id else None,
        timeout=60,
    )


def test_a_backend_failure_is_a_500_with_an_error_id_counted_once(tmp_path, tiny_experiment):
    bundle = faulty_bundle(tmp_path / "fails_long", tiny_experiment, limit_samples=2 * 16000)
    server = serve_bundle(tmp_path / "home", bundle, "fails-long")
    try:
        failed = post(server, wav_bytes(3.0), request_id="fault-req-1")
        fine = post(server, wav_bytes(1.0))
        metrics = httpx.get(f"{server.url}/metrics").text
        log = server.log()
    finally:
        server.stop()
    assert failed.status_code == 500, failed.text
    error = failed.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "decode_failed"
    assert error["error_id"] in error["message"]
    assert error["error_id"] in log and "broken on purpose" in log
    # The request id is in the error body, the error log line and the access line.
    assert failed.headers["x-request-id"] == error["request_id"] == "fault-req-1"
    assert "request fault-req-1: the model failed" in log
    assert "POST /transcribe 500" in log and "request_id=fault-req-1" in log
    assert fine.status_code == 200, fine.text
    assert 'espnet_serve_errors_total{code="decode_failed"} 1.0' in metrics


def test_a_model_that_cannot_decode_stays_unready_with_the_reason(tmp_path, tiny_experiment):
    bundle = faulty_bundle(tmp_path / "always_fails", tiny_experiment, limit_samples=0)
    server = serve_bundle(tmp_path / "home", bundle, "always-fails", wait_ready=False)
    try:
        unready = wait_for(server, lambda r: "warm-up failed" in r.text, timeout=120)
        answer = post(server, wav_bytes(1.0))
    finally:
        server.stop()
    assert unready is not None, server.log()
    assert unready.status_code == 503 and "broken on purpose" in unready.text
    assert set(server.readyz_statuses) == {503}
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_unavailable"
    assert "warm-up failed" in answer.json()["error"]["message"]


def test_a_killed_model_worker_costs_no_request(tmp_path: Path):
    """16 clients in loops (waiting as Retry-After says); the model worker is killed mid-traffic
    (as the OOM killer would), and the clients go on until the restarted one has answered them.

    Every request is answered 200 with the clip's own answer, or 503 with ``Retry-After``:
    never a 500, never a reset. The segments in flight on the dead worker are sent again
    once the restarted worker is ready, and the log and ``/metrics`` say so.
    """
    server = serve_default_model(tmp_path / "home")
    clips = [(clip.path.read_bytes(), clip.path.name) for clip in load_heldout(8)]
    outcomes: collections.Counter = collections.Counter()
    statuses: dict[int, list[int]] = collections.defaultdict(list)  # each client's, in order
    wrong: list[str] = []
    stop = threading.Event()
    try:
        with httpx.Client(timeout=120) as alone:
            answers = [transcribe(alone, server, audio).json()["text"] for audio, _ in clips]

        def loop(client_id: int) -> None:
            with httpx.Client(timeout=120) as client:
                sent = client_id
                while not stop.is_set():
                    sent += 1
                    audio_index = sent % len(clips)
                    try:
                        response = transcribe(client, server, clips[audio_index][0])
                    except httpx.TransportError as exc:
                        outcomes[type(exc).__name__] += 1
                        continue
                    retry = response.headers.get("retry-after")
                    outcomes[(response.status_code, retry is not None)] += 1
                    statuses[client_id].append(response.status_code)
                    text = response.json().get("text") if response.status_code == 200 else None
                    if text is not None and text != answers[audio_index]:
                        wrong.append(text)
                    if retry is not None:  # as a client told to wait does (bounded here)
                        time.sleep(min(float(retry), RETRY_WAIT_CAP_S))

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        time.sleep(2)  # traffic established
        killed = service_worker(server, "ModelService")
        killed.kill()
        # Until a new model worker runs and every client has been answered by it a few times.
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        marks = {client: len(seen) for client, seen in statuses.items()}
        while time.monotonic() < deadline and not all(
            statuses[c][marks.get(c, 0) :].count(200) >= RECOVERED
            and statuses[c][-RECOVERED:] == [200] * RECOVERED
            for c in range(16)
        ):
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=150)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        with httpx.Client(timeout=60) as client:
            after = transcribe(client, server, clips[0][0])
    finally:
        stop.set()
        server.stop()
    log = server.log_path.read_text(errors="replace")  # all of it
    assert set(outcomes) <= {(200, False), (503, True)}, outcomes
    assert all(seen[-RECOVERED:] == [200] * RECOVERED for seen in statuses.values()), outcomes
    assert not wrong and after.status_code == 200
    assert "was lost; a worker is ready again, sending it again" in log
    resent = [line for line in metrics.splitlines() if line.startswith(RESENT)]
    assert resent and float(resent[0].split()[-1]) >= 1, resent
    assert "Internal error" not in log


RESENT = "espnet_serve_segments_resent_total"
RETRY_WAIT_CAP_S = 2.0
RECOVERED = 3  # each client's last requests, all answered 200 by the restarted worker
RECOVERY_TIMEOUT_S = 120.0


def transcribe(client: httpx.Client, server: BentoServer, audio: bytes) -> httpx.Response:
    return client.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": ("clip.wav", audio, "audio/wav")},
        data={"model": "whisper-1"},
    )
