"""One upload in, timed segments out: the API service's transcription path.

The upload (spooled to disk by the multipart parser) is opened and its header
checked before anything else (:func:`espnet_serve.ingest.open_audio_stream`);
then, off the event loop, it is read block by block and cut into speech
segments (:class:`espnet_serve.longform.segmenter.Segmenter`), each sent to the
model service as its own clip. Up to ``max_batch_size`` segments of one upload
are in flight at once, so a long recording fills the model's batches by
itself, and the segments come back in order. Memory follows that window, not
the recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio.to_thread
from fastapi import UploadFile

from espnet_serve.ingest import (
    AudioStream,
    IngestLimits,
    check_content_type,
    check_length,
    open_audio_stream,
)
from espnet_serve.longform.align import Alignment, TimedWord
from espnet_serve.longform.segmenter import AudioSegment, Segmenter
from espnet_serve.longform.transcript import Segment, Transcript, make_segment
from espnet_serve.serving.http_errors import ServiceError, internal_error, model_unavailable
from espnet_serve.serving.languages import language_name
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.model_client import ModelClient
from espnet_serve.serving.schemas import ClipRequest, ClipResult, ModelInfo
from espnet_serve.serving.settings import ServeSettings


class OpenedUpload:
    """An upload whose header passed, read and segmented block by block (not thread-safe).

    Args:
        file: The upload's file (seekable).
        info: The served model (sample rate, shortest input).
        limits: What to accept.
    """

    def __init__(self, file: BinaryIO, info: ModelInfo, limits: IngestLimits) -> None:
        self._exit = contextlib.ExitStack()
        self._min_samples = info.min_samples
        self.stream: AudioStream = self._exit.enter_context(
            open_audio_stream(file, target_rate=info.sample_rate, limits=limits)
        )
        self._blocks = iter(self.stream)
        self._segmenter = Segmenter(
            info.sample_rate, declared_seconds=self.stream.info.declared_seconds
        )
        self.finished = False

    @property
    def duration_seconds(self) -> float:
        """Seconds of audio read so far (the whole duration once :attr:`finished`)."""
        return self.stream.samples_read / self.stream.target_rate

    def next_segments(self) -> list[AudioSegment]:
        """Read on until at least one segment is complete, or the end (then :attr:`finished`).

        Raises:
            AudioInputError: If the audio is refused while it is read.
        """
        for block in self._blocks:
            segments = self._segmenter.push(block)
            if segments:
                return segments
        self.finished = True
        check_length(self.stream.samples_read, self.stream.target_rate, self._min_samples)
        return self._segmenter.finish()

    def close(self) -> None:
        """Close the audio stream."""
        self._exit.close()


class Transcription:
    """Decodes uploads and transcribes them through the model client, counting the outcome.

    Args:
        settings: The service settings (limits, ``Retry-After``, batch size).
        client: The model service.
    """

    def __init__(self, settings: ServeSettings, client: ModelClient) -> None:
        self.settings = settings
        self.client = client
        self._info: ModelInfo | None = None

    async def info(self) -> ModelInfo:
        """The served model's info, fetched once it is ready (503 with the reason before)."""
        if self._info is None:
            readiness = await self.client.readiness()
            if not readiness.ready:
                raise model_unavailable(readiness.reason, self.settings.retry_after_seconds)
            self._info = await self.client.model_info()
        return self._info

    async def served_model(self, requested: str) -> ModelInfo:
        """The served model if ``requested`` names it (its tag, name or an alias), else 404."""
        info = await self.info()
        if requested in {info.tag, info.name, *self.settings.aliases()}:
            return info
        accepted = ", ".join(sorted({info.name, *self.settings.aliases()}))
        raise ServiceError(
            404,
            "model_not_found",
            f"The model {requested!r} does not exist: this server serves {info.tag!r} "
            f"(also accepted: {accepted}).",
        )

    async def check_language(self, language: str | None) -> str:
        """The full name of the language to report; 400 for a code the model cannot take."""
        info = await self.info()
        if language is None:
            return language_name(info.languages[0]) if info.languages else "unknown"
        name = language_name(language)
        if name is None:
            raise ServiceError(
                400,
                "invalid_language",
                f"language {language!r} is not an ISO-639-1 code (e.g. 'en', 'de').",
            )
        if info.languages and language.lower() not in info.languages:
            raise ServiceError(
                400,
                "unsupported_language",
                f"This model transcribes {', '.join(info.languages)} only, not {language!r}.",
            )
        return name

    async def check_word_timestamps(self) -> None:
        """400 when the served model cannot time words."""
        if not (await self.info()).word_timestamps:
            raise ServiceError(
                400,
                "word_timestamps_unsupported",
                "This model cannot give word timestamps (it has no CTC head).",
            )

    async def open(self, upload: UploadFile, route: str) -> OpenedUpload:
        """Check the declared type, size and header of ``upload`` (counted if refused)."""
        try:
            return await self._open(upload)
        except BaseException as exc:
            _count_failure(route, exc)
            raise

    async def _open(self, upload: UploadFile) -> OpenedUpload:
        check_content_type(upload.content_type)
        max_bytes = self.settings.max_audio_bytes
        if (upload.size or 0) > max_bytes:
            raise ServiceError(413, "audio_too_large", f"File is over {max_bytes} bytes.")
        info = await self.info()
        limits = IngestLimits(
            min_sample_rate=self.settings.min_sample_rate,
            max_sample_rate=self.settings.max_sample_rate,
            max_channels=self.settings.max_channels,
            max_seconds=self.settings.max_audio_seconds,
            min_samples=info.min_samples,
        )
        return await anyio.to_thread.run_sync(lambda: OpenedUpload(upload.file, info, limits))

    async def segments(
        self, opened: OpenedUpload, route: str, *, align: bool = False
    ) -> AsyncIterator[Segment]:
        """The upload's decoded segments, in order; the outcome is counted once at the end.

        Raises:
            ServiceError / AudioInputError: On the first failure (the rest is cancelled).
        """
        try:
            async for segment in self._decoded(opened, align):
                yield segment
        except BaseException as exc:
            _count_failure(route, exc)
            raise
        finally:
            opened.close()
        get_metrics().requests.labels(route, "ok").inc()

    async def transcript(
        self, upload: UploadFile, route: str, *, align: bool = False
    ) -> Transcript:
        """The whole transcript of ``upload`` (see :meth:`segments`)."""
        opened = await self.open(upload, route)
        segments = [s async for s in self.segments(opened, route, align=align)]
        return Transcript(segments=segments, duration=round(opened.duration_seconds, 3))

    async def _decoded(self, opened: OpenedUpload, align: bool) -> AsyncIterator[Segment]:
        """Segment off the event loop, decode concurrently, yield in order."""
        window = max(1, self.settings.max_batch_size)
        pending: deque[tuple[AudioSegment, asyncio.Task[ClipResult]]] = deque()
        try:
            while True:
                while not opened.finished and len(pending) < window:
                    for segment in await anyio.to_thread.run_sync(opened.next_segments):
                        pending.append((segment, asyncio.create_task(self._send(segment, align))))
                    if pending and pending[0][1].done():
                        break  # hand the first result on before reading further
                if not pending:
                    return
                segment, task = pending.popleft()
                yield _segment(segment, await task, align)
        finally:
            for _, task in pending:
                task.cancel()

    async def _send(self, segment: AudioSegment, align: bool) -> ClipResult:
        return await self.client.transcribe(
            ClipRequest(audio=segment.samples, sent_at=time.time(), align=align)
        )


def _segment(audio: AudioSegment, result: ClipResult, align: bool) -> Segment:
    """The :class:`Segment` of one decoded clip, or the error its result carries."""
    if result.text is None:
        kind = result.error_kind or "decode_failed"
        where = f"the segment at {audio.start:.2f}-{audio.end:.2f} s"
        if result.client_error:
            raise ServiceError(400, kind, f"The model cannot decode {where}: {result.error}")
        raise internal_error(f"the model failed to decode {where} ({result.error})", code=kind)
    alignment = None
    if align and result.words is not None:
        words = tuple(TimedWord(w.word, w.start, w.end) for w in result.words)
        alignment = Alignment(words, tuple(result.token_ids), result.avg_logprob)
    return make_segment(audio, result.text, alignment)


def _count_failure(route: str, exc: BaseException) -> None:
    """Count a failed request once, by the kind of its error."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return
    metrics = get_metrics()
    kind = getattr(exc, "kind", None) or getattr(exc, "code", None) or "internal_error"
    metrics.errors.labels(kind).inc()
    metrics.requests.labels(route, "error").inc()
