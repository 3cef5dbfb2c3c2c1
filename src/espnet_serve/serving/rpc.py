"""What the API service and the model service exchange (BentoML calls between them).

One :class:`SegmentRequest` per audio segment goes to the model service's batcher;
one :class:`SegmentResult` comes back: the decoded :class:`Segment`, in recording
time, or the error that segment met. A synthesis sends one :class:`SynthesisRequest`
per sentence and gets its samples back in a :class:`SynthesisResult`; an enhancement
sends the whole recording (:class:`EnhanceRequest`) and gets its tracks back.
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Annotated

import numpy as np
from bentoml.validators import TensorSchema
from pydantic import BaseModel, ConfigDict, Field

from espnet_serve.audio.segmenter import AudioSegment
from espnet_serve.executors.base import DecodeOptions
from espnet_serve.pipeline.types import DECODE_FAILED, Outcome, Segment, SegmentDecodeError

AUDIO_FIELDS = fields(AudioSegment)


class SegmentRequest(BaseModel):
    """One audio segment to decode: an :class:`AudioSegment`'s fields and its request's options."""

    samples: Annotated[np.ndarray, TensorSchema("numpy-array", "float32", None)]
    index: int = 0
    start: float = 0.0
    end: float = 0.0
    offset: float = 0.0
    no_speech_prob: float = 0.0
    words: bool = Field(default=False, description="Also time the words (CTC forced alignment).")
    options: DecodeOptions = Field(
        default_factory=DecodeOptions, description="The request's task, languages and prompt."
    )
    sent_at: float = Field(
        default_factory=time.time, description="time.time() when the API service sent it."
    )

    @classmethod
    def of(
        cls,
        segment: AudioSegment,
        *,
        words: bool = False,
        options: DecodeOptions | None = None,
    ) -> SegmentRequest:
        """The request for ``segment``, with its request's options."""
        return cls(**vars(segment), words=words, options=options or DecodeOptions())

    def audio_segment(self) -> AudioSegment:
        """The audio segment again, on the model service's side."""
        return AudioSegment(**{field.name: getattr(self, field.name) for field in AUDIO_FIELDS})


class SegmentFailure(BaseModel):
    """Why a segment was not decoded (see :class:`SegmentDecodeError`)."""

    code: str
    message: str


class SegmentResult(BaseModel):
    """The model service's answer for one segment: the segment or its failure, never both."""

    segment: Segment | None = None
    failure: SegmentFailure | None = None

    @classmethod
    def of(cls, outcome: Outcome) -> SegmentResult:
        """The result of one decoded segment (or its error)."""
        if isinstance(outcome, SegmentDecodeError):
            return cls(failure=SegmentFailure(code=outcome.code, message=str(outcome)))
        return cls(segment=outcome)

    def outcome(self) -> Outcome:
        """The decoded segment, or the error it met, as the pipeline gave it."""
        if self.segment is not None:
            return self.segment
        failure = self.failure or SegmentFailure(code=DECODE_FAILED, message="no result")
        return SegmentDecodeError(failure.message, code=failure.code)


class SynthesisRequest(BaseModel):
    """One sentence to speak, with its request's voice and speed (already checked)."""

    text: str
    voice: str | None = Field(default=None, description="A voice of the model (None: default).")
    speed: float = 1.0
    sent_at: float = Field(
        default_factory=time.time, description="time.time() when the API service sent it."
    )


class SynthesisResult(BaseModel):
    """The model service's answer for one sentence: its samples or its failure."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    samples: bytes = Field(default=b"", description="Mono float32, little-endian.")
    failure: SegmentFailure | None = None

    @classmethod
    def of(cls, samples: np.ndarray) -> SynthesisResult:
        """The result holding ``samples``."""
        return cls(samples=np.asarray(samples, dtype="<f4").tobytes())

    def waveform(self) -> np.ndarray:
        """The samples as a float32 array."""
        return np.frombuffer(self.samples, dtype="<f4").astype(np.float32)


class EnhanceRequest(BaseModel):
    """One recording to enhance or separate, at the model's rate."""

    samples: Annotated[np.ndarray, TensorSchema("numpy-array", "float32", None)]
    sent_at: float = Field(
        default_factory=time.time, description="time.time() when the API service sent it."
    )


class EnhanceResult(BaseModel):
    """The model service's answer for one recording: its tracks or its failure."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    tracks: list[bytes] = Field(
        default_factory=list, description="One per speaker: mono float32, little-endian."
    )
    failure: SegmentFailure | None = None

    @classmethod
    def of(cls, tracks: list[np.ndarray]) -> EnhanceResult:
        """The result holding ``tracks``."""
        return cls(tracks=[np.asarray(t, dtype="<f4").tobytes() for t in tracks])

    def waveforms(self) -> np.ndarray:
        """The tracks as a ``(samples, tracks)`` float32 array."""
        return np.stack([np.frombuffer(t, dtype="<f4") for t in self.tracks], axis=1)


class ModelInfo(BaseModel):
    """What the model service serves."""

    name: str
    version: str
    sha256: str
    sample_rate: int
    min_samples: int = Field(default=0, description="Shortest input the model decodes.")
    languages: list[str] = Field(default_factory=list, description="ISO-639-1 codes, if known.")
    target_languages: list[str] = Field(
        default_factory=list, description="ISO-639-1 codes a translation model writes, if known."
    )
    created: int = Field(default=0, description="When the model was imported (Unix time).")
    word_timestamps: bool = Field(
        default=False, description="Whether the model can time words (it has a CTC head)."
    )
    family: str = Field(description="The model's family (its executor).")
    tasks: list[str] = Field(description="What the model does (transcribe, translate, synthesize).")
    voices: list[str] = Field(
        default_factory=list, description="A synthesis model's voices, its default first."
    )
    speed_control: bool = Field(
        default=False, description="Whether a synthesis model can change its speaking rate."
    )
    tracks: int = Field(
        default=0, description="Tracks an enhancement model returns (speakers separated)."
    )
    streaming: bool = Field(
        default=False,
        description="Whether realtime sessions get hypotheses block by block (a streaming model).",
    )

    @property
    def tag(self) -> str:
        """The model-store tag, the model's id on ``/v1/models``."""
        return f"{self.name}:{self.version}"


class StreamChunk(BaseModel):
    """The next chunk of a realtime stream (one utterance), at the model's rate."""

    stream_id: str
    samples: Annotated[np.ndarray, TensorSchema("numpy-array", "float32", None)]
    final: bool = Field(default=False, description="The utterance's last chunk.")


class StreamText(BaseModel):
    """A stream's best hypothesis so far (its transcript once final), or why it failed."""

    text: str = ""
    final: bool = False
    failure: SegmentFailure | None = None


class StreamClose(BaseModel):
    """A stream its session gives up (the session ended before the utterance did)."""

    stream_id: str


class Readiness(BaseModel):
    """Whether the model service is ready, and why not."""

    ready: bool
    reason: str = ""
