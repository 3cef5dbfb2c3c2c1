"""The HTTP API service: the app of :func:`espnet_serve.serving.app.build_app`, run by BentoML.

BentoML adds ``/livez``, ``/readyz`` (which also probes the model service) and ``/metrics``.
On SIGTERM the worker reports unready, refuses new transcriptions with 503, closes every
connection after its answer, finishes the requests it accepted, and stops accepting
connections before it stops (:mod:`espnet_serve.serving.drain`).
"""

from __future__ import annotations

import bentoml
from fastapi import HTTPException

from espnet_serve.serving.app import build_app, connect, edge_middlewares
from espnet_serve.serving.drain import SigtermDrain
from espnet_serve.serving.middleware.inflight import InFlight
from espnet_serve.serving.model_client import BentoModelClient
from espnet_serve.serving.model_service import MODEL_SERVICES
from espnet_serve.serving.settings import get_settings

settings = get_settings()
# Once drained, the API keeps answering 503 until just after the model service (idle for
# drain_quiet_seconds) has stopped: a client arriving late gets a 503, not a reset connection.
API_LINGER_SECONDS = 0.5
API_IN_FLIGHT = InFlight()
API_DRAIN = SigtermDrain(
    "ApiService",
    API_IN_FLIGHT,
    timeout_seconds=settings.drain_timeout_seconds,
    quiet_seconds=settings.drain_quiet_seconds + API_LINGER_SECONDS,
)
app = build_app(settings, in_flight=API_IN_FLIGHT, is_draining=lambda: API_DRAIN.draining)


class _ApiService:
    """Front door: audio in, transcript out; text in, speech out.

    One dependency per served model (``model``, ``model2``, ...: :data:`MODEL_SERVICES`).
    """

    def __init__(self) -> None:
        self.clients = [
            BentoModelClient(
                getattr(self, dependency_name(index)),
                retry_after_seconds=settings.retry_after_seconds,
                request_timeout_seconds=settings.request_timeout_seconds,
            )
            for index in range(len(MODEL_SERVICES))
        ]
        connect(app, self.clients)
        API_DRAIN.install()

    async def __is_ready__(self) -> bool:
        """Ready while not draining and every model is ready (else 503 with the reason)."""
        if API_DRAIN.draining:
            raise HTTPException(503, "Shutting down: finishing the requests in flight.")
        for service, client in zip(MODEL_SERVICES, self.clients, strict=True):
            readiness = await client.readiness()
            if not readiness.ready:
                tag = service.inner.bento_model.tag
                raise HTTPException(503, f"Model {tag} is not ready: {readiness.reason}")
        return True


def dependency_name(index: int) -> str:
    """The API service's attribute for the ``index``-th model service."""
    return "model" if index == 0 else f"model{index + 1}"


for _index, _service in enumerate(MODEL_SERVICES):
    setattr(_ApiService, dependency_name(_index), bentoml.depends(_service))
ApiService = bentoml.service(
    name="ApiService",
    workers=settings.api_workers,
    traffic={"timeout": settings.api_timeout_seconds},
)(bentoml.asgi_app(app)(_ApiService))


for _middleware in edge_middlewares(settings, is_draining=lambda: API_DRAIN.draining):
    ApiService.add_asgi_middleware(_middleware.cls, **_middleware.kwargs)
