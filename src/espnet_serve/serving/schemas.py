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


class ClipRequest(BaseModel):
    """One decoded clip sent from the API service to the model service."""

    audio: Annotated[np.ndarray, TensorSchema("numpy-array", "float32", None)]
    sent_at: float = Field(description="time.time() when the API service sent the clip.")


class ClipResult(BaseModel):
    """The model service's answer for one clip: a transcript or an error, never both."""

    text: str | None = None
    error_kind: str | None = None
    error: str | None = None
    client_error: bool = Field(
        default=False, description="True when the clip itself was bad (4xx), else a fault (5xx)."
    )


class ModelInfo(BaseModel):
    """What the model service serves."""

    name: str
    version: str
    sha256: str
    sample_rate: int
    min_samples: int = Field(default=0, description="Shortest input the model decodes.")
    languages: list[str] = Field(default_factory=list, description="ISO-639-1 codes, if known.")
    created: int = Field(default=0, description="When the model was imported (Unix time).")

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
    """One segment of an OpenAI ``verbose_json`` response (we emit one per clip)."""

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


class VerboseTranscriptionResponse(BaseModel):
    """OpenAI ``response_format=verbose_json``."""

    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]


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
