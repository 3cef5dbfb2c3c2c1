"""OWSM (attention and CTC) served as espnet2's classes decode it, language and task included.

Reduced-size models of OWSM v3.1 (egs2/owsm_v3.1/s2t1/conf/, the base's options as
``devkit.recipes.OWSM_V31_BASE`` gives them) and OWSM-CTC v3.1
(egs2/owsm_ctc_v3.1/s2t1/conf/``train_s2t_multitask-ctc_ebf27_conv2d8_size1024.yaml``), with
OWSM's vocabulary around a character set (``devkit.random_init.owsm_token_list``). The attention
decoder's and the CTC head's output projections are scaled: random weights otherwise answer
nearly the same for every clip.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile
import torch

from devkit.publish import write_bundle
from devkit.random_init import (
    CHAR_TOKENS,
    owsm_token_list,
    sharpen,
    write_random_s2t_experiment,
)
from devkit.recipes import OWSM_CTC_V31_MEDIUM, OWSM_V31_BASE, reduced
from espnet_serve import InferenceSession
from espnet_serve.assets import load_heldout
from espnet_serve.audio.ingest import IngestLimits, open_audio_stream
from espnet_serve.audio.segmenter import AudioSegment, segment_stream
from espnet_serve.backends import InvalidSampleError
from espnet_serve.backends.owsm import BatchedOwsmSpeech2Text
from espnet_serve.executors import DecodeOptions
from espnet_serve.executors.base import Utterance
from espnet_serve.executors.s2t import (
    S2T_CTC_GREEDY,
    S2T_CTC_SPEECH2TEXT,
    S2T_SPEECH2TEXT,
    TimeTokens,
)
from espnet_serve.languages import language_name, two_letter_code
from espnet_serve.pipeline.align import CtcAligner
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.transcriber import Transcriber
from espnet_serve.pipeline.types import Segment
from tests.answers import served_text
from tests.test_executors import build_and_serve, espnet2_class, segments_of

SAMPLE_RATE = 16000
CLIPS = 8
TEXT_TOKENS = [token for token in CHAR_TOKENS if not token.startswith("<")] + ["<space>"]
PROMPT = "the previous sentence"
# Beam 2 and at most 2 % of the encoder frames as tokens (15 for OWSM's 30 s): random weights
# seldom end a hypothesis, and CI decodes each clip several times.
S2T_DECODING = {"beam_size": 2, "ctc_weight": 0.3, "maxlenratio": 0.02}


def owsm_bundle(
    root: Path, recipe: Any, target: str, decoding: dict[str, Any], *, timed: bool = False
) -> Path:
    """A reduced random OWSM bundle; ``timed``: its decoder drawn to write timed utterances."""
    options = reduced(recipe).options
    token_list = owsm_token_list(TEXT_TOKENS)
    experiment = write_random_s2t_experiment(root / "exp", token_list=token_list, **options)
    sharpen(experiment.asr_model_file, ["decoder.output_layer.weight", "ctc.ctc_lo.weight"], 8.0)
    if timed:
        favour_text_and_early_times(experiment.asr_model_file, token_list)
    # The speech's weight in the decoder: a clip padded to 30 s is mostly padding.
    blocks = range(options.get("decoder_conf", {}).get("num_blocks", 0))
    cross = [f"decoder.decoders.{block}.src_attn.linear_out.weight" for block in blocks]
    sharpen(experiment.asr_model_file, cross, 300.0)
    return write_bundle(
        root / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        backend=target,
        decoding=decoding,
        task="s2t",
    )


@pytest.fixture(scope="module")
def s2t_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s2t")
    return owsm_bundle(root, OWSM_V31_BASE, S2T_SPEECH2TEXT, S2T_DECODING)


def favour_text_and_early_times(model_file: Path, token_list: list[str]) -> None:
    """Raise the decoder's output bias of the text tokens and of the times up to 3 s.

    A random decoder otherwise answers with special tokens and times past the clip's end.
    """
    state = torch.load(model_file, map_location="cpu")
    bias = state["decoder.output_layer.bias"]
    generator = torch.Generator().manual_seed(0)
    text = [token_list.index(token) for token in TEXT_TOKENS]
    bias[text] += 10.0 + 3.0 * torch.randn(len(text), generator=generator)
    first_time = token_list.index("<0.00>")
    bias[first_time : first_time + 150] += 15.0
    torch.save(state, model_file)


@pytest.fixture(scope="module")
def timed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OWSM decoding with its time tokens (``predict_time``; espnet2 needs ctc_weight 0 then)."""
    root = tmp_path_factory.mktemp("s2t_timed")
    decoding = {**S2T_DECODING, "ctc_weight": 0.0, "maxlenratio": 0.04, "predict_time": True}
    return owsm_bundle(root, OWSM_V31_BASE, S2T_SPEECH2TEXT, decoding, timed=True)


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The held-out clips one after another, 1 s of faint noise between them (FLAC)."""
    rng = np.random.default_rng(7)
    parts = []
    for clip in load_heldout(CLIPS):
        parts += [clip.read_audio(SAMPLE_RATE), 0.001 * rng.standard_normal(SAMPLE_RATE)]
    path = tmp_path_factory.mktemp("long") / "long.flac"
    soundfile.write(path, np.concatenate(parts).astype(np.float32), SAMPLE_RATE)
    return path


@pytest.fixture(scope="module")
def s2t_ctc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("s2t_ctc")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [clip.read_audio(SAMPLE_RATE) for clip in load_heldout(CLIPS)]


def best(output: Any) -> tuple[str, tuple[int, ...]]:
    """The served text and the token ids of an espnet2 OWSM class's best hypothesis."""
    if isinstance(output, tuple):  # (n-best, interCTC)
        output = output[0]
    text, _, token_ids, *_ = output[0]
    return served_text(text), tuple(int(t) for t in token_ids)


