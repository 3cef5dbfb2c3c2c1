"""Realtime transcription sessions on ``WS /v1/realtime`` (OpenAI's Realtime protocol).

Audio in (:class:`AudioTurns`), the wire (:mod:`..realtime.protocol`), the session's control
flow and bounds in-process over the fake model client, then the real thing: the embedded model
behind ``bentoml serve``, driven by the openai SDK's realtime client, its transcripts equal to
espnet2's ``Speech2Text`` called in-process on the same audio.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soundfile
import soxr
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from devkit.reference import streamed_transcript
from espnet_serve import InferenceSession
from espnet_serve.assets import (
    DEFAULT_MODEL_ARCHIVE,
    DEFAULT_STREAMING_ARCHIVE,
    HeldoutClip,
    load_heldout,
)
from espnet_serve.bundle.store import DEFAULT_STREAMING_NAME
from espnet_serve.serving.app import build_app, edge_middlewares
from espnet_serve.serving.middleware.inflight import InFlight
from espnet_serve.serving.realtime import protocol
from espnet_serve.serving.realtime.protocol import AudioFormat, ProtocolError, ServerVad
from espnet_serve.serving.realtime.turns import AudioTurns
from espnet_serve.serving.settings import ServeSettings
from tests.fakes import FakeModelClient
from tests.server import BentoServer, serve_default_model

REPO_ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
ROUTE = "/v1/realtime?intent=transcription"


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples as 16-bit little-endian PCM bytes."""
    return (np.clip(samples, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def quantized(samples: np.ndarray) -> np.ndarray:
    """What the server decodes from :func:`pcm16` of ``samples``."""
    return np.frombuffer(pcm16(samples), dtype="<i2").astype(np.float32) / 32768


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def spoken(
    clips: list[HeldoutClip], pause: float = 0.8
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips joined with ``pause`` seconds of quiet, and each clip's (start, end) in seconds."""
    rng = np.random.default_rng(0)
    parts, spans, position = [], [], 0.0
    for clip in clips:
        quiet = (rng.standard_normal(int(pause * RATE)) * 1e-3).astype(np.float32)
        audio = clip.read_audio(RATE)
        parts += [quiet, audio]
        spans.append((position + pause, position + pause + len(audio) / RATE))
        position = spans[-1][1]
    parts.append((rng.standard_normal(int(pause * RATE)) * 1e-3).astype(np.float32))
    return np.concatenate(parts), spans


@pytest.fixture(scope="module")
def clips() -> list[HeldoutClip]:
    return load_heldout(8)


# --- audio in ---------------------------------------------------------------------------------


def test_server_vad_closes_one_turn_per_utterance_as_it_streams(clips):
    audio, spans = spoken(clips[:3])
    turns = AudioTurns(AudioFormat(rate=RATE), RATE, ServerVad())
    closed, starts_seen = [], 0
    data = pcm16(audio)
    for at in range(0, len(data), 1280):  # 40 ms chunks
        before = turns.speech_started_at
        closed += turns.append(data[at : at + 1280])
        starts_seen += before is None and turns.speech_started_at is not None
    closed += turns.commit()
    assert [t.index for t in closed] == [0, 1, 2]
    assert starts_seen == 3
    for turn, (start, end) in zip(closed, spans, strict=True):
        # Each turn is its clip's speech: within the clip (a VAD window of slack), its own audio.
        assert start - 0.05 < turn.start < turn.end < end + 0.05, (turn, start, end)
        assert turn.offset == pytest.approx(max(turn.start - 0.3, 0), abs=0.02)
        expected = round((turn.end - turn.offset + 0.03) * RATE)
        assert abs(len(turn.samples) - expected) <= 2
        lead_in = round(turn.offset * RATE)
        np.testing.assert_array_equal(
            turn.samples, quantized(audio)[lead_in : lead_in + len(turn.samples)]
        )


def test_without_vad_a_commit_holds_exactly_the_audio_appended():
    samples = np.random.default_rng(1).uniform(-0.5, 0.5, 4001).astype(np.float32)
    data = pcm16(samples)
    turns = AudioTurns(AudioFormat(rate=RATE), RATE, None)
    for at in range(0, len(data), 333):  # odd chunk sizes: a sample split across appends
        assert turns.append(data[at : at + 333]) == []
    (turn,) = turns.commit()
    np.testing.assert_array_equal(turn.samples, quantized(samples))
    assert turns.commit() == []  # nothing since


def test_24khz_and_g711_audio_reach_the_model_rate():
    tone = 0.4 * np.sin(2 * np.pi * 300 * np.arange(24000) / 24000).astype(np.float32)
    turns = AudioTurns(AudioFormat(), RATE, None)  # OpenAI's default: 24 kHz PCM
    turns.append(pcm16(tone))
    (turn,) = turns.commit()
    expected = soxr.resample(quantized(tone), 24000, RATE, quality="HQ")
    assert abs(len(turn.samples) - RATE) <= 32
    assert np.abs(turn.samples[2000:14000] - expected[2000:14000]).max() < 1e-3

    narrow = tone[::3]  # 8 kHz
    for kind, subtype in (("audio/pcmu", "ULAW"), ("audio/pcma", "ALAW")):
        encoded = io.BytesIO()
        soundfile.write(encoded, narrow, 8000, format="RAW", subtype=subtype)
        turns = AudioTurns(AudioFormat(type=kind), RATE, None)
        turns.append(encoded.getvalue())
        (turn,) = turns.commit()
        assert abs(len(turn.samples) - 2 * len(narrow)) <= 32, kind
        expected = soxr.resample(narrow, 8000, RATE, quality="HQ")
        assert np.abs(turn.samples[500:7500] - expected[500:7500]).max() < 0.03, kind


# --- the wire -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "close_code"),
    [
        ("not json", "invalid_event", protocol.CLOSE_INVALID_PAYLOAD),
        ("[1, 2]", "invalid_event", protocol.CLOSE_INVALID_PAYLOAD),
        ('{"type": "input_audio_buffer.append"}', "invalid_event", protocol.CLOSE_INVALID_PAYLOAD),
        ('{"type": "response.create"}', "unsupported_event", None),
    ],
)
def test_client_events_that_are_refused(text: str, code: str, close_code: int | None):
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_client_event(text)
    assert (refused.value.code, refused.value.close_code) == (code, close_code)


def test_session_updates_of_both_protocol_versions_parse():
    ga = protocol.parse_client_event(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 16000},
                            "transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": None,
                        }
                    },
                },
            }
        )
    )
    assert isinstance(ga, protocol.SessionUpdate)
    given = ga.session.audio.input
    assert given.format.sample_rate == 16000 and given.transcription.language == "en"
    assert "turn_detection" in given.model_fields_set and given.turn_detection is None
    beta = protocol.parse_client_event(
        '{"type": "transcription_session.update", "session": {"input_audio_format": '
        '"g711_ulaw", "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}'
    )
    assert isinstance(beta, protocol.BetaSessionUpdate)
    assert protocol.beta_format(beta.session.input_audio_format, None).sample_rate == 8000
    vad = protocol.turn_detection(beta.session.turn_detection, None)
    assert vad is not None and vad.silence_duration_ms == 300
    with pytest.raises(ProtocolError) as semantic:
        protocol.turn_detection({"type": "semantic_vad"}, "e1")
    assert semantic.value.code == "unsupported_turn_detection" and semantic.value.event_id == "e1"
    with pytest.raises(ProtocolError) as bad:
        protocol.decode_base64("not base64!", None)
    assert bad.value.close_code == protocol.CLOSE_INVALID_PAYLOAD


