"""Fakes for control flow (never the only test of a capability): backends for
``InferenceSession``, and the model service for the in-process HTTP tests."""

from __future__ import annotations

from typing import Any

from espnet_serve.pipeline.types import Segment, Word
from espnet_serve.serving.model_client import call_model
from espnet_serve.serving.rpc import (
    ModelInfo,
    Readiness,
    SegmentFailure,
    SegmentRequest,
    SegmentResult,
    StreamChunk,
    StreamClose,
    StreamText,
)


class RecordingBackend:
    """Records its constructor kwargs and echoes inputs; rejects lists unless told to batch."""

    def __init__(self, device: str = "unset", batchable: bool = False, **options: Any) -> None:
        self.device = device
        self.batchable = batchable
        self.options = options
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **inputs: Any) -> Any:
        self.calls.append(inputs)
        (value, *_) = inputs.values()
        if isinstance(value, list):
            if not self.batchable:
                raise TypeError("RecordingBackend takes one sample per call")
            return [f"out:{v}" for v in value]
        return f"out:{value}"


class NoDeviceBackend:
    """A backend whose constructor takes no device."""

    def __init__(self, size: int = 1) -> None:
        self.size = size


class TwoInputBackend:
    """Joins two named inputs."""

    def __call__(self, *, speech: Any, text: Any) -> Any:
        if isinstance(speech, list):
            return [f"{s}|{t}" for s, t in zip(speech, text, strict=True)]
        return f"{speech}|{text}"


class SlotErrorBackend:
    """Batches lists, but reports a ``ValueError`` in the slot of each ``"bad"`` sample."""

    def __call__(self, *, speech: Any) -> Any:
        if not isinstance(speech, list):
            if speech == "bad":
                raise ValueError("cannot decode 'bad'")
            return f"out:{speech}"
        return [ValueError(f"cannot decode {s!r}") if s == "bad" else f"out:{s}" for s in speech]


class FakeModelClient:
    """The model service for in-process HTTP tests (control flow only; the real one is tested in
    ``test_service*.py``).

    Each segment is answered with its length, ``"<n> samples"``, and its own times, so a test
    sees what reached the model; or with a chosen ``SegmentFailure``; or not ready; or by
    raising the queued ``failures`` (through the real ``call_model``, as the service's client).
    """

    MIN_SAMPLES = 960

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.ready = Readiness(ready=True)
        self.failure: SegmentFailure | None = None
        self.fail_from_segment: int | None = None
        self.failures: list[BaseException] = []
        self.requests: list[SegmentRequest] = []
        self.tasks = ["transcribe"]
        self.languages = ["en"]
        self.target_languages: list[str] = []
        self.identified: str | None = None  # the language a multilingual model "identifies"
        self.streaming = False  # a streaming model: realtime sessions stream to :meth:`stream`
        self.chunks: list[StreamChunk] = []
        self.closed_streams: list[str] = []

    async def readiness(self) -> Readiness:
        return self.ready

    async def model_info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            version="v1",
            sha256="0" * 64,
            sample_rate=16000,
            min_samples=self.MIN_SAMPLES,
            languages=self.languages,
            created=1_700_000_000,
            word_timestamps=True,
            family="asr",
            tasks=self.tasks,
            target_languages=self.target_languages,
            streaming=self.streaming,
        )

    async def decode(self, request: SegmentRequest) -> SegmentResult:
        async def once() -> SegmentResult:
            if self.failures:
                raise self.failures.pop(0)
            self.requests.append(request)
            failing = self.fail_from_segment is not None and request.index >= self.fail_from_segment
            if self.failure is not None and (self.fail_from_segment is None or failing):
                return SegmentResult(failure=self.failure)
            segment = self.segment(request)
            return SegmentResult(
                segment=segment.model_copy(update={"language": self.language(request)})
            )

        return await call_model(once, what="decode", retry_after_seconds=1)

    async def stream(self, chunk: StreamChunk) -> StreamText:
        """One ``x`` per 1600 samples the stream has had so far (the text grows as it hears)."""
        self.chunks.append(chunk)
        heard = sum(len(c.samples) for c in self.chunks if c.stream_id == chunk.stream_id)
        return StreamText(text="x" * (heard // 1600), final=chunk.final)

    async def close_stream(self, request: StreamClose) -> None:
        self.closed_streams.append(request.stream_id)

    def language(self, request: SegmentRequest) -> str | None:
        """The request's language, else the one set to be "identified"."""
        return request.options.language or self.identified

    @staticmethod
    def segment(request: SegmentRequest) -> Segment:
        """``"<n> samples"`` at the request's times; with ``words``, one word per ``n``."""
        text = f"{len(request.samples)} samples"
        words = (
            (Word(word=text.split()[0], start=request.start, end=request.end),)
            if request.words
            else ()
        )
        return Segment(
            id=request.index,
            start=request.start,
            end=request.end,
            text=text,
            words=words,
            tokens=(1, 2) if request.words else (),
            avg_logprob=-0.5 if request.words else 0.0,
            no_speech_prob=request.no_speech_prob,
        )
