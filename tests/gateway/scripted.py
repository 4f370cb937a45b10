"""A backend whose every stage can fail on cue, for the pipeline's fault-injection tests.

Stages of a call, in order: `connect` (the backend accepts the call), `first_byte` (before the first
chunk or the answer), `mid_stream` (after the first chunk). A `Fault` at a stage acts when the call
gets there:

    exception    an unexpected bug (RuntimeError)
    cancel       the request's task is cancelled (a shutdown, a timeout around the call)
    disconnect   the client goes away, and the backend keeps working until it is cancelled
    upstream     the backend fails the way backends do (connection refused, 500, reset)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from lumen.errors import UpstreamConnectError, UpstreamError, UpstreamStatusError
from lumen.upstream.base import CallOptions, ChunkStream, Operation
from tests.fakes.chunks import chunk, usage_chunk

STAGES = ("connect", "first_byte", "mid_stream")
KINDS = ("exception", "cancel", "disconnect", "upstream")
PROMPT_TOKENS, COMPLETION_TOKENS = 12, 5


@dataclass
class Fault:
    stage: str
    kind: str


class Scripted:
    def __init__(self) -> None:
        self.fault: Fault | None = None
        self.disconnect: asyncio.Event | None = None
        self.closed_streams = 0
        self.opened_streams = 0
        self.cancelled = 0
        self.bodies: list[dict[str, Any]] = []
        self.open_delay = 0.0
        """Seconds `open_stream` takes to answer (a backend slow to send its headers)."""
        self.prompt_tokens = PROMPT_TOKENS
        """The prompt tokens the backend reports in its usage."""
        self.error_event: dict[str, Any] | None = None
        """Sent as `{"error": ...}` after the first chunk of a stream."""
        self.ignore_cap = False
        """Stream 'word ' chunks until closed, whatever `max_tokens` says."""

    async def stage(self, name: str, *, blocks: bool = True) -> None:
        """Acts out the fault at stage `name`, if there is one. With `blocks`, a disconnect keeps
        the stage busy until the gateway cancels it (a backend still working); without, the stage
        goes on (work that is not cancellable, such as admission or settlement)."""
        fault = self.fault
        if fault is None or fault.stage != name:
            return
        self.stage_now(name)
        if fault.kind == "cancel":
            await asyncio.sleep(0)  # where the cancellation lands
        if fault.kind == "disconnect" and blocks:
            try:
                await asyncio.Event().wait()  # working until the gateway cancels the call
            except asyncio.CancelledError:
                self.cancelled += 1
                raise

    def stage_now(self, name: str) -> None:
        """The part of a fault that needs no await (for a synchronous stage: the lease)."""
        fault = self.fault
        if fault is None or fault.stage != name:
            return
        if fault.kind == "exception":
            raise RuntimeError(f"injected at {name}")
        if fault.kind == "cancel":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        elif fault.kind == "disconnect":
            assert self.disconnect is not None
            self.disconnect.set()
        elif fault.kind == "upstream":
            if name == "connect":
                raise UpstreamConnectError("The model backend refused the connection.")
            if name == "first_byte":
                raise UpstreamStatusError(500, "The model backend failed.")
            raise UpstreamError("The model backend's connection broke while sending the answer.")

    async def request(self, op: Operation, body: dict[str, Any], call: CallOptions) -> dict[str, Any]:
        self.bodies.append(body)
        await self.stage("connect")
        await self.stage("first_byte")
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "one two three"},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(self.prompt_tokens),
        }

    async def open_stream(self, op: Operation, body: dict[str, Any], call: CallOptions) -> ChunkStream:
        self.bodies.append(body)
        await self.stage("connect")
        await asyncio.sleep(self.open_delay)
        self.opened_streams += 1
        return _Stream(self)

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class _Stream:
    def __init__(self, backend: Scripted) -> None:
        self._backend = backend

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        backend = self._backend
        await backend.stage("first_byte")
        yield chunk({"role": "assistant", "content": "one"})
        if backend.error_event is not None:
            yield orjson.dumps({"error": backend.error_event})
        while backend.ignore_cap:
            yield chunk({"content": " word"})
            await asyncio.sleep(0)
        await backend.stage("mid_stream")
        yield chunk({"content": " two three"})
        yield chunk({}, finish="stop")
        yield usage_chunk(_usage(backend.prompt_tokens))

    async def aclose(self) -> None:
        self._backend.closed_streams += 1


def _usage(prompt_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": prompt_tokens + COMPLETION_TOKENS,
    }
