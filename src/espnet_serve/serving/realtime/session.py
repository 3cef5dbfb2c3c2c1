"""One ``/v1/realtime`` transcription session: events in, transcripts out, over a WebSocket.

Audio appended by the client is cut into utterances (:class:`~espnet_serve.serving.realtime.
turns.AudioTurns`: server VAD, or the client's commits). Each utterance is sent to the model
service as one segment, through the same client and batcher as an upload's segments, so many
sessions share the model's batches; its transcript comes back as one
``conversation.item.input_audio_transcription.delta`` and a ``.completed``, in commit order.
With a streaming model (``ModelInfo.streaming``: ``Speech2TextStreaming``) the utterance is
instead streamed to the model as it arrives (:class:`~espnet_serve.serving.realtime.turns.
StreamChunker`), and each chunk's best hypothesis that extends the text sent so far becomes a
delta while the person is still speaking; the final chunk gives the ``.completed`` transcript.

Every session runs its own receive loop and sender: a slow or stalled client holds only its
own session (a send that takes longer than :data:`SEND_TIMEOUT_SECONDS` ends it). What a
session may hold is bounded: audio ahead of real time (``realtime_max_ahead_seconds``), the
turn in progress (the segmenter's longest turn, or ``realtime_max_turn_seconds`` without
VAD), and the sessions of a worker (``max_realtime_sessions``). On SIGTERM a session closes
the utterance in progress, sends every transcript it owes, then closes with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from espnet_serve.audio.segmenter import AudioSegment
from espnet_serve.executors.base import TRANSCRIBE, DecodeOptions
from espnet_serve.pipeline.types import SegmentDecodeError
from espnet_serve.serving.errors import ApiError
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.middleware.inflight import InFlight
from espnet_serve.serving.realtime import protocol
from espnet_serve.serving.realtime.protocol import (
    PCM_RATES,
    AudioFormat,
    ProtocolError,
    ServerVad,
    server_event,
)
from espnet_serve.serving.realtime.turns import AudioTurns, StreamChunker
from espnet_serve.serving.rpc import SegmentRequest, StreamChunk, StreamClose
from espnet_serve.serving.served_model import ServedModel, ServedModels
from espnet_serve.serving.settings import ServeSettings

logger = logging.getLogger(__name__)
REALTIME_ROUTE = "/v1/realtime"
TICK_SECONDS = 0.25  # how often an idle receive loop looks at the drain and the idle clock
SEND_TIMEOUT_SECONDS = 10.0  # a client that takes longer to take one event is dropped


@dataclass
class _Streamed:
    """An utterance being streamed to a streaming model."""

    id: str  # the model's stream id
    item: str
    chunker: StreamChunker
    sent: str = ""  # the text sent as deltas so far
    failure: tuple[str, str] | None = None  # (code, message) of a chunk that failed


class SessionSlots:
    """The realtime sessions one worker holds, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        """Take a slot; False when all are taken."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        """Return a slot."""
        self.open -= 1


class RealtimeSession:
    """Serves one accepted-or-refused WebSocket connection to its end.

    Args:
        websocket: The connection (not yet accepted).
        settings: Bounds and timeouts.
        models: The served models.
        slots: The worker's session slots.
        in_flight: The worker's work counter (the SIGTERM drain waits for it).
        is_draining: Whether the worker is shutting down.
    """

    def __init__(
        self,
        websocket: WebSocket,
        *,
        settings: ServeSettings,
        models: ServedModels,
        slots: SessionSlots,
        in_flight: InFlight,
        is_draining: Callable[[], bool],
    ) -> None:
        self.websocket = websocket
        self.settings = settings
        self.models = models
        self.slots = slots
        self.in_flight = in_flight
        self.is_draining = is_draining
        self.id = protocol.new_id("sess")
        self.model: ServedModel | None = None
        self.model_name = ""
        self.audio_format = AudioFormat()
        self.vad: ServerVad | None = ServerVad()
        self.language: str | None = None
        self.prompt: str | None = None
        self.audio: AudioTurns | None = None
        self.streaming = False  # the model decodes streams (partial deltas)
        self._streamed: _Streamed | None = None
        self.started = time.monotonic()
        self._open_item: str | None = None  # the item of the speech in progress (server VAD)
        self._last_item: str | None = None
        self._transcripts: asyncio.Queue[asyncio.Task[list[dict[str, Any]]] | None] = (
            asyncio.Queue()
        )
        self._send_lock = asyncio.Lock()
        self._sender: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        """Run the session; refuse it (error event, close 1013) past the worker's limit."""
        if self.is_draining() or not self.slots.take():
            await self.websocket.accept()
            reason = "the server is shutting down" if self.is_draining() else "too many sessions"
            await self._fail(
                ProtocolError(
                    "session_refused",
                    f"Realtime session refused: {reason} "
                    f"(at most {self.settings.max_realtime_sessions} per worker); try again.",
                    close_code=protocol.CLOSE_TRY_AGAIN_LATER,
                )
            )
            return
        self.in_flight.enter()
        self._sender = asyncio.create_task(self._send_transcripts())
        try:
            await self.websocket.accept()
            await self._open()
            await self._receive_events()
            await self._finish(protocol.CLOSE_GOING_AWAY, "server shutting down")
        except ProtocolError as exc:
            await self._fail(exc)
        except (WebSocketDisconnect, ConnectionError):
            pass
        except Exception:
            logger.exception("Realtime session %s failed.", self.id)
            await self._fail(
                ProtocolError(
                    "internal_error",
                    "The server failed; the session ends.",
                    close_code=protocol.CLOSE_INTERNAL_ERROR,
                )
            )
        finally:
            await self._drop_stream()
            assert self._sender is not None
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self.slots.give_back()
            self.in_flight.exit()

    # --- events in ---------------------------------------------------------------------------

    async def _open(self) -> None:
        """Pick the model (the query's ``model``, see :meth:`_use_model`); session.created."""
        requested = self.websocket.query_params.get("model")
        try:
            await self._use_model(requested)
        except ProtocolError as exc:  # nothing to transcribe with
            unavailable = exc.code == "model_unavailable"  # not ready yet: come back
            exc.close_code = (
                protocol.CLOSE_TRY_AGAIN_LATER if unavailable else protocol.CLOSE_POLICY
            )
            raise
        await self._send(server_event("session.created", session=self._session_object()))

    async def _receive_events(self) -> None:
        """Handle client events until the client leaves or the worker drains."""
        idle_deadline = time.monotonic() + self.settings.realtime_idle_seconds
        while not self.is_draining():
            now = time.monotonic()
            if now >= idle_deadline:
                raise ProtocolError(
                    "session_idle",
                    f"No event for {self.settings.realtime_idle_seconds:g} s: the session ends.",
                    close_code=protocol.CLOSE_POLICY,
                )
            try:
                message = await asyncio.wait_for(
                    self.websocket.receive(), min(TICK_SECONDS, idle_deadline - now)
                )
            except TimeoutError:
                continue
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("text") is None:
                raise ProtocolError(
                    "invalid_event",
                    "Binary frames are not events: send JSON text frames.",
                    close_code=protocol.CLOSE_UNSUPPORTED_DATA,
                )
            idle_deadline = time.monotonic() + self.settings.realtime_idle_seconds
            try:
                await self._handle(protocol.parse_client_event(message["text"]))
            except ProtocolError as exc:
                if exc.close_code is not None:
                    raise
                await self._send(protocol.error_event(exc))

    async def _handle(self, event: protocol.ClientEvent) -> None:
        """Act on one client event."""
        if isinstance(event, protocol.AppendAudio):
            await self._append(protocol.decode_base64(event.audio, event.event_id), event.event_id)
        elif isinstance(event, protocol.CommitAudio):
            await self._commit(event.event_id)
        elif isinstance(event, protocol.ClearAudio):
            assert self.audio is not None
            self.audio.clear()
            self._open_item = None
            await self._drop_stream()
            await self._send(server_event("input_audio_buffer.cleared"))
        elif isinstance(event, protocol.SessionUpdate):
            await self._update(event)
            await self._send(server_event("session.updated", session=self._session_object()))
        else:
            await self._update_beta(event)
            await self._send(
                server_event("transcription_session.updated", session=self._beta_object())
            )

    async def _append(self, data: bytes, event_id: str | None) -> None:
        """Add audio; announce speech starts and ends; send closed turns to the model."""
        assert self.audio is not None
        turns = await anyio.to_thread.run_sync(self.audio.append, data)
        ahead = self.audio.samples_in / self.audio.model_rate - (time.monotonic() - self.started)
        if ahead > self.settings.realtime_max_ahead_seconds:
            raise ProtocolError(
                "audio_too_fast",
                f"Audio is arriving {ahead:.1f} s ahead of real time (at most "
                f"{self.settings.realtime_max_ahead_seconds:g} s): send it as it is spoken.",
                event_id=event_id,
                close_code=protocol.CLOSE_POLICY,
            )
        if self.audio.buffered_seconds > self.settings.realtime_max_turn_seconds:
            raise ProtocolError(
                "buffer_too_large",
                f"More than {self.settings.realtime_max_turn_seconds:g} s of audio without a "
                "commit: commit each utterance, or turn server VAD on.",
                event_id=event_id,
                close_code=protocol.CLOSE_TOO_BIG,
            )
        fresh = self.audio.take_fresh()
        if self.streaming and self.vad is None and self._streamed is None and len(fresh):
            self._open_stream(protocol.new_id("item"))
        await self._stream_audio(fresh)
        for turn in turns:
            await self._close_turn(turn)
        started = self.audio.speech_started_at
        if started is not None and self._open_item is None:
            await self._start_item(started)
            if self.streaming:
                self._open_stream(self._open_item)
                await self._stream_audio(self.audio.open_turn_samples())

    async def _commit(self, event_id: str | None) -> None:
        """The client closes the utterance (what is held; with VAD, the speech in progress)."""
        turns = await self._commit_audio()
        if not turns:
            self._open_item = None
            await self._drop_stream()
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Nothing to commit: no audio (or, with server VAD, no speech) since the last "
                "commit.",
                event_id=event_id,
            )
        for turn in turns:
            await self._close_turn(turn, by_client=True)

    async def _commit_audio(self) -> list[AudioSegment]:
        """Close the turn in progress; the resampler's last milliseconds go to its stream."""
        assert self.audio is not None
        turns = await anyio.to_thread.run_sync(self.audio.commit)
        fresh = self.audio.take_fresh()
        if self._streamed is not None:
            self._streamed.chunker.keep(fresh)
        return turns

    async def _start_item(self, start_seconds: float) -> None:
        self._open_item = protocol.new_id("item")
        await self._send(
            server_event(
                "input_audio_buffer.speech_started",
                audio_start_ms=round(start_seconds * 1000),
                item_id=self._open_item,
            )
        )

    async def _close_turn(self, turn: AudioSegment, *, by_client: bool = False) -> None:
        """Announce the end of an utterance, commit it, send it to the model."""
        if self._open_item is None and self.vad is not None:
            await self._start_item(turn.start)
        streamed, self._streamed = self._streamed, None
        item = self._open_item or (streamed.item if streamed else None) or protocol.new_id("item")
        self._open_item = None
        if self.vad is not None and not by_client:
            await self._send(
                server_event(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=round(turn.end * 1000),
                    item_id=item,
                )
            )
        await self._send(
            server_event(
                "input_audio_buffer.committed", item_id=item, previous_item_id=self._last_item
            )
        )
        await self._send(
            server_event(
                "conversation.item.added",
                previous_item_id=self._last_item,
                item={
                    "id": item,
                    "object": "realtime.item",
                    "type": "message",
                    "role": "user",
                    "status": "completed",
                    "content": [{"type": "input_audio", "transcript": None}],
                },
            )
        )
        self._last_item = item
        if streamed is not None:
            transcript = self._finish_stream(streamed, item, turn)
        else:
            transcript = self._transcribe(item, turn)
        await self._transcripts.put(asyncio.create_task(transcript))

    # --- settings ----------------------------------------------------------------------------

    async def _update(self, event: protocol.SessionUpdate) -> None:
        """Apply a ``session.update`` (type ``transcription``)."""
        if event.session.type != "transcription":
            raise ProtocolError(
                "unsupported_session_type",
                f"Session type {event.session.type!r} is not served: this endpoint holds "
                "transcription sessions ({'type': 'transcription'}).",
                param="session.type",
                event_id=event.event_id,
            )
        given = event.session.audio.input if event.session.audio else None
        if given is None:
            return
        transcription = given.transcription
        vad = self.vad
        if "turn_detection" in given.model_fields_set:
            vad = protocol.turn_detection(given.turn_detection, event.event_id)
        await self._apply(
            audio_format=given.format,
            model=transcription.model if transcription else None,
            language=transcription.language if transcription else None,
            prompt=transcription.prompt if transcription else None,
            vad=vad,
            event_id=event.event_id,
        )

    async def _update_beta(self, event: protocol.BetaSessionUpdate) -> None:
        """Apply a beta ``transcription_session.update``."""
        given = event.session
        transcription = given.input_audio_transcription
        vad = self.vad
        if "turn_detection" in given.model_fields_set:
            vad = protocol.turn_detection(given.turn_detection, event.event_id)
        await self._apply(
            audio_format=protocol.beta_format(given.input_audio_format, event.event_id),
            model=transcription.model if transcription else None,
            language=transcription.language if transcription else None,
            prompt=transcription.prompt if transcription else None,
            vad=vad,
            event_id=event.event_id,
        )

    async def _apply(
        self,
        *,
        audio_format: AudioFormat | None,
        model: str | None,
        language: str | None,
        prompt: str | None,
        vad: ServerVad | None,
        event_id: str | None,
    ) -> None:
        """Check, then apply, new settings; new audio settings start a fresh buffer."""
        if (
            audio_format is not None
            and audio_format.type == "audio/pcm"
            and audio_format.sample_rate not in PCM_RATES
        ):
            raise protocol.unsupported_format(
                f"audio/pcm at {audio_format.sample_rate} Hz", event_id
            )
        if model is not None:
            await self._use_model(model, event_id)
        if language is not None:
            assert self.model is not None
            try:
                await self.model.language_name(language)
            except ApiError as exc:
                raise ProtocolError(
                    exc.code, exc.message, param="language", event_id=event_id
                ) from None
            self.language = language
        if prompt is not None:
            self.prompt = prompt
        if audio_format is not None or vad != self.vad:
            self.audio_format = audio_format or self.audio_format
            self.vad = vad
            await self._new_audio()

    async def _use_model(self, requested: str | None, event_id: str | None = None) -> None:
        """Transcribe with the model ``requested`` names.

        None: the first streaming model, else the first that transcribes.
        """
        try:
            if requested is None:  # a streaming model first: it sends words as they come
                model = await self.models.streaming() or await self.models.for_task(TRANSCRIBE)
            else:
                model = await self.models.named(requested, TRANSCRIBE)
            await model.check_task(TRANSCRIBE)
            info = await model.info()
        except ApiError as exc:
            raise ProtocolError(exc.code, exc.message, param="model", event_id=event_id) from None
        changed = self.audio is None or info.sample_rate != self.audio.model_rate
        await self._drop_stream()
        self.model, self.model_name = model, info.tag
        self.streaming = info.streaming
        if changed:
            await self._new_audio()

    async def _new_audio(self) -> None:
        """A fresh audio buffer with the session's format, model rate and VAD."""
        assert self.model is not None
        rate = (await self.model.info()).sample_rate
        self.audio = await anyio.to_thread.run_sync(
            lambda: AudioTurns(self.audio_format, rate, self.vad)
        )
        await self._drop_stream()
        self._open_item = None
        self.started = time.monotonic()

    def _session_object(self) -> dict[str, Any]:
        """The effective session, as ``session.created`` / ``session.updated`` carry it."""
        return {
            "type": "transcription",
            "id": self.id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": {
                        "type": self.audio_format.type,
                        "rate": self.audio_format.sample_rate,
                    },
                    "transcription": {
                        "model": self.model_name,
                        "language": self.language,
                        "prompt": self.prompt,
                    },
                    "turn_detection": self.vad.model_dump() if self.vad else None,
                    "noise_reduction": None,
                }
            },
            "include": [],
        }

    def _beta_object(self) -> dict[str, Any]:
        """The effective session in the beta shape (``transcription_session.updated``)."""
        names = {value: key for key, value in protocol.BETA_FORMATS.items()}
        return {
            "id": self.id,
            "object": "realtime.transcription_session",
            "input_audio_format": names[self.audio_format.type],
            "input_audio_transcription": {
                "model": self.model_name,
                "language": self.language,
                "prompt": self.prompt,
            },
            "turn_detection": self.vad.model_dump() if self.vad else None,
        }

    # --- transcripts out ---------------------------------------------------------------------

    def _open_stream(self, item: str | None) -> None:
        """Start streaming a new utterance (its item) to the model."""
        assert self.audio is not None and item is not None
        self._streamed = _Streamed(
            protocol.new_id("stream"), item, StreamChunker(self.audio.model_rate)
        )

    async def _stream_audio(self, samples: np.ndarray) -> None:
        """Send the utterance's next chunk once enough is held; a delta if its text grew."""
        streamed = self._streamed
        if streamed is None or streamed.failure is not None:
            return
        chunk = streamed.chunker.add(samples)
        if chunk is None:
            return
        assert self.model is not None
        try:
            answer = await self.model.client.stream(
                StreamChunk(stream_id=streamed.id, samples=chunk, final=False)
            )
        except ApiError as exc:
            streamed.failure = (exc.code, exc.message)
            return
        if answer.failure is not None:
            streamed.failure = (answer.failure.code, answer.failure.message)
            return
        delta = _extension(streamed.sent, answer.text)
        if delta:
            streamed.sent = answer.text
            await self._send(self._delta(streamed.item, delta))

    async def _finish_stream(
        self, streamed: _Streamed, item: str, turn: AudioSegment
    ) -> list[dict[str, Any]]:
        """The utterance's final chunk: its last delta (if the text grew) and transcript."""
        assert self.model is not None
        if streamed.failure is None:
            try:
                answer = await self.model.client.stream(
                    StreamChunk(stream_id=streamed.id, samples=streamed.chunker.final(), final=True)
                )
            except ApiError as exc:
                streamed.failure = (exc.code, exc.message)
            else:
                if answer.failure is not None:
                    streamed.failure = (answer.failure.code, answer.failure.message)
        if streamed.failure is not None:
            await self._close_model_stream(streamed.id)
            return [self._failed(item, *streamed.failure)]
        get_metrics().requests.labels(REALTIME_ROUTE, "ok").inc()
        delta = _extension(streamed.sent, answer.text)
        events = [self._delta(item, delta)] if delta else []
        return [*events, self._completed(item, answer.text, turn)]

    async def _drop_stream(self) -> None:
        """Give up the utterance being streamed, if any (the model forgets its stream)."""
        streamed, self._streamed = self._streamed, None
        if streamed is not None:
            await self._close_model_stream(streamed.id)

    async def _close_model_stream(self, stream_id: str) -> None:
        if self.model is not None:
            with contextlib.suppress(ApiError):
                await self.model.client.close_stream(StreamClose(stream_id=stream_id))

    def _delta(self, item: str, text: str) -> dict[str, Any]:
        return server_event(
            "conversation.item.input_audio_transcription.delta",
            item_id=item,
            content_index=0,
            delta=text,
        )

    def _completed(self, item: str, text: str, turn: AudioSegment) -> dict[str, Any]:
        seconds = round(len(turn.samples) / self.audio.model_rate, 3) if self.audio else 0.0
        return server_event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item,
            content_index=0,
            transcript=text,
            usage={"type": "duration", "seconds": seconds},
        )

    async def _transcribe(self, item: str, turn: AudioSegment) -> list[dict[str, Any]]:
        """The events of one utterance's transcript (or of its failure)."""
        assert self.model is not None
        request = SegmentRequest.of(
            turn, options=DecodeOptions(language=self.language, prompt=self.prompt)
        )
        try:
            outcome = (await self.model.client.decode(request)).outcome()
        except ApiError as exc:
            return [self._failed(item, exc.code, exc.message)]
        if isinstance(outcome, SegmentDecodeError):
            return [self._failed(item, outcome.code, str(outcome))]
        get_metrics().requests.labels(REALTIME_ROUTE, "ok").inc()
        return [self._delta(item, outcome.text), self._completed(item, outcome.text, turn)]

    def _failed(self, item: str, code: str, message: str) -> dict[str, Any]:
        get_metrics().requests.labels(REALTIME_ROUTE, "error").inc()
        get_metrics().errors.labels(code).inc()
        return server_event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item,
            content_index=0,
            error={"type": "transcription_error", "code": code, "message": message},
        )

    async def _send_transcripts(self) -> None:
        """Send each utterance's transcript events, in commit order, as they are ready."""
        while True:
            task = await self._transcripts.get()
            if task is None:
                return
            for event in await task:
                await self._send(event)

    async def _finish(self, code: int, reason: str) -> None:
        """Close the utterance in progress, send every transcript owed, then close."""
        for turn in await self._commit_audio():
            await self._close_turn(turn)
        await self._transcripts.put(None)
        assert self._sender is not None
        await self._sender
        await self._close(code, reason)

    async def _send(self, event: dict[str, Any]) -> None:
        """Send one event (a client that does not take it in time ends the session)."""
        async with self._send_lock:
            await asyncio.wait_for(
                self.websocket.send_text(json.dumps(event)), SEND_TIMEOUT_SECONDS
            )

    async def _fail(self, error: ProtocolError) -> None:
        """Send the error event (counted by its code), then close with its code."""
        get_metrics().errors.labels(error.code).inc()
        with contextlib.suppress(Exception):
            await self._send(protocol.error_event(error))
        await self._close(error.close_code or protocol.CLOSE_POLICY, error.code)

    async def _close(self, code: int, reason: str) -> None:
        if self.websocket.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code, reason=reason)


def _extension(sent: str, text: str) -> str:
    """What ``text`` adds to the text already sent as deltas ("" unless it extends it)."""
    if len(text) > len(sent) and text.startswith(sent):
        return text[len(sent) :]
    return ""
