"""Send an ``ErrorResponse`` straight from ASGI middleware (before any app has run)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Send

from espnet_serve.serving.schemas import ErrorDetail, ErrorResponse


async def send_error(
    send: Send, status: int, detail: ErrorDetail, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with ``status`` and ``{"error": detail}`` as JSON, plus ``headers``."""
    body = ErrorResponse(error=detail).model_dump_json().encode()
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})