def served(
    decoder: SegmentDecoder, clips: list[np.ndarray], options: DecodeOptions, words: bool = False
) -> list:
    outcomes = decoder.decode(segments_of(clips), words=words, options=[options] * len(clips))
    assert all(isinstance(outcome, Segment) for outcome in outcomes), outcomes
    return outcomes


@pytest.mark.parametrize("batched", [False, True], ids=["espnet2", "batched"])
def test_owsm_answers_as_espnet2_with_a_language_with_its_identification_and_translating(
    batched: bool, s2t_bundle: Path, clips: list[np.ndarray]
):
    session = InferenceSession.from_pretrained(
        str(s2t_bundle), prefer_model_batch=True, batched_backend=batched
    )
    assert isinstance(session.model, BatchedOwsmSpeech2Text) == batched
    decoder = SegmentDecoder(session, SAMPLE_RATE)
    executor = decoder.executor
    assert executor.family == "s2t" and executor.tasks == ("transcribe", "translate")
    assert {"de", "en", "ja"} <= set(executor.languages()) and "aa" not in executor.languages()
    assert {"en", "de", "ja"} <= set(executor.target_languages())
    reference = espnet2_class(s2t_bundle)
    token_id = reference.converter.token2id

    assert decoder.word_timestamps  # OWSM's CTC head
    german = served(decoder, clips, DecodeOptions(language="de"), words=True)
    german_expected = [best(reference(clip, lang_sym="<deu>", task_sym="<asr>")) for clip in clips]
    assert [(o.text, o.tokens) for o in german] == german_expected
    timed = [(o, len(clip) / SAMPLE_RATE) for o, clip in zip(german, clips, strict=True) if o.text]
    assert timed and all(o.words for o, _ in timed)
    assert all(0 <= w.start <= w.end <= seconds + 0.05 for o, seconds in timed for w in o.words)
    assert {o.tokens[:2] for o in german} == {(token_id["<deu>"], token_id["<asr>"])}
    assert {o.language for o in german} == {"de"}

    from espnet2.bin.s2t_inference_language import Speech2Language

    config = s2t_bundle / "exp" / "s2t" / "config.yaml"
    identifier = Speech2Language(config, s2t_bundle / "exp" / "s2t" / "model.pth")
    identified = [identifier(clip)[0][0] for clip in clips]
    assert len(set(identified)) > 1  # the answer depends on the audio
    detected = served(decoder, clips, DecodeOptions())
    expected = [
        best(reference(clip, lang_sym=s)) for clip, s in zip(clips, identified, strict=True)
    ]
    assert [(o.text, o.tokens) for o in detected] == expected
    assert [o.tokens[0] for o in detected] == [token_id[s] for s in identified]
    assert [o.language for o in detected] == [two_letter_code(s[1:-1]) for s in identified]

    translated = served(
        decoder, clips, DecodeOptions(task="translate", target_language="en"), words=True
    )
    expected = [
        best(reference(clip, lang_sym=s, task_sym="<st_eng>"))
        for clip, s in zip(clips, identified, strict=True)
    ]
    assert [(o.text, o.tokens) for o in translated] == expected
    assert {o.tokens[1] for o in translated} == {token_id["<st_eng>"]}
    assert all(not o.words for o in translated)

    prompted = served(decoder, clips[:3], DecodeOptions(language="fr", prompt=PROMPT))
    expected = [best(reference(clip, text_prev=PROMPT, lang_sym="<fra>")) for clip in clips[:3]]
    assert [(o.text, o.tokens) for o in prompted] == expected
    unprompted = [best(reference(clip, lang_sym="<fra>")) for clip in clips[:3]]
    assert expected != unprompted  # the prompt reached the decoder

    # One batch, each clip with its own language, task and prompt.
    asked = [
        (DecodeOptions(language="de"), {"lang_sym": "<deu>"}),
        (DecodeOptions(), {}),
        (DecodeOptions(task="translate", target_language="de"), {"task_sym": "<st_deu>"}),
        (DecodeOptions(language="fr", prompt=PROMPT), {"lang_sym": "<fra>", "text_prev": PROMPT}),
    ]
    mixed = [asked[i % len(asked)] for i in range(len(clips))]
    outcomes = decoder.decode(segments_of(clips), options=[option for option, _ in mixed])
    expected = [
        best(reference(clip, **{"lang_sym": language, **symbols}))
        for clip, language, (_, symbols) in zip(clips, identified, mixed, strict=True)
    ]
    assert [(o.text, o.tokens) for o in outcomes] == expected
    if batched:  # a clip that cannot be decoded fails in its slot only
        mixed = session.model([clips[0], np.zeros(0)], lang_sym="<deu>")
        assert best(mixed[0]) == german_expected[0]
        assert isinstance(mixed[1], InvalidSampleError) and "empty" in str(mixed[1])