# --- the session, in-process over the fake model (control flow) -----------------------------


class Draining:
    """A switch the app asks whether the worker drains."""

    def __init__(self) -> None:
        self.on = False

    def __call__(self) -> bool:
        return self.on


def app_with(fake: FakeModelClient, draining: Draining | None = None, **settings: Any):
    config = ServeSettings(**settings)
    is_draining = draining or Draining()
    app = build_app(config, model_clients=[fake], in_flight=InFlight(), is_draining=is_draining)
    middleware = edge_middlewares(config, is_draining=is_draining)
    return Starlette(routes=[Mount("/", app=app)], middleware=middleware)


def events_until(ws: Any, kind: str) -> list[dict[str, Any]]:
    """Server events up to and including the first of type ``kind``."""
    seen = []
    while True:
        seen.append(ws.receive_json())
        if seen[-1]["type"] == kind:
            return seen


def closed_after_error(ws: Any) -> tuple[dict[str, Any], int]:
    """The error event the server sends, then the close code it closes with."""
    error = ws.receive_json()
    assert error["type"] == "error", error
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return error["error"], closed.value.code


def manual_pcm16(ws: Any, rate: int = RATE) -> None:
    """Turn server VAD off and take 16-bit PCM at ``rate``; wait for session.updated."""
    ws.send_json(
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {"format": {"type": "audio/pcm", "rate": rate}, "turn_detection": None}
                },
            },
        }
    )
    updated = events_until(ws, "session.updated")[-1]["session"]["audio"]["input"]
    assert updated["turn_detection"] is None and updated["format"]["rate"] == rate


