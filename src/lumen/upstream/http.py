"""The backend for any OpenAI-compatible server: vLLM, Ollama, llama.cpp's server, OpenAI.

One `aiohttp.ClientSession` per process carries every upstream call, so connections are reused
(bench/client_overhead.py measured aiohttp against httpx; see docs/performance.md). Library
exceptions are translated into `lumen.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
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
)
from lumen.upstream.base import JSON, CallOptions, Operation
from lumen.upstream.sse import SSEDecoder

PATHS: dict[Operation, str] = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
PROBE_TIMEOUT = 5.0


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
        # What errors (seen by clients and logs) may show of the URL: no credentials, no query.
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
                raw = await response.read()
                status = response.status
        except Exception as exc:
            raise _translate(exc, self._shown) from exc
        if status >= 400:
            raise status_error(status, raw)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(
                f"The model backend sent a response that is not JSON: {raw[:200]!r}"
            ) from exc
        if not isinstance(parsed, dict):
            raise UpstreamProtocolError("The model backend sent a JSON response that is not an object.")
        return parsed

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
                raw = await response.read()
            except Exception as exc:
                raise _translate(exc, self._shown) from exc
            finally:
                response.release()
            raise status_error(response.status, raw)
        return HTTPChunkStream(response, call, self._shown)

    async def probe(self) -> None:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        try:
            async with self._session.get(
                self._base + "/models", headers=self._headers, timeout=timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except Exception as exc:
            raise _translate(exc, self._shown) from exc
        if status >= 400:
            raise status_error(status, raw)

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
        decoder = SSEDecoder()
        content = self._response.content
        wait = self._call.first_token_timeout
        try:
            while True:
                try:
                    async with asyncio.timeout(wait):
                        data = await content.readany()
                except TimeoutError as exc:
                    raise UpstreamTimeout(
                        f"The model backend sent nothing for {wait:g} seconds.", code="upstream_timeout"
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


def status_error(status: int, raw: bytes) -> UpstreamStatusError:
    """The upstream's error, normalised into our envelope, keeping its message verbatim."""
    message, error_type, param, code = _error_fields(raw)
    if not message:
        message = f"The model backend answered with HTTP {status}."
    return UpstreamStatusError(status, message, error_type=error_type, param=param, code=code)


def _error_fields(raw: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        plain = raw.decode("utf-8", "replace").strip()
        return (plain[:500] or None), None, None, None
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


def _translate(exc: BaseException, base: str) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"The model backend at {base} did not answer in time.")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamConnectError("The model backend's connection broke while sending the answer.")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamConnectError(f"Could not reach the model backend at {base}: {type(exc).__name__}.")
    raise exc
