"""Relaying an upstream stream to the client, chunk by chunk.

Chunks are forwarded as the upstream's own bytes; a chunk is rewritten only when it must be: to
put Lumen's model name in it when the upstream wrote its own without the compact form, to strip
a usage block the client did not ask for, or to fix a missing `object`. Each chunk is parsed once
to read what billing needs (usage, finish reasons, generated text).

The stream contract towards the client (docs/api.md): SSE comment keep-alives while waiting for
the first chunk; the usage chunk last, only when `stream_options.include_usage` was set (counted
locally and marked `estimated` when the upstream sent none); an error after the first byte as one
`data: {"error": ...}` event; always `data: [DONE]` at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from lumen.billing.estimate import text_tokens
from lumen.errors import LumenError, UpstreamError, UpstreamProtocolError
from lumen.upstream.base import ChunkStream, batches_of
from lumen.upstream.endpoint import Endpoint

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"

Reopen = Callable[[UpstreamError], Awaitable[tuple[Endpoint, ChunkStream] | None]]


@dataclass(slots=True)
class StreamOutcome:
    """What a finished stream tells the meter."""

    usage: dict[str, Any] | None = None
    generated: list[str] = field(default_factory=list)
    finish_reasons: dict[int, str] = field(default_factory=dict)
    first_chunk_at: float | None = None
    error: LumenError | None = None
    cancelled: bool = False

    def completion_estimate(self) -> int:
        return text_tokens("".join(self.generated))


class ModelNameRewriter:
    """Puts Lumen's model name into chunks that carry the upstream's name."""

    def __init__(self, upstream: str, lumen: str) -> None:
        self.lumen = lumen
        self._needle = b'"model":' + orjson.dumps(upstream)
        self._replacement = b'"model":' + orjson.dumps(lumen)
        self._noop = upstream == lumen

    def bytes_ok(self, payload: bytes) -> bytes | None:
        """The payload with the name replaced, or None when only a re-serialisation can do it."""
        if self._noop:
            return payload
        if self._needle in payload:
            return payload.replace(self._needle, self._replacement, 1)
        return None


class StreamRelay:
    def __init__(
        self,
        *,
        endpoint: Endpoint,
        stream: ChunkStream,
        chunk_object: str,
        model_name: str,
        include_usage: bool,
        prompt_estimate: int,
        keepalive_interval: float,
        reopen: Reopen,
        on_close: Callable[[Endpoint, StreamOutcome], None],
    ) -> None:
        self.endpoint = endpoint
        self._stream = stream
        self._chunk_object = chunk_object
        self._model_name = model_name
        self._include_usage = include_usage
        self._prompt_estimate = prompt_estimate
        self._first: list[bytes] | None = None
        self._keepalive = keepalive_interval
        self._reopen = reopen
        self._on_close = on_close
        self._rewriter = ModelNameRewriter(endpoint.upstream_model, model_name)
        self._held_usage: bytes | None = None
        self._template: dict[str, Any] = {}
        self.outcome = StreamOutcome()
        self._closed = False

    async def events(self) -> AsyncGenerator[bytes, None]:
        try:
            async for event in self._run():
                yield event
        except asyncio.CancelledError:
            self.outcome.cancelled = True
            raise
        except GeneratorExit:
            self.outcome.cancelled = True
            raise
        finally:
            await self.close()

    async def abandon(self) -> None:
        """Closes a stream whose `events()` may never have started: a client that leaves while
        the response's first bytes are being sent. Closing an unstarted generator runs none of its
        code, so its `finally` cannot be what closes the upstream and settles the bill."""
        if not self._closed:
            self.outcome.cancelled = True
        await self.close()

    async def close(self) -> None:
        """Closes the upstream and reports the outcome, once."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            self._on_close(self.endpoint, self.outcome)

    async def _run(self) -> AsyncIterator[bytes]:
        try:
            async for event in self._relay():
                yield event
        except LumenError as exc:
            self.outcome.error = exc
            yield b"data: " + orjson.dumps(exc.envelope()) + b"\n\n"
            yield DONE
            return
        unfinished = self._unfinished()
        if unfinished:
            self.outcome.error = UpstreamError(
                "The model backend's stream ended before the answer was complete.", code="upstream_incomplete"
            )
            yield b"data: " + orjson.dumps(self.outcome.error.envelope()) + b"\n\n"
        elif self._include_usage:
            yield b"data: " + (self._held_usage or self._estimated_usage_chunk()) + b"\n\n"
        yield DONE

    async def _relay(self) -> AsyncIterator[bytes]:
        batches, first = None, None
        while batches is None:
            candidate = batches_of(self._stream)
            try:
                async for keepalive in self._await_first(candidate):
                    yield keepalive
                first = self._first
            except UpstreamError as exc:
                replacement = await self._reopen(exc) if exc.retryable else None
                if replacement is None:
                    raise
                await self._stream.aclose()
                self.endpoint, self._stream = replacement
                self._rewriter = ModelNameRewriter(self.endpoint.upstream_model, self._model_name)
                continue
            batches = candidate
        if first is None:
            return
        self.outcome.first_chunk_at = time.perf_counter()
        out, error = self._process_batch(first)
        if out:
            yield out
        if error is not None:
            raise error
        async for batch in batches:
            out, error = self._process_batch(batch)
            if out:
                yield out
            if error is not None:
                raise error

    def _process_batch(self, batch: list[bytes]) -> tuple[bytes, LumenError | None]:
        """The client's bytes for events that arrived together (one write instead of one each),
        and the error an event raised: the events before it are still delivered."""
        outputs: list[bytes] = []
        for payload in batch:
            try:
                out = self._process(payload)
            except LumenError as exc:
                return b"".join(outputs), exc
            if out is not None:
                outputs.append(out)
        return (outputs[0] if len(outputs) == 1 else b"".join(outputs)), None

    async def _await_first(self, batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
        """Waits for the first events, sending keep-alive comments meanwhile; sets `_first`."""
        task: asyncio.Future[list[bytes]] = asyncio.ensure_future(anext(batches))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._keepalive)
                if done:
                    break
                yield KEEPALIVE
            try:
                self._first = task.result()
            except StopAsyncIteration:
                self._first = None
        finally:
            if not task.done():
                task.cancel()

    def _process(self, payload: bytes) -> bytes | None:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(
                f"The model backend sent a stream event that is not JSON: {payload[:100]!r}"
            ) from exc
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError("The model backend sent a stream event that is not a JSON object.")
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamError(str(message or "The model backend failed while answering."))
        if not self._template:
            self._template = {"id": chunk.get("id"), "created": chunk.get("created")}
        choices = chunk.get("choices")
        if choices:
            self._meter(choices)
        usage = chunk.get("usage")
        if usage:
            self.outcome.usage = usage
            if not choices:
                if self._include_usage:
                    self._held_usage = self._rewritten(payload, chunk)
                return None
            chunk["usage"] = None
            if self._include_usage:
                self._held_usage = self._usage_chunk(usage)
            return self._serialise(chunk)
        if chunk.get("object") != self._chunk_object:
            return self._serialise(chunk)
        return b"data: " + self._rewritten(payload, chunk) + b"\n\n"

    def _meter(self, choices: list[Any]) -> None:
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(text, str) and text:
                self.outcome.generated.append(text)
            if isinstance(delta, dict) and delta.get("tool_calls"):
                self.outcome.generated.append(orjson.dumps(delta["tool_calls"]).decode())
            reason = choice.get("finish_reason")
            if reason:
                self.outcome.finish_reasons[int(choice.get("index", 0))] = reason
            else:
                self.outcome.finish_reasons.setdefault(int(choice.get("index", 0)), "")

    def _unfinished(self) -> bool:
        reasons = self.outcome.finish_reasons
        return not reasons or any(not reason for reason in reasons.values())

    def _rewritten(self, payload: bytes, chunk: dict[str, Any]) -> bytes:
        fast = self._rewriter.bytes_ok(payload)
        if fast is not None:
            return fast
        chunk["model"] = self._model_name
        return orjson.dumps(chunk)

    def _serialise(self, chunk: dict[str, Any]) -> bytes:
        chunk["model"] = self._model_name
        chunk["object"] = self._chunk_object
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _usage_chunk(self, usage: dict[str, Any]) -> bytes:
        return orjson.dumps(
            {
                "id": self._template.get("id"),
                "object": self._chunk_object,
                "created": self._template.get("created") or int(time.time()),
                "model": self._model_name,
                "choices": [],
                "usage": usage,
            }
        )

    def _estimated_usage_chunk(self) -> bytes:
        return self._usage_chunk(estimated_usage(self._prompt_estimate, self.outcome.completion_estimate()))


def estimated_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "estimated": True,
    }
