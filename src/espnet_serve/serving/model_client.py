"""The API service's calls to the model service, with the failures told apart.

BentoML's dependency client raises aiohttp's connection errors as they are
(``ServerDisconnectedError``, ``Connector is closed``, ...) and BentoML
exceptions for HTTP errors of the model service. Here each becomes the
response it deserves: a transcription is idempotent, so a call that failed at
the connection level is retried once (never one that timed out); what still
fails is 503 (the model service is unreachable or not ready), 500 (it failed)
or 504 (it took longer than the request timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import aiohttp
from bentoml.exceptions import BentoMLException, ServiceUnavailable

from espnet_serve.serving.errors import ApiError, InternalError, model_unavailable
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.rpc import (
    EnhanceRequest,
    EnhanceResult,
    ModelInfo,
    Readiness,
    SegmentRequest,
    SegmentResult,
    StreamChunk,
    StreamClose,
    StreamText,
    SynthesisRequest,
    SynthesisResult,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
CONNECTION_RETRIES = 1
READY_POLL_SECONDS = 0.5  # how often a lost segment's request asks whether a worker is back


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection-level failure (worth one retry), not a timeout."""
    return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(exc, TimeoutError)


async def call_model(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_after_seconds: int,
    connection_retries: int = CONNECTION_RETRIES,
) -> T:
    """Run one model-service call, retrying at once on a connection error.

    Args:
        call: Makes the call (called again for the retry).
        what: What the call does, for messages and logs.
        retry_after_seconds: ``Retry-After`` of a 503.
        connection_retries: How many times a call that lost its connection is made again.

    Returns:
        The call's result.

    Raises:
        ApiError: ``model_unavailable`` (503) when the model service is unreachable or not
            ready, ``timeout`` (504) when it did not answer in time.
        InternalError: When it failed (500).
    """
    for attempt in range(connection_retries + 1):
        try:
            return await call()
        except ServiceUnavailable as exc:
            raise model_unavailable(_first_line(exc), retry_after_seconds) from exc
        except TimeoutError as exc:
            raise ApiError(
                "timeout", f"The model service did not answer in time ({what})."
            ) from exc
        except BentoMLException as exc:
            raise InternalError(f"the model service failed ({what})", exc) from exc
        except aiohttp.ClientError as exc:
            if is_connection_error(exc) and attempt < connection_retries:
                logger.warning("Model service connection failed (%s), retrying: %r", what, exc)
                continue
            if is_connection_error(exc):
                raise model_unavailable(
                    f"the model service cannot be reached ({type(exc).__name__})",
                    retry_after_seconds,
                ) from exc
            raise InternalError(f"the model service call failed ({what})", exc) from exc
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ModelClient(Protocol):
    """What the HTTP layer needs from the model service."""

    async def readiness(self) -> Readiness:
        """Whether the model is ready, and why not."""

    async def model_info(self) -> ModelInfo:
        """The served model (name, version, sample rate, shortest input)."""

    async def decode(self, request: SegmentRequest) -> SegmentResult:
        """One segment decoded, or its error (batched with others by the model service)."""

    async def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """One sentence spoken, or its error."""

    async def enhance(self, request: EnhanceRequest) -> EnhanceResult:
        """One recording enhanced (its tracks), or its error."""

    async def stream(self, chunk: StreamChunk) -> StreamText:
        """The next chunk of a realtime stream decoded: the text so far, or its error."""

    async def close_stream(self, request: StreamClose) -> None:
        """Give up a stream whose session ended first."""


