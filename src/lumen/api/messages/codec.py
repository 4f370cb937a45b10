"""Anthropic Messages <-> chat completions, both ways, and Lumen's errors in Anthropic's envelope.

    to_chat(request)                       a Messages request -> a chat completions body
    from_chat(completion, model)           a chat.completion -> a Messages response
    events(chat_sse, model, input_tokens)  chat completions SSE bytes -> Messages SSE events
    error_body(error), error_type(...)     Anthropic's {"type":"error","error":{type,message}}

What does not translate: `thinking` and `redacted_thinking` blocks are dropped (chat completions
has no signed reasoning), and a backend's `reasoning_content` is not returned as thinking blocks;
`cache_control` and a tool result's `is_error` are ignored; images inside a `tool_result` move to
a user message right after the tool messages (chat tool messages carry text only).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import orjson

from lumen.api.messages.protocol import (
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from lumen.errors import InvalidRequest, LumenError

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
"""Chat `finish_reason` -> Anthropic `stop_reason` (`function_call` is the old name of tool_calls)."""


# -- request -------------------------------------------------------------------------------------


def to_chat(request: MessagesRequest) -> dict[str, Any]:
    """The chat completions body of a Messages request, streaming with usage when it streams."""
    body = chat_prompt(request)
    body["max_tokens"] = request.max_tokens
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the output tokens of `message_delta`
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value  # top_k is not OpenAI's, but vLLM and llama.cpp read it
    if request.metadata is not None and request.metadata.user_id is not None:
        body["user"] = request.metadata.user_id
    return body


def chat_prompt(request: CountTokensRequest) -> dict[str, Any]:
    """The prompt part of the body (model, messages, tools): all that `count_tokens` counts."""
    messages: list[dict[str, Any]] = []
    if request.system:
        system = request.system if isinstance(request.system, str) else _joined(request.system)
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(request.messages):
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            messages.append(_assistant(message.content, index))
        else:
            messages.extend(_user(message.content))
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [_tool(tool.name, tool.description, tool.input_schema) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequest(
                    "Missing required parameter: 'tool_choice.name'.", param="tool_choice.name"
                )
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use and request.tools:
            body["parallel_tool_calls"] = False
    return body


def _tool(name: str, description: str | None, schema: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if description is not None:
        function["description"] = description
    return {"type": "function", "function": function}


def _assistant(blocks: Iterable[Any], index: int) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for position, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = orjson.dumps(block.input).decode()
            calls.append(
                {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}}
            )
        elif isinstance(block, ImageBlock | ToolResultBlock):
            param = f"messages[{index}].content[{position}]"
            raise InvalidRequest(
                f"An assistant message cannot contain a '{block.type}' block ('{param}').", param=param
            )
        # thinking / redacted_thinking: dropped (see the module docstring)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _user(blocks: Iterable[Any]) -> list[dict[str, Any]]:
    """Tool results first, as chat requires the `tool` replies right after the assistant's calls,
    then the turn's own text and images as one user message."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            content = block.content
            if isinstance(content, list):
                parts.extend(_image(part) for part in content if isinstance(part, ImageBlock))
                content = _joined(part for part in content if isinstance(part, TextBlock))
            tools.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": content or ""})
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image(block))
        # a user turn's tool_use or thinking has no meaning in chat: dropped like thinking
    return [*tools, {"role": "user", "content": parts}] if parts else tools


