"""Wire models of the /v1 requests: only the fields Lumen itself reads.

Every other field of a request is forwarded to the backend untouched (vendor extensions such as
`top_k` or `chat_template_kwargs` included), so these models validate the raw body and the
router keeps forwarding the raw dict. Types are strict: `"stream": "yes"` is a 400, not a guess.
Names and order follow the OpenAI spec.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from lumen.errors import InvalidRequest

MAX_TOKENS = 2**31 - 1
"""The largest token count or token id a request may name (`max_tokens`, `dimensions`, ids in a
`prompt`): what a backend's 32-bit integers and the usage table's INTEGER columns hold. No model
comes near it; a larger number is a mistake, refused with a 400 that names the parameter."""

TokenCount = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS)]
TokenId = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]
Choices = Annotated[StrictInt, Field(ge=1, le=128)]


class _Checked(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StreamOptions(_Checked):
    include_usage: StrictBool = False


class ChatMessage(_Checked):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Checked):
    model: Annotated[StrictStr, Field(min_length=1)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    n: Choices | None = None

    @property
    def output_cap(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


PromptType = StrictStr | list[StrictStr] | list[TokenId] | list[list[TokenId]]


class CompletionRequest(_Checked):
    model: Annotated[StrictStr, Field(min_length=1)]
    prompt: PromptType
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)] | None = None
    n: Choices | None = None

    @property
    def output_cap(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Checked):
    model: Annotated[StrictStr, Field(min_length=1)]
    input: PromptType
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: TokenCount | None = None


Checked = TypeVar("Checked", bound=BaseModel)


def validate(model: type[Checked], body: dict[str, Any]) -> Checked:
    """Validates `body`, turning the first problem into a 400 that names the parameter."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = _param_name(error["loc"])
        if error["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {error['msg']}."
        raise InvalidRequest(message, param=param, code="invalid_value") from exc


_UNION_LABELS = frozenset({"str", "int", "bool", "float", "none"})


def _param_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in _UNION_LABELS or part.startswith(("list[", "dict[", "literal[")):
            continue  # pydantic's labels for union members, not parts of the request
        else:
            name += f".{part}" if name else part
    return name
