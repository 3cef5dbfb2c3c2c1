"""The HTTP API service: admits, validates and decodes uploads, then asks the model service.

Routes (FastAPI, mounted on the BentoML service):
    ``POST /transcribe``: multipart ``file``; JSON ``TranscribeResponse``.
    ``POST /v1/audio/transcriptions``: OpenAI-compatible (``file``, ``model``,
    ``response_format`` json/text/verbose_json; ``language``, ``prompt``,
    ``temperature`` accepted).
BentoML adds ``/livez``, ``/readyz`` (which also probes the model service) and ``/metrics``.
Every error is JSON (``ErrorResponse``); on SIGTERM the worker reports unready, refuses new
transcriptions with 503 and finishes the ones it accepted before it stops.
"""

from __future__ import annotations

import time
from typing import Annotated

import anyio.to_thread
import bentoml
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from espnet_serve.ingest import DecodedAudio, IngestLimits, check_content_type, decode_audio
from espnet_serve.serving.admission import AdmissionMiddleware
from espnet_serve.serving.drain import InFlight, SigtermDrain
from espnet_serve.serving.errors import (
    ServiceError,
    install_error_handlers,
    internal_error,
    model_unavailable,
)
from espnet_serve.serving.limits import BodySizeLimitMiddleware
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.model_client import call_model
from espnet_serve.serving.model_service import AsrModel
from espnet_serve.serving.schemas import (
    ClipRequest,
    ErrorResponse,
    ModelInfo,
    Readiness,
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
TRANSCRIBE_ROUTE = "/transcribe"
OPENAI_ROUTE = "/v1/audio/transcriptions"
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse} for status in (400, 413, 415, 422, 500, 503, 504)
}
# Once drained, the API keeps answering 503 until just after the model service (idle for
# drain_quiet_seconds) has stopped: a client arriving late gets a 503, not a reset connection.
API_LINGER_SECONDS = 0.5
API_IN_FLIGHT = InFlight()
API_DRAIN = SigtermDrain(
    "Transcriber",
    API_IN_FLIGHT,
    timeout_seconds=settings.drain_timeout_seconds,
    quiet_seconds=settings.drain_quiet_seconds + API_LINGER_SECONDS,
)


def _count_refusal(kind: str) -> None:
    get_metrics().errors.labels(kind).inc()


def _count_pending(delta: int) -> None:
    get_metrics().pending_requests.inc(delta)


app = FastAPI(title="espnet-serve", description=__doc__)
app.add_middleware(
    BodySizeLimitMiddleware, max_bytes=settings.max_audio_bytes + MULTIPART_OVERHEAD_BYTES
)
app.add_middleware(
    AdmissionMiddleware,
    routes=(TRANSCRIBE_ROUTE, OPENAI_ROUTE),
    in_flight=API_IN_FLIGHT,
    limit=settings.max_pending_requests,
    retry_after_seconds=settings.retry_after_seconds,
    is_draining=lambda: API_DRAIN.draining,
    on_refused=_count_refusal,
    on_admitted=_count_pending,
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
        self._model_info: ModelInfo | None = None
        API_DRAIN.install()

    async def __is_ready__(self) -> bool:
        """Ready while not draining and the model service is ready (else 503 with the reason)."""
        if API_DRAIN.draining:
            raise HTTPException(503, "Shutting down: finishing the requests in flight.")
        readiness = await self._readiness()
        if not readiness.ready:
            raise HTTPException(503, f"The model is not ready: {readiness.reason}")
        return True

    async def _readiness(self) -> Readiness:
        return await call_model(
            self.model.to_async.readiness,
            what="readiness",
            retry_after_seconds=settings.retry_after_seconds,
        )

    async def _info(self) -> ModelInfo:
        """The served model's info, fetched once it is ready (503 with the reason before)."""
        if self._model_info is None:
            readiness = await self._readiness()
            if not readiness.ready:
                raise model_unavailable(readiness.reason, settings.retry_after_seconds)
            self._model_info = await call_model(
                self.model.to_async.model_info,
                what="model info",
                retry_after_seconds=settings.retry_after_seconds,
            )
        return self._model_info

    async def _read_upload(self, upload: UploadFile, info: ModelInfo) -> DecodedAudio:
        """Check the declared type and size, then decode (off the event loop)."""
        check_content_type(upload.content_type)
        data = await upload.read(settings.max_audio_bytes + 1)
        if len(data) > settings.max_audio_bytes:
            raise ServiceError(
                413, "audio_too_large", f"File is over {settings.max_audio_bytes} bytes."
            )
        limits = IngestLimits(
            min_sample_rate=settings.min_sample_rate,
            max_sample_rate=settings.max_sample_rate,
            max_channels=settings.max_channels,
            max_seconds=settings.max_audio_seconds,
            min_samples=info.min_samples,
        )
        return await anyio.to_thread.run_sync(
            lambda: decode_audio(data, target_rate=info.sample_rate, limits=limits)
        )

    async def _transcribe(self, upload: UploadFile, route: str) -> tuple[str, DecodedAudio]:
        """Decode an upload and transcribe it, counting the outcome once."""
        try:
            audio = await self._read_upload(upload, await self._info())
            text = await self._call_model(audio)
        except Exception as exc:
            kind = getattr(exc, "kind", None) or getattr(exc, "code", None) or "internal_error"
            self.metrics.errors.labels(kind).inc()
            self.metrics.requests.labels(route, "error").inc()
            raise
        self.metrics.requests.labels(route, "ok").inc()
        return text, audio

    async def _call_model(self, audio: DecodedAudio) -> str:
        request = ClipRequest(audio=audio.samples, sent_at=time.time())
        (result,) = await call_model(
            lambda: self.model.to_async.transcribe([request]),
            what="transcribe",
            retry_after_seconds=settings.retry_after_seconds,
        )
        if result.text is not None:
            return result.text
        kind = result.error_kind or "decode_failed"
        if result.client_error:
            raise ServiceError(400, kind, f"The model cannot decode this audio: {result.error}")
        raise internal_error(f"the model failed to decode the clip ({result.error})", code=kind)

    @app.post(TRANSCRIBE_ROUTE, response_model=TranscribeResponse, responses=ERROR_RESPONSES)
    async def transcribe(self, file: Annotated[UploadFile, File()]) -> TranscribeResponse:
        """Transcribe one audio file (WAV, FLAC, OGG, MP3, ...)."""
        text, audio = await self._transcribe(file, TRANSCRIBE_ROUTE)
        info = await self._info()
        return TranscribeResponse(
            text=text, duration_seconds=audio.duration_seconds, model=info.name
        )

    @app.post(
        OPENAI_ROUTE,
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
        text, audio = await self._transcribe(file, OPENAI_ROUTE)
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
