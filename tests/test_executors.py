"""Every served family through its executor answers as its espnet2 class called directly.

Reduced-size models (the recipes' options as they are; dimensions and depths cut) of:

- ``espnet2.asr_transducer``: egs2/librispeech_100/asr1/conf/tuning/transducer/
  ``train_conformer-rnn_transducer.yaml`` (keys as this espnet names them: its
  ``pos_wise_layer_type: linear`` and ``pos_enc_layer_type: rel_pos`` are the only kinds left,
  no longer options) with ``decode.yaml``;
- ``Speech2TextStreaming``: egs2/aishell/asr1/conf/``train_asr_streaming_conformer.yaml`` with
  ``decode_asr_streaming2.yaml`` (no LM);
- interCTC and self-conditioned CTC: egs2/librispeech_100/asr1/conf/tuning/
  ``train_conformer_interctc.yaml`` and ``train_conformer_scctc.yaml`` (CTC only), batched;
- speech translation (``st_inference.Speech2Text``): egs2/fisher_callhome_spanish/st1/conf/
  tuning/``train_conformer_st.yaml``, its decoder's output projection scaled (random weights
  otherwise always write the same token).
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import yaml

from devkit.publish import write_bundle
from devkit.random_init import (
    sharpen,
    write_random_asr_experiment,
    write_random_st_experiment,
    write_random_transducer_experiment,
)
from devkit.recipes import (
    AISHELL_STREAMING_CONFORMER,
    FISHER_CALLHOME_SPANISH_CONFORMER_ST,
    LIBRISPEECH_100_CONFORMER_INTERCTC,
    LIBRISPEECH_100_CONFORMER_RNN_TRANSDUCER,
    MUST_C_V2_CONFORMER_ST,
    Recipe,
    reduced,
)
from espnet_serve import InferenceSession
from espnet_serve.assets import load_heldout
from espnet_serve.audio.segmenter import AudioSegment
from espnet_serve.backends import BatchedSpeech2Text, InvalidSampleError
from espnet_serve.backends.offline import training_only_stand_ins
from espnet_serve.bundle.imports import import_object
from espnet_serve.executors import UnsupportedFamilyError, executor_class, family_of
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.types import Segment
from espnet_serve.serving.realtime.turns import StreamChunker
from tests.answers import served_text
from tests.server import BentoServer, serve_env, start_server, wait_for

SAMPLE_RATE = 16000
CLIPS = 8
TRANSDUCER_TARGET = "espnet2.bin.asr_transducer_inference.Speech2Text"
STREAMING_TARGET = "espnet2.bin.asr_inference_streaming.Speech2TextStreaming"
ST_TARGET = "espnet2.bin.st_inference.Speech2Text"


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Held-out clips of different lengths."""
    return [clip.read_audio(SAMPLE_RATE) for clip in load_heldout(CLIPS)]


@pytest.fixture(scope="module")
def asr_transducer_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("asr_transducer")
    experiment = write_random_transducer_experiment(
        root / "exp", **reduced(LIBRISPEECH_100_CONFORMER_RNN_TRANSDUCER).options
    )
    return write_bundle(
        root / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        backend=TRANSDUCER_TARGET,
        # score_norm: a random joint network never beats the all-blank path on raw scores.
        decoding={
            "beam_size": 4,
            "beam_search_config": {"search_type": "default", "score_norm": True},
        },
    )


@pytest.fixture(scope="module")
def asr_streaming_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("asr_streaming")
    experiment = write_random_asr_experiment(
        root / "exp", **reduced(AISHELL_STREAMING_CONFORMER).options
    )
    # Peaked outputs, so that the search's running hypotheses hold tokens between blocks.
    sharpen(experiment.asr_model_file, ["decoder.output_layer.weight", "ctc.ctc_lo.weight"], 8.0)
    return write_bundle(
        root / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        backend=STREAMING_TARGET,
        decoding={"beam_size": 4, "ctc_weight": 0.6, "penalty": 0.0},
    )


def st_bundle_of(root: Path, recipe: Recipe) -> Path:
    experiment = write_random_st_experiment(root / "exp", **reduced(recipe).options)
    sharpen(experiment.asr_model_file, ["decoder.output_layer.weight"], 8.0)
    return write_bundle(
        root / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        backend=ST_TARGET,
        decoding={"beam_size": 4},
        task="st",
        extra_meta={"languages": ["es"], "target_languages": ["en"]},
    )