def test_committed_audio_reaches_the_model_whole_and_in_order():
    fake = FakeModelClient()
    with TestClient(app_with(fake)) as client, client.websocket_connect(ROUTE) as ws:
        created = ws.receive_json()
        assert created["type"] == "session.created"
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert created["session"]["audio"]["input"]["format"] == {
            "type": "audio/pcm",
            "rate": 24000,
        }
        manual_pcm16(ws)
        lengths = [4000, 4801, 3333]
        for length in lengths:
            ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\1\0" * length)})
            ws.send_json({"type": "input_audio_buffer.commit"})
        events: list[dict[str, Any]] = []
        while sum(e["type"].endswith(".completed") for e in events) < len(lengths):
            events.append(ws.receive_json())
        committed = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
        deltas = [e for e in events if e["type"].endswith("transcription.delta")]
        completed = [e for e in events if e["type"].endswith("transcription.completed")]
        # One delta, then the completed transcript, per utterance, in commit order.
        assert [e["item_id"] for e in completed] == committed == [e["item_id"] for e in deltas]
        assert [e["transcript"] for e in completed] == [f"{n} samples" for n in lengths]
        assert [e["usage"]["seconds"] for e in completed] == [round(n / RATE, 3) for n in lengths]
        assert [len(r.samples) for r in fake.requests] == lengths

        ws.send_json({"type": "input_audio_buffer.commit", "event_id": "c1"})
        empty = ws.receive_json()  # an error event; the session goes on
        assert empty["type"] == "error"
        assert (empty["error"]["code"], empty["error"]["event_id"]) == (
            "input_audio_buffer_commit_empty",
            "c1",
        )
        ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\0\0" * 100)})
        ws.send_json({"type": "input_audio_buffer.clear"})
        assert ws.receive_json()["type"] == "input_audio_buffer.cleared"
        ws.send_json({"type": "response.create", "event_id": "r1"})
        unsupported = ws.receive_json()
        assert unsupported["error"]["code"] == "unsupported_event"
        ws.send_json(
            {
                "type": "transcription_session.update",
                "session": {"input_audio_format": "g711_alaw", "turn_detection": None},
            }
        )
        beta = events_until(ws, "transcription_session.updated")[-1]["session"]
        assert beta["input_audio_format"] == "g711_alaw" and beta["turn_detection"] is None
        ws.send_json({"type": "input_audio_buffer.commit"})
        assert ws.receive_json()["error"]["code"] == "input_audio_buffer_commit_empty"
    assert len(fake.requests) == len(lengths)


@pytest.mark.parametrize(
    ("send", "code", "close_code"),
    [
        (lambda ws: ws.send_text("{not json"), "invalid_event", protocol.CLOSE_INVALID_PAYLOAD),
        (
            lambda ws: ws.send_json({"type": "input_audio_buffer.append", "audio": "%%%"}),
            "invalid_audio",
            protocol.CLOSE_INVALID_PAYLOAD,
        ),
        (lambda ws: ws.send_bytes(b"\0\1"), "invalid_event", protocol.CLOSE_UNSUPPORTED_DATA),
        (
            lambda ws: ws.send_json(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 12345}}},
                    },
                }
            ),
            "unsupported_audio_format",
            protocol.CLOSE_UNSUPPORTED_DATA,
        ),
        (
            lambda ws: ws.send_json(
                {"type": "input_audio_buffer.append", "audio": b64(b"\0\0" * 24000 * 3)}
            ),
            "audio_too_fast",
            protocol.CLOSE_POLICY,
        ),
    ],
    ids=["malformed", "bad-base64", "binary", "wrong-format", "too-fast"],
)
def test_bad_input_gets_an_error_event_then_its_close_code(send, code: str, close_code: int):
    fake = FakeModelClient()
    app = app_with(fake, realtime_max_ahead_seconds=2.0)
    with TestClient(app) as client, client.websocket_connect(ROUTE) as ws:
        assert ws.receive_json()["type"] == "session.created"
        send(ws)
        error, closed = closed_after_error(ws)
    assert (error["code"], closed) == (code, close_code)
    assert error["message"] and error["type"] == "invalid_request_error"
    assert fake.requests == []
    # The server is fine: the next session opens.
    with TestClient(app) as client, client.websocket_connect(ROUTE) as ws:
        assert ws.receive_json()["type"] == "session.created"