# OWSM-CTC requests and the espnet2 class's inputs that answer them.
CTC_REQUESTS = [
    (DecodeOptions(language="de"), {"lang_sym": "<deu>", "task_sym": "<asr>"}),
    (DecodeOptions(), {"lang_sym": "<nolang>"}),  # no language step: the class's default
    (DecodeOptions(task="translate", language="es"), {"lang_sym": "<spa>", "task_sym": "<st_eng>"}),
    (DecodeOptions(language="ja", prompt=PROMPT), {"lang_sym": "<jpn>", "text_prev": PROMPT}),
]


@pytest.mark.parametrize("target", [S2T_CTC_SPEECH2TEXT, S2T_CTC_GREEDY])
@pytest.mark.parametrize("batched", [False, True], ids=["espnet2", "batched"])
def test_owsm_ctc_answers_as_espnet2(
    target: str, batched: bool, s2t_ctc_root: Path, clips: list[np.ndarray]
):
    decoding = {"beam_size": 2} if target == S2T_CTC_SPEECH2TEXT else {}
    root = s2t_ctc_root / target.rsplit(".", 1)[-1]
    bundle = (
        root / "bundle"
        if (root / "bundle").exists()
        else owsm_bundle(root, OWSM_CTC_V31_MEDIUM, target, decoding)
    )
    session = InferenceSession.from_pretrained(
        str(bundle), prefer_model_batch=True, batched_backend=batched
    )
    assert type(session.model).__name__.startswith("BatchedOwsmCtc") is batched
    decoder = SegmentDecoder(session, SAMPLE_RATE)
    assert decoder.executor.family == "s2t_ctc"
    reference = espnet2_class(bundle)

    for options, symbols in CTC_REQUESTS:
        outcomes = served(decoder, clips, options)
        expected = [best(reference(clip, **symbols)) for clip in clips]
        assert [(o.text, o.tokens) for o in outcomes] == expected, options
        assert len(set(expected)) > 1
        assert {o.language for o in outcomes} == {options.language}

    # Words are timed on the encoding espnet2's class decoded.
    assert decoder.word_timestamps
    german = served(decoder, clips, DecodeOptions(language="de"), words=True)
    assert [(o.text, o.tokens) for o in german] == [
        best(reference(clip, lang_sym="<deu>")) for clip in clips
    ]
    timed = [(o, len(clip) / SAMPLE_RATE) for o, clip in zip(german, clips, strict=True) if o.text]
    assert timed and all(" ".join(w.word for w in o.words) == o.text for o, _ in timed)
    assert all(0 <= w.start <= w.end <= seconds + 0.05 for o, seconds in timed for w in o.words)
    aligner = CtcAligner(
        SimpleNamespace(
            asr_model=reference.s2t_model,
            tokenizer=reference.tokenizer,
            converter=reference.converter,
        ),
        SAMPLE_RATE,
    )
    expected_words = aligner.align(
        clips,
        [o.text for o in german],
        encoded=[espnet2_encoding(reference, clip, "<deu>") for clip in clips],
        leading_frames=2,  # <deu> <asr>
    )
    assert [[(w.word, w.start, w.end) for w in o.words] for o in german] == [
        [(w.word, round(w.start, 3), round(w.end, 3)) for w in a.words] for a in expected_words
    ]
    if batched:  # one batch, each clip with its own language, task and prompt
        mixed = [CTC_REQUESTS[i % len(CTC_REQUESTS)] for i in range(len(clips))]
        outcomes = decoder.decode(segments_of(clips), options=[option for option, _ in mixed])
        expected = [
            best(reference(clip, **symbols))
            for clip, (_, symbols) in zip(clips, mixed, strict=True)
        ]
        assert [(o.text, o.tokens) for o in outcomes] == expected
        failed = session.model([clips[0], np.zeros(0)], lang_sym="<deu>")
        assert best(failed[0]) == best(reference(clips[0], lang_sym="<deu>"))
        assert isinstance(failed[1], InvalidSampleError) and "empty" in str(failed[1])