@pytest.fixture(scope="module")
def st_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fisher's conformer: legacy relative positions, so decoded one clip at a time."""
    return st_bundle_of(tmp_path_factory.mktemp("st"), FISHER_CALLHOME_SPANISH_CONFORMER_ST)


@pytest.fixture(scope="module")
def st_batched_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MuST-C v2's conformer (rel_pos_type: latest): batched."""
    return st_bundle_of(tmp_path_factory.mktemp("st_batched"), MUST_C_V2_CONFORMER_ST)


def interctc_bundle(root: Path, *, conditioning: bool) -> Path:
    options = reduced(LIBRISPEECH_100_CONFORMER_INTERCTC).options
    options["encoder_conf"]["interctc_use_conditioning"] = conditioning  # true: scctc
    experiment = write_random_asr_experiment(root / "exp", **options)
    return write_bundle(
        root / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        decoding={"beam_size": 4, "ctc_weight": 1.0},
    )


def espnet2_class(bundle: Path) -> Any:
    """The bundle's espnet2 class called directly, with its files and decoding options."""
    model = yaml.safe_load((bundle / "conf" / "inference.yaml").read_text())["model"]
    options = {
        key: value.replace("${recipe_dir}", str(bundle)) if isinstance(value, str) else value
        for key, value in model.items()
        if key != "_target_"
    }
    with training_only_stand_ins():
        return import_object(model["_target_"])(**options)


def best(reference: Any, output: Any) -> tuple[str, tuple[int, ...]]:
    """The best hypothesis's text (as served: without special symbols) and token ids in an
    espnet2 class's own output."""
    if isinstance(output, tuple):  # interCTC: (n-best, {layer: tokens})
        output = output[0]
    if hasattr(reference, "hypotheses_to_results"):  # asr_transducer: Hypothesis objects
        output = reference.hypotheses_to_results(output)
    text, _, token_ids, _ = output[0]
    return served_text(text), tuple(int(t) for t in token_ids)


def segments_of(clips: list[np.ndarray]) -> list[AudioSegment]:
    return [AudioSegment.whole(i, clip, SAMPLE_RATE) for i, clip in enumerate(clips)]


@pytest.mark.parametrize(
    ("family", "word_timestamps", "batched"),
    [
        ("asr_transducer", False, False),
        ("asr_streaming", True, False),
        ("st", False, False),
        ("st_batched", False, True),
    ],
)
def test_a_family_served_as_the_server_loads_it_answers_as_its_espnet2_class(
    family: str,
    word_timestamps: bool,
    batched: bool,
    request: pytest.FixtureRequest,
    clips: list[np.ndarray],
):
    bundle = request.getfixturevalue(f"{family}_bundle")
    session = InferenceSession.from_pretrained(
        str(bundle), batched_backend=True, prefer_model_batch=True, max_bucket_size=8
    )
    decoder = SegmentDecoder(session, SAMPLE_RATE)
    assert decoder.executor.family == family.removesuffix("_batched")
    assert session.prefer_model_batch is batched
    assert (type(session.model).__name__ == "BatchedStSpeech2Text") is batched
    assert decoder.word_timestamps is word_timestamps

    outcomes = decoder.decode(segments_of(clips), words=word_timestamps)
    reference = espnet2_class(bundle)
    expected = [best(reference, reference(clip)) for clip in clips]
    assert all(isinstance(outcome, Segment) for outcome in outcomes), outcomes
    assert [(o.text, o.tokens) for o in outcomes] == expected  # type: ignore[union-attr]
    assert any(tokens for _, tokens in expected)  # (the random transducer writes <unk>s)
    # What an output_fn would receive: the class's own object, the same hypotheses.
    raw = session.forward_batch(clips[:2])
    assert [best(reference, r) for r in raw] == expected[:2]
    if batched:  # a clip that cannot be decoded fails in its slot only
        mixed = session.forward_batch([clips[0], np.zeros(0)], return_exceptions=True)
        assert best(reference, mixed[0]) == expected[0]
        assert isinstance(mixed[1], InvalidSampleError) and "empty" in str(mixed[1])
    if word_timestamps:
        timed = [o for o in outcomes if isinstance(o, Segment) and o.text]
        assert timed and all(o.words for o in timed)


@pytest.mark.parametrize("family", ["asr_transducer", "asr_streaming", "st", "st_batched"])
def test_the_shortest_input_a_family_takes_decodes(
    family: str, request: pytest.FixtureRequest, clips: list[np.ndarray]
):
    session = InferenceSession.from_pretrained(
        str(request.getfixturevalue(f"{family}_bundle")),
        batched_backend=True,
        prefer_model_batch=True,
    )
    decoder = SegmentDecoder(session, SAMPLE_RATE)
    shortest = decoder.executor.min_samples()
    assert 0 < shortest < SAMPLE_RATE
    (outcome,) = decoder.decode(segments_of([clips[0][:shortest]]))
    assert isinstance(outcome, Segment), outcome


