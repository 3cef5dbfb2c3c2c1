"""The HTTP API service: the app of :func:`espnet_serve.serving.app.build_app`, run by BentoML.

BentoML adds ``/livez``, ``/readyz`` (which also probes the model service) and ``/metrics``.
On SIGTERM the worker reports unready, refuses new transcriptions with 503, closes every
connection after its answer, finishes the requests it accepted, and stops accepting
connections before it stops (:mod:`espnet_serve.serving.drain`).
"""

from __future__ import annotations

import asyncio
import logging

import bentoml
from fastapi import HTTPException

from espnet_serve.serving.app import build_app, connect, edge_middlewares
from espnet_serve.serving.drain import SigtermDrain
from espnet_serve.serving.local_model import InProcessModelClient
from espnet_serve.serving.middleware.inflight import InFlight
from espnet_serve.serving.model_client import BentoModelClient, ModelClient
from espnet_serve.serving.model_service import MODEL_SERVICES
from espnet_serve.serving.placement import describe, machine_placement
from espnet_serve.serving.settings import get_settings
from espnet_serve.serving.workers import WorkerBoard, worker_board

logger = logging.getLogger(__name__)
settings = get_settings()


def served_models_bytes() -> int:
    """The served models' size in the model store."""
    from espnet_serve.bundle.store import stored_model

    return sum(stored_model(service.inner.bento_model).file_size for service in MODEL_SERVICES)


PLACEMENT = machine_placement(settings, served_models_bytes)
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
# Where each API worker loads the models, the workers publish their load and readiness.
WORKER_BOARD = worker_board(PLACEMENT.api_workers) if PLACEMENT.in_api_workers else None
READY_POLL_SECONDS = 0.1


class _ApiService:
    """Front door: audio in, transcript out; text in, speech out.

    One dependency per served model (``model``, ``model2``, ...: :data:`MODEL_SERVICES`),
    or, where :data:`PLACEMENT` puts them here, the models loaded in this worker.
    """

    def __init__(self) -> None:
        logger.info(describe(PLACEMENT))
        self.clients = [self._client(index) for index in range(len(MODEL_SERVICES))]
        connect(app, self.clients)
        API_DRAIN.install()
        if WORKER_BOARD is not None:
            self._publishing = asyncio.get_running_loop().create_task(
                self._publish_ready(WORKER_BOARD)
            )

    async def _publish_ready(self, board: WorkerBoard) -> None:
        """Mark this worker ready on the board once its models are loaded."""
        while not all([(await client.readiness()).ready for client in self.clients]):
            await asyncio.sleep(READY_POLL_SECONDS)
        board.set_ready()

    def _client(self, index: int) -> ModelClient:
        """The ``index``-th model: its service's dependency, or loaded here."""
        if PLACEMENT.in_api_workers:
            return InProcessModelClient(
                MODEL_SERVICES[index].inner(install_drain=False, threads=PLACEMENT.model_threads),
                max_batch_size=settings.max_batch_size,
                max_latency_ms=int(settings.request_timeout_seconds * 1000),
                retry_after_seconds=settings.retry_after_seconds,
            )
        return BentoModelClient(
            getattr(self, dependency_name(index)),
            retry_after_seconds=settings.retry_after_seconds,
            request_timeout_seconds=settings.request_timeout_seconds,
        )

    async def __is_ready__(self) -> bool:
        """Ready while not draining and every model is ready (else 503 with the reason).

        Where the API workers hold the models, every worker's models: a probe may reach any
        worker, and the traffic it lets in reaches all of them.
        """
        if API_DRAIN.draining:
            raise HTTPException(503, "Shutting down: finishing the requests in flight.")
        for service, client in zip(MODEL_SERVICES, self.clients, strict=True):
            readiness = await client.readiness()
            if not readiness.ready:
                tag = service.inner.bento_model.tag
                raise HTTPException(503, f"Model {tag} is not ready: {readiness.reason}")
        unready = WORKER_BOARD.unready() if WORKER_BOARD is not None else []
        if unready:
            workers = ", ".join(map(str, unready))
            raise HTTPException(503, f"API worker(s) {workers} still loading their models.")
        return True


def in_process_gpu() -> bool:
    """Whether the API worker asks for the models' GPUs (they run inside it)."""
    return PLACEMENT.in_api_workers and settings.gpu_count > 0


def dependency_name(index: int) -> str:
    """The API service's attribute for the ``index``-th model service."""
    return "model" if index == 0 else f"model{index + 1}"


for _index, _service in enumerate(MODEL_SERVICES):
    if PLACEMENT.in_api_workers:  # its own models: a Bento built so still packs them
        setattr(_ApiService, f"bento_model_{_index}", _service.inner.bento_model)
    else:
        setattr(_ApiService, dependency_name(_index), bentoml.depends(_service))
ApiService = bentoml.service(
    name="ApiService",
    workers=PLACEMENT.api_workers,
    **({"resources": {"gpu": settings.gpu_count}} if in_process_gpu() else {}),
    traffic={"timeout": settings.api_timeout_seconds},
)(bentoml.asgi_app(app)(_ApiService))


for _middleware in edge_middlewares(
    settings, is_draining=lambda: API_DRAIN.draining, board=WORKER_BOARD
):
    ApiService.add_asgi_middleware(_middleware.cls, **_middleware.kwargs)