def espnet2_encoding(reference: Any, clip: np.ndarray, language: str) -> torch.Tensor:
    """OWSM-CTC's encoder output for a clip transcribed in ``language``, as espnet2 computes it.

    Its first frames are the ``<lang>`` ``<asr>`` prefix.
    """
    model, token_id = reference.s2t_model, reference.converter.token2id
    prefix = torch.tensor([[token_id[language], token_id["<asr>"]]])
    with torch.no_grad():
        encoded, lengths = model.encode(
            speech=torch.as_tensor(clip, dtype=torch.float32).unsqueeze(0),
            speech_lengths=torch.tensor([len(clip)]),
            text_prev=torch.tensor([[model.na]]),
            text_prev_lengths=torch.tensor([1]),
            prefix=prefix,
            prefix_lengths=torch.tensor([prefix.size(1)]),
        )
    if isinstance(encoded, tuple):  # (output, interCTC outputs)
        encoded = encoded[0]
    return encoded[0, : int(lengths[0])]


@pytest.mark.slow
def test_owsm_over_http_selects_the_language_identifies_it_and_translates(
    tmp_path: Path, s2t_bundle: Path, clips: list[np.ndarray]
):
    built, server = build_and_serve(tmp_path, s2t_bundle, "owsm")
    assert "Family: s2t" in built.stdout and "Tasks: transcribe, translate" in built.stdout
    refused: dict[str, openai.BadRequestError] = {}
    try:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        german, identified, translated = [], [], []
        for clip in load_heldout(CLIPS):
            with clip.path.open("rb") as audio:
                german.append(
                    sdk.audio.transcriptions.create(
                        model="owsm", file=audio, language="de", response_format="verbose_json"
                    )
                )
            with clip.path.open("rb") as audio:
                identified.append(
                    sdk.audio.transcriptions.create(
                        model="owsm", file=audio, response_format="verbose_json"
                    )
                )
            with clip.path.open("rb") as audio:
                translated.append(sdk.audio.translations.create(model="owsm", file=audio).text)
        for name, call in {
            "language": lambda f: sdk.audio.transcriptions.create(
                model="owsm", file=f, language="aa"
            ),
            "target": lambda f: sdk.audio.translations.create(
                model="owsm", file=f, extra_body={"target_language": "ko"}
            ),
        }.items():
            with clip.path.open("rb") as audio, pytest.raises(openai.BadRequestError) as error:
                call(audio)
            refused[name] = error.value
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
    finally:
        server.stop()

    reference = espnet2_class(s2t_bundle)
    token_id = reference.converter.token2id
    # verbose_json lists segments with text: their token ids show the prompt tokens.
    expected = [best(reference(clip, lang_sym="<deu>")) for clip in clips]
    assert [r.text for r in german] == [text for text, _ in expected]
    shown = [(r, ids) for r, (_, ids) in zip(german, expected, strict=True) if r.segments]
    assert len(shown) >= CLIPS // 2
    assert all(tuple(r.segments[0].tokens) == ids for r, ids in shown)
    assert {r.segments[0].tokens[0] for r, _ in shown} == {token_id["<deu>"]}
    assert {r.language for r in german} == {"german"}

    from espnet2.bin.s2t_inference_language import Speech2Language

    identifier = Speech2Language(
        s2t_bundle / "exp" / "s2t" / "config.yaml", s2t_bundle / "exp" / "s2t" / "model.pth"
    )
    symbols = [identifier(clip)[0][0] for clip in clips]
    assert [r.text for r in identified] == [
        best(reference(clip, lang_sym=s))[0] for clip, s in zip(clips, symbols, strict=True)
    ]
    assert [r.language for r in identified] == [
        language_name(two_letter_code(s[1:-1]) or "") for s in symbols
    ]
    assert len({r.language for r in identified}) > 1
    assert translated == [
        best(reference(clip, lang_sym=s, task_sym="<st_eng>"))[0]
        for clip, s in zip(clips, symbols, strict=True)
    ]
    assert refused["language"].body["code"] == "unsupported_language"
    assert "'aa'" in refused["language"].body["message"]
    assert " de," in refused["language"].body["message"]  # it names the ones the model has
    assert refused["target"].body["code"] == "unsupported_language"
    assert "'ko'" in refused["target"].body["message"]
    assert " ja," in refused["target"].body["message"]
    (model,) = models
    assert (model["family"], model["tasks"]) == ("s2t", ["transcribe", "translate"])
    assert {"de", "en", "ja"} <= set(model["languages"]) and "aa" not in model["languages"]
    assert {"en", "de"} <= set(model["target_languages"]) and "ko" not in model["target_languages"]