def test_a_turn_without_vad_is_bounded():
    app = app_with(FakeModelClient(), realtime_max_turn_seconds=1.0)
    with TestClient(app) as client, client.websocket_connect(ROUTE) as ws:
        assert ws.receive_json()["type"] == "session.created"
        manual_pcm16(ws)
        ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\0\0" * RATE)})
        ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\0\0" * 800)})
        error, closed = closed_after_error(ws)
    assert (error["code"], closed) == ("buffer_too_large", protocol.CLOSE_TOO_BIG)


def test_an_idle_session_is_closed():
    app = app_with(FakeModelClient(), realtime_idle_seconds=0.5)
    with TestClient(app) as client, client.websocket_connect(ROUTE) as ws:
        assert ws.receive_json()["type"] == "session.created"
        started = time.monotonic()
        error, closed = closed_after_error(ws)
    assert (error["code"], closed) == ("session_idle", protocol.CLOSE_POLICY)
    assert time.monotonic() - started > 0.4  # not before the idle time


def test_sessions_past_the_limit_are_refused_before_they_start():
    fake = FakeModelClient()
    with TestClient(app_with(fake, max_realtime_sessions=2)) as client:
        with client.websocket_connect(ROUTE) as first, client.websocket_connect(ROUTE) as second:
            assert (
                first.receive_json()["type"] == second.receive_json()["type"] == "session.created"
            )
            with client.websocket_connect(ROUTE) as third:
                error, closed = closed_after_error(third)
            assert (error["code"], closed) == ("session_refused", protocol.CLOSE_TRY_AGAIN_LATER)
        with client.websocket_connect(ROUTE) as again:  # slots come back when sessions end
            assert again.receive_json()["type"] == "session.created"


def test_an_unknown_model_or_language_is_an_error_event():
    with TestClient(app_with(FakeModelClient())) as client:
        with client.websocket_connect(ROUTE + "&model=nope") as ws:
            error, closed = closed_after_error(ws)
        assert (error["code"], closed) == ("model_not_found", protocol.CLOSE_POLICY)
        with client.websocket_connect(ROUTE + "&model=whisper-1") as ws:
            assert ws.receive_json()["session"]["audio"]["input"]["transcription"]["model"]
            ws.send_json(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"transcription": {"language": "xx"}}},
                    },
                }
            )
            refused = ws.receive_json()
            assert refused["type"] == "error" and refused["error"]["param"] == "language"
            ws.send_json({"type": "session.update", "session": {"type": "realtime"}})
            assert ws.receive_json()["error"]["code"] == "unsupported_session_type"


def test_api_keys_guard_the_handshake():
    from starlette.testclient import WebSocketDenialResponse

    with TestClient(app_with(FakeModelClient(), api_keys="s3cret")) as client:
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect(ROUTE):
            pass
        assert denied.value.status_code == 401
        assert denied.value.json()["error"]["code"] == "invalid_api_key"
        headers = {"Authorization": "Bearer s3cret"}
        with client.websocket_connect(ROUTE, headers=headers) as ws:
            assert ws.receive_json()["type"] == "session.created"


def test_a_draining_worker_finishes_the_utterance_then_closes_1001():
    fake, draining = FakeModelClient(), Draining()
    with TestClient(app_with(fake, draining)) as client:
        with client.websocket_connect(ROUTE) as ws:
            assert ws.receive_json()["type"] == "session.created"
            manual_pcm16(ws)
            ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\1\0" * 5000)})
            ws.send_json({"type": "input_audio_buffer.commit"})
            ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\1\0" * 7000)})
            ws.send_json({"type": "response.create"})  # a barrier: its error comes after
            events = events_until(ws, "error")  # the server has read the audio in progress
            draining.on = True
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    events.append(ws.receive_json())
        with client.websocket_connect(ROUTE) as refused:
            error, code = closed_after_error(refused)
    assert closed.value.code == protocol.CLOSE_GOING_AWAY
    transcripts = [e["transcript"] for e in events if e["type"].endswith(".completed")]
    # Committed audio and the utterance in progress are both transcribed before the close.
    assert transcripts == ["5000 samples", "7000 samples"]
    assert (error["code"], code) == ("session_refused", protocol.CLOSE_TRY_AGAIN_LATER)


