"""A chat backend that calls a tool: asked anything, it calls `get_weather` for Paris; given the
tool's answer (a `tool` message last), it says what the tool said. The echo model never calls
tools, and a Messages client needs the round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lumen.upstream.base import CallOptions, ChunkStream, Operation
from tests.fakes.chunks import chunk, usage_chunk

ARGUMENTS = '{"city": "Paris"}'
USAGE = {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}


class ToolCaller:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return {"role": "assistant", "content": f"The tool said: {last['content']}"}
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ARGUMENTS},
        }
        return {"role": "assistant", "content": "Let me look.", "tool_calls": [call]}

    async def request(self, op: Operation, body: dict[str, Any], call: CallOptions) -> dict[str, Any]:
        self.bodies.append(body)
        message = self._answer(body)
        finish = "tool_calls" if "tool_calls" in message else "stop"
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [choice],
            "usage": USAGE,
        }

    async def open_stream(self, op: Operation, body: dict[str, Any], call: CallOptions) -> ChunkStream:
        self.bodies.append(body)
        return _Stream(self._answer(body))

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class _Stream:
    def __init__(self, message: dict[str, Any]) -> None:
        self._message = message

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        message = self._message
        yield chunk({"role": "assistant", "content": message["content"]})
        if "tool_calls" not in message:
            yield chunk({}, "stop")
        else:
            # As OpenAI streams a call: id and name first, then the arguments in pieces.
            head = {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
            yield chunk({"tool_calls": [head]})
            for piece in (ARGUMENTS[:8], ARGUMENTS[8:]):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield chunk({}, "tool_calls")
        yield usage_chunk(USAGE)

    async def aclose(self) -> None:
        return None
