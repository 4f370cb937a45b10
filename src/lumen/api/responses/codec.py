"""Chat completions answers rendered as Responses: the Response object, and the stream of events.

The stream follows OpenAI's order exactly (clients-and-saturation.md §1.3): `response.created`,
`response.in_progress`, then per output item `output_item.added`, its parts and deltas, its
`.done` events and `output_item.done`, and always one terminal event — `response.completed`,
`response.incomplete` (the answer was cut at `max_output_tokens` or filtered) or `response.failed`
(the backend failed after the start; the error is inside `response.error`, never a top-level
`error` key, which the openai SDK would raise on). There is no `[DONE]`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from lumen.api.responses.protocol import ResponsesRequest

log = logging.getLogger(__name__)

JSON = dict[str, Any]
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
"""Chat finish reasons that make a response incomplete, and the reason the response gives."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass
class Draft:
    """A response being put together: what the request said and what the answer has so far."""

    request: ResponsesRequest
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    output: list[JSON] = field(default_factory=list)
    usage: JSON | None = None
    finish_reason: str | None = None
    error: JSON | None = None

    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "incomplete" if self.finish_reason in INCOMPLETE_REASONS else "completed"

    def render(self, status: str | None = None) -> JSON:
        """The Response object, as stored, returned and carried by the stream's lifecycle events."""
        request = self.request
        status = status or self.status()
        reason = INCOMPLETE_REASONS.get(self.finish_reason or "") if status == "incomplete" else None
        text_format = request.text.format if request.text and request.text.format else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": self.error,
            "incomplete_details": {"reason": reason} if reason else None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "metadata": request.metadata or {},
            "model": request.model,
            "output": self.output,
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": request.reasoning.model_dump()
            if request.reasoning
            else {"effort": None, "summary": None},
            "store": request.store is not False,
            "temperature": request.temperature,
            "text": {
                "format": text_format.model_dump(by_alias=True, exclude_none=True)
                if text_format
                else {"type": "text"}
            },
            "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
            "tools": request.tools or [],
            "top_p": request.top_p,
            "truncation": "disabled",
            "usage": self.usage,
            "user": request.user,
        }