# --- the real server, the openai SDK's realtime client ---------------------------------------

SDK_SESSION = {
    "type": "transcription",
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": None}},
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> InferenceSession:
    """The embedded model as its bundle builds it: espnet2's ``Speech2Text``, in-process."""
    return InferenceSession.from_pretrained(
        str(DEFAULT_MODEL_ARCHIVE),
        trust_user_code=True,
        downloader_kwargs={"cachedir": tmp_path_factory.mktemp("model_cache")},
    )


async def transcripts(connection: Any, count: int) -> tuple[list[str], list[dict[str, Any]]]:
    """The next ``count`` completed transcripts (in order), and every event seen."""
    seen: list[dict[str, Any]] = []
    done: list[str] = []
    async for event in connection:
        seen.append(event.model_dump())
        if event.type == "conversation.item.input_audio_transcription.completed":
            done.append(event.transcript)
        if event.type in ("error", "conversation.item.input_audio_transcription.failed"):
            raise AssertionError(event)
        if len(done) == count:
            break
    return done, seen


@pytest.mark.slow
def test_the_sdk_gets_what_speech2text_gives_for_each_committed_utterance(
    default_server: BentoServer, clips: list[HeldoutClip], reference: InferenceSession
):
    audios = [quantized(clip.read_audio(RATE)) for clip in clips]
    expected = [reference(audio)["text"] for audio in audios]

    async def session() -> tuple[list[str], list[dict[str, Any]]]:
        client = openai.AsyncOpenAI(base_url=f"{default_server.url}/v1", api_key="unused")
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session=SDK_SESSION)
            for audio in audios:
                data = pcm16(audio)
                for at in range(0, len(data), 3200):  # 100 ms appends
                    await conn.input_audio_buffer.append(audio=b64(data[at : at + 3200]))
                await conn.input_audio_buffer.commit()
            return await transcripts(conn, len(audios))

    got, seen = asyncio.run(session())
    assert got == expected
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "session.created" and "session.updated" in kinds
    assert kinds.count("input_audio_buffer.committed") == len(audios)