def _image(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    url = source.url if source.type == "url" else f"data:{source.media_type};base64,{source.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _joined(blocks: Iterable[TextBlock]) -> str:
    return "\n\n".join(block.text for block in blocks)


# -- response ------------------------------------------------------------------------------------


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def from_chat(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """A Messages response from a chat.completion (its first choice; Messages has no `n`)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or _tool_use_id(),
                "name": function.get("name", ""),
                "input": tool_input(function.get("arguments") or ""),
            }
        )
    stop_reason, stop_sequence = _stop(choice)
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(completion.get("usage")),
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's `input`: its arguments parsed. Arguments that are not a JSON object (a model
    that wrote broken JSON) are kept whole under `arguments` rather than lost."""
    try:
        parsed = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def _stop(choice: dict[str, Any]) -> tuple[str | None, str | None]:
    reason = choice.get("finish_reason")
    if reason is None:
        return None, None
    # vLLM names the stop string that ended the answer in `stop_reason` (an int for a stop token).
    matched = choice.get("stop_reason")
    if reason == "stop" and isinstance(matched, str):
        return "stop_sequence", matched
    return STOP_REASONS.get(reason, "tool_use" if reason == "function_call" else "end_turn"), None


def usage(chat_usage: dict[str, Any] | None, *, input_estimate: int = 0) -> dict[str, int]:
    """Anthropic's usage is disjoint: cached prompt tokens are not part of `input_tokens`."""
    if not chat_usage:
        return {"input_tokens": input_estimate, "output_tokens": 0}
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    details = chat_usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    result = {"input_tokens": prompt - cached, "output_tokens": int(chat_usage.get("completion_tokens") or 0)}
    if cached:
        result["cache_read_input_tokens"] = cached
    return result


def _tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


# -- stream --------------------------------------------------------------------------------------


def event(name: str, data: dict[str, Any]) -> bytes:
    """One SSE event as the Anthropic SDKs read it: they dispatch on the `event:` line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


PING = event("ping", {"type": "ping"})


async def events(
    chat: AsyncGenerator[bytes, None], model: str, input_tokens: int
) -> AsyncGenerator[bytes, None]:
    """Messages stream events from a chat completions stream (Lumen's relay: whole SSE events,
    keep-alive comments, a `{"error": ...}` event after a failure, `[DONE]` last). Closing this
    generator closes `chat`, which settles the call."""
    translator = _Translator(model, input_tokens)
    buffer = b""
    try:
        yield translator.start()
        async for piece in chat:
            buffer += piece
            *complete, buffer = buffer.split(b"\n\n")
            for raw in complete:
                for out in translator.feed(raw):
                    yield out
                if translator.finished:
                    return
        for out in translator.finish():  # a stream that ended without [DONE]
            yield out
    finally:
        await chat.aclose()


class _Translator:
    """The state of one stream: the open content block and what `message_delta` will report."""

    def __init__(self, model: str, input_tokens: int) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.index = -1
        self.open: str | None = None
        """The open block: "text", or the chat index of the tool call being streamed."""
        self.stop: tuple[str | None, str | None] = (None, None)
        self.usage: dict[str, Any] | None = None
        self.finished = False

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return event("message_start", {"type": "message_start", "message": message})

    def feed(self, raw: bytes) -> list[bytes]:
        raw = raw.strip()
        if raw.startswith(b":"):
            return [PING]  # the relay's keep-alive
        if not raw.startswith(b"data:"):
            return []
        data = raw[5:].strip()
        if data == b"[DONE]":
            return self.finish()
        chunk = orjson.loads(data)
        if "error" in chunk:
            self.finished = True
            error = chunk["error"] or {}
            kind = error_type(status_of(error.get("type"), error.get("code")), error.get("code"))
            message = error.get("message") or "The model backend failed."
            return [event("error", {"type": "error", "error": {"type": kind, "message": message}})]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[bytes] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.extend(self._text(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out.extend(self._tool_call(call))
            if choice.get("finish_reason"):
                self.stop = _stop(choice)
        return out

    def _text(self, text: str) -> list[bytes]:
        out = [] if self.open == "text" else self._open("text", {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        return [
            *out,
            event(
                "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}
            ),
        ]

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        key = f"tool:{call.get('index', 0)}"
        function = call.get("function") or {}
        out: list[bytes] = []
        if self.open != key:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or _tool_use_id(),
                "name": function.get("name") or "",
                "input": {},
            }
            out = self._open(key, block)
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            out.append(
                event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self.index, "delta": delta},
                )
            )
        return out

    def _open(self, key: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.open = key
        out.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        )
        return out

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [event("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def finish(self) -> list[bytes]:
        if self.finished:
            return []
        self.finished = True
        stop_reason, stop_sequence = self.stop
        delta = {"stop_reason": stop_reason or "end_turn", "stop_sequence": stop_sequence}
        return [
            *self._close(),
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": delta,
                    "usage": usage(self.usage, input_estimate=self.input_tokens),
                },
            ),
            event("message_stop", {"type": "message_stop"}),
        ]


# -- errors --------------------------------------------------------------------------------------

_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def error_type(status: int, code: str | None) -> str:
    """Anthropic's error type for a Lumen error's status (and code: a model with no backend able
    to serve is `overloaded_error`, which the SDKs retry)."""
    if code == "model_unavailable":
        return "overloaded_error"
    if status in _TYPES_BY_STATUS:
        return _TYPES_BY_STATUS[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def status_of(openai_type: str | None, code: str | None) -> int:
    """The status of an error that arrives as a stream event (which carries no status)."""
    if openai_type in ("rate_limit_exceeded", "insufficient_quota"):
        return 429
    if openai_type == "invalid_request_error":
        return 400
    return 500


def error_body(error: LumenError, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type(error.status, error.code), "message": error.message},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return body


# -- models --------------------------------------------------------------------------------------


def model_list(names: list[str]) -> dict[str, Any]:
    """`GET /v1/models` in Anthropic's shape, for a request that carries `anthropic-version`: one
    page holding every model the caller may use."""
    data = [
        {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
        for name in names
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }
