"""OpenAI response formats in-process: verbose_json, srt, vtt, ``stream=true`` and its errors.

The app is the one the service runs (``tests.inprocess.served_app``) over the fake model
client, which answers each segment with its length: what is tested is the HTTP layer's
segmentation, ordering, formatting and error handling, through the unchanged openai SDK.
The real model through a real server: ``test_service_longform.py``.
"""

from __future__ import annotations

import asyncio
import io
import re

import numpy as np
import openai
import pytest
import soundfile as sf

from espnet_serve.assets import load_heldout
from espnet_serve.serving.rpc import SegmentFailure
from espnet_serve.serving.settings import ServeSettings
from tests.fakes import FakeModelClient
from tests.inprocess import AsyncBridge, sdk, served_app

SAMPLE_RATE = 16000
PAUSE_SECONDS = 1.0


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    """Six held-out clips with a second of silence after each (~13 s: several segments)."""
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), np.float32)
    clips = [clip.read_audio(SAMPLE_RATE) for clip in load_heldout(6)]
    return np.concatenate([piece for clip in clips for piece in (clip, pause)])


@pytest.fixture(scope="module")
def recording(audio: np.ndarray) -> bytes:
    """:func:`audio` as FLAC."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="FLAC")
    return buffer.getvalue()


@pytest.fixture()
def fake() -> FakeModelClient:
    return FakeModelClient()


@pytest.fixture()
def client(fake: FakeModelClient) -> openai.AsyncOpenAI:
    return sdk(served_app(ServeSettings(), fake))


def create(client: openai.AsyncOpenAI, data: bytes, events: list | None = None, **options):
    """One transcription through the SDK; with ``stream=True`` the events, each appended to
    ``events`` as it arrives (so a test sees those before an error)."""
    received = [] if events is None else events

    async def ask():
        result = await client.audio.transcriptions.create(
            model="fake", file=("r.flac", data, "audio/flac"), **options
        )
        if not options.get("stream"):
            return result
        async for event in result:
            received.append(event)
        return received

    return asyncio.run(ask())


def test_verbose_json_segments_and_words_in_order(client, fake, audio, recording):
    verbose = create(
        client,
        recording,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert len(verbose.segments) >= 4 and all(r.words for r in fake.requests)
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments)))
    starts = [s.start for s in verbose.segments]
    assert starts == sorted(starts) and all(s.start < s.end for s in verbose.segments)
    assert all(s.seek == round(s.start * 100) for s in verbose.segments)  # 10 ms frames
    assert verbose.text == " ".join(s.text for s in verbose.segments)
    assert [w.word for w in verbose.words] == [s.text.split()[0] for s in verbose.segments]
    assert verbose.duration == round(len(audio) / SAMPLE_RATE, 3)
    assert verbose.usage.type == "duration" and verbose.usage.seconds == verbose.duration
    first = verbose.segments[0]
    assert first.tokens == [1, 2] and first.avg_logprob == -0.5 and first.temperature == 0.0
    assert first.compression_ratio > 0.0 and 0.0 <= first.no_speech_prob <= 1.0


def test_plain_json_asks_for_no_word_times(client, fake, recording):
    assert create(client, recording).text
    assert fake.requests and not any(r.words for r in fake.requests)


def test_srt_and_vtt_carry_each_segment(client, recording):
    verbose = create(client, recording, response_format="verbose_json")
    srt = create(client, recording, response_format="srt")
    cues = srt.strip().split("\n\n")
    assert [cue.split("\n")[2] for cue in cues] == [s.text for s in verbose.segments]
    stamp = r"\d\d:\d\d:\d\d,\d{3}"
    for number, cue in enumerate(cues, start=1):
        index, times, _ = cue.split("\n")
        assert int(index) == number and re.fullmatch(f"{stamp} --> {stamp}", times)
    vtt = create(client, recording, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(verbose.segments)
    assert re.search(r"\n\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n", vtt)


def test_stream_sends_a_delta_per_segment_then_the_whole_text(client, recording):
    verbose = create(client, recording, response_format="verbose_json")
    events = create(client, recording, stream=True)
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert [e.type for e in events[-1:]] == ["transcript.text.done"]
    assert len(deltas) == len(verbose.segments)
    assert "".join(e.delta for e in deltas) == events[-1].text == verbose.text


def test_a_model_failure_mid_stream_is_an_error_event(client, fake, recording):
    fake.failure = SegmentFailure(code="decode_failed", message="CUDA out of memory")
    fake.fail_from_segment = 2
    events = []
    with pytest.raises(openai.APIError, match="Internal server error") as raised:
        create(client, recording, events, stream=True)
    assert raised.value.body["code"] == "decode_failed" and raised.value.body["error_id"]
    assert [e.type for e in events] == ["transcript.text.delta"] * 2


def test_a_file_cut_short_mid_stream_is_an_error_event(client, recording):
    """A FLAC file cut short: the segments before the cut stream, then the error event."""
    events = []
    with pytest.raises(openai.APIError, match="cut short") as raised:
        create(client, recording[: len(recording) * 2 // 3], events, stream=True)
    assert raised.value.body["code"] == "truncated_audio"
    assert events and all(e.type == "transcript.text.delta" for e in events)


@pytest.mark.parametrize(
    ("form", "param"),
    [
        (
            {"response_format": "json", "timestamp_granularities[]": "word"},
            "timestamp_granularities[]",
        ),
        ({"response_format": "srt", "stream": "true"}, "stream"),
        ({"response_format": "verbose_json", "stream": "true"}, "stream"),
    ],
)
def test_options_that_do_not_go_together_are_400(fake, recording, form, param):
    response = AsyncBridge(served_app(ServeSettings(), fake)).post(
        "/v1/audio/transcriptions", recording, "audio/flac", model="fake", **form
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["code"] == "invalid_request" and not fake.requests