def vad_segments(path: Path) -> list[AudioSegment]:
    """The recording's segments as every transcription cuts it (the default options)."""
    with open_audio_stream(path, target_rate=SAMPLE_RATE, limits=IngestLimits()) as audio:
        return list(segment_stream(audio, SAMPLE_RATE))


def timed_by_espnet2(reference: Any, segment: AudioSegment) -> list[tuple[float, float, tuple]]:
    """The utterances espnet2's time tokens give a segment: (start, end, token ids), read from
    the tokens' own names (``<0.48>``) and moved to recording time; one left open ends with the
    segment's audio, and none ends past it."""
    _, tokens, token_ids, *_ = reference(segment.samples, lang_sym="<eng>")[0]
    audio_end = segment.offset + segment.samples.size / SAMPLE_RATE
    utterances, ids, start = [], [], None
    for token, token_id in zip(tokens, token_ids, strict=True):
        ids.append(int(token_id))
        time = re.fullmatch(r"<(\d+\.\d\d)>", token)
        if time is None:
            continue
        at = round(min(segment.offset + float(time[1]), audio_end), 3)
        if start is None:
            start = at
            continue
        utterances.append((start, at, tuple(ids)))
        ids, start = [], None
    if start is not None:
        utterances.append((start, round(audio_end, 3), tuple(ids)))
    return utterances


def decoded_in_english(
    bundle: Path, recording: Path, batched: bool
) -> tuple[InferenceSession, list[AudioSegment], list]:
    """The recording's VAD segments decoded in English, words timed, by the library."""
    session = InferenceSession.from_pretrained(
        str(bundle), prefer_model_batch=True, batched_backend=batched
    )
    audio = vad_segments(recording)
    english = [DecodeOptions(language="en")] * len(audio)
    decoded = SegmentDecoder(session, SAMPLE_RATE).decode(audio, words=True, options=english)
    return session, audio, decoded


