"""HTTP errors of the API service, rendered as ``{"error": {...}}`` JSON bodies."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from espnet_serve.ingest import AudioInputError
from espnet_serve.serving.request_id import current_request_id
from espnet_serve.serving.schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with an HTTP status, an error code and optional response headers."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        error_id: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.error_id = error_id
        self.param = param


def internal_error(
    what: str, cause: BaseException | None = None, *, code: str = "internal_error"
) -> ServiceError:
    """500: a fault of ours; logged with its traceback under an id the client also gets."""
    error_id = uuid.uuid4().hex[:16]
    logger.error(
        "Internal error %s (%s), request %s: %s",
        error_id,
        code,
        current_request_id(),
        what,
        exc_info=cause,
    )
    return ServiceError(
        500,
        code,
        f"Internal server error: {what}. Quote error id {error_id} when reporting it.",
        error_id=error_id,
    )


def overloaded(retry_after_seconds: int) -> ServiceError:
    """503: too much work is pending; the client should retry later."""
    return ServiceError(
        503,
        "overloaded",
        "The server is at capacity; retry shortly.",
        {"Retry-After": str(retry_after_seconds)},
    )


def model_unavailable(reason: str, retry_after_seconds: int) -> ServiceError:
    """503: the model service is not ready or did not answer."""
    return ServiceError(
        503,
        "model_unavailable",
        f"The model is not available: {reason}",
        {"Retry-After": str(retry_after_seconds)},
    )


def error_body(exc: BaseException) -> tuple[int, ErrorResponse]:
    """The status and body an exception is answered with (logged with an id if unexpected)."""
    if isinstance(exc, AudioInputError):
        detail = ErrorDetail(
            message=str(exc), type="invalid_request_error", param="file", code=exc.kind
        )
        return exc.status_code, ErrorResponse(error=detail)
    if not isinstance(exc, ServiceError):
        exc = internal_error(f"unexpected {type(exc).__name__}", exc)
    detail = ErrorDetail(
        message=exc.message,
        type=_error_type(exc.status_code),
        param=exc.param,
        code=exc.code,
        error_id=exc.error_id,
    )
    return exc.status_code, ErrorResponse(error=detail)


def _error_json(
    status_code: int,
    message: str,
    *,
    kind: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    error_id: str | None = None,
) -> JSONResponse:
    detail = ErrorDetail(message=message, type=kind, param=param, code=code, error_id=error_id)
    return JSONResponse(
        ErrorResponse(error=detail).model_dump(), status_code=status_code, headers=headers
    )


def _error_type(status_code: int) -> str:
    return "server_error" if status_code >= 500 else "invalid_request_error"


async def _audio_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AudioInputError)
    status, body = error_body(exc)
    return JSONResponse(body.model_dump(), status_code=status)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    status, body = error_body(exc)
    return JSONResponse(body.model_dump(), status_code=status, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Any exception nothing else handled: 500 JSON, never a plain-text page."""
    error = internal_error(f"unexpected {type(exc).__name__} on {request.url.path}", exc)
    return await _service_error(request, error)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}"
        for err in exc.errors()
    )
    first = exc.errors()[0]["loc"] if exc.errors() else ()
    return _error_json(
        422,
        f"Invalid request parameters: {problems}",
        kind="invalid_request_error",
        code="invalid_parameters",
        param=str(first[-1]) if first else None,
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = "audio_too_large" if exc.status_code == 413 else None
    return _error_json(
        exc.status_code,
        str(exc.detail),
        kind=_error_type(exc.status_code),
        code=code,
        headers=dict(exc.headers or {}),
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as an ``ErrorResponse`` with the right status."""
    app.add_exception_handler(AudioInputError, _audio_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