@pytest.mark.slow
def test_server_vad_cuts_a_24khz_stream_into_utterances_each_as_speech2text_hears_it(
    default_server: BentoServer, clips: list[HeldoutClip], reference: InferenceSession
):
    chosen = [c for c in clips if reference(c.read_audio(RATE))["text"] == c.text][:4]
    audio, spans = spoken(chosen)
    stream = pcm16(soxr.resample(audio, RATE, 24000, quality="HQ"))
    chunk = 4800  # 100 ms at 24 kHz

    async def session() -> tuple[list[str], list[dict[str, Any]]]:
        client = openai.AsyncOpenAI(base_url=f"{default_server.url}/v1", api_key="unused")
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            # OpenAI's defaults: 24 kHz PCM, server VAD.
            for at in range(0, len(stream), chunk):
                await conn.input_audio_buffer.append(audio=b64(stream[at : at + chunk]))
                await asyncio.sleep(0.02)  # 5x real time, within the bound
            return await transcripts(conn, len(chosen))

    got, seen = asyncio.run(session())
    # The server's utterances are what AudioTurns cuts from the same appends; each transcript
    # is what espnet2's Speech2Text gives for that utterance's audio.
    turns = AudioTurns(AudioFormat(), RATE, ServerVad())
    cut = [t for at in range(0, len(stream), chunk) for t in turns.append(stream[at : at + chunk])]
    assert len(cut) == len(chosen)
    assert got == [reference(turn.samples)["text"] for turn in cut]
    started = [e for e in seen if e["type"] == "input_audio_buffer.speech_started"]
    stopped = [e for e in seen if e["type"] == "input_audio_buffer.speech_stopped"]
    assert len(started) == len(stopped) == len(chosen)
    for begin, end, (start, finish) in zip(started, stopped, spans, strict=True):
        assert begin["item_id"] == end["item_id"]
        # Times are of the session's audio: the speech lies within its clip.
        assert start * 1000 - 350 <= begin["audio_start_ms"] < end["audio_end_ms"]
        assert end["audio_end_ms"] <= finish * 1000 + 100  # three VAD windows


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["per-utterance", "streaming-model"])
def test_sigterm_finishes_the_utterance_in_progress_then_closes_1001(
    tmp_path: Path, clips: list[HeldoutClip], reference: InferenceSession, streaming: bool
):
    import websockets

    clip = next(c for c in clips if reference(c.read_audio(RATE))["text"] == c.text)
    expected = clip.text
    settings = {"api_keys": "k3y"}
    if streaming:  # the utterance is in the model worker's stream when the signal comes
        audio = quantized(clip.read_audio(RATE))
        model = InferenceSession.from_pretrained(
            str(DEFAULT_STREAMING_ARCHIVE),
            trust_user_code=True,
            downloader_kwargs={"cachedir": str(tmp_path / "cache")},
        ).model
        expected = streamed_transcript(model, audio, RATE, append_seconds=0.1)
        settings["model_tag"] = f"{DEFAULT_STREAMING_NAME}:latest"
    server = serve_default_model(tmp_path / "home", **settings)
    try:

        async def wrong_key() -> None:
            client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="wrong")
            async with client.realtime.connect(extra_query={"intent": "transcription"}):
                pass

        with pytest.raises(websockets.InvalidStatus) as refused:
            asyncio.run(wrong_key())
        assert refused.value.response.status_code == 401

        async def drained() -> tuple[list[dict[str, Any]], int | None]:
            url = f"ws://127.0.0.1:{server.port}{ROUTE}"
            headers = {"Authorization": "Bearer k3y"}
            events: list[dict[str, Any]] = []
            async with websockets.connect(url, additional_headers=headers) as ws:
                events.append(json.loads(await ws.recv()))
                speech = pcm16(clip.read_audio(RATE))
                await ws.send(json.dumps({"type": "session.update", "session": SDK_SESSION}))
                for at in range(0, len(speech), 3200):
                    await ws.send(
                        json.dumps(
                            {
                                "type": "input_audio_buffer.append",
                                "audio": b64(speech[at : at + 3200]),
                            }
                        )
                    )
                await ws.send(json.dumps({"type": "response.create"}))  # barrier
                while events[-1]["type"] != "error":
                    events.append(json.loads(await ws.recv()))
                os.killpg(server.process.pid, signal.SIGTERM)
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:
                        events.append(json.loads(await ws.recv()))
                return events, ws.close_code

        events, close_code = asyncio.run(drained())
        server.process.wait(timeout=60)
    finally:
        server.stop()
    assert close_code == protocol.CLOSE_GOING_AWAY
    completed = [e for e in events if e["type"].endswith("transcription.completed")]
    assert [e["transcript"] for e in completed] == [expected]


