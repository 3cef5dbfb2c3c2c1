"""Typed wire models: API responses, errors, and the API-to-model-service messages."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

import numpy as np
from bentoml.validators import TensorSchema
from pydantic import BaseModel, Field

from espnet_serve.serving.request_id import current_request_id


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


class TimedWordModel(BaseModel):
    """One word and its time in seconds (OpenAI's ``TranscriptionWord``)."""

    word: str
    start: float
    end: float


class ClipRequest(BaseModel):
    """One decoded clip sent from the API service to the model service."""

    audio: Annotated[np.ndarray, TensorSchema("numpy-array", "float32", None)]
    sent_at: float = Field(description="time.time() when the API service sent the clip.")
    align: bool = Field(
        default=False, description="Also time the transcript's words (CTC forced alignment)."
    )


class ClipResult(BaseModel):
    """The model service's answer for one clip: a transcript or an error, never both."""

    text: str | None = None
    error_kind: str | None = None
    error: str | None = None
    client_error: bool = Field(
        default=False, description="True when the clip itself was bad (4xx), else a fault (5xx)."
    )
    words: list[TimedWordModel] | None = Field(
        default=None, description="With ``align``: each word's time from the clip's start."
    )
    token_ids: list[int] = Field(default_factory=list, description="With ``align``.")
    avg_logprob: float = Field(default=0.0, description="With ``align``: mean CTC log-prob.")


class ModelInfo(BaseModel):
    """What the model service serves."""

    name: str
    version: str
    sha256: str
    sample_rate: int
    min_samples: int = Field(default=0, description="Shortest input the model decodes.")
    languages: list[str] = Field(default_factory=list, description="ISO-639-1 codes, if known.")
    created: int = Field(default=0, description="When the model was imported (Unix time).")
    word_timestamps: bool = Field(
        default=False, description="Whether the model can time words (it has a CTC head)."
    )

    @property
    def tag(self) -> str:
        """The model-store tag, the model's id on ``/v1/models``."""
        return f"{self.name}:{self.version}"


class Readiness(BaseModel):
    """Whether the model service is ready, and why not."""

    ready: bool
    reason: str = ""


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
    words: list[TimedWordModel] | None = Field(
        default=None, description="With ``timestamp_granularities[]=word``."
    )
    usage: DurationUsage | None = None


class TextDeltaEvent(BaseModel):
    """A ``stream=true`` event: more text (one segment's)."""

    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TextDoneEvent(BaseModel):
    """The last ``stream=true`` event: the whole text."""

    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str


class ModelObject(BaseModel):
    """One model of ``GET /v1/models`` (OpenAI's model object)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "espnet-serve"


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
    request_id: str | None = Field(
        default_factory=current_request_id, description="The request's X-Request-ID."
    )


class ErrorResponse(BaseModel):
    """Every 4xx/5xx response body: ``{"error": {...}}``."""

    error: ErrorDetail
