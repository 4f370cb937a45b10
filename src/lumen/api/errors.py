"""The one place where exceptions become HTTP responses: always the OpenAI error envelope."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from lumen.errors import InvalidRequest, LumenError, MethodNotAllowed, NotFound, PayloadTooLarge


def error_response(error: LumenError, envelope: dict[str, Any] | None = None) -> Response:
    """`error` as an HTTP response: its status and headers (the retry rules written once, for every
    surface) and `envelope`, the surface's own error body (OpenAI's when not given)."""
    headers = dict(error.headers)
    if error.status == 429 or error.status >= 500:
        headers.setdefault(
            "x-should-retry", "true" if error.status != 429 or "retry-after" in headers else "false"
        )
    return Response(
        orjson.dumps(error.envelope() if envelope is None else envelope),
        status_code=error.status,
        headers=headers,
        media_type="application/json",
    )


def invalid_request(errors: Sequence[Any]) -> InvalidRequest:
    """The first of FastAPI's validation errors as Lumen's 400, naming the field."""
    first = errors[0]
    param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
    # pydantic prefixes the message of a validator's ValueError; the caller needs only the message.
    message = str(first["msg"]).removeprefix("Value error, ")
    if not param:
        return InvalidRequest(f"Invalid request body: {message}.")
    return InvalidRequest(f"Invalid value for '{param}': {message}.", param=param)


async def handle_lumen_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LumenError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown route, wrong method) in our envelope."""
    assert isinstance(exc, HTTPException)
    return error_response(http_error(request, exc))


def http_error(
    request: Request, exc: HTTPException, *, not_found: str = "Unknown request URL: {method} {path}."
) -> LumenError:
    """A framework's HTTPException as the LumenError of its status (`not_found` lets the portal
    say "page" where the API says "URL")."""
    error: LumenError
    if exc.status_code == 404:
        message = not_found.format(method=request.method, path=request.url.path)
        error = NotFound(message, code="unknown_url")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}.")
    elif exc.status_code == 413:
        error = PayloadTooLarge(str(exc.detail))
    else:
        error = InvalidRequest(str(exc.detail))
        error.status = exc.status_code
    return error


def server_error_response(request_id: str | None = None) -> Response:
    """The 500 of a failure nobody foresaw. `connection: close` tells the client not to reuse the
    connection, which the server closes after it: a kept-alive one would be closed under the
    client's next request. The failure is logged where it is caught (lumen.api.guard)."""
    headers = {"connection": "close"}
    if request_id is not None:
        headers["x-request-id"] = request_id
    error = LumenError("The server had an error while processing your request.", headers=headers)
    return error_response(error)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """The 500 answer of a mounted app (the admin API, the portal); the exception goes on to the
    root app's guard, which logs it once."""
    return server_error_response()
