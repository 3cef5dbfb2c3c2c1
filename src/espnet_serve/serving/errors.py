"""HTTP errors: the one place where an error gets its status, rendered as ``{"error": {...}}``.

Every error has a ``code`` (OpenAI's field, and the label of ``espnet_serve_errors_total``);
:data:`STATUS` gives each code its HTTP status. Lower layers raise typed errors that know
nothing of HTTP (``AudioInputError``, ``SegmentDecodeError``, ``InvalidOptionError``); the
serving layer raises :class:`ApiError`. :func:`error_response` turns any of them, or anything
unexpected (an :class:`InternalError`, logged with an id), into a status and a body: for the
app's exception handlers, for the ASGI middlewares that answer before the app runs
(:func:`send_error`), and for an error in the middle of an event stream.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Scope, Send

from espnet_serve.audio.ingest import AudioInputError
from espnet_serve.pipeline.types import SegmentDecodeError
from espnet_serve.serving.middleware.request_id import current_request_id
from espnet_serve.serving.protocol import ErrorDetail, ErrorResponse, InvalidOptionError

logger = logging.getLogger(__name__)
INTERNAL_ERROR = "internal_error"
STATUS: dict[str, int] = {
    # The request cannot be served as sent: the client's to fix.
    "invalid_request": 400,
    "invalid_language": 400,
    "unsupported_language": 400,
    "word_timestamps_unsupported": 400,
    "task_unsupported": 400,
    "unknown_voice": 400,
    "speed_unsupported": 400,
    "nothing_to_speak": 400,
    "unknown_words": 400,
    "invalid_audio": 400,
    "empty_audio": 400,
    "audio_too_short": 400,
    "unsupported_sample_rate": 400,
    "too_many_channels": 400,
    "truncated_audio": 400,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "upload_too_slow": 408,
    "audio_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_parameters": 422,
    # Ours: a fault (500), not now (503, with Retry-After), too slow (504).
    INTERNAL_ERROR: 500,
    "decode_failed": 500,
    "bad_model_output": 500,
    "model_unavailable": 503,
    "overloaded": 503,
    "draining": 503,
    "timeout": 504,
}


class ApiError(Exception):
    """An error of the serving layer; its ``code`` sets the status (:data:`STATUS`).

    Args:
        code: OpenAI's ``code`` field (``model_not_found``, ``overloaded``, ...).
        message: Plain words for the client.
        param: The request field at fault, if any.
        retry_after_seconds: Sent as ``Retry-After`` (503s).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_id: str | None = None
        self.headers = (
            {} if retry_after_seconds is None else {"Retry-After": str(retry_after_seconds)}
        )

    @property
    def status(self) -> int:
        """The HTTP status of :attr:`code` (500 for a code with none: a fault of ours)."""
        return STATUS.get(self.code, 500)


class BodyError(HTTPException):
    """An :class:`ApiError` raised while a middleware reads the request body for the app.

    FastAPI turns any other exception from its body parsing into a bare 400; it lets an
    ``HTTPException`` through, and this one is answered as the error it carries.
    """

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, error.message, error.headers)
        self.error = error


class InternalError(ApiError):
    """A fault of ours; logged with its traceback under an id the client also gets.

    Args:
        what: What failed, for the message and the log.
        cause: The exception behind it (its traceback is logged).
        code: ``internal_error``, or a more precise one (``decode_failed``).
    """

    def __init__(
        self, what: str, cause: BaseException | None = None, *, code: str = INTERNAL_ERROR
    ) -> None:
        error_id = uuid.uuid4().hex[:16]
        super().__init__(
            code, f"Internal server error: {what}. Quote error id {error_id} when reporting it."
        )
        self.error_id = error_id
        logger.error(
            "Internal error %s (%s), request %s: %s",
            error_id,
            code,
            current_request_id(),
            what,
            exc_info=cause,
        )


def model_unavailable(reason: str, retry_after_seconds: int) -> ApiError:
    """503: the model service is not ready or cannot be reached."""
    return ApiError(
        "model_unavailable",
        f"The model is not available: {reason}",
        retry_after_seconds=retry_after_seconds,
    )


def error_code(exc: BaseException) -> str:
    """The ``code`` of any error (``internal_error`` for one of no kind of ours)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else INTERNAL_ERROR


def as_api_error(exc: BaseException) -> ApiError:
    """The :class:`ApiError` that ``exc`` is answered with."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AudioInputError):
        return ApiError(exc.code, str(exc), param="file")
    if isinstance(exc, InvalidOptionError):
        return ApiError(exc.code, exc.message, param=exc.param)
    if isinstance(exc, SegmentDecodeError):
        if exc.invalid_input:
            return ApiError(exc.code, str(exc), param="file")
        return InternalError(str(exc), code=exc.code)
    if isinstance(exc, RequestValidationError):
        return _invalid_parameters(exc)
    return InternalError(f"unexpected {type(exc).__name__}", exc)


def error_response(exc: BaseException) -> tuple[int, ErrorResponse, dict[str, str]]:
    """The status, body and headers ``exc`` is answered with."""
    if isinstance(exc, BodyError):
        exc = exc.error
    if isinstance(exc, HTTPException):  # Starlette's own: an unknown route, a wrong method
        detail = _detail(exc.status_code, str(exc.detail), code=None)
        return exc.status_code, ErrorResponse(error=detail), dict(exc.headers or {})
    error = as_api_error(exc)
    detail = _detail(
        error.status, error.message, code=error.code, param=error.param, error_id=error.error_id
    )
    return error.status, ErrorResponse(error=detail), error.headers


def _detail(status: int, message: str, *, code: str | None, **fields: str | None) -> ErrorDetail:
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    return ErrorDetail(
        message=message, type=error_type, code=code, request_id=current_request_id(), **fields
    )


async def send_error(
    send: Send, exc: BaseException, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer straight from ASGI middleware (before any app has run) with ``exc``'s response."""
    await _send_json_error(send, "http.response", exc, headers)


async def refuse_websocket(
    scope: Scope, send: Send, exc: BaseException, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Refuse a WebSocket handshake with ``exc``'s HTTP response (JSON body, its status).

    Through ASGI's WebSocket denial response where the server offers it (uvicorn does); else
    by closing before the handshake completes, which the server answers with 403.
    """
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    await _send_json_error(send, "websocket.http.response", exc, headers)


async def _send_json_error(
    send: Send, kind: str, exc: BaseException, headers: list[tuple[bytes, bytes]] | None
) -> None:
    """Send ``exc``'s status and JSON body as ASGI ``<kind>.start`` and ``<kind>.body``."""
    status, body, error_headers = error_response(exc)
    content = body.model_dump_json().encode()
    await send(
        {
            "type": f"{kind}.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *((name.lower().encode(), value.encode()) for name, value in error_headers.items()),
                *(headers or []),
            ],
        }
    )
    await send({"type": f"{kind}.body", "body": content})


def _invalid_parameters(exc: RequestValidationError) -> ApiError:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}"
        for err in exc.errors()
    )
    first = exc.errors()[0]["loc"] if exc.errors() else ()
    return ApiError(
        "invalid_parameters",
        f"Invalid request parameters: {problems}",
        param=str(first[-1]) if first else None,
    )


async def _handle(_: Request, exc: Exception) -> JSONResponse:
    status, body, headers = error_response(exc)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as an ``ErrorResponse`` with its status."""
    for error_class in (
        ApiError,
        AudioInputError,
        InvalidOptionError,
        SegmentDecodeError,
        RequestValidationError,
        HTTPException,
        Exception,
    ):
        app.add_exception_handler(error_class, _handle)
