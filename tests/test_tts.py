"""Speech synthesis served as espnet2's ``Text2Speech`` speaks, sample for sample.

Reduced-size models of two LJSpeech recipes (``devkit.recipes``: VITS,
``egs2/ljspeech/tts1/conf/tuning/train_vits.yaml``, and Conformer FastSpeech2 + HiFi-GAN,
``train_joint_conformer_fastspeech2_hifigan.yaml``), packed with espnet2's own packer as
published TTS models are (``train_config`` / ``model_file``, no inference config: import
generates the ``Text2Speech`` one). The reference is ``Text2Speech`` in-process with
``always_fix_seed=True``: VITS draws noise, fixed by the model's seed on every call.
"""

from __future__ import annotations

import asyncio
import io
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile
import yaml

from devkit.publish import pack_published
from devkit.random_init import write_random_tts_experiment
from devkit.recipes import JOINT_FASTSPEECH2_HIFIGAN_LJSPEECH, VITS_LJSPEECH, reduced_tts
from devkit.reference import text2speech as reference_text2speech
from espnet_serve.audio.encode import PCM_RATE, pcm16, resampled
from espnet_serve.bundle.store import load_local_session
from espnet_serve.executors import UnsupportedFamilyError, executor_for
from espnet_serve.executors.tts import SynthesisInputError, SynthesisOptions, TtsExecutor
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.sentences import split_sentences
from tests.test_executors import build_and_serve

TEXTS = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
)
LONG_TEXT = "One two three. Four five six!\nSeven eight, nine? Ten."


def published_tts(root: Path, recipe: Any, *, voices: dict[str, Any] | None = None) -> Path:
    """A random model packed by espnet2's packer (as ``espnet2 pack tts`` does)."""
    archive = pack_published(
        root / "recipe",
        lambda out: write_random_tts_experiment(out, **recipe.options),
        root / "published.tar.gz",
    )
    if voices is None:
        return archive
    unpacked = root / "unpacked"  # a bundle that names its voices in meta.yaml
    with tarfile.open(archive) as packed:
        packed.extractall(unpacked, filter="data")
    meta = yaml.safe_load((unpacked / "meta.yaml").read_text())
    meta["voices"] = voices
    (unpacked / "meta.yaml").write_text(yaml.safe_dump(meta))
    return unpacked


def text2speech(bundle: Path, tmp_path: Path) -> Any:
    """espnet2's ``Text2Speech`` on the published files, seeded on every call."""
    return reference_text2speech(bundle, tmp_path / "reference")


def flat_wav(output: dict[str, Any]) -> np.ndarray:
    """The waveform of a ``Text2Speech`` output, flat."""
    return output["wav"].numpy().reshape(-1)


@pytest.fixture(scope="module")
def vits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return published_tts(tmp_path_factory.mktemp("vits"), reduced_tts(VITS_LJSPEECH))


@pytest.fixture(scope="module")
def fastspeech2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return published_tts(
        tmp_path_factory.mktemp("fs2"), reduced_tts(JOINT_FASTSPEECH2_HIFIGAN_LJSPEECH)
    )


def executor(bundle: Path, workdir: Path) -> TtsExecutor:
    workdir.mkdir(exist_ok=True)
    session, spec = load_local_session(str(bundle), workdir)
    assert spec.family == "tts" and spec.sample_rate == 22050
    found = executor_for(session, spec.family)
    assert isinstance(found, TtsExecutor)
    return found


@pytest.mark.parametrize("model", ["vits", "fastspeech2"])
def test_a_published_tts_model_speaks_as_text2speech(
    model: str, request: pytest.FixtureRequest, tmp_path: Path
):
    bundle = request.getfixturevalue(model)
    served = executor(bundle, tmp_path / "work")
    reference = text2speech(bundle, tmp_path)
    assert served.sample_rate == reference.fs == 22050
    assert list(served.voices) == ["default"]
    for text in TEXTS:
        expected = flat_wav(reference(text))
        assert np.array_equal(served.synthesize(text), expected)
        assert np.array_equal(served.synthesize(text), expected)  # the noise is fixed
    assert served.speed_control  # VITS and FastSpeech2 predict durations
    text = TEXTS[1]
    faster = served.synthesize(text, SynthesisOptions(speed=2.0))
    assert np.array_equal(faster, flat_wav(reference(text, decode_conf={"alpha": 0.5})))
    with pytest.raises(SynthesisInputError, match="voice 'nobody' does not exist"):
        served.synthesize(text, SynthesisOptions(voice="nobody"))
    with pytest.raises(UnsupportedFamilyError, match="tts family does not decode speech"):
        SegmentDecoder(served.session, 22050)


