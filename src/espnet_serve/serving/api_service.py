"""The HTTP API service: validates and decodes uploads, then asks the model service.

Routes (FastAPI, mounted on the BentoML service):
    ``POST /transcribe``: multipart ``file``; JSON ``TranscribeResponse``.
    ``POST /v1/audio/transcriptions``: OpenAI-compatible (``file``, ``model``,
    ``response_format`` json/text/verbose_json; ``language``, ``prompt``,
    ``temperature`` accepted).
BentoML adds ``/livez``, ``/readyz`` (which also probes the model service) and ``/metrics``.
"""

from __future__ import annotations

import time
from typing import Annotated

import bentoml
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from espnet_serve.serving.audio import DecodedAudio, check_content_type, decode_audio
from espnet_serve.serving.errors import (
    ServiceError,
    install_error_handlers,
    model_unavailable,
    overloaded,
)
from espnet_serve.serving.limits import BodySizeLimitMiddleware
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.model_service import AsrModel
from espnet_serve.serving.schemas import (
    ClipRequest,
    ErrorResponse,
    ModelInfo,
    ResponseFormat,
    TranscribeResponse,
    TranscriptionResponse,
    TranscriptionSegment,
    VerboseTranscriptionResponse,
)
from espnet_serve.serving.settings import get_settings

settings = get_settings()
# Room for the multipart envelope and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse} for status in (400, 413, 415, 422, 503)
}

app = FastAPI(title="espnet-serve", description=__doc__)
app.add_middleware(
    BodySizeLimitMiddleware, max_bytes=settings.max_audio_bytes + MULTIPART_OVERHEAD_BYTES
)
install_error_handlers(app)


@bentoml.service(
    name="Transcriber",
    workers=settings.api_workers,
    traffic={"timeout": settings.request_timeout_seconds},
)
@bentoml.asgi_app(app)
class Transcriber:
    """Front door: audio in, transcript out."""

    model = bentoml.depends(AsrModel)

    def __init__(self) -> None:
        self.metrics = get_metrics()
        self.pending = 0
        self._model_info: ModelInfo | None = None

    async def _info(self) -> ModelInfo:
        if self._model_info is None:
            try:
                self._model_info = await self.model.to_async.model_info()
            except BentoMLException as exc:
                raise model_unavailable(str(exc), settings.retry_after_seconds) from exc
        return self._model_info

    async def _read_upload(self, upload: UploadFile, info: ModelInfo) -> DecodedAudio:
        """Check the declared type and size, then decode to the model's sample rate."""
        check_content_type(upload.content_type)
        data = await upload.read(settings.max_audio_bytes + 1)
        if len(data) > settings.max_audio_bytes:
            raise ServiceError(
                413, "audio_too_large", f"File is over {settings.max_audio_bytes} bytes."
            )
        return decode_audio(
            data, target_rate=info.sample_rate, max_seconds=settings.max_audio_seconds
        )

    async def _transcribe(self, upload: UploadFile, route: str) -> tuple[str, DecodedAudio]:
        """Decode an upload and transcribe it, counting outcomes and bounding pending work."""
        if self.pending >= settings.max_pending_requests:
            self.metrics.errors.labels("overloaded").inc()
            raise overloaded(settings.retry_after_seconds)
        self.pending += 1
        self.metrics.pending_requests.inc()
        try:
            audio = await self._read_upload(upload, await self._info())
            text = await self._call_model(audio)
        except Exception as exc:
            kind = getattr(exc, "kind", None) or getattr(exc, "code", None) or "internal"
            self.metrics.errors.labels(kind).inc()
            self.metrics.requests.labels(route, "error").inc()
            raise
        finally:
            self.pending -= 1
            self.metrics.pending_requests.dec()
        self.metrics.requests.labels(route, "ok").inc()
        return text, audio

    async def _call_model(self, audio: DecodedAudio) -> str:
        request = ClipRequest(audio=audio.samples, sent_at=time.time())
        try:
            (result,) = await self.model.to_async.transcribe([request])
        except BentoMLException as exc:
            raise model_unavailable(str(exc), settings.retry_after_seconds) from exc
        if result.text is None:
            raise ServiceError(400, result.error_kind or "decode_failed", result.error or "")
        return result.text

    @app.post("/transcribe", response_model=TranscribeResponse, responses=ERROR_RESPONSES)
    async def transcribe(self, file: Annotated[UploadFile, File()]) -> TranscribeResponse:
        """Transcribe one audio file (WAV, FLAC, OGG, MP3, ...)."""
        text, audio = await self._transcribe(file, "/transcribe")
        info = await self._info()
        return TranscribeResponse(
            text=text, duration_seconds=audio.duration_seconds, model=info.name
        )

    @app.post(
        "/v1/audio/transcriptions",
        response_model=TranscriptionResponse | VerboseTranscriptionResponse,
        responses=ERROR_RESPONSES,
    )
    async def openai_transcriptions(
        self,
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()],
        response_format: Annotated[ResponseFormat, Form()] = ResponseFormat.JSON,
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    ) -> Response:
        """OpenAI-compatible transcription (``model``, ``prompt`` and ``temperature`` unused)."""
        text, audio = await self._transcribe(file, "/v1/audio/transcriptions")
        if response_format is ResponseFormat.TEXT:
            return PlainTextResponse(text)
        if response_format is ResponseFormat.VERBOSE_JSON:
            duration = audio.duration_seconds
            verbose = VerboseTranscriptionResponse(
                language=language or "en",
                duration=duration,
                text=text,
                segments=[TranscriptionSegment(id=0, start=0.0, end=duration, text=text)],
            )
            return JSONResponse(verbose.model_dump())
        return JSONResponse(TranscriptionResponse(text=text).model_dump())
