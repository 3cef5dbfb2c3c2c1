"""Request ids: an incoming ``X-Request-ID`` is kept (else one is made), echoed and logged.

The id is in a context variable for the request's duration, so every error body
(``ErrorDetail.request_id``) and log line of ours can carry it, and in one access
line per request (logger ``espnet_serve.access``).
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
# What a client's id may look like to be kept (else a new one is made): no log injection.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_log = logging.getLogger("espnet_serve.access")


def current_request_id() -> str | None:
    """The id of the request being served (``None`` outside one)."""
    return _current.get()


class RequestIdMiddleware:
    """Keeps or makes each HTTP request's id, echoes it and logs one access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with its id set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(HEADER, b"").decode("latin-1")
        request_id = given if _ACCEPTED.fullmatch(given) else uuid.uuid4().hex
        token = _current.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %d %.1f ms request_id=%s",
                scope.get("method"),
                scope.get("path"),
                status,
                1000 * (time.perf_counter() - started),
                request_id,
            )
            _current.reset(token)