def test_a_multi_speaker_bundle_names_its_voices(tmp_path: Path):
    recipe = reduced_tts(VITS_LJSPEECH)
    params = recipe.options["tts_conf"]["generator_params"]
    multi = type(recipe)(
        recipe.config,
        {
            **recipe.options,
            "tts_conf": {
                **recipe.options["tts_conf"],
                "generator_params": {**params, "spks": 4, "global_channels": 16},
            },
        },
    )
    bundle = published_tts(tmp_path, multi, voices={"anna": {"sid": 2}, "ben": {"sid": 3}})
    served = executor(bundle, tmp_path / "work")
    reference = text2speech(bundle, tmp_path)
    assert list(served.voices) == ["anna", "ben"] and served.default_voice == "anna"
    text = TEXTS[0]
    anna, ben = (served.synthesize(text, SynthesisOptions(voice=v)) for v in ("anna", "ben"))
    assert np.array_equal(anna, flat_wav(reference(text, sids=np.array([2]))))
    assert np.array_equal(ben, flat_wav(reference(text, sids=np.array([3]))))
    assert np.array_equal(served.synthesize(text), anna)


def test_sentences_are_split_at_their_ends_and_long_ones_at_commas():
    assert split_sentences(LONG_TEXT) == [
        "One two three.",
        "Four five six!",
        "Seven eight, nine?",
        "Ten.",
    ]
    long = ", ".join(["word word word"] * 40)
    parts = split_sentences(long, max_chars=100)
    assert all(len(part) <= 100 for part in parts) and " ".join(parts) == long
    assert split_sentences("  \n ") == []


def pcm16_of(samples: np.ndarray) -> np.ndarray:
    return np.frombuffer(pcm16(samples), dtype="<i2")


@pytest.mark.slow
def test_speech_over_http_is_text2speech_sample_for_sample(tmp_path: Path, vits: Path):
    built, server = build_and_serve(tmp_path, vits, "vits")
    assert "Family: tts" in built.stdout and "Tasks: synthesize" in built.stdout
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    refusals: dict[str, httpx.Response] = {}
    try:
        wav = sdk.audio.speech.create(
            model="tts-1", voice="alloy", input=TEXTS[1], response_format="wav"
        ).content
        flac = sdk.audio.speech.create(
            model="vits", voice="default", input=TEXTS[2], response_format="flac"
        ).content
        with sdk.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=LONG_TEXT, response_format="pcm"
        ) as streamed:
            pcm_chunks = list(streamed.iter_bytes())
        long_wav = sdk.audio.speech.create(
            model="tts-1", voice="alloy", input=LONG_TEXT, response_format="wav", speed=1.5
        ).content
        mp3, opus = (
            sdk.audio.speech.create(
                model="tts-1", voice="alloy", input=TEXTS[0], response_format=name
            ).content
            for name in ("mp3", "opus")
        )
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        post = lambda **body: httpx.post(  # noqa: E731
            f"{server.url}/v1/audio/speech",
            json={"model": "tts-1", "input": TEXTS[0], "voice": "alloy", **body},
            timeout=60,
        )
        refusals = {
            "empty": post(input=" \n"),
            "long": post(input="a" * 100_000),
            "control": post(input="Hello\x07 world."),
            "emoji": post(input="Hello \U0001f600."),
            "voice": post(voice="nobody"),
            "format": post(response_format="aac"),
            "speed": post(speed=5.0),
            "model": post(model="whisper-1"),
        }
        with (tmp_path / "speech.wav").open("wb") as clip:
            clip.write(wav)
        with (tmp_path / "speech.wav").open("rb") as clip:
            transcribing = httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": clip},
                data={"model": "vits"},
                timeout=60,
            )
        after = post()
    finally:
        server.stop()

    reference = text2speech(vits, tmp_path)

    def spoken(text: str, **options: Any) -> np.ndarray:
        return flat_wav(reference(text, **options))

    samples, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
    assert rate == 22050 and np.array_equal(samples, pcm16_of(spoken(TEXTS[1])))
    samples, rate = soundfile.read(io.BytesIO(flac), dtype="int16")
    assert rate == 22050 and np.array_equal(samples, pcm16_of(spoken(TEXTS[2])))
    sentences = split_sentences(LONG_TEXT)
    expected_pcm = b"".join(
        pcm16(resampled(spoken(sentence), 22050, PCM_RATE)) for sentence in sentences
    )
    assert len(pcm_chunks) >= 1 and b"".join(pcm_chunks) == expected_pcm
    samples, _ = soundfile.read(io.BytesIO(long_wav), dtype="int16")
    faster = [spoken(s, decode_conf={"alpha": 1 / 1.5}) for s in sentences]
    assert np.array_equal(samples, pcm16_of(np.concatenate(faster)))
    for encoded, name in ((mp3, "MP3"), (opus, "OGG")):
        decoded, _ = soundfile.read(io.BytesIO(encoded))
        assert soundfile.info(io.BytesIO(encoded)).format == name and len(decoded) > 0

    (model,) = models
    assert model["tasks"] == ["synthesize"] and model["voices"] == ["default"]
    assert {name: r.status_code for name, r in refusals.items()} == {
        "empty": 400,
        "long": 400,
        "control": 400,
        "emoji": 400,
        "voice": 400,
        "format": 400,
        "speed": 422,
        "model": 404,
    }
    errors = {name: r.json()["error"] for name, r in refusals.items()}
    assert "input is empty" in errors["empty"]["message"]
    assert "the limit is 4096" in errors["long"]["message"]
    assert "U+0007" in errors["control"]["message"]
    assert "U+1F600" in errors["emoji"]["message"]
    assert errors["voice"]["code"] == "unknown_voice" and "default" in errors["voice"]["message"]
    assert "'aac' has no encoder" in errors["format"]["message"]
    assert errors["speed"]["param"] == "speed"
    assert transcribing.status_code == 400
    assert transcribing.json()["error"]["code"] == "task_unsupported"
    assert after.status_code == 200 and after.headers["content-type"] == "audio/mpeg"