@pytest.mark.parametrize("conditioning", [False, True], ids=["interctc", "self_conditioned"])
def test_interctc_is_batched_and_returns_what_speech2text_returns(
    conditioning: bool, tmp_path: Path, clips: list[np.ndarray]
):
    bundle = interctc_bundle(tmp_path, conditioning=conditioning)
    session = InferenceSession.from_pretrained(
        str(bundle), batched_backend=True, prefer_model_batch=True, max_bucket_size=8
    )
    assert isinstance(session.model, BatchedSpeech2Text) and session.prefer_model_batch
    reference = espnet2_class(bundle)
    ours, theirs = session.forward_batch(clips), [reference(clip) for clip in clips]
    for mine, expected in zip(ours, theirs, strict=True):
        assert isinstance(mine, tuple) and isinstance(expected, tuple)
        assert best(reference, mine) == best(reference, expected)
        assert mine[1] == expected[1] and set(mine[1]) == {1, 2}
    outcomes = SegmentDecoder(session, SAMPLE_RATE).decode(segments_of(clips), words=True)
    assert [(o.text, o.tokens) for o in outcomes] == [  # type: ignore[union-attr]
        best(reference, expected) for expected in theirs
    ]


UNSERVED = "espnet2.bin.diar_inference.DiarizeSpeech"  # not served yet


def unserved_bundle(root: Path, like: Path) -> Path:
    """``like``'s files, its inference config naming a class no executor serves."""
    inference = yaml.safe_load((like / "conf" / "inference.yaml").read_text())
    inference["model"]["_target_"] = UNSERVED
    for relpath in ("meta.yaml", "exp/asr/config.yaml", "exp/asr/model.pth"):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes((like / relpath).read_bytes())
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "inference.yaml").write_text(yaml.safe_dump(inference))
    return root


