"""Shared fixtures: a tiny random-initialised espnet2 ASR model, bundled and packed; a long
synthetic recording with exact word times."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Everything under test is offline: no hub lookups, no nltk downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep rather than spin (spinning stalls a busy 2-core machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

from devkit.publish import pack_bundle, write_bundle
from devkit.random_init import AsrExperiment, write_random_asr_experiment
from tests.server import BentoServer, serve_default_model

# Cheap decoding for a random model: short outputs, one beam.
TINY_DECODING = {"beam_size": 1, "ctc_weight": 0.5, "maxlenratio": 0.2, "device": "auto"}

OUTPUT_FN_SOURCE = textwrap.dedent(
    '''
    """Recipe output function of the tiny test bundle."""


    def _one(uttid, nbest):
        return {"uttid": uttid, "text": nbest[0][0], "made_by": "bundled-user-code"}


    def output_fn(*, data, model_output, idx):
        if isinstance(idx, list):
            return [_one(i, out) for i, out in zip(idx, model_output)]
        return _one(idx, model_output)
    '''
)


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory: pytest.TempPathFactory) -> AsrExperiment:
    return write_random_asr_experiment(tmp_path_factory.mktemp("tiny_exp"))


@pytest.fixture(scope="session")
def user_code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("recipe") / "src"
    src.mkdir()
    (src / "__init__.py").write_text("")
    (src / "output.py").write_text(OUTPUT_FN_SOURCE)
    return src


@pytest.fixture(scope="session")
def tiny_bundle_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_experiment: AsrExperiment, user_code_dir: Path
) -> Path:
    return write_bundle(
        tmp_path_factory.mktemp("bundle") / "tiny",
        asr_train_config=tiny_experiment.asr_train_config,
        asr_model_file=tiny_experiment.asr_model_file,
        decoding=TINY_DECODING,
        output_fn="src.output.output_fn",
        user_code_dir=user_code_dir,
    )


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Path:
    return pack_bundle(tiny_bundle_dir, tmp_path_factory.mktemp("archives") / "tiny.tar.gz")


@pytest.fixture(scope="session")
def espnet2_packed_archive(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Path:
    """The same bundle packed by espnet2's own ``pack`` (as ``espnet2 pack`` would)."""
    from espnet2.main_funcs.pack_funcs import pack

    out = tmp_path_factory.mktemp("espnet2_pack") / "tiny_espnet2.tar.gz"
    cwd = Path.cwd()
    os.chdir(tiny_bundle_dir)
    try:
        pack(
            files={"asr_model_file": "exp/asr/model.pth"},
            yaml_files={
                "asr_train_config": "exp/asr/config.yaml",
                "inference_config": "conf/inference.yaml",
            },
            outpath=out,
            option=["src/output.py", "src/__init__.py"],
        )
    finally:
        os.chdir(cwd)
    return out


@pytest.fixture(scope="session")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    """The embedded model behind a real ``bentoml serve``: default settings, two API workers.

    Shared by the modules that need nothing but a served default model (one start, not one
    per module); modules that need other settings start their own.
    """
    server = serve_default_model(tmp_path_factory.mktemp("shared_home"), api_workers="2")
    yield server
    server.stop()


@pytest.fixture()
def speech() -> np.ndarray:
    """Half a second of quiet noise at 16 kHz."""
    return (np.random.default_rng(0).standard_normal(8000) * 0.05).astype(np.float32)


@dataclass(frozen=True)
class LongRecording:
    """A synthetic recording of digit strings with pauses, and when each word is spoken."""

    path: Path
    truth: list  # list[digits_recipe.longfile.TimedString]

    @property
    def text(self) -> str:
        return " ".join(string.text for string in self.truth)


LONG_RECORDING_MINUTES = 2.0


@pytest.fixture(scope="session")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> LongRecording:
    """Two minutes of held-out-style digit strings (espeak-ng voices unseen in training)."""
    from digits_recipe.longfile import write_long_file

    path = tmp_path_factory.mktemp("long") / "long.flac"
    truth = write_long_file(path, minutes=LONG_RECORDING_MINUTES, seed=4404)
    return LongRecording(path, truth)