@pytest.mark.slow
def test_one_server_serves_the_asr_and_the_tts_model_each_in_its_own_batches(
    tmp_path: Path, vits: Path
):
    from espnet_serve.assets import load_heldout
    from espnet_serve.serving.settings import DEFAULT_MODEL_TAG
    from tests.server import import_default_model, serve_env, start_server
    from tests.test_executors import build

    home = tmp_path / "home"
    home.mkdir()
    import_default_model(home)
    env = serve_env(home, model_tag=f"{DEFAULT_MODEL_TAG},vits:latest")
    assert build(vits, "vits", env).returncode == 0
    server = start_server("service:ApiService", env=env, log_path=tmp_path / "serve.log")
    clips = load_heldout(8)
    try:
        models = httpx.get(f"{server.url}/v1/models").json()["data"]

        async def mixed() -> tuple[list[str], list[bytes]]:
            sdk = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

            async def transcribe(clip: Any) -> str:
                answer = await sdk.audio.transcriptions.create(
                    model="whisper-1", file=(clip.path.name, clip.path.read_bytes())
                )
                return answer.text

            async def speak(text: str) -> bytes:
                answer = await sdk.audio.speech.create(
                    model="tts-1", voice="alloy", input=text, response_format="wav"
                )
                return answer.content

            texts = asyncio.gather(*(transcribe(clip) for clip in clips))
            speech = asyncio.gather(*(speak(text) for text in TEXTS * 3))
            return await texts, await speech

        texts, speech = asyncio.run(mixed())
        metrics = httpx.get(f"{server.url}/metrics").text
        alone = [
            httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": clip.path.read_bytes()},
                data={"model": "whisper-1"},
                timeout=60,
            ).json()["text"]
            for clip in clips
        ]
    finally:
        server.stop()

    assert [m["tasks"] for m in models] == [["transcribe"], ["synthesize"]]
    assert models[0]["id"].startswith(DEFAULT_MODEL_TAG.split(":")[0])
    assert models[1]["id"].startswith("vits:") and models[1]["voices"] == ["default"]
    assert texts == alone and any(texts)
    reference = text2speech(vits, tmp_path)
    expected = [pcm16_of(flat_wav(reference(text))) for text in TEXTS * 3]
    assert all(
        np.array_equal(soundfile.read(io.BytesIO(wav), dtype="int16")[0], want)
        for wav, want in zip(speech, expected, strict=True)
    )
    # Each model has its own service, worker and batcher: the ASR model's only decodes, the
    # TTS model's only speaks (BentoML's request counts, by service and endpoint).
    served = {
        (line.split('service_name="')[1].split('"')[0], line.split('endpoint="')[1].split('"')[0])
        for line in metrics.splitlines()
        if line.startswith("bentoml_service_request_total{")
        and 'service_name="ModelService' in line
        and not line.rstrip().endswith(" 0.0")
    }
    assert {"/decode", "/synthesize"} <= {endpoint for _, endpoint in served}
    assert {service for service, endpoint in served if endpoint == "/decode"} == {"ModelService"}
    assert {service for service, endpoint in served if endpoint == "/synthesize"} == {
        "ModelService2"
    }
    # Readiness and our own series are per model (label `model`, the store name).
    asr_name = DEFAULT_MODEL_TAG.split(":")[0]
    for name in (asr_name, "vits"):
        assert f'espnet_serve_model_ready{{model="{name}"}} 1.0' in metrics, name
        calls = re.search(
            rf'^espnet_serve_decode_seconds_count{{model="{name}"}} (\S+)$', metrics, re.M
        )
        assert calls is not None and float(calls.group(1)) >= 1, name

    def batches(name: str) -> float:
        found = re.search(
            rf'^espnet_serve_batch_size_count{{model="{name}"}} (\S+)$', metrics, re.M
        )
        assert found is not None, name
        return float(found.group(1))

    # Batches of segments are the ASR model's; the TTS model speaks one sentence per call.
    assert batches(asr_name) >= 1 and batches("vits") == 0


