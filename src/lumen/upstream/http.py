"""The backend for any OpenAI-compatible server: vLLM, Ollama, llama.cpp's server, OpenAI.

One `aiohttp.ClientSession` per process carries every upstream call, so connections are reused
(bench/client_overhead.py measured aiohttp against httpx; see docs/performance.md). Library
exceptions are translated into `lumen.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from lumen.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnexpectedContent,
    UpstreamUnreachable,
)
from lumen.upstream.base import JSON, CallOptions, Operation
from lumen.upstream.sse import SSEDecoder
from lumen.upstream.summary import summarise, token

PATHS: dict[Operation, str] = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
PROBE_TIMEOUT = 5.0
PROBE_BYTES = 4 * 1024 * 1024
"""The model list of a health check is read this far at most."""
ERROR_BODY_BYTES = 64 * 1024
"""An error answer is read this far and no further: only its message is wanted."""


def new_session() -> aiohttp.ClientSession:
    """The process-wide pool. Per-call timeouts are set on each request."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        auto_decompress=True,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent",),
    )


class OpenAIBackend:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str | None) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        # What error details (logs, admin pages) may show of the URL: no credentials, no query.
        self._shown = shown_url(self._base)
        self._headers = {"Content-Type": "application/json", "User-Agent": "lumen"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def _request_headers(self, call: CallOptions) -> dict[str, str]:
        if call.request_id is None and not call.headers:
            return self._headers
        headers = {**self._headers, **dict(call.headers)}
        if call.request_id is not None:
            headers["X-Request-ID"] = call.request_id
        return headers

    async def request(self, op: Operation, body: JSON, call: CallOptions) -> JSON:
        timeout = _timeout(call.request_timeout, call.connect_timeout)
        try:
            async with self._session.post(
                self._base + PATHS[op],
                data=orjson.dumps(body),
                headers=self._request_headers(call),
                timeout=timeout,
            ) as response:
                status = response.status
                if status >= 400:
                    raw = await _read_prefix(response, ERROR_BODY_BYTES)
                else:
                    raw = await _read_capped(response, call.max_response_bytes, self._shown)
        except Exception as exc:
            raise _translate(exc, self._shown) from exc
        if status >= 400:
            raise status_error(status, raw, self._shown)
        return _json_object(raw, self._shown)

    async def open_stream(self, op: Operation, body: JSON, call: CallOptions) -> HTTPChunkStream:
        timeout = _timeout(None, call.connect_timeout)
        try:
            async with asyncio.timeout(call.first_token_timeout):
                response = await self._session.post(
                    self._base + PATHS[op],
                    data=orjson.dumps(body),
                    headers=self._request_headers(call),
                    timeout=timeout,
                )
        except Exception as exc:
            raise _translate(exc, self._shown) from exc
        if response.status >= 400:
            try:
                raw = await _read_prefix(response, ERROR_BODY_BYTES)
            except Exception as exc:
                raise _translate(exc, self._shown) from exc
            finally:
                response.close()
            raise status_error(response.status, raw, self._shown)
        if response.content_type != "text/event-stream":
            # Closed, not released: whatever it is, it is not read.
            response.close()
            raise UpstreamUnexpectedContent(
                "The model backend answered a streaming request with something that is not a stream.",
                detail=f"{self._shown} answered a streaming request with HTTP {response.status} and "
                f"Content-Type {response.content_type!r}",
            )
        return HTTPChunkStream(response, call, self._shown)

    async def probe(self) -> None:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        try:
            async with self._session.get(
                self._base + "/models", headers=self._headers, timeout=timeout
            ) as resp:
                status = resp.status
                if status >= 400:
                    raw = await _read_prefix(resp, ERROR_BODY_BYTES)
                else:
                    raw = await _read_capped(resp, PROBE_BYTES, self._shown)
        except Exception as exc:
            raise _translate(exc, self._shown) from exc
        if status >= 400:
            raise status_error(status, raw, self._shown)
        _json_object(raw, self._shown)  # a web server's "it works!" page is not a model server

    async def aclose(self) -> None:
        """The shared session belongs to the process, not to one backend."""


class HTTPChunkStream:
    """The `data:` payloads of an upstream SSE response, with first-token and gap timeouts."""

    def __init__(self, response: aiohttp.ClientResponse, call: CallOptions, base: str) -> None:
        self._response = response
        self._call = call
        self._base = base

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._payloads()

    async def _payloads(self) -> AsyncIterator[bytes]:
        async for batch in self.batches():
            for payload in batch:
                yield payload

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """The payloads of the events that arrived in each network read."""
        decoder = SSEDecoder(max_event_bytes=self._call.max_event_bytes)
        content = self._response.content
        wait = self._call.first_token_timeout
        try:
            while True:
                try:
                    async with asyncio.timeout(wait):
                        data = await content.readany()
                except TimeoutError as exc:
                    raise UpstreamTimeout(
                        f"The model backend sent nothing for {wait:g} seconds.",
                        detail=f"{self._base} sent nothing for {wait:g} seconds.",
                    ) from exc
                except Exception as exc:
                    raise _translate(exc, self._base) from exc
                if not data:
                    break
                payloads = decoder.feed(data)
                if not payloads:
                    continue
                wait = self._call.between_chunks_timeout
                if b"[DONE]" in payloads:
                    done_at = payloads.index(b"[DONE]")
                    if done_at:
                        yield payloads[:done_at]
                    return
                yield payloads
        finally:
            self._response.close()
        # A stream that ends without `[DONE]` is judged by the relay: complete if every choice
        # finished, cut off otherwise.
        if decoder.pending():
            raise UpstreamProtocolError("The model backend's stream ended in the middle of an event.")

    async def aclose(self) -> None:
        # Closing (not releasing) the connection is what tells the upstream to stop generating.
        self._response.close()


@functools.lru_cache(maxsize=256)
def _timeout(total: float | None, connect: float) -> aiohttp.ClientTimeout:
    """Timeouts are per model and few: build each once, not on every request."""
    return aiohttp.ClientTimeout(total=total, sock_connect=connect)


async def _read_capped(response: aiohttp.ClientResponse, cap: int, base: str) -> bytes:
    """The whole body, refused (`UpstreamTooLarge`) as soon as it is known to exceed `cap` bytes."""

    def too_large() -> UpstreamTooLarge:
        response.close()  # the rest is never read: the connection cannot be reused
        return UpstreamTooLarge(
            f"The model backend's answer was larger than this server accepts ({cap:,} bytes).",
            detail=f"{base} sent an answer of more than {cap:,} bytes (routing.max_response_bytes)",
        )

    if response.content_length is not None:
        if response.content_length > cap:
            raise too_large()
        return await response.read()  # its length is known and allowed: one read, the fast path
    parts, size = [], 0
    async for part in response.content.iter_any():
        size += len(part)
        if size > cap:
            raise too_large()
        parts.append(part)
    return b"".join(parts)


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first `limit` bytes of the body (all of a short one)."""
    parts, size = [], 0
    while size < limit:
        part = await response.content.read(limit - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _json_object(raw: bytes, base: str) -> JSON:
    """A success answer's body, which must be a JSON object; anything else (an HTML page from a
    proxy, a web server's default page) means the endpoint is not serving the API."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamUnexpectedContent(
            "The model backend sent an answer that is not JSON.",
            detail=f"{base} sent an answer that is not JSON: {raw[:300]!r}",
        ) from exc
    if not isinstance(parsed, dict):
        raise UpstreamUnexpectedContent(
            "The model backend sent a JSON answer that is not an object.",
            detail=f"{base} sent a JSON answer that is not an object: {raw[:300]!r}",
        )
    return parsed


