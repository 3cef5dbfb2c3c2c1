"""Admission control of the API service: the one place where requests are shed.

A transcription request is admitted when fewer than the limit are in flight in
this worker and the worker is not draining; otherwise it is answered at once
with 503, ``Retry-After`` and a JSON body, before its audio is decoded. The
request body is read and dropped first, so that the client reads the answer
instead of a connection reset.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from espnet_serve.serving.errors import ApiError, send_error
from espnet_serve.serving.middleware.inflight import InFlight

# Past this many bytes of an unadmitted body, close the connection instead of reading on.
DISCARD_LIMIT_BYTES = 1024 * 1024


class AdmissionMiddleware:
    """Admit transcription requests up to ``limit`` in flight; refuse the rest with 503.

    Args:
        app: The ASGI app behind.
        routes: Paths whose POST requests are transcriptions.
        in_flight: The worker's counter of admitted requests.
        limit: Most admitted requests in flight at once.
        retry_after_seconds: ``Retry-After`` of a refusal.
        is_draining: Whether the worker is shutting down (refuse everything).
        on_refused: Called with the code, ``overloaded`` or ``draining``, of each refusal.
        on_admitted: Called with +1 when a request is admitted and -1 when it ends.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Collection[str],
        in_flight: InFlight,
        limit: int,
        retry_after_seconds: int,
        is_draining: Callable[[], bool],
        on_refused: Callable[[str], None],
        on_admitted: Callable[[int], None],
    ) -> None:
        self.app = app
        self.routes = frozenset(routes)
        self.in_flight = in_flight
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.is_draining = is_draining
        self.on_refused = on_refused
        self.on_admitted = on_admitted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit, or refuse with 503, a transcription request; pass anything else through."""
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self.routes
        ):
            await self.app(scope, receive, send)
            return
        code = "draining" if self.is_draining() else None
        if code is None and self.in_flight.count >= self.limit:
            code = "overloaded"
        if code is not None:
            self.on_refused(code)
            await self._refuse(code, receive, send)
            return
        self.in_flight.enter()
        self.on_admitted(1)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.exit()
            self.on_admitted(-1)

    async def _refuse(self, code: str, receive: Receive, send: Send) -> None:
        fully_read = await _discard_body(receive)
        message = (
            "The server is shutting down; retry on another replica or shortly."
            if code == "draining"
            else "The server is at capacity; retry shortly."
        )
        refusal = ApiError(code, message, retry_after_seconds=self.retry_after_seconds)
        close = code == "draining" or not fully_read
        await send_error(send, refusal, [(b"connection", b"close")] if close else None)


async def _discard_body(receive: Receive) -> bool:
    """Read and drop a request body; False when it was too large to read (close then)."""
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        received += len(message.get("body", b""))
        if received > DISCARD_LIMIT_BYTES:
            return False
        if not message.get("more_body", False):
            return True
