"""Two egs2/librispeech_100 ``Speech2Text`` recipes at reduced sizes, served as espnet2 does.

Their options as they are, dimensions and depths cut:

- the conformer transducer (``decoder: transducer``,
  ``conf/tuning/train_asr_transducer_conformer_e15_linear1024.yaml`` with
  ``conf/tuning/decode_transducer.yaml``), which the batched backend cannot decode: with
  ``batched_backend`` the session builds espnet2's own ``Speech2Text``, says why, and decodes one
  clip at a time. Nothing training-only is installed (``warprnnt_pytorch``, which espnet2 imports
  to build a transducer).
- a hybrid decoded with its transformer language model (``conf/train_lm.yaml``,
  ``conf/decode_asr.yaml``), which the batched backend decodes in padded batches with the
  language model fused.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml
from espnet2.bin.asr_inference import Speech2Text

from devkit.publish import LM_CONFIG_RELPATH, LM_FILE_RELPATH, write_bundle
from devkit.random_init import (
    AsrExperiment,
    write_random_asr_experiment,
    write_random_lm_experiment,
)
from devkit.recipes import (
    LIBRISPEECH_100_CONFORMER_TRANSDUCER,
    LIBRISPEECH_100_TRANSFORMER_LM,
    reduced,
)
from espnet_serve import InferenceSession
from espnet_serve.assets import load_heldout
from espnet_serve.backends import BatchedSpeech2Text
from espnet_serve.backends.offline import training_only_stand_ins
from tests.answers import served_text
from tests.server import serve_env, start_server

SAMPLE_RATE = 16000
CLIPS = 8
TRANSDUCER_DECODING = {
    "beam_size": 4,
    "transducer_conf": {"search_type": "default", "score_norm": True},
    "device": "cpu",
}
LM_DECODING = {"beam_size": 4, "ctc_weight": 0.3, "lm_weight": 0.3, "device": "cpu"}


@pytest.fixture(scope="module")
def transducer_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transducer")
    experiment = write_random_asr_experiment(
        root / "exp", **reduced(LIBRISPEECH_100_CONFORMER_TRANSDUCER).options
    )
    return write_bundle(
        root / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        decoding=TRANSDUCER_DECODING,
    )


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_experiment: AsrExperiment) -> Path:
    root = tmp_path_factory.mktemp("hybrid_lm")
    lm = write_random_lm_experiment(root / "lm", **reduced(LIBRISPEECH_100_TRANSFORMER_LM).options)
    return write_bundle(
        root / "bundle",
        asr_train_config=tiny_experiment.asr_train_config,
        asr_model_file=tiny_experiment.asr_model_file,
        decoding=LM_DECODING,
        lm_train_config=lm.lm_train_config,
        lm_file=lm.lm_file,
    )


def espnet2_reference(bundle: Path) -> Speech2Text:
    """espnet2's class called directly, with the bundle's files and decoding options (built with
    the training-only stand-ins: espnet2 cannot build a transducer without warprnnt_pytorch)."""
    model = yaml.safe_load((bundle / "conf" / "inference.yaml").read_text())["model"]
    options = {k: v for k, v in model.items() if k != "_target_" and "${" not in str(v)}
    lm = (
        {"lm_train_config": bundle / LM_CONFIG_RELPATH, "lm_file": bundle / LM_FILE_RELPATH}
        if (bundle / LM_FILE_RELPATH).is_file()
        else {}
    )
    with training_only_stand_ins():
        return Speech2Text(
            asr_train_config=bundle / "exp" / "asr" / "config.yaml",
            asr_model_file=bundle / "exp" / "asr" / "model.pth",
            **lm,
            **options,
        )


def answers(nbests: list) -> list[list[tuple[str, list[int]]]]:
    """Each clip's n-best texts and token ids."""
    return [[(text, list(token_ids)) for text, _, token_ids, _ in nbest] for nbest in nbests]


@pytest.fixture(scope="module")
def clips() -> list:
    """Held-out clips of different lengths."""
    return [clip.read_audio(SAMPLE_RATE) for clip in load_heldout(CLIPS)]


def test_a_transducer_is_served_one_clip_at_a_time_as_espnet2_decodes_it(
    transducer_bundle: Path,
    clips: list,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    bundle = transducer_bundle
    assert importlib.util.find_spec("warprnnt_pytorch") is None  # nothing training-only
    # BentoML's CLI logging config (dictConfig, disable_existing_loggers), run in-process by
    # `bentoml build` in an earlier test module, disables the loggers that exist by then.
    monkeypatch.setattr(logging.getLogger("espnet_serve.bundle.config"), "disabled", False)
    with caplog.at_level(logging.WARNING, logger="espnet_serve.bundle.config"):
        session = InferenceSession.from_pretrained(
            str(bundle), batched_backend=True, prefer_model_batch=True, max_bucket_size=8
        )
    assert isinstance(session.model, Speech2Text) and not session.prefer_model_batch
    assert "cannot be decoded exactly in padded batches" in caplog.text
    assert "warprnnt_pytorch" not in sys.modules  # the stand-in lived only while building
    ours = answers(session.forward_batch(clips))
    assert ours == answers([espnet2_reference(bundle)(clip) for clip in clips])
    assert any(text for nbest in ours for text, _ in nbest)


def test_a_hybrid_with_its_language_model_is_batched_and_answers_as_espnet2(
    lm_bundle: Path, clips: list
):
    session = InferenceSession.from_pretrained(
        str(lm_bundle), batched_backend=True, prefer_model_batch=True, max_bucket_size=8
    )
    assert isinstance(session.model, BatchedSpeech2Text) and session.prefer_model_batch
    assert session.model.lm is not None
    ours = answers(session.forward_batch(clips))
    assert ours == answers([espnet2_reference(lm_bundle)(clip) for clip in clips])
    assert any(text for nbest in ours for text, _ in nbest)


def test_a_batchable_bundle_still_gets_the_batched_backend(tiny_bundle_dir: Path):
    session = InferenceSession.from_pretrained(
        str(tiny_bundle_dir), trust_user_code=True, batched_backend=True, prefer_model_batch=True
    )
    assert isinstance(session.model, BatchedSpeech2Text) and session.prefer_model_batch


@pytest.mark.slow
def test_a_transducer_is_served_over_http_as_espnet2_decodes_it(
    tmp_path: Path, transducer_bundle: Path, clips: list
):
    (tmp_path / "home").mkdir()
    env = serve_env(tmp_path / "home", model_tag="transducer:latest")
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    subprocess.run(
        [cli, "build", str(transducer_bundle), "--name", "transducer"],
        env={**os.environ, **env},
        check=True,
    )
    server = start_server("service:ApiService", env=env, log_path=tmp_path / "serve.log")
    try:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        served = []
        for clip in load_heldout(CLIPS):
            with clip.path.open("rb") as audio:
                served.append(sdk.audio.transcriptions.create(model="transducer", file=audio).text)
        log = server.log_path.read_text(errors="replace")
    finally:
        server.stop()
    reference = espnet2_reference(transducer_bundle)
    assert served == [served_text(reference(clip)[0][0]) for clip in clips]
    assert "cannot be decoded exactly in padded batches" in log
