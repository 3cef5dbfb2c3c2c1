"""Request-size limit for the HTTP API (BentoML and Starlette set none)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from espnet_serve.serving.errors import ApiError, send_error


def body_too_large(max_bytes: int) -> ApiError:
    """The 413 of an oversize request body."""
    return ApiError(
        "audio_too_large",
        f"Request body is larger than the {max_bytes}-byte limit.",
        param="file",
    )


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 before they are buffered.

    A declared ``Content-Length`` over the limit is answered at once; a
    streamed body is counted as it arrives and, once past the limit, reading it
    raises the 413 :class:`ApiError`, which the app's error handler renders.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, refusing it with 413 once its body is over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise body_too_large(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, send: Send) -> None:
        await send_error(send, body_too_large(self.max_bytes), [(b"connection", b"close")])
