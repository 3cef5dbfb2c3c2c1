"""Admission control of the API service: the one place where requests are shed.

A transcription request is admitted once its whole body has arrived, when fewer than the
limit are admitted in this worker; otherwise it is answered with 503, ``Retry-After`` and a
JSON body, before its audio is decoded. A body that is still arriving holds no slot, so slow
or stalled uploads (cut off by :mod:`~espnet_serve.serving.middleware.upload_limits`) never
keep other clients out. While the worker drains, a new request is refused at once: its body
is read and dropped first, so that the client reads the answer instead of a connection reset.
Every request counts in ``in_flight`` (what the SIGTERM drain waits for) from its arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from espnet_serve.serving.errors import ApiError, BodyError, send_error
from espnet_serve.serving.middleware.inflight import InFlight

# Past this many bytes of an unadmitted body, close the connection instead of reading on.
DISCARD_LIMIT_BYTES = 1024 * 1024


class AdmissionMiddleware:
    """Admit transcription requests up to ``limit`` in flight; refuse the rest with 503.

    Args:
        app: The ASGI app behind.
        routes: Paths whose POST requests are transcriptions.
        in_flight: The worker's counter of requests in flight (admitted or still arriving).
        limit: Most admitted requests at once.
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
        self.admitted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit, or refuse with 503, a transcription request; pass anything else through."""
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self.routes
        ):
            await self.app(scope, receive, send)
            return
        if self.is_draining():
            self.on_refused("draining")
            await self._refuse("draining", receive, send)
            return
        admitted = False

        async def admitting_receive() -> Message:
            nonlocal admitted
            message = await receive()
            body_done = message["type"] == "http.request" and not message.get("more_body", False)
            if body_done and not admitted:
                if self.admitted >= self.limit:
                    self.on_refused("overloaded")
                    raise BodyError(self._refusal("overloaded"))
                admitted = True
                self.admitted += 1
                self.on_admitted(1)
            return message

        self.in_flight.enter()
        try:
            await self.app(scope, admitting_receive, send)
        finally:
            self.in_flight.exit()
            if admitted:
                self.admitted -= 1
                self.on_admitted(-1)

    def _refusal(self, code: str) -> ApiError:
        message = (
            "The server is shutting down; retry on another replica or shortly."
            if code == "draining"
            else "The server is at capacity; retry shortly."
        )
        return ApiError(code, message, retry_after_seconds=self.retry_after_seconds)

    async def _refuse(self, code: str, receive: Receive, send: Send) -> None:
        await _discard_body(receive)
        await send_error(send, self._refusal(code), [(b"connection", b"close")])


async def _discard_body(receive: Receive) -> None:
    """Read and drop a request body, up to :data:`DISCARD_LIMIT_BYTES` (then close)."""
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if received > DISCARD_LIMIT_BYTES or not message.get("more_body", False):
            return
