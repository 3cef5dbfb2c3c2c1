"""One transcription request, from the validated form and the upload to the response.

The upload (spooled to disk by the multipart parser) is opened and its header
checked before anything else (:func:`espnet_serve.audio.ingest.open_audio_stream`);
then, off the event loop, it is read block by block and cut into speech segments
(:class:`espnet_serve.audio.segmenter.Segmenter`), each sent to the model service
as its own :class:`~espnet_serve.serving.rpc.SegmentRequest`. Up to
``max_segments_in_flight`` segments of one upload are in flight at once, so a long
recording fills the model's batches by itself, and the segments come back in
order. Memory follows that window, not the recording.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio.to_thread
from fastapi import UploadFile
from fastapi.responses import Response

from espnet_serve.audio.ingest import (
    AudioStream,
    IngestLimits,
    check_content_type,
    check_length,
    open_audio_stream,
)
from espnet_serve.audio.segmenter import AudioSegment, Segmenter
from espnet_serve.executors.base import TRANSCRIBE, TRANSLATE, DecodeOptions
from espnet_serve.languages import language_name
from espnet_serve.pipeline.types import Segment, SegmentDecodeError, Transcript
from espnet_serve.serving.errors import ApiError, as_api_error, error_code
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.model_client import ModelClient
from espnet_serve.serving.protocol import TranscribeResponse, TranscriptionForm, TranslationForm
from espnet_serve.serving.responses import event_stream, formatted_response
from espnet_serve.serving.rpc import ModelInfo, SegmentRequest, SegmentResult
from espnet_serve.serving.served_model import ServedModel, ServedModels
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


class TranscriptionHandler:
    """Serves transcription and translation requests through the model clients, counting each.

    Args:
        settings: Limits and the segments in flight per request.
        models: The served models (names, tasks, languages, word timing, their clients).
    """

    def __init__(self, settings: ServeSettings, models: ServedModels) -> None:
        self.settings = settings
        self.models = models

    async def transcribe(self, upload: UploadFile, route: str) -> TranscribeResponse:
        """``POST /transcribe``: the plain transcript of ``upload`` by the first ASR model."""
        model = await self.models.for_task(TRANSCRIBE)
        await model.check_task(TRANSCRIBE)
        transcript = await self.transcript(model, upload, route)
        info = await model.info()
        return TranscribeResponse(
            text=transcript.text, duration_seconds=transcript.duration, model=info.name
        )

    async def create_transcription(
        self, upload: UploadFile, form: TranscriptionForm, route: str
    ) -> Response:
        """``POST /v1/audio/transcriptions``: the transcript in the form's response format."""
        model = await self.models.named(form.model, TRANSCRIBE)
        await model.check_task(TRANSCRIBE)
        language = await model.language_name(form.language)
        if form.words:
            await model.check_word_timestamps()
        options = DecodeOptions(language=form.language, prompt=form.prompt)
        if form.stream:
            opened = await self.open(model, upload, route)
            return event_stream(self.segments(model, opened, route, options=options))
        transcript = await self.transcript(model, upload, route, words=form.timed, options=options)
        if form.language is None and transcript.language is not None:
            language = language_name(transcript.language) or transcript.language  # identified
        return formatted_response(
            transcript, form.response_format, language=language, words=form.words
        )

    async def create_translation(
        self, upload: UploadFile, form: TranslationForm, route: str
    ) -> Response:
        """``POST /v1/audio/translations``: ``upload`` in English (or ``target_language``).

        A model that does not translate is a 400 (``task_unsupported``); so is a target
        language the model does not write, when its bundle records the ones it does.
        """
        model = await self.models.named(form.model, TRANSLATE)
        await model.check_task(TRANSLATE)
        language = await model.target_language_name(form.target_language)
        options = DecodeOptions(
            task=TRANSLATE, target_language=form.target_language, prompt=form.prompt
        )
        transcript = await self.transcript(model, upload, route, options=options)
        return formatted_response(
            transcript, form.response_format, language=language, task=TRANSLATE
        )

    async def transcript(
        self,
        model: ServedModel,
        upload: UploadFile,
        route: str,
        *,
        words: bool = False,
        options: DecodeOptions | None = None,
    ) -> Transcript:
        """The whole transcript of ``upload`` by ``model`` (see :meth:`segments`)."""
        opened = await self.open(model, upload, route)
        segments = [
            s async for s in self.segments(model, opened, route, words=words, options=options)
        ]
        return Transcript(segments=segments, duration=round(opened.duration_seconds, 3))

    async def open(self, model: ServedModel, upload: UploadFile, route: str) -> OpenedUpload:
        """Check the declared type, size and header of ``upload`` (counted if refused)."""
        try:
            return await self._open(model, upload)
        except BaseException as exc:
            count_failure(route, exc)
            raise

    async def _open(self, model: ServedModel, upload: UploadFile) -> OpenedUpload:
        check_content_type(upload.content_type)
        max_bytes = self.settings.max_audio_bytes
        if (upload.size or 0) > max_bytes:
            raise ApiError("audio_too_large", f"File is over {max_bytes} bytes.", param="file")
        info = await model.info()
        limits = IngestLimits(
            min_sample_rate=self.settings.min_sample_rate,
            max_sample_rate=self.settings.max_sample_rate,
            max_channels=self.settings.max_channels,
            max_seconds=self.settings.max_audio_seconds,
            min_samples=info.min_samples,
        )
        return await anyio.to_thread.run_sync(lambda: OpenedUpload(upload.file, info, limits))

    async def segments(
        self,
        model: ServedModel,
        opened: OpenedUpload,
        route: str,
        *,
        words: bool = False,
        options: DecodeOptions | None = None,
    ) -> AsyncIterator[Segment]:
        """The upload's segments decoded by ``model``, in order; the outcome counted at the end.

        Every segment is decoded with the request's ``options`` (default: transcribe).

        Raises:
            AudioInputError / ApiError: On the first failure (the rest is cancelled).
        """
        try:
            decoded = self._decoded(model.client, opened, words, options or DecodeOptions())
            async for segment in decoded:
                yield segment
        except BaseException as exc:
            count_failure(route, exc)
            raise
        finally:
            opened.close()
        get_metrics().requests.labels(route, "ok").inc()

    async def _decoded(
        self, client: ModelClient, opened: OpenedUpload, words: bool, options: DecodeOptions
    ) -> AsyncIterator[Segment]:
        """Segment off the event loop, decode concurrently, yield in order.

        A segment the model cut into timed utterances yields them in its place; the
        segments are numbered in the order they are yielded.
        """
        window = self.settings.max_segments_in_flight
        pending: deque[asyncio.Task[SegmentResult]] = deque()
        shown = 0
        try:
            while True:
                while not opened.finished and len(pending) < window:
                    for segment in await anyio.to_thread.run_sync(opened.next_segments):
                        request = SegmentRequest.of(segment, words=words, options=options)
                        pending.append(asyncio.create_task(client.decode(request)))
                    if pending and pending[0].done():
                        break  # hand the first result on before reading further
                if not pending:
                    return
                outcome = (await pending.popleft()).outcome()
                if isinstance(outcome, SegmentDecodeError):
                    raise as_api_error(outcome)
                for segment in outcome.shown(shown):
                    shown += 1
                    yield segment
        finally:
            for task in pending:
                task.cancel()


def count_failure(route: str, exc: BaseException) -> None:
    """Count a failed request once, by its error's code."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return
    metrics = get_metrics()
    metrics.errors.labels(error_code(exc)).inc()
    metrics.requests.labels(route, "error").inc()
