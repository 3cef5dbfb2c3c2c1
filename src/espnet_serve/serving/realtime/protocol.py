"""The wire of ``/v1/realtime``: OpenAI's Realtime transcription session, as events.

Client events are validated here (:func:`parse_client_event`); what we implement:

- ``session.update`` with a ``transcription`` session (the GA shape the openai SDK sends),
  and the beta ``transcription_session.update`` (``input_audio_format``,
  ``input_audio_transcription``, ``turn_detection``), mapped onto the same settings;
- ``input_audio_buffer.append`` (base64 audio), ``.commit`` and ``.clear``.

Refused with an ``error`` event: a ``realtime`` (conversation) session, ``semantic_vad``
turn detection, and every other client event (``response.create``, ``conversation.item.*``,
...): a transcription session has no responses or conversation to act on. Noise reduction,
``include`` (log probabilities) and the transcription ``prompt`` are accepted and ignored.

Server events are built by the functions at the end, each with a fresh ``event_id``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

DEFAULT_RATE = 24000  # OpenAI's PCM rate (the only one it takes)
G711_RATE = 8000
# Rates of ``audio/pcm`` we also take, so that a client can send audio at the model's rate.
PCM_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}


class ProtocolError(Exception):
    """A client event we cannot act on: an ``error`` event, then maybe a close.

    Args:
        code: OpenAI's error ``code`` (``invalid_event``, ``unsupported_audio_format``, ...).
        message: Plain words for the client.
        param: The event field at fault, if any.
        event_id: The client's ``event_id`` of the event at fault, if it gave one.
        close_code: WebSocket close code to end the session with; None keeps it open.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.close_code = close_code


# WebSocket close codes (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server drains (SIGTERM)
CLOSE_UNSUPPORTED_DATA = 1003  # a binary frame, an audio format we cannot decode
CLOSE_INVALID_PAYLOAD = 1007  # not JSON, not an event, bad base64
CLOSE_POLICY = 1008  # audio faster than real time past the bound, an idle session
CLOSE_TOO_BIG = 1009  # more audio without a commit than a turn may hold
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013  # too many sessions


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_id: str | None = None


class AudioFormat(BaseModel):
    """``audio.input.format``: ``audio/pcm`` (16-bit little-endian mono) or G.711 at 8 kHz."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = None

    @property
    def sample_rate(self) -> int:
        """Samples per second of the audio the client appends."""
        if self.type != "audio/pcm":
            return G711_RATE
        return self.rate or DEFAULT_RATE


class ServerVad(BaseModel):
    """``turn_detection`` of type ``server_vad``: the server closes each utterance."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=2000)
    silence_duration_ms: int = Field(default=500, ge=100, le=10000)


class Transcription(BaseModel):
    """``audio.input.transcription``: the served model (a name or alias) and its language."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class AudioInput(BaseModel):
    """``audio.input`` of a transcription session."""

    model_config = ConfigDict(extra="ignore")

    format: AudioFormat | None = None
    transcription: Transcription | None = None
    # Raw: null turns server VAD off (the client commits); see :func:`turn_detection`.
    turn_detection: dict[str, Any] | None = None
    noise_reduction: Any = None


class SessionAudio(BaseModel):
    """``audio`` of a transcription session."""

    model_config = ConfigDict(extra="ignore")

    input: AudioInput | None = None


class TranscriptionSession(BaseModel):
    """The ``session`` of a ``session.update`` (``type: transcription``)."""

    model_config = ConfigDict(extra="ignore")

    type: str = "transcription"
    audio: SessionAudio | None = None
    include: list[str] | None = None


class SessionUpdate(_Event):
    """``session.update``: the session's settings (GA)."""

    type: Literal["session.update"]
    session: TranscriptionSession


class BetaTranscriptionSession(BaseModel):
    """The beta ``transcription_session.update``'s session (flat fields)."""

    model_config = ConfigDict(extra="ignore")

    input_audio_format: str | None = None
    input_audio_transcription: Transcription | None = None
    turn_detection: dict[str, Any] | None = None
    input_audio_noise_reduction: Any = None


class BetaSessionUpdate(_Event):
    """``transcription_session.update``: the session's settings (beta)."""

    type: Literal["transcription_session.update"]
    session: BetaTranscriptionSession


class AppendAudio(_Event):
    """``input_audio_buffer.append``: base64 audio in the session's format."""

    type: Literal["input_audio_buffer.append"]
    audio: str


class CommitAudio(_Event):
    """``input_audio_buffer.commit``: the audio so far is an utterance."""

    type: Literal["input_audio_buffer.commit"]


class ClearAudio(_Event):
    """``input_audio_buffer.clear``: drop the audio not yet committed."""

    type: Literal["input_audio_buffer.clear"]


ClientEvent = SessionUpdate | BetaSessionUpdate | AppendAudio | CommitAudio | ClearAudio
_CLIENT_EVENT: TypeAdapter[ClientEvent] = TypeAdapter(
    Annotated[ClientEvent, Field(discriminator="type")]
)
_KNOWN_TYPES = frozenset(
    {"session.update", "transcription_session.update"}
    | {f"input_audio_buffer.{verb}" for verb in ("append", "commit", "clear")}
)


def parse_client_event(text: str) -> ClientEvent:
    """The client event in a text frame.

    Raises:
        ProtocolError: ``invalid_event`` (then close 1007) for text that is not a JSON
            object with a known ``type`` and valid fields; ``unsupported_event`` (the
            session stays open) for an event type of the Realtime API we do not serve.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "invalid_event", f"The message is not JSON: {exc}.", close_code=CLOSE_INVALID_PAYLOAD
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("type"), str):
        raise ProtocolError(
            "invalid_event",
            "An event must be a JSON object with a string 'type'.",
            param="type",
            close_code=CLOSE_INVALID_PAYLOAD,
        )
    event_id = document.get("event_id") if isinstance(document.get("event_id"), str) else None
    if document["type"] not in _KNOWN_TYPES:
        raise ProtocolError(
            "unsupported_event",
            f"Event type {document['type']!r} is not served: a transcription session takes "
            f"{', '.join(sorted(_KNOWN_TYPES))}.",
            param="type",
            event_id=event_id,
        )
    try:
        return _CLIENT_EVENT.validate_python(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:])
        raise ProtocolError(
            "invalid_event",
            f"Invalid {document['type']} event: {where}: {first['msg']}.",
            param=where or None,
            event_id=event_id,
            close_code=CLOSE_INVALID_PAYLOAD,
        ) from None


def decode_base64(audio: str, event_id: str | None) -> bytes:
    """The bytes of an ``input_audio_buffer.append``'s ``audio``.

    Raises:
        ProtocolError: ``invalid_audio`` (then close 1007) when it is not base64.
    """
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            "invalid_audio",
            "input_audio_buffer.append: 'audio' is not valid base64.",
            param="audio",
            event_id=event_id,
            close_code=CLOSE_INVALID_PAYLOAD,
        ) from None


def beta_format(name: str | None, event_id: str | None) -> AudioFormat | None:
    """The beta ``input_audio_format`` name as a format (None when not given).

    Raises:
        ProtocolError: ``unsupported_audio_format`` (then close 1003).
    """
    if name is None:
        return None
    if name not in BETA_FORMATS:
        raise unsupported_format(f"input_audio_format {name!r}", event_id)
    return AudioFormat(type=BETA_FORMATS[name])


def turn_detection(raw: dict[str, Any] | None, event_id: str | None) -> ServerVad | None:
    """``turn_detection`` as given: server VAD, or None (the client commits each utterance).

    Raises:
        ProtocolError: ``unsupported_turn_detection`` for ``semantic_vad`` or another type
            (the session stays open, its settings unchanged); ``invalid_event`` for bad
            server VAD fields (then close 1007).
    """
    if raw is None:
        return None
    kind = raw.get("type", "server_vad")
    if kind != "server_vad":
        raise ProtocolError(
            "unsupported_turn_detection",
            f"turn_detection {kind!r} is not served: use server_vad, or null to commit "
            "each utterance yourself.",
            param="session.audio.input.turn_detection",
            event_id=event_id,
        )
    try:
        return ServerVad.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ProtocolError(
            "invalid_event",
            f"turn_detection.{where}: {first['msg']}.",
            param=f"session.audio.input.turn_detection.{where}",
            event_id=event_id,
            close_code=CLOSE_INVALID_PAYLOAD,
        ) from None


def unsupported_format(what: str, event_id: str | None) -> ProtocolError:
    """The refusal of an audio format (then close 1003)."""
    return ProtocolError(
        "unsupported_audio_format",
        f"{what} is not served: send audio/pcm (16-bit little-endian mono; rate "
        f"{DEFAULT_RATE} or one of {sorted(PCM_RATES)}), audio/pcmu or audio/pcma "
        "(G.711 at 8 kHz).",
        param="session.audio.input.format",
        event_id=event_id,
        close_code=CLOSE_UNSUPPORTED_DATA,
    )


# --- server events ---------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """A fresh id such as ``event_...`` or ``item_...``."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    """A server event of type ``kind`` with a fresh ``event_id``."""
    return {"event_id": new_id("event"), "type": kind, **fields}


def error_event(error: ProtocolError) -> dict[str, Any]:
    """OpenAI's ``error`` event for ``error``."""
    return server_event(
        "error",
        error={
            "type": "invalid_request_error",
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": error.event_id,
        },
    )