def status_error(status: int, raw: bytes, base: str = "the model backend") -> UpstreamStatusError:
    """The upstream's error status in our envelope: its JSON message summarised without addresses
    (see `lumen.upstream.summary`), an HTML or text body not at all. The full body prefix is the
    error's `detail`."""
    message, error_type, param, code = _error_fields(raw)
    summary = summarise(message)
    caller_at_fault = 400 <= status < 500 and status != 429
    if caller_at_fault:
        shown = summary or f"The model backend refused the request (HTTP {status})."
    else:
        shown = f"The model backend failed (HTTP {status})" + (f": {summary}" if summary else ".")
    detail = f"{base} answered HTTP {status}: {raw[:2000].decode('utf-8', 'replace')}"
    return UpstreamStatusError(
        status, shown, error_type=token(error_type), param=token(param), code=token(code), detail=detail
    )


def _error_fields(raw: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """The message, type, param and code of an OpenAI-style error body; all None for anything
    that is not JSON (a text or HTML page is never shown to callers)."""
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None, None, None
    if not isinstance(body, dict):
        return None, None, None, None
    error = body.get("error", body)
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, dict):
        return None, None, None, None

    def field(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) else None

    # vLLM sends `code` as the HTTP status (an int); only string codes mean something to clients.
    return field("message") or field("detail"), field("type"), field("param"), field("code")


def shown_url(url: str) -> str:
    """`url` without its user info and query string, which may carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_CREDENTIALS = re.compile(r"(//)[^/@\s]*@|(\?)[^\s'\"]*")


def _translate(exc: BaseException, base: str) -> UpstreamError:
    """A library exception as an `UpstreamError`: a plain message for callers, the endpoint and
    the library's own words (user info and query strings taken out) as the detail."""
    if isinstance(exc, UpstreamError):
        return exc
    what = _CREDENTIALS.sub(lambda m: (m.group(1) or m.group(2)) + "***", f"{type(exc).__name__}: {exc}")
    # Before TimeoutError: a connect timeout is one too, but nothing ever reached the backend.
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return UpstreamUnreachable(
            "The model backend could not be reached.", detail=f"Could not connect to {base}: {what}"
        )
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(
            "The model backend did not answer in time.", detail=f"{base} did not answer in time ({what})"
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamConnectError(
            "The model backend's connection broke while sending the answer.",
            detail=f"The connection to {base} broke while it sent the answer: {what}",
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamConnectError(
            "The connection to the model backend failed.", detail=f"The connection to {base} failed: {what}"
        )
    raise exc
