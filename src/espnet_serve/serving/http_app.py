"""The HTTP layer of the API service, built from settings and a model client.

Routes (FastAPI):
    ``POST /transcribe``: multipart ``file``; JSON ``TranscribeResponse``.
    ``POST /v1/audio/transcriptions``: OpenAI-compatible (``file``, ``model``,
    ``response_format`` json/text/verbose_json; ``language``, ``prompt``,
    ``temperature`` accepted).

:func:`create_app` makes the app; whoever runs it sets ``app.state.model_client``
(a :class:`~espnet_serve.serving.model_client.ModelClient`): the BentoML service
uses its dependency on the model service, tests use a fake one. Every error is
JSON (``ErrorResponse``); admission (503 past the limit or while draining) runs
before the upload is read, decoding runs off the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp

from espnet_serve.ingest import DecodedAudio, IngestLimits, check_content_type, decode_audio
from espnet_serve.serving.admission import AdmissionMiddleware
from espnet_serve.serving.auth import ApiKeyMiddleware, configured_key_hashes
from espnet_serve.serving.drain import InFlight
from espnet_serve.serving.http_errors import (
    ServiceError,
    install_error_handlers,
    internal_error,
    model_unavailable,
)
from espnet_serve.serving.languages import language_name
from espnet_serve.serving.limits import BodySizeLimitMiddleware
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.model_client import ModelClient
from espnet_serve.serving.request_id import RequestIdMiddleware
from espnet_serve.serving.schemas import (
    ClipRequest,
    ErrorResponse,
    ModelInfo,
    ModelList,
    ModelObject,
    ResponseFormat,
    TranscribeResponse,
    TranscriptionResponse,
    TranscriptionSegment,
    VerboseTranscriptionResponse,
)
from espnet_serve.serving.settings import ServeSettings

# Room for the multipart envelope and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
TRANSCRIBE_ROUTE = "/transcribe"
OPENAI_ROUTE = "/v1/audio/transcriptions"
MODELS_ROUTE = "/v1/models"
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 422, 500, 503, 504)
}


class Transcription:
    """Decodes an upload and transcribes it through the model client, counting the outcome.

    Args:
        settings: The service settings (limits, ``Retry-After``).
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

    async def __call__(self, upload: UploadFile, route: str) -> tuple[str, DecodedAudio]:
        """Transcribe ``upload``; each failure is counted once, by kind, and re-raised."""
        metrics = get_metrics()
        try:
            audio = await self._decode(upload, await self.info())
            text = await self._transcribe(audio)
        except Exception as exc:
            kind = getattr(exc, "kind", None) or getattr(exc, "code", None) or "internal_error"
            metrics.errors.labels(kind).inc()
            metrics.requests.labels(route, "error").inc()
            raise
        metrics.requests.labels(route, "ok").inc()
        return text, audio

    async def _decode(self, upload: UploadFile, info: ModelInfo) -> DecodedAudio:
        """Check the declared type and size, then decode (off the event loop)."""
        check_content_type(upload.content_type)
        max_bytes = self.settings.max_audio_bytes
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ServiceError(413, "audio_too_large", f"File is over {max_bytes} bytes.")
        limits = IngestLimits(
            min_sample_rate=self.settings.min_sample_rate,
            max_sample_rate=self.settings.max_sample_rate,
            max_channels=self.settings.max_channels,
            max_seconds=self.settings.max_audio_seconds,
            min_samples=info.min_samples,
        )
        return await anyio.to_thread.run_sync(
            lambda: decode_audio(data, target_rate=info.sample_rate, limits=limits)
        )

    async def _transcribe(self, audio: DecodedAudio) -> str:
        result = await self.client.transcribe(ClipRequest(audio=audio.samples, sent_at=time.time()))
        if result.text is not None:
            return result.text
        kind = result.error_kind or "decode_failed"
        if result.client_error:
            raise ServiceError(400, kind, f"The model cannot decode this audio: {result.error}")
        raise internal_error(f"the model failed to decode the clip ({result.error})", code=kind)


def transcription(request: Request) -> Transcription:
    """The app's :class:`Transcription` (made on first use from ``app.state.model_client``)."""
    state = request.app.state
    if getattr(state, "transcription", None) is None:
        state.transcription = Transcription(state.settings, state.model_client)
    return state.transcription


TranscriptionDep = Annotated[Transcription, Depends(transcription)]


def _count_refusal(kind: str) -> None:
    get_metrics().errors.labels(kind).inc()


def _count_pending(delta: int) -> None:
    get_metrics().pending_requests.inc(delta)


