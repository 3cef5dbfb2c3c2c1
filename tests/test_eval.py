"""``espnet-serve eval``: any clip rate through ingest, batched by default, trust only by flag."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import yaml

from espnet_serve.assets import (
    DEFAULT_MODEL_ARCHIVE,
    HELDOUT_DIR,
    TRANSCRIPTS_FILENAME,
    load_heldout,
)
from espnet_serve.bundle.errors import UntrustedUserCodeError
from espnet_serve.bundle.layout import train_config_sample_rate
from espnet_serve.bundle.session import InferenceSession
from espnet_serve.bundle.store import is_default_archive, load_local_session
from espnet_serve.cli import main as cli
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.evaluate import evaluate

NUM_CLIPS = 5


def resampled_copy(directory: Path, rate: int, *, stereo: bool = False) -> Path:
    """The first ``NUM_CLIPS`` held-out clips at ``rate`` (FLAC, 16-bit), with their transcripts."""
    directory.mkdir()
    for clip in load_heldout(NUM_CLIPS):
        audio, source_rate = sf.read(clip.path, dtype="float32")
        audio = soxr.resample(audio, source_rate, rate, quality="VHQ")
        if stereo:
            audio = np.stack([audio, audio], axis=1)
        sf.write(directory / clip.path.name, audio, rate, subtype="PCM_16")
    lines = (HELDOUT_DIR / TRANSCRIPTS_FILENAME).read_text(encoding="utf-8").splitlines()
    (directory / TRANSCRIPTS_FILENAME).write_text("\n".join(lines[:NUM_CLIPS]) + "\n")
    return directory


def test_only_the_embedded_archive_is_the_default_model(tmp_path: Path):
    assert is_default_archive(str(DEFAULT_MODEL_ARCHIVE))
    copy = tmp_path / "digits_asr.tar.gz"
    shutil.copy(DEFAULT_MODEL_ARCHIVE, copy)
    assert not is_default_archive(str(copy))
    assert not is_default_archive("espnet/some_model")


@pytest.mark.parametrize(
    ("config", "rate"),
    [
        ("frontend_conf:\n  fs: 8000\n", 8000),
        ("frontend_conf:\n  fs: 22.05k\n", 22050),
        ("frontend: default\n", 16000),
    ],
)
def test_the_model_rate_comes_from_its_train_config(config: str, rate: int):
    assert train_config_sample_rate(yaml.safe_load(config)) == rate
    assert train_config_sample_rate(None) == 16000


def test_batch_size_must_be_positive():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["eval", "--batch-size", "0"])


def test_eval_refuses_an_untrusted_bundle_with_user_code(tmp_path: Path, tiny_archive: Path):
    with pytest.raises(UntrustedUserCodeError, match="--trust-user-code"):
        cli.main(["eval", "--model", str(tiny_archive), "--cachedir", str(tmp_path)])


@pytest.mark.slow
def test_eval_runs_a_trusted_bundle_with_the_flag(
    tmp_path: Path, tiny_archive: Path, capsys: pytest.CaptureFixture[str]
):
    args = ["eval", "--model", str(tiny_archive), "--limit", "2", "--json", "--trust-user-code"]
    assert cli.main([*args, "--cachedir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["count"], report["mode"], report["sample_rate"]) == (2, "batched", 16000)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> InferenceSession:
    workdir = tmp_path_factory.mktemp("eval")
    session, spec = load_local_session(str(DEFAULT_MODEL_ARCHIVE), workdir)
    assert spec.sample_rate == 16000 and spec.user_code_trusted
    return session


@pytest.mark.slow
@pytest.mark.parametrize(("rate", "stereo"), [(22050, False), (44100, True)])
def test_resampled_copies_get_the_transcripts_of_the_originals(
    tmp_path: Path, session: InferenceSession, rate: int, stereo: bool
):
    copy = resampled_copy(tmp_path / "heldout", rate, stereo=stereo)
    assert sf.info(str(copy / load_heldout(1)[0].path.name)).samplerate == rate

    def transcripts(directory: Path) -> list[str]:
        clips = load_heldout(NUM_CLIPS, directory=directory)
        results = session.forward_batch([clip.read_audio(16000) for clip in clips])
        return [result["text"] for result in results]

    assert transcripts(copy) == transcripts(HELDOUT_DIR)
    decoder = SegmentDecoder(session, 16000)
    report = evaluate(
        decoder, load_heldout(NUM_CLIPS, directory=copy), model="default", load_seconds=0
    )
    original = evaluate(decoder, load_heldout(NUM_CLIPS), model="default", load_seconds=0)
    assert (report.wer, report.errors, report.mode) == (original.wer, original.errors, "batched")
    assert report.wer <= 0.1
    assert report.audio_seconds == pytest.approx(
        sum(sf.info(str(clip.path)).duration for clip in load_heldout(NUM_CLIPS)), abs=1e-3
    )