class BentoModelClient:
    """:class:`ModelClient` over a BentoML dependency (``bentoml.depends(ModelService)``).

    Args:
        dependency: The dependency's client (its ``to_async`` calls are used).
        retry_after_seconds: ``Retry-After`` of a 503.
    """

    def __init__(
        self, dependency: Any, *, retry_after_seconds: int, request_timeout_seconds: float
    ) -> None:
        self._calls = dependency.to_async
        self._retry_after = retry_after_seconds
        self._timeout = request_timeout_seconds

    async def readiness(self) -> Readiness:
        """See :class:`ModelClient`."""
        return await call_model(
            self._calls.readiness, what="readiness", retry_after_seconds=self._retry_after
        )

    async def model_info(self) -> ModelInfo:
        """See :class:`ModelClient`."""
        return await call_model(
            self._calls.model_info, what="model info", retry_after_seconds=self._retry_after
        )

    async def decode(self, request: SegmentRequest) -> SegmentResult:
        """See :class:`ModelClient`; a segment lost with its worker is sent again.

        Decoding is idempotent: when the connection drops under the call (the worker died,
        or a pooled connection was stale), the segment waits for a ready worker and is sent
        again, as often as that happens, until the request's timeout (counted from
        ``request.sent_at``) runs out. A segment sent while no worker is ready, and never
        lost, is refused at once (503).

        Raises:
            ApiError: ``model_unavailable`` (503, ``Retry-After``) when no worker came back
                in time; see :func:`call_model` for the others.
        """
        (result,) = await self._resent_if_lost(
            lambda: self._calls.decode([request]),
            sent_at=request.sent_at,
            what="decode",
            lost_what=f"decoding segment {request.index}",
        )
        return result

    async def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """See :class:`ModelClient`; sent again when lost with its worker, as :meth:`decode`.

        A synthesis is seeded, hence idempotent too.
        """
        return await self._resent_if_lost(
            lambda: self._calls.synthesize(request),
            sent_at=request.sent_at,
            what="synthesize",
            lost_what="speaking a sentence",
        )

    async def enhance(self, request: EnhanceRequest) -> EnhanceResult:
        """See :class:`ModelClient`; sent again when lost with its worker, as :meth:`decode`."""
        return await self._resent_if_lost(
            lambda: self._calls.enhance(request),
            sent_at=request.sent_at,
            what="enhance",
            lost_what="enhancing a recording",
        )

    async def stream(self, chunk: StreamChunk) -> StreamText:
        """See :class:`ModelClient`. Never sent twice: a chunk decoded twice changes the stream."""
        return await call_model(
            lambda: self._calls.stream(chunk),
            what="stream",
            retry_after_seconds=self._retry_after,
            connection_retries=0,
        )

    async def close_stream(self, request: StreamClose) -> None:
        """See :class:`ModelClient`."""
        await call_model(
            lambda: self._calls.close_stream(request),
            what="close stream",
            retry_after_seconds=self._retry_after,
        )

    async def _resent_if_lost(
        self, call: Callable[[], Awaitable[T]], *, sent_at: float, what: str, lost_what: str
    ) -> T:
        """Make ``call``; when its worker is lost, again once one is ready, until the timeout."""
        deadline = sent_at + self._timeout
        lost = False
        while True:
            try:
                return await call_model(
                    call, what=what, retry_after_seconds=self._retry_after, connection_retries=0
                )
            except ApiError as exc:
                lost = lost or _connection_lost(exc)
                if not (lost and exc.code == "model_unavailable"):
                    raise
                if not await self._ready_by(deadline):
                    raise model_unavailable(
                        "its worker was lost and none was ready again within the request "
                        f"timeout ({self._timeout:g} s)",
                        self._retry_after,
                    ) from exc
                get_metrics().segments_resent.inc()
                logger.warning(
                    "The model worker %s was lost; a worker is ready again, sending it again.",
                    lost_what,
                )

    async def _ready_by(self, deadline: float) -> bool:
        """Whether a model worker is ready before ``deadline`` (``time.time()``), polling."""
        while time.time() < deadline:
            try:
                if (await self._calls.readiness()).ready:
                    return True
            except Exception as exc:  # not back yet: unreachable, or not serving
                logger.debug("Waiting for a model worker: %r", exc)
            await asyncio.sleep(min(READY_POLL_SECONDS, max(0.0, deadline - time.time())))
        return False


def _connection_lost(error: ApiError) -> bool:
    """Whether a call failed because its connection to the model worker was lost."""
    return error.__cause__ is not None and is_connection_error(error.__cause__)
