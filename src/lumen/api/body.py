"""Reading a JSON request body within the size and nesting limits.

Everything that can refuse a body for its shape runs here, while it is read and before anything
is admitted (a slot, a coin hold, an endpoint's in-flight count): /v1 and the portal's JSON calls
read their bodies through `read_json_object`, the admin API through `read_body` and `parse_json`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from lumen.errors import InvalidRequest, PayloadTooLarge
from lumen.settings import ServerSettings

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects a request body may have (the body object itself is
level 1). Real requests nest 20-40 levels at most, tool and `response_format` JSON schemas
included. The limit must stay well below orjson's own, which refuses to serialise more than 254
levels: a deeper body would be accepted here and fail only when it is forwarded to a backend."""


DEFAULT_MAX_BODY_BYTES: int = ServerSettings.model_fields["max_body_bytes"].default

_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""`\u0000` in JSON text, unless its backslash is itself escaped (`\\u0000` is six characters of
text). JSON can carry NUL no other way, and PostgreSQL cannot store it: a NUL that reached a
usage record, a ledger note or a chat message would fail that write, and with it its batch."""


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this server accepts ({limit} bytes).")


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    body = parse_json(await read_body(request, limit))
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with a 413 as soon as it is known to exceed `limit` bytes. Starlette
    keeps it, so `request.body()` returns it again afterwards."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # what Request.body() caches, for a framework that reads the body again
    return body


def parse_json(raw: bytes) -> Any:
    """Any JSON value within `MAX_JSON_DEPTH`; anything else is a 400 `invalid_json`."""
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc.msg} (at character {exc.pos}).",
            code="invalid_json",
        ) from exc
    check_parsed(raw, body)
    return body


def check_parsed(raw: bytes, body: Any) -> None:
    """The rules every JSON body obeys beyond parsing: no NUL character, no deeper nesting than
    `MAX_JSON_DEPTH` (for a caller that parsed `raw` into `body` itself)."""
    if b"u0000" in raw and _ESCAPED_NUL.search(raw):
        raise InvalidRequest(
            "The JSON body holds a NUL character (\\u0000), which Lumen does not accept in any text.",
            code="invalid_json",
        )
    # Counting brackets is done at C speed and settles nearly every body: one with no more
    # brackets than the limit (those inside strings included) cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _nests_deeper(body, MAX_JSON_DEPTH):
        raise InvalidRequest(
            f"The JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; flatten it.",
            code="invalid_json",
        )


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` levels deep (iterative: no recursion
    limit to hit on a hostile body)."""
    pending: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                pending.append((child, depth + 1))
    return False


class LimitedBodyRoute(APIRoute):
    """A FastAPI route whose JSON body is read within `server.max_body_bytes` and the rules of
    `parse_json` before FastAPI parses it, so those refusals are the same 413 and 400 as on /v1
    (FastAPI alone buffers any size, turns a too-deep body into a bare "error parsing the body",
    and passes NUL characters on to the database). Forms and other media types are left to
    FastAPI. The app's `state.get_state` gives the settings; without it the default limit holds."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle

        async def read_then_handle(request: Request) -> Response:
            if _is_json(request.headers.get("content-type")):
                raw = await read_body(request, _body_limit(request))
                if raw.strip():
                    parse_json(raw)
            return await handle(request)

        return read_then_handle


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI parses a body without a content type as JSON
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _body_limit(request: Request) -> int:
    get_state = getattr(request.app.state, "get_state", None)
    if get_state is None:
        return DEFAULT_MAX_BODY_BYTES
    limit: int = get_state().settings.server.max_body_bytes
    return limit
