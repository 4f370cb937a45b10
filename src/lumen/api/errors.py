"""The one place where exceptions become HTTP responses: always the OpenAI error envelope."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from lumen.errors import InvalidRequest, LumenError, MethodNotAllowed, NotFound, PayloadTooLarge

log = logging.getLogger(__name__)


def error_response(error: LumenError) -> Response:
    headers = dict(error.headers)
    if error.status == 429 or error.status >= 500:
        headers.setdefault(
            "x-should-retry", "true" if error.status != 429 or "retry-after" in headers else "false"
        )
    return Response(
        orjson.dumps(error.envelope()),
        status_code=error.status,
        headers=headers,
        media_type="application/json",
    )


def invalid_request(errors: Sequence[Any]) -> InvalidRequest:
    """The first of FastAPI's validation errors as Lumen's 400, naming the field."""
    first = errors[0]
    param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
    return InvalidRequest(f"Invalid value for '{param}': {first['msg']}.", param=param)


async def handle_lumen_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LumenError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown route, wrong method) in our envelope."""
    assert isinstance(exc, HTTPException)
    error: LumenError
    if exc.status_code == 404:
        error = NotFound(f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}.")
    elif exc.status_code == 413:
        error = PayloadTooLarge(str(exc.detail))
    else:
        error = InvalidRequest(str(exc.detail))
        error.status = exc.status_code
    return error_response(error)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = LumenError("The server had an error while processing your request.")
    return error_response(error)
