"""Limits on a request body while it arrives: its size, its pace, and the bytes a worker holds.

BentoML and Starlette set none. A body is refused with:

- 413 ``audio_too_large`` past ``max_bytes`` (a declared ``Content-Length`` at once);
- 408 ``upload_too_slow`` when it falls behind a minimum pace: after ``grace_seconds``, at least
  ``min_bytes_per_second`` on average since the request started. A stalled or trickling upload
  (a slowloris) is cut off, and the connection closed;
- 503 ``overloaded`` (with ``Retry-After``) when the bodies this worker holds (in memory up to
  the multipart parser's spool size each, the rest spooled to disk) would pass
  ``max_bytes_held``: the bound on a worker's upload disk, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from espnet_serve.serving.errors import ApiError, BodyError, send_error

CLOSE = [(b"connection", b"close")]


def body_too_large(max_bytes: int) -> ApiError:
    """The 413 of an oversize request body."""
    return ApiError(
        "audio_too_large",
        f"Request body is larger than the {max_bytes}-byte limit.",
        param="file",
    )


class HeldBytes:
    """The request-body bytes one worker holds, up to a cap.

    Args:
        cap: Most bytes held at once.
        on_change: Called with each change (the metric).
    """

    def __init__(self, cap: int, on_change: Callable[[int], None] = lambda delta: None) -> None:
        self.cap = cap
        self.held = 0
        self.on_change = on_change

    def take(self, count: int) -> bool:
        """Hold ``count`` more bytes; False (nothing taken) when that would pass the cap."""
        if self.held + count > self.cap:
            return False
        self.held += count
        self.on_change(count)
        return True

    def release(self, count: int) -> None:
        """Give back ``count`` bytes."""
        self.held -= count
        self.on_change(-count)


class UploadLimitsMiddleware:
    """Refuse a POST body that is too large (413), too slow (408) or over the worker's cap (503).

    Args:
        app: The ASGI app behind.
        max_bytes: Largest body.
        grace_seconds: How long a body may take before its pace is checked.
        min_bytes_per_second: Slowest average pace accepted after the grace.
        held: The worker's body bytes (shared by its requests).
        retry_after_seconds: ``Retry-After`` of a 503.
        on_refused: Called with the code of each refusal.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        grace_seconds: float,
        min_bytes_per_second: int,
        held: HeldBytes,
        retry_after_seconds: int,
        on_refused: Callable[[str], None],
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.grace_seconds = grace_seconds
        self.min_bytes_per_second = min_bytes_per_second
        self.held = held
        self.retry_after_seconds = retry_after_seconds
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, its body read under the limits."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            self.on_refused("audio_too_large")
            await send_error(send, body_too_large(self.max_bytes), CLOSE)
            return
        body = _Body(self, receive)
        try:
            await self.app(scope, body.receive, send)
        finally:
            self.held.release(body.held)

    def too_slow(self, received: int, elapsed: float) -> ApiError:
        """The 408 of a body that fell behind the pace."""
        return ApiError(
            "upload_too_slow",
            f"The upload arrived too slowly: {received} bytes in {elapsed:.0f} s; after "
            f"{self.grace_seconds:g} s it must average at least {self.min_bytes_per_second} "
            "bytes per second.",
            param="file",
        )

    def over_cap(self) -> ApiError:
        """The 503 of a body that would pass the worker's cap on held bytes."""
        return ApiError(
            "overloaded",
            "The server holds as many uploads as it can; retry shortly.",
            retry_after_seconds=self.retry_after_seconds,
        )

    def refuse(self, error: ApiError) -> BodyError:
        """``error``, counted, as raised from the body's ``receive`` (the body is left unread)."""
        self.on_refused(error.code)
        error.headers["Connection"] = "close"
        return BodyError(error)


class _Body:
    """One request's body, received under its middleware's limits."""

    def __init__(self, limits: UploadLimitsMiddleware, receive: Receive) -> None:
        self.limits = limits
        self._receive = receive
        self.started = time.monotonic()
        self.received = 0
        self.held = 0
        self.complete = False

    async def receive(self) -> Message:
        """The next message; the limits apply until the body is complete."""
        if self.complete:
            return await self._receive()
        limits = self.limits
        deadline = self.started + limits.grace_seconds + self.received / limits.min_bytes_per_second
        try:
            message = await asyncio.wait_for(self._receive(), deadline - time.monotonic())
        except TimeoutError:
            error = limits.too_slow(self.received, time.monotonic() - self.started)
            raise limits.refuse(error) from None
        if message["type"] != "http.request":
            return message
        size = len(message.get("body", b""))
        self.received += size
        if self.received > limits.max_bytes:
            raise limits.refuse(body_too_large(limits.max_bytes))
        if not limits.held.take(size):
            raise limits.refuse(limits.over_cap())
        self.held += size
        self.complete = not message.get("more_body", False)
        return message
