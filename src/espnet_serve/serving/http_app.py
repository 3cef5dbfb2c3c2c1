"""The HTTP layer of the API service, built from settings and a model client.

Routes (FastAPI):
    ``POST /transcribe``: multipart ``file``; JSON ``TranscribeResponse``.
    ``POST /v1/audio/transcriptions``: OpenAI-compatible (``file``, ``model``,
    ``response_format`` json/text/verbose_json/srt/vtt, ``timestamp_granularities[]``,
    ``stream``; ``language``, ``prompt``, ``temperature`` accepted).

:func:`create_app` makes the app; whoever runs it sets ``app.state.model_client``
(a :class:`~espnet_serve.serving.model_client.ModelClient`): the BentoML service
uses its dependency on the model service, tests use a fake one. Every error is
JSON (``ErrorResponse``); admission (503 past the limit or while draining) runs
before the upload is read, decoding runs off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import Response
from starlette.types import ASGIApp

from espnet_serve.serving.admission import AdmissionMiddleware
from espnet_serve.serving.auth import ApiKeyMiddleware, configured_key_hashes
from espnet_serve.serving.drain import InFlight
from espnet_serve.serving.http_errors import ServiceError, install_error_handlers
from espnet_serve.serving.limits import BodySizeLimitMiddleware
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.openai_formats import event_stream, formatted_response
from espnet_serve.serving.request_id import RequestIdMiddleware
from espnet_serve.serving.schemas import (
    ErrorResponse,
    ModelList,
    ModelObject,
    ResponseFormat,
    TimestampGranularity,
    TranscribeResponse,
    TranscriptionResponse,
    VerboseTranscriptionResponse,
)
from espnet_serve.serving.settings import ServeSettings
from espnet_serve.serving.transcription import Transcription

# Room for the multipart envelope and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
TRANSCRIBE_ROUTE = "/transcribe"
OPENAI_ROUTE = "/v1/audio/transcriptions"
MODELS_ROUTE = "/v1/models"
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 422, 500, 503, 504)
}


def _check_format_options(response_format: ResponseFormat, *, stream: bool, words: bool) -> None:
    """400 for option combinations OpenAI refuses too."""
    if words and response_format is not ResponseFormat.VERBOSE_JSON:
        raise ServiceError(
            400,
            "invalid_request",
            "timestamp_granularities[] needs response_format=verbose_json.",
            param="timestamp_granularities[]",
        )
    if stream and response_format not in (ResponseFormat.JSON, ResponseFormat.TEXT):
        raise ServiceError(
            400,
            "invalid_request",
            f"stream=true sends text events; response_format {response_format.value} "
            "cannot be streamed (use json or text).",
            param="stream",
        )


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
        """Transcribe one audio file (WAV, FLAC, OGG, MP3, ...) of any length up to the limit."""
        transcript = await transcriber.transcript(file, TRANSCRIBE_ROUTE)
        info = await transcriber.info()
        return TranscribeResponse(
            text=transcript.text, duration_seconds=transcript.duration, model=info.name
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
        stream: Annotated[bool, Form()] = False,
        timestamp_granularities: Annotated[
            list[TimestampGranularity] | None, Form(alias="timestamp_granularities[]")
        ] = None,
    ) -> Response:
        """OpenAI-compatible transcription.

        ``model`` must name the served model (404 otherwise); ``language`` must be an
        ISO-639-1 code the model takes (400 otherwise); ``prompt`` and ``temperature``
        are accepted and unused (the decoder takes no prompt and always decodes greedily
        or by beam search as the bundle says). ``response_format`` ``srt``/``vtt`` give
        subtitles, ``verbose_json`` timed segments (and words with
        ``timestamp_granularities[]=word``); ``stream=true`` sends server-sent events.
        """
        words = TimestampGranularity.WORD in (timestamp_granularities or [])
        _check_format_options(response_format, stream=stream, words=words)
        await transcriber.served_model(model)
        language_reported = await transcriber.check_language(language)
        if words:
            await transcriber.check_word_timestamps()
        verbose = response_format is ResponseFormat.VERBOSE_JSON
        if stream:
            opened = await transcriber.open(file, OPENAI_ROUTE)
            return event_stream(transcriber.segments(opened, OPENAI_ROUTE))
        transcript = await transcriber.transcript(file, OPENAI_ROUTE, align=verbose)
        return formatted_response(
            transcript, response_format, language=language_reported, words=words
        )

    return app
