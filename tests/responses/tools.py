"""A chat backend that calls a tool: asked by a user, it calls `get_weather` (with a second,
parallel call when the request has two tools); given the tool's answer, it says it in words."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lumen.upstream.base import CallOptions, ChunkStream, Operation
from tests.fakes.chunks import chunk, usage_chunk

USAGE = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}
ARGUMENTS = '{"city": "Oslo"}'


class ToolBackend:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.reasoning: str | None = None
        """Sent as `reasoning_content` before the answer, when set."""

    def _answer(self, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
        self.bodies.append(body)
        last = body["messages"][-1]
        if last["role"] == "tool":
            return f"It is {last['content']} in Oslo.", []
        calls = [
            {"id": f"call_{i}", "name": tool["function"]["name"]}
            for i, tool in enumerate(body.get("tools", []))
        ]
        return None, calls

    async def request(self, op: Operation, body: dict[str, Any], call: CallOptions) -> dict[str, Any]:
        text, calls = self._answer(body)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.reasoning is not None:
            message["reasoning_content"] = self.reasoning
        if calls:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": ARGUMENTS}}
                for c in calls
            ]
        return {
            "id": "chatcmpl-tools",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": USAGE,
        }

    async def open_stream(self, op: Operation, body: dict[str, Any], call: CallOptions) -> ChunkStream:
        text, calls = self._answer(body)
        return _Stream(text, calls, self.reasoning)

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class _Stream:
    def __init__(self, text: str | None, calls: list[dict[str, Any]], reasoning: str | None) -> None:
        self.text, self.calls, self.reasoning = text, calls, reasoning

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        if self.reasoning is not None:
            for word in self.reasoning.split(" "):
                yield chunk({"reasoning_content": word + " "})
        if self.text is not None:
            for word in self.text.split(" "):
                yield chunk({"content": word + " "})
        for index, call in enumerate(self.calls):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            yield chunk({"tool_calls": [head]})
            for piece in (ARGUMENTS[:5], ARGUMENTS[5:]):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, finish="tool_calls" if self.calls else "stop")
        yield usage_chunk(USAGE)

    async def aclose(self) -> None:
        return None
