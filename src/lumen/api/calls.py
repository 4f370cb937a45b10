"""Serving one model call over HTTP, for every client surface.

A surface (OpenAI chat completions, completions, embeddings; later Responses, Anthropic Messages)
parses and validates its own wire format and says how to turn the request into a call body; this
module does the rest, the same for all: the usage record of a request refused before it was a call,
the call spec, admission, the disconnect watch, and the answer — the backend's JSON or its SSE
bytes in the chat completions wire format, which the surface renders in its own.

    prepared = await prepare(request, principal, op, build)     # build: wire body -> call body
    answer = await serve(request, prepared)                      # dict, or SSE bytes
    return await respond(request, prepared, render=..., translate=...)  # or both in one
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from lumen.api.body import read_json_object
from lumen.api.disconnect import ClientDisconnected, until_disconnect
from lumen.api.guard import BodyReadTimedOut
from lumen.api.sse import SSEResponse
from lumen.errors import LumenError
from lumen.gateway.pipeline import Call, unexpected_error
from lumen.identity.principal import Principal
from lumen.state import app_state
from lumen.upstream.base import Operation


@dataclass(frozen=True, slots=True)
class Prepared:
    call: Call


async def prepare(
    request: Request,
    principal: Principal,
    op: Operation,
    build: Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]],
    *,
    source: str = "api",
) -> Prepared:
    """Reads the JSON body (within `server.max_body_bytes`), builds the call body from it with the
    surface's `build` (which validates, raises `InvalidRequest` naming the field, and may be a
    coroutine function when it must read something, such as a stored conversation) and admits
    the call. Whatever is refused on the way is recorded (one usage record, never billed) and
    raised with the rate-limit headers."""
    started = time.perf_counter()
    state = app_state(request)
    request_id: str = request.state.request_id
    pipeline = state.pipeline
    model_name = ""
    try:
        raw = await read_json_object(request, state.settings.server.max_body_bytes)
        name = raw.get("model")
        model_name = name if isinstance(name, str) else ""
        built = build(raw)
        body = await built if inspect.isawaitable(built) else built
        spec = pipeline.spec(op, pipeline.resolve(body["model"], op), body)
    except (ClientDisconnect, BodyReadTimedOut, asyncio.CancelledError):
        # The client stopped sending its body (the guard answers or logs it, once, at info), or
        # the request was cancelled: a 499 record.
        pipeline.record_refusal(
            principal,
            request_id=request_id,
            op=op,
            model=model_name,
            error=None,
            started=started,
            source=source,
        )
        raise
    except Exception as exc:
        # Refused before any call existed: still one usage record (401s are not: without a key
        # there is nobody to attribute them to, and anyone could fill the table with them).
        error = exc if isinstance(exc, LumenError) else unexpected_error(exc)
        pipeline.record_refusal(
            principal,
            request_id=request_id,
            op=op,
            model=model_name,
            error=error,
            started=started,
            source=source,
        )
        if error is exc and "x-ratelimit-limit-requests" not in error.headers:
            error.headers.update(await state.gate.peek_headers(principal, model_name or None))
        raise
    call = pipeline.call(spec, principal, request_id=request_id, started=started, source=source)
    await call.admit()
    return Prepared(call)


async def serve(request: Request, prepared: Prepared) -> dict[str, Any] | AsyncGenerator[bytes, None]:
    """The answer: the backend's JSON, settled before it is returned, or the SSE bytes of a stream
    (which settles before its last bytes; hand `call.aclose` to the response as `on_abandon`).
    Raises `ClientDisconnected` when the client left first, and errors with the call's headers."""
    call = prepared.call
    try:
        if call.spec.stream:
            # Watched too: a client that leaves while the upstream has not answered cancels it at
            # once; from the response's first byte on, the SSE response watches the connection.
            return await until_disconnect(request, call.stream())
        return await until_disconnect(request, _unary(call))
    except LumenError as exc:
        exc.headers.update(call.headers)
        raise


async def _unary(call: Call) -> dict[str, Any]:
    try:
        result = await call.unary()
    except BaseException as exc:
        await call.aclose(exc)
        raise
    await call.aclose()  # settled before the answer is sent
    return result


async def respond(
    request: Request,
    prepared: Prepared,
    *,
    render: Callable[[dict[str, Any]], Any] | None = None,
    translate: Callable[[AsyncGenerator[bytes, None]], AsyncGenerator[bytes, None]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The call's HTTP response: a whole answer as JSON (`render` makes the surface's body of the
    backend's, and may be a coroutine function), a stream as SSE (`translate` makes the surface's
    events of chat completions' bytes), with the call's rate-limit headers and `headers`; an empty
    499 when the client left before the response started."""
    try:
        answer = await serve(request, prepared)
    except ClientDisconnected:
        return Response(status_code=499)
    call = prepared.call
    all_headers = {**call.headers, **(headers or {})}
    if isinstance(answer, dict):
        body = answer if render is None else render(answer)
        if inspect.isawaitable(body):
            body = await body
        return Response(orjson.dumps(body), media_type="application/json", headers=all_headers)
    events = answer if translate is None else translate(answer)
    return SSEResponse(events, headers=all_headers, on_abandon=call.aclose)
