"""The Responses request (`POST /v1/responses`) and its translation into a chat completions body.

The request is validated strictly (`validate`, a 400 naming the field) and then translated, item by
item, into chat messages. Whatever has no chat equivalent is refused with a 400 that names it
(an unknown item type, a built-in tool, a file that is not text) rather than dropped, except
`reasoning` items: a chat backend cannot take them back, so they are left out of the call (and kept
verbatim in the stored input).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from lumen.api.protocol import TokenCount, _Checked
from lumen.errors import InvalidRequest

JSON = dict[str, Any]
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")


class TextFormat(_Checked):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: StrictStr | None = None
    schema_: Annotated[JSON | None, Field(alias="schema")] = None
    strict: StrictBool | None = None
    description: StrictStr | None = None


class TextOptions(_Checked):
    format: TextFormat | None = None


class ReasoningOptions(_Checked):
    effort: StrictStr | None = None
    summary: StrictStr | None = None


class ResponsesRequest(_Checked):
    model: Annotated[StrictStr, Field(min_length=1)]
    input: StrictStr | list[JSON] = []
    instructions: StrictStr | None = None
    previous_response_id: StrictStr | None = None
    stream: StrictBool | None = False
    store: StrictBool | None = True
    tools: list[JSON] | None = None
    tool_choice: StrictStr | JSON | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextOptions | None = None
    max_output_tokens: TokenCount | None = None
    reasoning: ReasoningOptions | None = None
    include: list[StrictStr] | None = None
    metadata: dict[StrictStr, StrictStr] | None = None
    temperature: StrictFloat | StrictInt | None = None
    top_p: StrictFloat | StrictInt | None = None
    user: StrictStr | None = None
    # Refused when used (`unsupported`): ignoring them would silently lose what they stand for.
    conversation: Any = None
    background: StrictBool | None = None
    prompt: Any = None


UNSUPPORTED = {
    "conversation": (
        "Conversations are not supported: continue with 'previous_response_id', or send the whole transcript."
    ),
    "background": "Background responses are not supported.",
    "prompt": "Prompt templates are not supported: send 'instructions' and 'input'.",
}


def input_items(request: ResponsesRequest) -> list[JSON]:
    """The request's input as a list of items (a string is one user message)."""
    if isinstance(request.input, str):
        return [{"type": "message", "role": "user", "content": request.input}]
    return [dict(item) for item in request.input]


def chat_body(request: ResponsesRequest, history: list[JSON], items: list[JSON]) -> JSON:
    """The chat completions body for `request`, whose conversation is `history` (the stored
    conversation of `previous_response_id`) followed by its own `items`."""
    for name, message in UNSUPPORTED.items():
        if getattr(request, name) not in (None, False):
            raise InvalidRequest(message, param=name, code="unsupported_parameter")
    messages: list[JSON] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    messages.extend(chat_messages([*history, *items], offset=-len(history)))
    if not messages:
        raise InvalidRequest("The request has no input: send 'input' or 'instructions'.", param="input")
    body: JSON = {"model": request.model, "messages": messages, "stream": request.stream is True}
    if request.stream:
        body["stream_options"] = {"include_usage": True}  # the usage goes into response.completed
    optional: JSON = {
        "max_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "user": request.user,
        "parallel_tool_calls": request.parallel_tool_calls,
        "reasoning_effort": request.reasoning.effort if request.reasoning else None,
        "response_format": _response_format(request.text),
    }
    tools = _chat_tools(request.tools or [])
    if tools:
        optional["tools"] = tools
    if request.tool_choice is not None:
        optional["tool_choice"] = _chat_tool_choice(request.tool_choice)
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def chat_messages(items: list[JSON], *, offset: int = 0) -> list[JSON]:
    """Chat messages for Responses items. Consecutive `function_call` items become one assistant
    message with `tool_calls` (joining an assistant message just before them). `offset` shifts the
    index named in errors, so that an error names the request's own `input[i]`."""
    messages: list[JSON] = []
    for index, item in enumerate(items):
        where = f"input[{index + offset}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"Invalid value for '{where}': an input item is an object.", param=where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_chat_message(item, where))
        elif kind == "function_call":
            call = _tool_call(item, where)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = _joined_text(output, f"{where}.output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _string(item, "call_id", where),
                    "content": _text(output, where),
                }
            )
        elif kind == "reasoning":
            continue  # a chat backend has no way to take reasoning back
        else:
            raise InvalidRequest(
                f"Unsupported input item type {kind!r} at '{where}': this server accepts 'message', "
                "'function_call', 'function_call_output' and 'reasoning' items.",
                param=f"{where}.type",
                code="unsupported_input_item",
            )
    return messages