def edge_middlewares(settings: ServeSettings) -> list[tuple[type, dict[str, Any]]]:
    """The middlewares around the whole service (BentoML's routes too), outermost first.

    Request ids on everything; API keys, when configured, on all but the probes
    (and ``/metrics`` unless ``protect_metrics``).
    """
    middlewares: list[tuple[type, dict[str, Any]]] = [(RequestIdMiddleware, {})]
    key_hashes = configured_key_hashes(settings)
    if key_hashes:
        options = {"key_hashes": key_hashes, "protect_metrics": settings.protect_metrics}
        middlewares.append((ApiKeyMiddleware, options))
    return middlewares


def with_edge_middlewares(app: ASGIApp, settings: ServeSettings) -> ASGIApp:
    """``app`` wrapped in :func:`edge_middlewares`, as the BentoML service wraps it."""
    for middleware, options in reversed(edge_middlewares(settings)):
        app = middleware(app, **options)
    return app


def create_app(
    settings: ServeSettings, *, in_flight: InFlight, is_draining: Callable[[], bool]
) -> FastAPI:
    """The API's FastAPI app: routes, admission, the body-size limit and JSON errors.

    Args:
        settings: Limits, admission limit and ``Retry-After``.
        in_flight: Counts the admitted transcriptions (the SIGTERM drain waits on it).
        is_draining: Whether the worker is shutting down (then everything is refused).

    Returns:
        FastAPI: The app; set ``app.state.model_client`` before it serves.
    """
    app = FastAPI(title="espnet-serve", description=__doc__)
    app.state.settings = settings
    app.state.model_client = None
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_audio_bytes + MULTIPART_OVERHEAD_BYTES
    )
    app.add_middleware(
        AdmissionMiddleware,
        routes=(TRANSCRIBE_ROUTE, OPENAI_ROUTE),
        in_flight=in_flight,
        limit=settings.max_pending_requests,
        retry_after_seconds=settings.retry_after_seconds,
        is_draining=is_draining,
        on_refused=_count_refusal,
        on_admitted=_count_pending,
    )
    install_error_handlers(app)

    @app.get(MODELS_ROUTE, response_model=ModelList, responses=ERROR_RESPONSES)
    async def list_models(transcriber: TranscriptionDep) -> ModelList:
        """The served model, its store tag as the id (OpenAI's list format)."""
        info = await transcriber.info()
        return ModelList(data=[ModelObject(id=info.tag, created=info.created)])

    @app.get(
        MODELS_ROUTE + "/{model_id:path}", response_model=ModelObject, responses=ERROR_RESPONSES
    )
    async def retrieve_model(model_id: str, transcriber: TranscriptionDep) -> ModelObject:
        """The served model under any name it answers to; 404 ``model_not_found`` otherwise."""
        info = await transcriber.served_model(model_id)
        return ModelObject(id=info.tag, created=info.created)

    @app.post(TRANSCRIBE_ROUTE, response_model=TranscribeResponse, responses=ERROR_RESPONSES)
    async def transcribe(
        file: Annotated[UploadFile, File()], transcriber: TranscriptionDep
    ) -> TranscribeResponse:
        """Transcribe one audio file (WAV, FLAC, OGG, MP3, ...)."""
        text, audio = await transcriber(file, TRANSCRIBE_ROUTE)
        info = await transcriber.info()
        return TranscribeResponse(
            text=text, duration_seconds=audio.duration_seconds, model=info.name
        )

    @app.post(
        OPENAI_ROUTE,
        response_model=TranscriptionResponse | VerboseTranscriptionResponse,
        responses=ERROR_RESPONSES,
    )
    async def openai_transcriptions(
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()],
        transcriber: TranscriptionDep,
        response_format: Annotated[ResponseFormat, Form()] = ResponseFormat.JSON,
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    ) -> Response:
        """OpenAI-compatible transcription.

        ``model`` must name the served model (404 otherwise); ``language`` must be an
        ISO-639-1 code the model takes (400 otherwise); ``prompt`` and ``temperature``
        are accepted and unused (the decoder takes no prompt and always decodes greedily
        or by beam search as the bundle says).
        """
        await transcriber.served_model(model)
        language_reported = await transcriber.check_language(language)
        text, audio = await transcriber(file, OPENAI_ROUTE)
        if response_format is ResponseFormat.TEXT:
            return PlainTextResponse(text)
        if response_format is ResponseFormat.VERBOSE_JSON:
            duration = audio.duration_seconds
            verbose = VerboseTranscriptionResponse(
                language=language_reported,
                duration=duration,
                text=text,
                segments=[TranscriptionSegment(id=0, start=0.0, end=duration, text=text)],
            )
            return JSONResponse(verbose.model_dump())
        return JSONResponse(TranscriptionResponse(text=text).model_dump())

    return app