@pytest.mark.slow
def test_a_model_that_fails_to_load_is_unready_alone(tmp_path: Path, vits: Path):
    """Readiness is per model: the ASR model serves while the TTS model cannot load.

    The stored TTS bundle is altered after import, so its integrity check refuses it.
    """
    from espnet_serve.assets import load_heldout
    from espnet_serve.serving.settings import DEFAULT_MODEL_TAG
    from tests.server import import_default_model, serve_env, start_server
    from tests.test_executors import build

    home = tmp_path / "home"
    home.mkdir()
    import_default_model(home)
    env = serve_env(home, model_tag=f"{DEFAULT_MODEL_TAG},vits:latest")
    assert build(vits, "vits", env).returncode == 0
    (weights,) = (home / "models" / "vits").glob("*/bundle/**/*.pth")
    weights.write_bytes(weights.read_bytes() + b"\0")
    server = start_server(
        "service:ApiService", env=env, log_path=tmp_path / "serve.log", wait_ready=False
    )
    clip = load_heldout(1)[0]
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
            except httpx.TransportError:  # not listening yet
                metrics = ""
            asr_ready = f'espnet_serve_model_ready{{model="{DEFAULT_MODEL_TAG.split(":")[0]}"}} 1.0'
            if asr_ready in metrics:
                break
            assert time.monotonic() < deadline, "the ASR model never became ready"
            time.sleep(1)
        readyz = httpx.get(f"{server.url}/readyz", timeout=10)
        transcribed = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": clip.path.read_bytes()},
            data={"model": "whisper-1"},
            timeout=60,
        )
        spoken = httpx.post(
            f"{server.url}/v1/audio/speech",
            json={"model": "tts-1", "input": "one two", "voice": "alloy"},
            timeout=60,
        )
    finally:
        server.stop()
    assert readyz.status_code == 503
    assert "Model vits:" in readyz.text and "does not match the digests" in readyz.text
    assert 'espnet_serve_model_ready{model="vits"} 0.0' in metrics
    assert transcribed.status_code == 200 and transcribed.json()["text"] == clip.text
    assert spoken.status_code == 503 and spoken.headers.get("retry-after")
    assert spoken.json()["error"]["code"] == "model_unavailable"


def test_a_parallel_wavegan_vocoder_is_refused_at_import(vits: Path, tmp_path: Path):
    """A bundle with a separate parallel_wavegan vocoder gets a typed refusal naming why."""
    from espnet_serve.bundle.errors import InferenceConfigError

    bundle = tmp_path / "with-vocoder"
    with tarfile.open(vits) as packed:
        packed.extractall(bundle, filter="data")
    vocoder = bundle / "exp" / "vocoder"
    vocoder.mkdir(parents=True)
    (vocoder / "checkpoint-400000steps.pkl").write_bytes(b"not loaded")
    (vocoder / "config.yml").write_text(yaml.safe_dump({"generator_type": "HiFiGANGenerator"}))
    meta = yaml.safe_load((bundle / "meta.yaml").read_text())
    meta["files"]["vocoder_file"] = "exp/vocoder/checkpoint-400000steps.pkl"
    meta["yaml_files"]["vocoder_config"] = "exp/vocoder/config.yml"
    (bundle / "meta.yaml").write_text(yaml.safe_dump(meta))

    with pytest.raises(
        InferenceConfigError, match=r"checkpoint-400000steps\.pkl is a parallel_wavegan"
    ):
        load_local_session(str(bundle), tmp_path)
