"""The HTTP wire: requests (OpenAI's, and ours for enhancement), responses, errors.

Requests are validated here, in one place (:class:`TranscriptionForm`,
:class:`TranslationForm`, :class:`SpeechRequest`, :class:`EnhancementForm`): types and
ranges by pydantic (422 when they are wrong), options that do not go together and
language codes that do not exist by :class:`InvalidOptionError` (400, as OpenAI answers
them). What depends on the served model (its name, its tasks, its languages, word
timing, voices) is checked by the request handler.
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from espnet_serve.audio.encode import FORMATS, TRACK_FORMATS, UNSUPPORTED_FORMATS
from espnet_serve.executors.base import DEFAULT_TARGET_LANGUAGE
from espnet_serve.languages import language_name
from espnet_serve.pipeline.types import Segment, Word

SEEK_FRAMES_PER_SECOND = 100  # Whisper's seek unit: 10 ms mel frames


class InvalidOptionError(Exception):
    """A request whose options cannot be served as asked (400 ``code``, naming ``param``)."""

    def __init__(self, message: str, *, param: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class ResponseFormat(StrEnum):
    """``response_format`` values of ``/v1/audio/transcriptions`` that we support."""

    JSON = "json"
    TEXT = "text"
    VERBOSE_JSON = "verbose_json"
    SRT = "srt"
    VTT = "vtt"


class TimestampGranularity(StrEnum):
    """``timestamp_granularities[]`` values (``verbose_json`` only)."""

    WORD = "word"
    SEGMENT = "segment"


def iso_639_1(language: str, *, param: str) -> str:
    """``language`` in lower case, if it is an ISO-639-1 code.

    Raises:
        InvalidOptionError: ``invalid_language`` (400), naming ``param``.
    """
    if language_name(language) is None:
        raise InvalidOptionError(
            f"{param} {language!r} is not an ISO-639-1 code (e.g. 'en', 'de').",
            param=param,
            code="invalid_language",
        )
    return language.lower()


class AudioForm(BaseModel):
    """The form fields both audio routes take (besides ``file``).

    ``model`` must name the served model. ``prompt`` goes to a model that takes a text
    prompt (OWSM's previous text); other models accept it and decode as the bundle says,
    as they do with ``temperature``. ``srt``/``vtt`` give subtitles, ``verbose_json``
    timed segments.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: str
    response_format: ResponseFormat = ResponseFormat.JSON
    prompt: str | None = None
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)

    @property
    def timed(self) -> bool:
        """Whether the response carries times that need the words aligned (``verbose_json``)."""
        return self.response_format is ResponseFormat.VERBOSE_JSON


class TranslationForm(AudioForm):
    """The form fields of ``POST /v1/audio/translations``: OpenAI's, into English.

    ``target_language`` (ours, not OpenAI's: the SDK sends it with ``extra_body``) asks for
    another language a translation model writes (ISO-639-1).
    """

    target_language: str = DEFAULT_TARGET_LANGUAGE

    @field_validator("target_language")
    @classmethod
    def _target_iso_639_1(cls, language: str) -> str:
        return iso_639_1(language, param="target_language")


class TranscriptionForm(AudioForm):
    """The form fields of ``POST /v1/audio/transcriptions`` (besides ``file``).

    Those of :class:`AudioForm`, and: ``language`` must be an ISO-639-1 code the
    model takes; ``verbose_json`` gives words with ``timestamp_granularities[]=word``;
    ``stream=true`` sends server-sent events.
    """

    language: str | None = None
    stream: bool = False
    timestamp_granularities: list[TimestampGranularity] | None = Field(
        default=None, alias="timestamp_granularities[]"
    )

    @field_validator("language")
    @classmethod
    def _iso_639_1(cls, language: str | None) -> str | None:
        return None if language is None else iso_639_1(language, param="language")

    @model_validator(mode="after")
    def _options_go_together(self) -> TranscriptionForm:
        if self.words and self.response_format is not ResponseFormat.VERBOSE_JSON:
            raise InvalidOptionError(
                "timestamp_granularities[] needs response_format=verbose_json.",
                param="timestamp_granularities[]",
            )
        if self.stream and self.response_format not in (ResponseFormat.JSON, ResponseFormat.TEXT):
            raise InvalidOptionError(
                f"stream=true sends text events; response_format "
                f"{self.response_format.value} cannot be streamed (use json or text).",
                param="stream",
            )
        return self

    @property
    def words(self) -> bool:
        """Whether word times were asked for."""
        return TimestampGranularity.WORD in (self.timestamp_granularities or [])


class TranscribeResponse(BaseModel):
    """Response of ``POST /transcribe``."""

    text: str
    duration_seconds: float
    model: str


class TranscriptionResponse(BaseModel):
    """OpenAI ``response_format=json``."""

    text: str


class TranscriptionSegment(BaseModel):
    """One segment of an OpenAI ``verbose_json`` response: one voice-activity segment.

    ``seek`` is the start in 10 ms frames (Whisper counts its mel frames the same
    way); ``tokens`` the model's token ids of ``text``; ``avg_logprob`` the mean CTC
    log-probability of the frames the tokens align to; ``compression_ratio`` Whisper's
    (text bytes over zlib-compressed bytes); ``no_speech_prob`` one minus the mean
    voice-activity probability; ``temperature`` always 0 (decoding is deterministic).
    """

    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0

    @classmethod
    def of(cls, segment: Segment) -> TranscriptionSegment:
        """The wire form of a decoded segment."""
        return cls(
            id=segment.id,
            seek=round(segment.start * SEEK_FRAMES_PER_SECOND),
            start=segment.start,
            end=segment.end,
            text=segment.text,
            tokens=list(segment.tokens),
            avg_logprob=segment.avg_logprob,
            compression_ratio=segment.compression_ratio,
            no_speech_prob=segment.no_speech_prob,
        )


class DurationUsage(BaseModel):
    """OpenAI's usage of a transcription billed by duration."""

    type: Literal["duration"] = "duration"
    seconds: float


class VerboseTranscriptionResponse(BaseModel):
    """OpenAI ``response_format=verbose_json``."""

    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    words: list[Word] | None = Field(
        default=None, description="With ``timestamp_granularities[]=word``."
    )
    usage: DurationUsage | None = None


class VerboseTranslationResponse(BaseModel):
    """OpenAI ``response_format=verbose_json`` of a translation (``language``: the output's)."""

    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]


class TextDeltaEvent(BaseModel):
    """A ``stream=true`` event: more text (one segment's)."""

    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TextDoneEvent(BaseModel):
    """The last ``stream=true`` event: the whole text."""

    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str


class ModelObject(BaseModel):
    """One model of ``GET /v1/models``: OpenAI's model object, with its family and tasks."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "espnet-serve"
    family: str = Field(description="The espnet2 model family (asr, asr_transducer, ...).")
    tasks: list[str] = Field(
        description="What the model does on this server: transcribe (/v1/audio/transcriptions), "
        "translate (/v1/audio/translations), synthesize (/v1/audio/speech), enhance "
        "(/v1/audio/enhancements)."
    )
    languages: list[str] = Field(description="ISO-639-1 codes of the speech it takes, if known.")
    target_languages: list[str] = Field(
        description="ISO-639-1 codes a translation model writes, if known."
    )
    voices: list[str] = Field(
        default_factory=list, description="A speech model's voices, its default first."
    )
    tracks: int = Field(
        default=0, description="Tracks an enhancement model returns (speakers it separates)."
    )


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelObject]


class ErrorDetail(BaseModel):
    """The body of an error, in OpenAI's shape."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None
    error_id: str | None = Field(
        default=None, description="For a 500: the id of the server log line with the details."
    )
    request_id: str | None = Field(default=None, description="The request's X-Request-ID.")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx response body: ``{"error": {...}}``."""

    error: ErrorDetail


MAX_SPEECH_INPUT_CHARS = 4096  # OpenAI's limit on /v1/audio/speech's input
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's range of speed
# OpenAI's voice names: each selects the model's default voice (unless it has one so named).
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer"}
    | {"verse", "marin", "cedar"}
)
# Unicode categories no voice speaks: control characters (bar line breaks and tabs),
# private-use, surrogate and unassigned code points, and symbols such as emoji.
UNSPEAKABLE_CATEGORIES = frozenset({"Cc", "Co", "Cs", "Cn", "So"})
SPOKEN_CONTROLS = frozenset("\t\n\r")


class SpeechRequest(BaseModel):
    """OpenAI's ``POST /v1/audio/speech`` body (JSON).

    ``instructions`` is accepted and ignored: ESPnet's models take no style prompt.
    """

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str = Field(description=f"The text to speak (at most {MAX_SPEECH_INPUT_CHARS} chars).")
    voice: str | None = Field(
        default=None,
        description="One of the model's voices (GET /v1/models); OpenAI's names (alloy, ...) "
        "give its default voice.",
    )
    response_format: str = Field(default="mp3", description="mp3, opus, flac, wav or pcm.")
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    instructions: str | None = None
    stream_format: str = Field(default="audio", description="audio (sse is not served).")

    @field_validator("input")
    @classmethod
    def _speakable(cls, text: str) -> str:
        if not text.strip():
            raise InvalidOptionError("input is empty: give the text to speak.", param="input")
        if len(text) > MAX_SPEECH_INPUT_CHARS:
            raise InvalidOptionError(
                f"input has {len(text)} characters; the limit is {MAX_SPEECH_INPUT_CHARS}. "
                "Split the text into several requests.",
                param="input",
            )
        found = sorted(
            {
                char
                for char in text
                if unicodedata.category(char) in UNSPEAKABLE_CATEGORIES
                and char not in SPOKEN_CONTROLS
            }
        )
        if found:
            named = ", ".join(f"U+{ord(char):04X}" for char in found[:5])
            raise InvalidOptionError(
                f"input holds characters no voice can speak ({named}"
                f"{', ...' if len(found) > 5 else ''}): control characters, symbols such as "
                "emoji, or unassigned code points. Remove them.",
                param="input",
            )
        return text

    @field_validator("response_format")
    @classmethod
    def _known_format(cls, name: str) -> str:
        if name not in FORMATS:
            served = ", ".join(FORMATS)
            why = "has no encoder here" if name in UNSUPPORTED_FORMATS else "is not a format"
            raise InvalidOptionError(
                f"response_format {name!r} {why}; choose one of: {served}.",
                param="response_format",
            )
        return name

    @field_validator("stream_format")
    @classmethod
    def _audio_stream(cls, name: str) -> str:
        if name != "audio":
            raise InvalidOptionError(
                f"stream_format {name!r} is not served: the audio itself is streamed "
                "(stream_format 'audio').",
                param="stream_format",
            )
        return name


class EnhancementForm(BaseModel):
    """The form fields of ``POST /v1/audio/enhancements`` (beside ``file``)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    response_format: str = Field(
        default="wav", description="wav or flac: one file, a channel per track (speaker)."
    )

    @field_validator("response_format")
    @classmethod
    def _track_format(cls, name: str) -> str:
        if name not in TRACK_FORMATS:
            raise InvalidOptionError(
                f"response_format {name!r} cannot hold several tracks here; choose one of: "
                f"{', '.join(TRACK_FORMATS)}.",
                param="response_format",
            )
        return name
