"""Relaying an upstream stream to the client, chunk by chunk.

Chunks are forwarded as the upstream's own bytes; a chunk is rewritten only when it must be: to
put Lumen's model name in it when the upstream wrote its own without the compact form, to strip
a usage block the client did not ask for, or to fix a missing `object`. Each chunk is parsed once
to read what billing needs (usage, finish reasons, generated text).

The stream contract towards the client (docs/api.md): SSE comment keep-alives while waiting for
the first chunk; the usage chunk last, only when `stream_options.include_usage` was set (counted
locally and marked `estimated` when the upstream sent none); an error after the first byte as one
`data: {"error": ...}` event; always `data: [DONE]` at the end.

The relay bills before its last bytes: `settle` runs before the usage chunk and `[DONE]` are
sent, so a process killed after the client has the whole answer has already charged it. A backend
that ignores the output cap it was sent is cut off: once the generated text is clearly past the
cap (`OVERRUN_TOLERANCE`), the relay ends every open choice with `finish_reason: "length"`.
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
from lumen.upstream.summary import event_error

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"

Reopen = Callable[[UpstreamError], Awaitable[tuple[Endpoint, ChunkStream] | None]]

OVERRUN_TOLERANCE = (1.25, 16)
"""The relay cuts a stream at `cap * 1.25 + 16` locally counted tokens: the local count is an
estimate (about four characters a token), so an answer within its cap is never cut by mistake."""


@dataclass(slots=True)
class StreamOutcome:
    """What a finished stream tells the meter."""

    usage: dict[str, Any] | None = None
    generated: list[str] = field(default_factory=list)
    finish_reasons: dict[int, str] = field(default_factory=dict)
    first_chunk_at: float | None = None
    error: LumenError | None = None
    cancelled: bool = False
    truncated: bool = False
    """The backend went past the output cap and the relay ended the answer."""
    max_completion: int = 0

    def completion_estimate(self) -> int:
        """The completion tokens to bill when the backend reported none (or was cut off): the
        local count, never above the cap that was reserved and sent when the relay cut it."""
        counted = text_tokens("".join(self.generated))
        return min(counted, self.max_completion) if self.truncated else counted

    @property
    def delivered(self) -> bool:
        """The client received some of the answer."""
        return self.first_chunk_at is not None


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
        max_completion: int,
        keepalive_interval: float,
        reopen: Reopen,
        settle: Callable[[StreamOutcome], Awaitable[None]],
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
        self._settle = settle
        self._cut_at = (
            int(max_completion * OVERRUN_TOLERANCE[0]) + OVERRUN_TOLERANCE[1] if max_completion else 0
        )
        self._generated_chars = 0
        self._generated_words = 0
        self._rewriter = ModelNameRewriter(endpoint.upstream_model, model_name)
        self._held_usage: bytes | None = None
        self._template: dict[str, Any] = {}
        self.outcome = StreamOutcome(max_completion=max_completion)
        self._batches: AsyncGenerator[list[bytes], None] | None = None
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
        """Closes the upstream stream, once (the pipeline settles what was not settled yet)."""
        if self._closed:
            return
        self._closed = True
        if self._batches is not None:
            await self._batches.aclose()  # not left to the garbage collector's finaliser
        await self._stream.aclose()

    async def _run(self) -> AsyncIterator[bytes]:
        try:
            async for event in self._relay():
                yield event
        except LumenError as exc:
            self.outcome.error = exc
            await self._settle(self.outcome)
            yield b"data: " + orjson.dumps(exc.envelope()) + b"\n\n" + DONE
            return
        if self._unfinished():
            self.outcome.error = UpstreamError(
                "The model backend's stream ended before the answer was complete.", code="upstream_incomplete"
            )
        await self._settle(self.outcome)
        if self.outcome.error is not None:
            yield b"data: " + orjson.dumps(self.outcome.error.envelope()) + b"\n\n" + DONE
        elif self._include_usage:
            yield b"data: " + (self._held_usage or self._estimated_usage_chunk()) + b"\n\n" + DONE
        else:
            yield DONE

    async def _relay(self) -> AsyncIterator[bytes]:
        batches, first = None, None
        while batches is None:
            candidate = self._batches = batches_of(self._stream)
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
        batch: list[bytes] | None = first
        while batch is not None:  # not `async for` over a chained generator: a layer per batch
            out, error = self._process_batch(batch)
            if out:
                yield out
            if error is not None:
                raise error
            if self._over_cap():
                yield self._cut()
                return
            batch = await anext(batches, None)

    def _over_cap(self) -> bool:
        return (
            bool(self._cut_at) and max(self._generated_words, (self._generated_chars + 3) // 4) > self._cut_at
        )

    def _cut(self) -> bytes:
        """Ends every open choice with `finish_reason: "length"` (the backend ignored its cap)."""
        self.outcome.truncated = True
        open_choices = [i for i, reason in self.outcome.finish_reasons.items() if not reason] or [0]
        choices: list[dict[str, Any]] = []
        for index in open_choices:
            self.outcome.finish_reasons[index] = "length"
            body: dict[str, Any] = (
                {"delta": {}} if self._chunk_object == "chat.completion.chunk" else {"text": ""}
            )
            choices.append({"index": index, **body, "logprobs": None, "finish_reason": "length"})
        chunk = {
            "id": self._template.get("id"),
            "object": self._chunk_object,
            "created": self._template.get("created") or int(time.time()),
            "model": self._model_name,
            "choices": choices,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

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
                # Until the cancelled read has ended, `batches` is running and cannot be closed.
                await asyncio.wait({task})

    def _process(self, payload: bytes) -> bytes | None:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(
                "The model backend sent a stream event that is not JSON.",
                detail=f"The model backend sent a stream event that is not JSON: {payload[:200]!r}",
            ) from exc
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError("The model backend sent a stream event that is not a JSON object.")
        error = chunk.get("error")
        if error:
            raise event_error(error)  # summarised: a backend's words may name its addresses
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
                self._generated(text)
            if isinstance(delta, dict):
                for name in ("reasoning_content", "reasoning"):
                    thought = delta.get(name)
                    if isinstance(thought, str) and thought:
                        self._generated(thought)
                if delta.get("tool_calls"):
                    self._generated(orjson.dumps(delta["tool_calls"]).decode())
            reason = choice.get("finish_reason")
            if reason:
                self.outcome.finish_reasons[int(choice.get("index", 0))] = reason
            else:
                self.outcome.finish_reasons.setdefault(int(choice.get("index", 0)), "")

    def _generated(self, text: str) -> None:
        self.outcome.generated.append(text)
        self._generated_chars += len(text)
        self._generated_words += len(text.split())

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
