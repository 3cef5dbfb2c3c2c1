"""The API's routes, one small router per resource; the handlers do the work."""

from __future__ import annotations

from espnet_serve.serving.protocol import ErrorResponse

ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 422, 500, 503, 504)
}