@pytest.mark.parametrize("batched", [False, True], ids=["espnet2", "batched"])
def test_owsm_time_tokens_cut_a_recording_into_the_utterances_the_model_timed(
    batched: bool, timed_bundle: Path, long_recording: Path
):
    session, audio, decoded = decoded_in_english(timed_bundle, long_recording, batched)
    assert len(audio) >= CLIPS // 2  # the recording was cut by its pauses
    reference = espnet2_class(timed_bundle)

    shown: list[Segment] = []
    for segment, outcome in zip(audio, decoded, strict=True):
        assert isinstance(outcome, Segment), outcome
        expected = timed_by_espnet2(reference, segment)
        assert [(u.start, u.end, u.tokens) for u in outcome.utterances] == expected
        # The utterances hold the segment's text and words, in order.
        assert "".join(u.text for u in outcome.utterances).replace(" ", "") == (
            outcome.text.replace(" ", "")
        )
        assert [w for u in outcome.utterances for w in u.words] == list(outcome.words)
        assert all(u.language == "en" for u in outcome.utterances)
        shown += outcome.shown(len(shown))
    assert [s.id for s in shown] == list(range(len(shown)))
    assert len(shown) > len(audio)  # the model timed several utterances in some segments
    assert sum(bool(s.text) for s in shown) >= CLIPS // 2
    # The library's transcriber shows them likewise (here with the language identified).
    transcribed = Transcriber(session).transcribe(long_recording).segments
    assert [s.id for s in transcribed] == list(range(len(transcribed)))
    assert len(transcribed) > len(audio)


@pytest.mark.slow
def test_owsm_time_tokens_over_http_give_the_segments_and_subtitles(
    tmp_path: Path, timed_bundle: Path, long_recording: Path
):
    _, audio, decoded = decoded_in_english(timed_bundle, long_recording, batched=True)
    expected: list[Segment] = []
    for outcome in decoded:
        expected += outcome.shown(len(expected))

    _, server = build_and_serve(tmp_path, timed_bundle, "owsm-timed")
    try:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        with long_recording.open("rb") as file:
            verbose = sdk.audio.transcriptions.create(
                model="owsm-timed",
                file=file,
                language="en",
                response_format="verbose_json",
                timestamp_granularities=["word", "segment"],
            )
        with long_recording.open("rb") as file:
            srt = sdk.audio.transcriptions.create(
                model="owsm-timed", file=file, language="en", response_format="srt"
            )
    finally:
        server.stop()

    # verbose_json lists the segments with text (their ids count the others too).
    assert [(s.id, s.start, s.end, s.text, tuple(s.tokens)) for s in verbose.segments] == [
        (s.id, s.start, s.end, s.text, s.tokens) for s in expected if s.text
    ]
    assert [(w.word, w.start, w.end) for w in verbose.words] == [
        (w.word, w.start, w.end) for s in expected for w in s.words
    ]
    assert len(expected) > len(audio)
    cues = [cue for cue in srt.strip().split("\n\n") if cue]
    assert len(cues) == sum(bool(s.text) for s in expected)


def test_time_tokens_are_read_in_pairs_the_prompt_first_an_open_one_to_the_end():
    times = TimeTokens(first=100, last=1600, resolution=0.02)

    def text_of(ids: list[int]) -> str:
        return "".join(chr(ord("a") + i) for i in ids if i < 26)

    # <eng> <asr> <0.40> a b <1.00> <1.20> c <2.00> <2.10> d (the search stopped there)
    ids = [30, 31, 120, 0, 1, 150, 160, 2, 200, 205, 3]
    assert times.utterances(ids, text_of) == (
        Utterance(0.4, 1.0, "ab", (30, 31, 120, 0, 1, 150)),
        Utterance(1.2, 2.0, "c", (160, 2, 200)),
        Utterance(2.1, None, "d", (205, 3)),
    )
    assert times.utterances([30, 31, 0, 1], text_of) == ()  # decoded without times
