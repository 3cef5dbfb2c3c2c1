"""Speech enhancement and separation served as espnet2's ``SeparateSpeech`` answers.

Reduced-size models of two recipes (``devkit.recipes``): Conv-TasNet separating two speakers at
8 kHz (``egs2/wsj0_2mix/enh1/conf/tuning/train_enh_conv_tasnet.yaml``) and a BLSTM mask
estimator enhancing one at 16 kHz (``egs2/dns_ins20/enh1/conf/tuning/train_enh_blstm_tf.yaml``),
packed by espnet2's packer (``train_config``, ``model_file``; no inference config, no sample
rate: ``enh.sh --fs`` is not in the config, so the bundle or ``--sample-rate`` says it).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
import yaml

from devkit.publish import pack_published
from devkit.random_init import write_random_enh_experiment
from devkit.recipes import BLSTM_TF_DNS_INS20, CONV_TASNET_WSJ0_2MIX, reduced_enh
from espnet_serve.assets import load_heldout
from espnet_serve.audio.encode import pcm16
from espnet_serve.audio.ingest import IngestLimits, decode_audio
from espnet_serve.bundle.store import load_local_session
from espnet_serve.executors import executor_for
from espnet_serve.executors.enh import EnhExecutor
from tests.server import serve_env, start_server

CLIPS = 3


def published_enh(root: Path, recipe: Any) -> Path:
    """A reduced random model packed by espnet2's packer."""
    return pack_published(
        root / "recipe",
        lambda out: write_random_enh_experiment(out, **reduced_enh(recipe).options),
        root / "published.tar.gz",
    )


def unpacked(archive: Path, root: Path, **meta: Any) -> Path:
    """``archive`` unpacked into ``root``, with ``meta`` added to its ``meta.yaml``."""
    with tarfile.open(archive) as packed:
        packed.extractall(root, filter="data")
    document = yaml.safe_load((root / "meta.yaml").read_text())
    (root / "meta.yaml").write_text(yaml.safe_dump({**document, **meta}))
    return root


def separate_speech(bundle: Path) -> Any:
    """espnet2's ``SeparateSpeech`` on an unpacked bundle's files."""
    from espnet2.bin.enh_inference import SeparateSpeech

    meta = yaml.safe_load((bundle / "meta.yaml").read_text())
    return SeparateSpeech(
        str(bundle / meta["yaml_files"]["train_config"]), str(bundle / meta["files"]["model_file"])
    )


def heldout_at(rate: int) -> list[np.ndarray]:
    """The first held-out clips as the server ingests them (mono, soxr to ``rate``)."""
    return [
        decode_audio(clip.path, target_rate=rate, limits=IngestLimits()).samples
        for clip in load_heldout(CLIPS)
    ]


@pytest.fixture(scope="module")
def conv_tasnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return published_enh(tmp_path_factory.mktemp("convtasnet"), CONV_TASNET_WSJ0_2MIX)


@pytest.mark.parametrize(
    ("recipe", "rate", "tracks"),
    [(CONV_TASNET_WSJ0_2MIX, 8000, 2), (BLSTM_TF_DNS_INS20, 16000, 1)],
    ids=["conv_tasnet", "blstm_tf"],
)
def test_a_published_enhancement_model_answers_as_separate_speech(
    recipe: Any, rate: int, tracks: int, tmp_path: Path
):
    bundle = unpacked(published_enh(tmp_path, recipe), tmp_path / "bundle", sample_rate=rate)
    (tmp_path / "work").mkdir()
    session, spec = load_local_session(str(bundle), tmp_path / "work")
    assert (spec.task, spec.family, spec.sample_rate) == ("enh", "enh", rate)
    served = executor_for(session, spec.family)
    assert isinstance(served, EnhExecutor) and served.tracks == tracks
    reference = separate_speech(bundle)
    for clip in heldout_at(rate):
        expected = reference(clip[np.newaxis, :], fs=rate)
        got = served.enhance(clip, rate)
        assert len(got) == tracks
        assert all(
            np.array_equal(track, want.reshape(-1))
            for track, want in zip(got, expected, strict=True)
        )