def _chat_message(item: JSON, where: str) -> JSON:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise InvalidRequest(
            f"Invalid value for '{where}.role': one of {', '.join(MESSAGE_ROLES)}.", param=f"{where}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(
            f"Invalid value for '{where}.content': a string or a list of content parts.",
            param=f"{where}.content",
        )
    if role != "user":
        return {"role": role, "content": _joined_text(content, f"{where}.content")}
    return {
        "role": role,
        "content": [_chat_part(part, f"{where}.content[{i}]") for i, part in enumerate(content)],
    }


def _chat_part(part: Any, where: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS:
        return {"type": "text", "text": _string(part, "text", where)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidRequest(
                f"Invalid value for '{where}': this server takes images as 'image_url' (a URL or a data "
                "URL), not as uploaded files.",
                param=f"{where}.image_url",
            )
        image: JSON = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        return {"type": "text", "text": _file_text(part, where)}
    raise InvalidRequest(
        f"Unsupported content part type {kind!r} at '{where}': use 'input_text', 'input_image', "
        "'input_file' or 'output_text'.",
        param=f"{where}.type",
    )


def _file_text(part: JSON, where: str) -> str:
    """An `input_file` given inline as text (a base64 data URL of UTF-8 text): its name and text."""
    data = part.get("file_data")
    refused = InvalidRequest(
        f"Unsupported file at '{where}': this server takes files only inline ('file_data', a base64 "
        "data URL) and only as UTF-8 text; it has no file storage ('file_id', 'file_url').",
        param=f"{where}.file_data",
    )
    if not isinstance(data, str):
        raise refused
    encoded = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise refused from exc
    name = part.get("filename")
    return f"{name}:\n{text}" if isinstance(name, str) and name else text


def _joined_text(parts: list[Any], where: str) -> str:
    texts = []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "refusal":
            texts.append(_string(part, "refusal", f"{where}[{i}]"))
        elif kind in TEXT_PARTS:
            texts.append(_string(part, "text", f"{where}[{i}]"))
        else:
            raise InvalidRequest(
                f"Unsupported content part type {kind!r} at '{where}[{i}]': only text parts are "
                "accepted here.",
                param=f"{where}[{i}].type",
            )
    return "".join(texts)


def _tool_call(item: JSON, where: str) -> JSON:
    arguments = item.get("arguments", "")
    return {
        "id": _string(item, "call_id", where),
        "type": "function",
        "function": {
            "name": _string(item, "name", where),
            "arguments": _text(arguments, f"{where}.arguments"),
        },
    }


def _chat_tools(tools: list[JSON]) -> list[JSON]:
    """The function tools, in chat's nested shape. Other tools (hosted ones such as `web_search`,
    Codex's `namespace` groups, `custom` tools) are offers the server cannot carry out: they are
    left out of the call rather than refused, so clients that always offer them (Codex does) work;
    the model is simply not offered them. Forcing one with `tool_choice` is a 400."""
    chat = []
    for index, tool in enumerate(tools):
        if tool.get("type") != "function":
            continue
        where = f"tools[{index}]"
        function: JSON = {"name": _string(tool, "name", where)}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        chat.append({"type": "function", "function": function})
    return chat


def _chat_tool_choice(choice: str | JSON) -> str | JSON:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(
                "Invalid value for 'tool_choice': auto, none or required.", param="tool_choice"
            )
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": _string(choice, "name", "tool_choice")}}
    raise InvalidRequest(
        f"Unsupported tool_choice type {choice.get('type')!r}: this server offers function tools only.",
        param="tool_choice.type",
    )


def _response_format(text: TextOptions | None) -> JSON | None:
    form = text.format if text is not None else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    if form.name is None or form.schema_ is None:
        raise InvalidRequest("A 'json_schema' text format needs 'name' and 'schema'.", param="text.format")
    schema: JSON = {"name": form.name, "schema": form.schema_}
    if form.strict is not None:
        schema["strict"] = form.strict
    if form.description is not None:
        schema["description"] = form.description
    return {"type": "json_schema", "json_schema": schema}


def _string(item: JSON, field: str, where: str) -> str:
    value = item.get(field)
    if not isinstance(value, str):
        raise InvalidRequest(f"Missing or invalid '{where}.{field}': a string.", param=f"{where}.{field}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid value for '{where}': a string.", param=where)
    return value