def build(bundle: Path, name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    return subprocess.run(
        [cli, "build", str(bundle), "--name", name],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def build_and_serve(
    tmp_path: Path, bundle: Path, name: str
) -> tuple[subprocess.CompletedProcess, BentoServer]:
    """``espnet-serve build`` the bundle as ``name`` into a fresh home, then serve it."""
    (tmp_path / "home").mkdir()
    env = serve_env(tmp_path / "home", model_tag=f"{name}:latest")
    built = build(bundle, name, env)
    assert built.returncode == 0, built.stderr
    return built, start_server("service:ApiService", env=env, log_path=tmp_path / "serve.log")


def partial(reference: Any, output: list) -> tuple[str, tuple[int, ...]]:
    """espnet2's hypothesis after a non-final chunk: its output, else the best running one."""
    if output:
        return best(reference, output)
    hyps = reference.beam_search.running_hyps
    if hyps is None or hyps.yseq.shape[0] == 0:
        return "", ()
    eos = reference.beam_search.eos
    ids = [t for t in hyps.yseq[0, 1 : int(hyps.length[0])].tolist() if t not in (0, eos)]
    tokens = reference.converter.ids2tokens(ids)
    return served_text(reference.tokenizer.tokens2text(tokens)), tuple(ids)


def chunked(clip: np.ndarray, size: int) -> list[np.ndarray]:
    """``clip`` in chunks of ``size`` samples (the last holds the rest)."""
    cuts = list(range(size, len(clip) - size // 2, size))
    return np.split(clip, cuts)


def test_streams_decode_block_by_block_as_speech2textstreaming_does(
    asr_streaming_bundle: Path, clips: list[np.ndarray]
):
    session = InferenceSession.from_pretrained(str(asr_streaming_bundle), batched_backend=True)
    executor = SegmentDecoder(session, SAMPLE_RATE).executor
    reference = espnet2_class(asr_streaming_bundle)
    first, second = clips[0], np.concatenate(clips[1:5])
    expected = {}
    for name, clip in (("first", first), ("second", second)):
        partials = []
        for chunk in chunked(clip, 3200)[:-1]:
            partials.append(partial(reference, reference(chunk, is_final=False)))
        final = best(reference, reference(chunked(clip, 3200)[-1], is_final=True))
        expected[name] = (partials, final)
    assert all(final[1] for _, final in expected.values())  # the random model writes tokens
    # A block needs 1.6 s of audio, then each 0.64 s more: the longer stream has partials.
    assert sum(bool(ids) for _, ids in expected["second"][0]) >= 3

    # Two streams at once, their chunks interleaved: each is its own espnet2 object.
    streams = {"first": executor.open_stream(), "second": executor.open_stream()}
    chunks = {"first": chunked(first, 3200), "second": chunked(second, 3200)}
    got: dict[str, list] = {"first": [], "second": []}
    for index in range(max(len(c) for c in chunks.values())):
        for name, stream in streams.items():
            if index < len(chunks[name]):
                final = index == len(chunks[name]) - 1
                hypothesis = stream.push(chunks[name][index], final=final)
                got[name].append((hypothesis.text, hypothesis.token_ids))
    for name, (partials, final) in expected.items():
        assert got[name] == [*partials, final], name
    # The weights are the model's, not copies.
    stream_weights = next(streams["first"].backend.asr_model.parameters())
    assert stream_weights is next(session.model.asr_model.parameters())


def test_a_class_no_executor_serves_is_refused_in_one_line(tmp_path: Path, asr_transducer_bundle):
    assert family_of(UNSERVED) is None and family_of(TRANSDUCER_TARGET) == "asr_transducer"
    with pytest.raises(UnsupportedFamilyError) as refused:
        executor_class(None, UNSERVED)
    line = str(refused.value)
    assert "\n" not in line and UNSERVED in line
    assert all(family in line for family in ("asr", "asr_transducer", "asr_streaming"))

    bundle = unserved_bundle(tmp_path / "diar", asr_transducer_bundle)
    built = build(bundle, "diar", {"BENTOML_HOME": str(tmp_path / "home")})
    assert built.returncode == 1
    assert f"Family: none served ({UNSERVED})" in built.stdout
    assert f"{UNSERVED} is not a model family this server serves" in built.stderr


@pytest.mark.slow
def test_a_stored_model_of_an_unserved_class_leaves_the_server_unready_saying_why(
    tmp_path: Path, asr_transducer_bundle: Path
):
    (tmp_path / "home").mkdir()
    env = serve_env(tmp_path / "home", model_tag="tts:latest")
    assert build(unserved_bundle(tmp_path / "tts", asr_transducer_bundle), "tts", env).returncode
    server = start_server(
        "service:ApiService", env=env, log_path=tmp_path / "serve.log", wait_ready=False
    )
    try:
        unready = wait_for(server, lambda r: "not a model family" in r.text, timeout=120)
        log = server.log()
    finally:
        server.stop()
    assert unready is not None, log
    assert unready.status_code == 503 and UNSERVED in unready.text
    assert set(server.readyz_statuses) == {503}
    assert f"{UNSERVED} is not a model family this server serves" in log
    assert "Traceback" not in log  # one line, not a stack


@pytest.mark.slow
def test_a_streaming_model_is_served_as_espnet2_decodes_it(
    tmp_path: Path, asr_streaming_bundle: Path, clips: list[np.ndarray]
):
    (tmp_path / "home").mkdir()
    env = serve_env(tmp_path / "home", model_tag="streaming:latest")
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    built = subprocess.run(
        [cli, "build", str(asr_streaming_bundle), "--name", "streaming"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Family: asr_streaming" in built.stdout
    server = start_server("service:ApiService", env=env, log_path=tmp_path / "serve.log")
    try:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        served = []
        for clip in load_heldout(CLIPS):
            with clip.path.open("rb") as audio:
                served.append(sdk.audio.transcriptions.create(model="streaming", file=audio).text)
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        utterances = [quantized(clips[0]), quantized(np.concatenate(clips[1:5]))]
        events = asyncio.run(realtime_session(server.url, utterances))
    finally:
        server.stop()
    reference = espnet2_class(asr_streaming_bundle)
    assert served == [best(reference, reference(clip))[0] for clip in clips]
    assert [(m["family"], m["tasks"]) for m in models] == [("asr_streaming", ["transcribe"])]

    # Realtime: each utterance streamed to the model as it arrived, in the chunks
    # StreamChunker cuts; its transcript is what espnet2's class gives for those chunks.
    expected = []
    for audio in utterances:
        chunker = StreamChunker(SAMPLE_RATE)
        for at in range(0, len(audio), 1600):  # the client's 100 ms appends
            chunk = chunker.add(audio[at : at + 1600])
            if chunk is not None:
                reference(chunk, is_final=False)
        expected.append(best(reference, reference(chunker.final(), is_final=True))[0])
    completed = [e["transcript"] for e in events if e["type"].endswith("transcription.completed")]
    assert completed == expected and all(completed)
    # The long utterance's deltas came while it was still being appended (before its commit).
    first_commit = [e["type"] for e in events].index("input_audio_buffer.committed")
    second_commit = (
        len(events) - 1 - [e["type"] for e in events][::-1].index("input_audio_buffer.committed")
    )
    early = [
        e
        for e in events[first_commit + 1 : second_commit]
        if e["type"].endswith("transcription.delta")
    ]
    assert early


def quantized(samples: np.ndarray) -> np.ndarray:
    """What a server decodes from ``samples`` sent as 16-bit PCM."""
    pcm = (np.clip(samples, -1, 32767 / 32768) * 32768).astype("<i2")
    return pcm.astype(np.float32) / 32768


async def realtime_session(url: str, utterances: list[np.ndarray]) -> list[dict]:
    """Each utterance appended in 100 ms chunks and committed, through the SDK's realtime
    client; every event until the last transcript."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    events: list[dict] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                        "turn_detection": None,
                    }
                },
            }
        )
        for audio in utterances:
            data = (audio * 32768).astype("<i2").tobytes()
            for at in range(0, len(data), 3200):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(data[at : at + 3200]).decode()
                )
                await asyncio.sleep(0.01)
            await conn.input_audio_buffer.commit()
        done = 0
        async for event in conn:
            events.append(event.model_dump())
            assert event.type != "error", event
            done += event.type.endswith("transcription.completed")
            if done == len(utterances):
                return events
    return events


@pytest.mark.slow
def test_a_translation_model_is_served_on_the_translations_route_as_espnet2_decodes_it(
    tmp_path: Path, st_bundle: Path, clips: list[np.ndarray]
):
    built, server = build_and_serve(tmp_path, st_bundle, "st")
    assert "Family: st" in built.stdout and "Tasks: translate" in built.stdout
    assert "Target languages: en" in built.stdout
    try:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        served, verbose = [], None
        for clip in load_heldout(CLIPS):
            with clip.path.open("rb") as audio:
                served.append(sdk.audio.translations.create(model="st", file=audio).text)
        with clip.path.open("rb") as audio:
            verbose = sdk.audio.translations.create(
                model="st", file=audio, response_format="verbose_json"
            )
        with clip.path.open("rb") as audio, pytest.raises(openai.BadRequestError) as refused:
            sdk.audio.transcriptions.create(model="st", file=audio)
        with clip.path.open("rb") as audio, pytest.raises(openai.BadRequestError) as into_german:
            sdk.audio.translations.create(
                model="st", file=audio, extra_body={"target_language": "de"}
            )
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
    finally:
        server.stop()
    reference = espnet2_class(st_bundle)
    expected = [best(reference, reference(clip))[0] for clip in clips]
    assert served == expected and any(expected)
    assert verbose.language == "english" and verbose.text == expected[-1]
    assert refused.value.body["code"] == "task_unsupported"
    assert "translates only" in refused.value.body["message"]
    assert into_german.value.body["code"] == "unsupported_language"
    assert [(m["family"], m["tasks"], m["languages"], m["target_languages"]) for m in models] == [
        ("st", ["translate"], ["es"], ["en"])
    ]


def test_special_symbols_never_reach_the_served_text(tmp_path: Path, clips: list[np.ndarray]):
    """A random CTC model writes <unk>: espnet2's text keeps it, the served text does not."""
    experiment = write_random_asr_experiment(tmp_path / "exp")
    sharpen(experiment.asr_model_file, ["ctc.ctc_lo.weight"], 4.0)
    bundle = write_bundle(
        tmp_path / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        decoding={"beam_size": 2, "ctc_weight": 1.0},
    )
    session = InferenceSession.from_pretrained(
        str(bundle), batched_backend=True, prefer_model_batch=True
    )
    decoder = SegmentDecoder(session, SAMPLE_RATE)
    assert {"<blank>", "<unk>", "<sos/eos>"} <= decoder.executor.special_symbols
    reference = espnet2_class(bundle)
    raw = [reference(clip)[0] for clip in clips]
    assert any("<unk>" in text for text, *_ in raw)  # the model does write one

    outcomes = decoder.decode(segments_of(clips), words=True)

    for (text, _, token_ids, _), outcome in zip(raw, outcomes, strict=True):
        assert isinstance(outcome, Segment), outcome
        assert outcome.text == " ".join(text.replace("<unk>", "").split())
        assert list(outcome.tokens) == token_ids  # the model's own ids, <unk> included
        assert not any("<" in word.word for word in outcome.words)