def test_an_enhancement_bundle_without_a_sample_rate_is_recorded_at_16k_unless_told(
    tmp_path: Path, conv_tasnet: Path
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, spec = load_local_session(str(conv_tasnet), tmp_path / "a")
    assert spec.sample_rate == 16000  # enh.sh's --fs is not in the config
    told = unpacked(conv_tasnet, tmp_path / "told", sample_rate=8000)
    assert load_local_session(str(told), tmp_path / "b")[1].sample_rate == 8000


@pytest.mark.slow
def test_separation_over_http_is_separate_speech_a_channel_per_speaker(
    tmp_path: Path, conv_tasnet: Path
):
    home = tmp_path / "home"
    home.mkdir()
    env = serve_env(home, model_tag="separator:latest", max_enhancement_seconds="2")
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    built = subprocess.run(
        [cli, "build", str(conv_tasnet), "--name", "separator", "--sample-rate", "8000"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert "Family: enh" in built.stdout and "Tasks: enhance" in built.stdout
    assert "Sample rate: 8000 Hz" in built.stdout
    server = start_server("service:ApiService", env=env, log_path=tmp_path / "serve.log")
    clips = load_heldout(CLIPS)
    url = f"{server.url}/v1/audio/enhancements"

    def post(data: bytes, **form: str) -> httpx.Response:
        fields = {"model": "separator", **form}
        return httpx.post(url, files={"file": ("a.flac", data)}, data=fields, timeout=120)

    try:
        answers = [post(clip.path.read_bytes()) for clip in clips]
        as_flac = post(clips[0].path.read_bytes(), response_format="flac")
        long_audio = io.BytesIO()
        soundfile.write(long_audio, np.zeros(16000 * 3, np.float32), 16000, format="WAV")
        refusals = {
            "format": post(clips[0].path.read_bytes(), response_format="mp3"),
            "empty": post(b""),
            "not audio": post(b"plain words, not audio"),
            "too long": post(long_audio.getvalue()),
            "model": post(clips[0].path.read_bytes(), model="whisper-1"),
        }
        transcribing = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": clips[0].path.read_bytes()},
            data={"model": "separator"},
            timeout=60,
        )
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        after = post(clips[1].path.read_bytes())
    finally:
        server.stop()

    reference = separate_speech(unpacked(conv_tasnet, tmp_path / "reference"))
    for answer, clip in zip(answers, heldout_at(8000), strict=True):
        assert answer.status_code == 200 and answer.headers["x-audio-tracks"] == "2"
        tracks, rate = soundfile.read(io.BytesIO(answer.content), dtype="int16")
        expected = np.stack([t.reshape(-1) for t in reference(clip[np.newaxis], fs=8000)], 1)
        assert rate == 8000 and tracks.shape == expected.shape
        assert np.array_equal(tracks, np.frombuffer(pcm16(expected), "<i2").reshape(tracks.shape))
    flac, _ = soundfile.read(io.BytesIO(as_flac.content), dtype="int16")
    wav, _ = soundfile.read(io.BytesIO(answers[0].content), dtype="int16")
    assert np.array_equal(flac, wav)
    assert {name: r.status_code for name, r in refusals.items()} == {
        "format": 400,
        "empty": 400,
        "not audio": 400,
        "too long": 413,
        "model": 404,
    }
    assert "cannot hold several tracks" in refusals["format"].json()["error"]["message"]
    assert transcribing.status_code == 400
    assert transcribing.json()["error"]["message"] == (
        "This model enhances only: it cannot transcribe."
    )
    assert [(m["tasks"], m["tracks"]) for m in models] == [(["enhance"], 2)]
    assert after.status_code == 200
