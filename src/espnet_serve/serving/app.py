"""The API service's app, built from the settings: the same one the service runs and tests use.

Layers, outermost first (BentoML puts :func:`edge_middlewares` around this app and its
own routes, ``/livez``, ``/readyz`` and ``/metrics``):

1. :class:`~espnet_serve.serving.middleware.admission.AdmissionMiddleware`: 503 while
   draining; once the body is in, 503 past the admission limit;
2. :class:`~espnet_serve.serving.middleware.upload_limits.UploadLimitsMiddleware`: 413 too
   large, 408 too slow, 503 past the worker's bytes held;
3. the routes (:mod:`espnet_serve.serving.routes`: transcriptions, translations, speech,
   enhancements, models), whose errors
   :mod:`espnet_serve.serving.errors` renders as JSON; and the realtime WebSocket
   (:mod:`espnet_serve.serving.realtime`), which bounds its sessions itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import FastAPI
from starlette.middleware import Middleware

from espnet_serve.serving.drain import CloseWhileDraining
from espnet_serve.serving.enhancement import EnhancementHandler
from espnet_serve.serving.errors import install_error_handlers
from espnet_serve.serving.handler import TranscriptionHandler
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.middleware.admission import AdmissionMiddleware
from espnet_serve.serving.middleware.auth import ApiKeyMiddleware, configured_key_hashes
from espnet_serve.serving.middleware.inflight import InFlight
from espnet_serve.serving.middleware.request_id import RequestIdMiddleware
from espnet_serve.serving.middleware.spread import SpreadConnections
from espnet_serve.serving.middleware.upload_limits import HeldBytes, UploadLimitsMiddleware
from espnet_serve.serving.model_client import ModelClient
from espnet_serve.serving.realtime.session import SessionSlots
from espnet_serve.serving.routes import (
    enhancements,
    models,
    realtime,
    speech,
    transcriptions,
    translations,
)
from espnet_serve.serving.served_model import ServedModel, ServedModels
from espnet_serve.serving.settings import ServeSettings
from espnet_serve.serving.speech import SpeechHandler
from espnet_serve.serving.workers import WorkerBoard

# Room for the multipart envelope and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def edge_middlewares(
    settings: ServeSettings,
    *,
    is_draining: Callable[[], bool] = lambda: False,
    board: WorkerBoard | None = None,
) -> list[Middleware]:
    """The middlewares around the whole service (BentoML's routes too), outermost first.

    Request ids on everything; every response closes its connection while the worker drains,
    and while it serves more than its share where several API workers each hold their models
    (:class:`SpreadConnections`, given the workers' ``board``); API keys, when configured, on
    all but the probes (and ``/metrics`` unless ``protect_metrics``).
    """
    middlewares = [
        Middleware(RequestIdMiddleware),
        Middleware(CloseWhileDraining, is_draining=is_draining),
    ]
    if board is not None:
        middlewares.append(Middleware(SpreadConnections, board=board))
    key_hashes = configured_key_hashes(settings)
    if key_hashes:
        middlewares.append(
            Middleware(
                ApiKeyMiddleware, key_hashes=key_hashes, protect_metrics=settings.protect_metrics
            )
        )
    return middlewares


def build_app(
    settings: ServeSettings,
    *,
    model_clients: Sequence[ModelClient] | None = None,
    in_flight: InFlight | None = None,
    is_draining: Callable[[], bool] = lambda: False,
) -> FastAPI:
    """The API's FastAPI app: routes, admission, the upload limits and JSON errors.

    Args:
        settings: Limits, admission limit and ``Retry-After``.
        model_clients: The model services, one per model; without them, :func:`connect`
            them before serving.
        in_flight: Counts the transcriptions in flight from their arrival (the SIGTERM
            drain waits on it).
        is_draining: Whether the worker is shutting down (then everything is refused).

    Returns:
        FastAPI: The app.
    """
    app = FastAPI(title="espnet-serve", description=__doc__)
    app.state.settings = settings
    app.state.in_flight = in_flight = in_flight or InFlight()
    app.state.is_draining = is_draining
    app.state.realtime_slots = SessionSlots(settings.max_realtime_sessions)
    app.add_middleware(
        UploadLimitsMiddleware,
        max_bytes=settings.max_audio_bytes + MULTIPART_OVERHEAD_BYTES,
        grace_seconds=settings.upload_grace_seconds,
        min_bytes_per_second=settings.min_upload_bytes_per_second,
        held=HeldBytes(
            settings.max_upload_bytes_held + MULTIPART_OVERHEAD_BYTES,
            on_change=lambda delta: get_metrics().upload_bytes_held.inc(delta),
        ),
        retry_after_seconds=settings.retry_after_seconds,
        on_refused=_count_refusal,
    )
    app.add_middleware(
        AdmissionMiddleware,
        routes=transcriptions.ROUTES + translations.ROUTES + speech.ROUTES + enhancements.ROUTES,
        in_flight=in_flight,
        limit=settings.max_pending_requests,
        retry_after_seconds=settings.retry_after_seconds,
        is_draining=is_draining,
        on_refused=_count_refusal,
        on_admitted=lambda delta: get_metrics().pending_requests.inc(delta),
    )
    install_error_handlers(app)
    app.include_router(models.router)
    app.include_router(transcriptions.router)
    app.include_router(translations.router)
    app.include_router(speech.router)
    app.include_router(enhancements.router)
    app.include_router(realtime.router)
    if model_clients is not None:
        connect(app, model_clients)
    return app


def _count_refusal(code: str) -> None:
    get_metrics().errors.labels(code).inc()


def connect(app: FastAPI, model_clients: Sequence[ModelClient]) -> None:
    """Give the app its model services (the BentoML service does once it has them)."""
    settings: ServeSettings = app.state.settings
    served = ServedModels([ServedModel(settings, client) for client in model_clients])
    app.state.served_models = served
    app.state.transcriptions = TranscriptionHandler(settings, served)
    app.state.speech = SpeechHandler(served)
    app.state.enhancements = EnhancementHandler(settings, served)
