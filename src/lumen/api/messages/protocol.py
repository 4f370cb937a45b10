"""Wire models of Anthropic's Messages requests (`POST /v1/messages`, `/v1/messages/count_tokens`).

Unlike the OpenAI surface, nothing here is forwarded as it came: the request is translated to chat
completions (`codec.py`), so these models describe every field the translation reads. Fields it
does not read (`cache_control` on any block, `container`, `service_tier`, `context_management`...)
are ignored. Content blocks are a closed set: an unknown `type` is a 400 naming the block, never a
block silently dropped. Types are strict, as on the OpenAI surface.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from lumen.api.protocol import MAX_TOKENS, TokenCount
from lumen.errors import InvalidRequest


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TextBlock(_Wire):
    type: Literal["text"]
    text: StrictStr


class Base64Source(_Wire):
    type: Literal["base64"]
    media_type: StrictStr
    data: StrictStr


class UrlSource(_Wire):
    type: Literal["url"]
    url: StrictStr


class ImageBlock(_Wire):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ToolUseBlock(_Wire):
    type: Literal["tool_use"]
    id: StrictStr
    name: StrictStr
    input: dict[str, Any]


ToolResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(_Wire):
    type: Literal["tool_result"]
    tool_use_id: StrictStr
    content: StrictStr | list[ToolResultPart] | None = None
    is_error: StrictBool | None = None


class ThinkingBlock(_Wire):
    """Dropped on the way to a chat backend: chat completions has no place for a signed thought."""

    type: Literal["thinking"]
    thinking: StrictStr = ""


class RedactedThinkingBlock(_Wire):
    type: Literal["redacted_thinking"]
    data: StrictStr = ""


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class Message(_Wire):
    role: Literal["user", "assistant"]
    content: StrictStr | list[ContentBlock]


class Tool(_Wire):
    """A client tool. Anthropic's server tools (`web_search_...`, `bash_...`) run on Anthropic's
    side and have no chat completions equivalent: their `type` is refused."""

    type: Literal["custom"] | None = None
    name: Annotated[StrictStr, Field(min_length=1)]
    description: StrictStr | None = None
    input_schema: dict[str, Any]


class ToolChoice(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: StrictStr | None = None
    disable_parallel_tool_use: StrictBool | None = None


class Metadata(_Wire):
    user_id: StrictStr | None = None


class CountTokensRequest(_Wire):
    """What `count_tokens` reads; a Messages request is this plus the generation parameters."""

    model: Annotated[StrictStr, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    system: StrictStr | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: TokenCount
    stream: StrictBool | None = False
    stop_sequences: list[StrictStr] | None = None
    temperature: StrictFloat | StrictInt | None = None
    top_p: StrictFloat | StrictInt | None = None
    top_k: Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)] | None = None
    metadata: Metadata | None = None


Request = TypeVar("Request", bound=CountTokensRequest)


def parse(model: type[Request], body: dict[str, Any]) -> Request:
    """Validates `body`; the first problem becomes a 400 that names the field. Of pydantic's errors
    the deepest is reported: for `content` that is neither a string nor valid blocks it is the bad
    block (`messages[0].content[1].type`), not "content should be a valid string"."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        error = max(errors, key=lambda e: len(e["loc"]))
        param = _param_name(error["loc"])
        if error["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
        elif error["type"] == "union_tag_invalid":
            tag = error.get("ctx", {}).get("tag", "")
            expected = error.get("ctx", {}).get("expected_tags", "")
            message = f"Unsupported type '{tag}' at '{param}': expected one of {expected}."
        else:
            message = f"Invalid value for '{param}': {error['msg']}."
        raise InvalidRequest(message, param=param, code="invalid_value") from exc


def _param_name(loc: tuple[int | str, ...]) -> str:
    """`messages[0].content[1]`, without pydantic's labels for union members (`str`, `list[...]`,
    the tag of a discriminated block)."""
    name = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            name += f"[{part}]"
        elif _is_label(loc, index):
            continue
        else:
            name += f".{part}" if name else part
    return name


def _is_label(loc: tuple[int | str, ...], index: int) -> bool:
    part = loc[index]
    assert isinstance(part, str)
    if part in ("str", "int", "float", "bool", "none") or "[" in part:
        return True
    # A discriminated union puts the tag after the block's index (`content, 1, 'text', 'text'`) or
    # after `source` (`source, 'base64', 'data'`).
    before = loc[index - 1] if index > 0 else None
    return part in _BLOCK_TAGS and (isinstance(before, int) or before == "source")


_BLOCK_TAGS = frozenset(
    {"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "base64", "url"}
)