def response_usage(usage: Any) -> JSON | None:
    """Chat usage as Responses usage."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = (
        _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _object(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def message_item(text: str, status: str = "completed") -> JSON:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)] if status == "completed" else [],
    }


def output_text(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": []}


def reasoning_item(text: str, status: str = "completed") -> JSON:
    return {
        "id": new_id("rs"),
        "type": "reasoning",
        "summary": [],
        "status": status,
        "content": [reasoning_text(text)] if status == "completed" else [],
    }


def reasoning_text(text: str) -> JSON:
    return {"type": "reasoning_text", "text": text}


def reasoning_of(message: JSON) -> str:
    """The reasoning of a chat message or delta (`reasoning_content`, or vLLM's newer `reasoning`)."""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


@dataclass(frozen=True, slots=True)
class TextKind:
    """An output item whose text streams into one content part: the answer or the reasoning."""

    item: Callable[[str, str], JSON]
    part: Callable[[str], JSON]
    events: str
    extra: tuple[tuple[str, Any], ...] = ()
    """Fields its delta and done events carry besides the text."""


ANSWER = TextKind(message_item, output_text, "response.output_text", (("logprobs", []),))
REASONING = TextKind(reasoning_item, reasoning_text, "response.reasoning_text")


def function_call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> JSON:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def from_completion(draft: Draft, completion: JSON) -> JSON:
    """The Response object for a (non-streamed) chat completion."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = _object(choice.get("message"))
    if reasoning := reasoning_of(message):
        draft.output.append(reasoning_item(reasoning))
    content = message.get("content")
    if isinstance(content, str) and content:
        draft.output.append(message_item(content))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        draft.output.append(
            function_call_item(
                str(call.get("id") or new_id("call")),
                str(function.get("name", "")),
                str(function.get("arguments") or ""),
            )
        )
    draft.finish_reason = choice.get("finish_reason")
    draft.usage = response_usage(completion.get("usage"))
    return draft.render()


Finish = Callable[[JSON], Awaitable[None]]
"""Runs with the final Response object before the terminal event is sent (to store it)."""


class StreamTranslator:
    """Chat completions SSE bytes in, Responses SSE events out (`events`)."""

    def __init__(self, draft: Draft, on_finish: Finish) -> None:
        self.draft = draft
        self.on_finish = on_finish
        self.sequence = 0
        self.open: tuple[TextKind, JSON] | None = None
        """The open message or reasoning item (text arrives into it)."""
        self.text: list[str] = []
        self.call: JSON | None = None
        """The open function_call item."""
        self.call_index: int | None = None
        """The chat `tool_calls[].index` of the open function call."""

    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    async def events(self, chat: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        """Translates `chat` until its end; closing this generator closes `chat`."""
        try:
            yield self.event("response.created", response=self.draft.render("in_progress"))
            yield self.event("response.in_progress", response=self.draft.render("in_progress"))
            buffer = b""
            async for raw in chat:
                buffer += raw
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    if block.startswith(b":"):
                        yield block + b"\n\n"  # a keep-alive comment goes through as it is
                    elif block.startswith(b"data: "):
                        for out in self._data(block[len(b"data: ") :]):
                            yield out
                        if self.draft.error is not None:
                            yield await self._terminal()
                            return
            for out in self._close_items():
                yield out
            yield await self._terminal()
        finally:
            await chat.aclose()

    def _data(self, payload: bytes) -> list[bytes]:
        if payload.strip() == b"[DONE]":
            return []
        chunk = orjson.loads(payload)
        if not isinstance(chunk, dict):
            return []
        error = chunk.get("error")
        if isinstance(error, dict):
            closed = self._close_items(status="incomplete")
            self.draft.error = {
                "code": error.get("code") or error.get("type") or "server_error",
                "message": str(error.get("message", "")),
            }
            return closed
        if chunk.get("usage"):
            self.draft.usage = response_usage(chunk["usage"])
        out: list[bytes] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = _object(choice.get("delta"))
            if reasoning := reasoning_of(delta):
                out.extend(self._text_delta(REASONING, reasoning))
            if isinstance(delta.get("content"), str) and delta["content"]:
                out.extend(self._text_delta(ANSWER, delta["content"]))
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    out.extend(self._call_delta(call))
            if choice.get("finish_reason"):
                self.draft.finish_reason = choice["finish_reason"]
        return out

    def _text_delta(self, kind: TextKind, text: str) -> list[bytes]:
        out = self._close_call()
        if self.open is not None and self.open[0] is not kind:
            out.extend(self._close_text())
        if self.open is None:
            item = kind.item("", "in_progress")
            index = len(self.draft.output)
            self.open = (kind, item)
            self.draft.output.append(item)
            out.append(self.event("response.output_item.added", output_index=index, item=item))
            out.append(
                self.event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=kind.part(""),
                )
            )
        item = self.open[1]
        self.text.append(text)
        out.append(
            self.event(
                f"{kind.events}.delta",
                item_id=item["id"],
                output_index=self.draft.output.index(item),
                content_index=0,
                delta=text,
                **dict(kind.extra),
            )
        )
        return out

    def _call_delta(self, call: JSON) -> list[bytes]:
        out: list[bytes] = []
        index = call.get("index", 0)
        function = _object(call.get("function"))
        if self.call is None or index != self.call_index:
            out.extend(self._close_items())
            self.call_index = index
            self.call = function_call_item(
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                "",
                status="in_progress",
            )
            self.draft.output.append(self.call)
            out.append(
                self.event(
                    "response.output_item.added",
                    output_index=len(self.draft.output) - 1,
                    item=dict(self.call),
                )
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self.call["arguments"] += arguments
            out.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=self.call["id"],
                    output_index=self.draft.output.index(self.call),
                    delta=arguments,
                )
            )
        return out

    def _close_items(self, status: str = "completed") -> list[bytes]:
        """Ends the open items; `incomplete` when the answer broke off in them."""
        return [*self._close_text(status), *self._close_call(status)]

    def _close_text(self, status: str = "completed") -> list[bytes]:
        if self.open is None:
            return []
        kind, item = self.open
        self.open = None
        index = self.draft.output.index(item)
        text = "".join(self.text)
        self.text = []
        part = kind.part(text)
        item.update(status=status, content=[part])
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self.event(f"{kind.events}.done", **where, text=text, **dict(kind.extra)),
            self.event("response.content_part.done", **where, part=part),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def _close_call(self, status: str = "completed") -> list[bytes]:
        item = self.call
        if item is None:
            return []
        self.call = self.call_index = None
        index = self.draft.output.index(item)
        item["status"] = status
        return [
            self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    async def _terminal(self) -> bytes:
        response = self.draft.render()
        if response["status"] != "failed":
            try:
                await self.on_finish(response)
            except Exception:
                # The answer was sent but cannot be continued or retrieved: the client must not
                # take it for a stored one.
                log.exception("could not store response %s", self.draft.id)
                self.draft.error = {"code": "server_error", "message": "The response could not be stored."}
                response = self.draft.render()
        return self.event(f"response.{response['status']}", response=response)