def test_a_streaming_model_gets_the_utterance_as_it_arrives_and_sends_deltas():
    fake = FakeModelClient()
    fake.streaming = True
    appends = [RATE // 10] * 12 + [777]  # 100 ms appends, then a short one
    with TestClient(app_with(fake)) as client, client.websocket_connect(ROUTE) as ws:
        assert ws.receive_json()["type"] == "session.created"
        manual_pcm16(ws)
        for length in appends:
            ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\1\0" * length)})
        ws.send_json({"type": "response.create"})  # a barrier: its error comes after
        before_commit = events_until(ws, "error")
        ws.send_json({"type": "input_audio_buffer.commit"})
        after = events_until(ws, "conversation.item.input_audio_transcription.completed")
        # A new utterance, given up (cleared): its stream is closed on the model.
        ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\1\0" * RATE)})
        ws.send_json({"type": "input_audio_buffer.clear"})
        events_until(ws, "input_audio_buffer.cleared")
    deltas = [e for e in before_commit if e["type"].endswith("transcription.delta")]
    completed = after[-1]
    # Deltas came while the audio was still arriving, before any commit, and they add up to
    # the final transcript; one item throughout.
    assert len(deltas) >= 3
    assert (
        "".join(e["delta"] for e in deltas + after if e["type"].endswith(".delta"))
        == (completed["transcript"])
    )
    assert completed["transcript"] == "x" * (sum(appends) // 1600)
    committed = next(e for e in after if e["type"] == "input_audio_buffer.committed")
    assert {e["item_id"] for e in deltas} == {committed["item_id"], completed["item_id"]}
    # The model heard every sample once, in chunks of at least 0.2 s but the final, which holds
    # the last 0.1 s or more; nothing went through the segment path.
    first = [c for c in fake.chunks if c.stream_id == fake.chunks[0].stream_id]
    assert sum(len(c.samples) for c in first) == sum(appends)
    assert [c.final for c in first] == [False] * (len(first) - 1) + [True]
    assert all(len(c.samples) >= 0.2 * RATE for c in first[:-1])
    assert len(first[-1].samples) >= 0.1 * RATE
    assert fake.requests == []
    later = {c.stream_id for c in fake.chunks} - {first[0].stream_id}
    assert later and later <= set(fake.closed_streams)


def test_a_session_takes_the_streaming_model_unless_it_names_another():
    plain, streaming = FakeModelClient("plain"), FakeModelClient("streaming")
    streaming.streaming = True
    config = ServeSettings()
    app = build_app(config, model_clients=[plain, streaming], in_flight=InFlight())
    with TestClient(app) as client:
        with client.websocket_connect(ROUTE) as ws:
            created = ws.receive_json()["session"]["audio"]["input"]["transcription"]
        with client.websocket_connect(ROUTE + "&model=plain") as ws:
            named = ws.receive_json()["session"]["audio"]["input"]["transcription"]
    assert (created["model"], named["model"]) == ("streaming:v1", "plain:v1")


def test_a_streamed_utterance_at_24khz_reaches_the_model_whole():
    fake = FakeModelClient()
    fake.streaming = True
    appends = [2400] * 13  # 100 ms at 24 kHz
    with TestClient(app_with(fake)) as client, client.websocket_connect(ROUTE) as ws:
        assert ws.receive_json()["type"] == "session.created"
        manual_pcm16(ws, rate=24000)
        for length in appends:
            ws.send_json({"type": "input_audio_buffer.append", "audio": b64(b"\1\0" * length)})
        ws.send_json({"type": "input_audio_buffer.commit"})
        events_until(ws, "conversation.item.input_audio_transcription.completed")
    # Every sample the resampler gave, its delay flushed at the commit included.
    expected = len(soxr.resample(np.zeros(sum(appends), np.float32), 24000, RATE, quality="HQ"))
    assert sum(len(c.samples) for c in fake.chunks) == expected
    assert fake.chunks[-1].final and not any(c.final for c in fake.chunks[:-1])


def test_a_model_not_yet_ready_says_come_back():
    from espnet_serve.serving.rpc import Readiness

    fake = FakeModelClient()
    fake.ready = Readiness(ready=False, reason="the model is loading")
    with TestClient(app_with(fake)) as client, client.websocket_connect(ROUTE) as ws:
        error, closed = closed_after_error(ws)
    assert (error["code"], closed) == ("model_unavailable", protocol.CLOSE_TRY_AGAIN_LATER)
    assert "loading" in error["message"]


class CountingStream:
    """A stream that answers with how many samples it has heard (control flow only)."""

    opened = 0

    def __init__(self) -> None:
        CountingStream.opened += 1
        self.heard = 0

    def push(self, samples: np.ndarray, *, final: bool) -> Any:
        from espnet_serve.executors.base import Hypothesis

        self.heard += len(samples)
        return Hypothesis(str(self.heard))


def test_open_streams_are_bounded_and_forgotten_when_idle_or_final():
    from espnet_serve.serving.rpc import StreamChunk
    from espnet_serve.serving.streams import OpenStreams

    streams = OpenStreams(CountingStream, limit=2, idle_seconds=0.2)
    CountingStream.opened = 0

    def push(stream_id: str, n: int, final: bool = False) -> Any:
        chunk = StreamChunk(stream_id=stream_id, samples=np.zeros(n, np.float32), final=final)
        return streams.push(chunk)

    assert push("a", 10).text == "10" and push("a", 5).text == "15"  # one stream, its state
    assert push("b", 1).text == "1"
    refused = push("c", 1)  # past the limit
    assert refused.failure is not None and refused.failure.code == "overloaded"
    assert push("a", 1, final=True).text == "16"  # a final chunk ends the stream ...
    assert push("c", 3).text == "3"  # ... and frees its place
    time.sleep(0.3)
    assert push("b", 2).text == "2"  # idle too long: forgotten, a new stream
    assert CountingStream.opened == 4
