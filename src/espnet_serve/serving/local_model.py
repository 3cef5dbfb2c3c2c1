"""The models inside the API worker: :class:`ModelClient` without the hop between services.

Where the API and the model share a pod and its CPUs, the HTTP hop between the two
services costs as much CPU per request as a small model's decode (``bench/README.md``,
"Where the served path's time goes"). Where :mod:`~espnet_serve.serving.placement` puts the
models in the API workers (by default on a CPU, for small models), each API worker loads
them itself (:class:`~espnet_serve.serving.model_service.ModelServiceBase`: the same
loading, warm-up, metrics and methods as the model service) and batches segments
with BentoML's own adaptive batcher (``CorkDispatcher``, as the model service's batchable
API does), one batch at a time on a thread of its own. Nothing is pickled and nothing goes
over a socket; each API worker holds its own copy of every model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn, TypeVar

from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml.exceptions import ServiceUnavailable

from espnet_serve.serving.model_client import call_model
from espnet_serve.serving.model_service import ModelServiceBase
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

T = TypeVar("T")


def _overloaded() -> NoReturn:
    """The batcher's answer to a segment it dropped at its deadline (as BentoML's).

    ``CorkDispatcher`` also calls it when the caller itself is cancelled (a client gone):
    that stays a cancellation, not a 503 counted against the model.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    raise ServiceUnavailable("the model is overloaded: the segment waited past its deadline")


class InProcessModelClient:
    """:class:`~espnet_serve.serving.model_client.ModelClient` over a model in this process.

    Args:
        model: The model, loading in the background (``install_drain=False``: the API
            worker's drain covers it).
        max_batch_size: Most segments in one batch.
        max_latency_ms: The batcher's drop deadline (the request timeout, as the model
            service's).
        retry_after_seconds: ``Retry-After`` of a 503.
    """

    def __init__(
        self,
        model: ModelServiceBase,
        *,
        max_batch_size: int,
        max_latency_ms: int,
        retry_after_seconds: int,
    ) -> None:
        self.model = model
        self._retry_after = retry_after_seconds
        # One thread: espnet2's classes are not thread-safe, and the batcher runs one
        # batch at a time anyway.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._batcher: CorkDispatcher[SegmentRequest, SegmentResult] = CorkDispatcher(
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            fallback=_overloaded,
            get_batch_size=lambda _request: 1,
        )
        self._decode = self._batcher(self._decode_batch)

    async def _decode_batch(self, requests: Sequence[SegmentRequest]) -> list[SegmentResult]:
        return await self._on_model_thread(self.model.decode, list(requests))

    async def _on_model_thread(self, method: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, method, *args)

    async def _call(self, what: str, method: Callable[..., T], *args: object) -> T:
        async def call() -> T:
            return await self._on_model_thread(method, *args)

        return await call_model(
            call, what=what, retry_after_seconds=self._retry_after, connection_retries=0
        )

    async def readiness(self) -> Readiness:
        """See :class:`ModelClient`."""
        return self.model.readiness()

    async def model_info(self) -> ModelInfo:
        """See :class:`ModelClient`."""

        async def info() -> ModelInfo:
            return self.model.model_info()

        return await call_model(info, what="model info", retry_after_seconds=self._retry_after)

    async def decode(self, request: SegmentRequest) -> SegmentResult:
        """See :class:`ModelClient`: batched with the other segments waiting."""

        async def call() -> SegmentResult:
            result = await self._decode(request)
            assert result is not None
            return result

        return await call_model(
            call, what="decode", retry_after_seconds=self._retry_after, connection_retries=0
        )

    async def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """See :class:`ModelClient`."""
        return await self._call("synthesize", self.model.synthesize, request)

    async def enhance(self, request: EnhanceRequest) -> EnhanceResult:
        """See :class:`ModelClient`."""
        return await self._call("enhance", self.model.enhance, request)

    async def stream(self, chunk: StreamChunk) -> StreamText:
        """See :class:`ModelClient`."""
        return await self._call("stream", self.model.stream, chunk)

    async def close_stream(self, request: StreamClose) -> None:
        """See :class:`ModelClient`."""
        await self._call("close stream", self.model.close_stream, request)
