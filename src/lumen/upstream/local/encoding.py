"""OpenAI wire-format helpers shared by the in-process backends.

Request parsing (messages, tools, sampling fields, embedding inputs), the float/base64
embedding encoding and the response, chunk and usage shapes. Standard library only, so the
echo backend stays dependency-free.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

from lumen.errors import InvalidRequest
from lumen.upstream.base import JSON

EMBEDDING_INPUT_CAP = 2048
# Sampling fields in llama.cpp's names: OpenAI's plus the vLLM extensions clients send.
FLOAT_FIELDS = ("temperature", "top_p", "min_p", "typical_p", "presence_penalty", "frequency_penalty")
INT_FIELDS = ("top_k", "seed")

# An embedding input item: text, or token ids the backend turns back into text.
EmbeddingInput = str | list[int]


def _is_int(value: object) -> bool:
    # bool is an int subclass; `true` is never a valid token count or id.
    return isinstance(value, int) and not isinstance(value, bool)


def max_tokens(body: JSON) -> int | None:
    """`max_completion_tokens` wins over the deprecated `max_tokens`, as in vLLM."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise InvalidRequest(f"'{field}' must be a positive integer", param=field)
        return int(value)
    return None


def choice_count(body: JSON) -> int:
    value = body.get("n")
    if value is None:
        return 1
    if not _is_int(value) or not 1 <= value <= 128:
        raise InvalidRequest("'n' must be an integer between 1 and 128", param="n")
    return int(value)


def include_usage(body: JSON) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or its text parts joined by newlines (as vLLM
    does before applying a chat template)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def chat_messages(body: JSON) -> list[JSON]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest("each message needs a 'role'", param="messages")
    return messages


def completion_prompt(body: JSON) -> str | list[int]:
    """The legacy `prompt`: a string, token ids, or a list holding one of either.

    The local engines answer one prompt per request; a batch of several is refused rather than
    answered in part."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not all(_is_int(t) for t in prompt):
        if len(prompt) > 1:
            raise InvalidRequest(
                "This model takes one prompt per request; send the prompts as separate requests.",
                param="prompt",
            )
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        return [int(t) for t in prompt]
    raise InvalidRequest("'prompt' must be a string, an array of strings or of token ids", param="prompt")


def number_field(body: JSON, field: str, *, integer: bool = False) -> bool:
    """Whether `field` is set; raises InvalidRequest when it is set to a non-number."""
    value = body.get(field)
    if value is None:
        return False
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        kind = "an integer" if integer else "a number"
        raise InvalidRequest(f"'{field}' must be {kind}", param=field)
    return True


def sampling(body: JSON) -> JSON:
    """The sampling fields the request sets, validated; `repetition_penalty` (vLLM's spelling)
    becomes `repeat_penalty`."""
    found: JSON = {f: float(body[f]) for f in FLOAT_FIELDS if number_field(body, f)}
    found.update({f: body[f] for f in INT_FIELDS if number_field(body, f, integer=True)})
    for field in ("repeat_penalty", "repetition_penalty"):
        if number_field(body, field):
            found["repeat_penalty"] = float(body[field])
            break
    stop = stop_sequences(body)
    if stop is not None:
        found["stop"] = stop
    if body.get("logit_bias") is not None:
        found["logit_bias"] = logit_bias(body["logit_bias"])
    return found


def stop_sequences(body: JSON) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
    return [s for s in stops if s]


def logit_bias(value: Any) -> dict[int, float]:
    try:
        return {int(k): float(v) for k, v in value.items()}
    except (AttributeError, TypeError, ValueError):
        raise InvalidRequest("'logit_bias' must map token ids to numbers", param="logit_bias") from None


def template_messages(body: JSON) -> list[JSON]:
    """Messages for a GGUF/HF chat template: those concatenate `content`, so it becomes a string,
    and most know no `developer` role, so it becomes `system`."""
    messages = []
    for source in chat_messages(body):
        role = "system" if source["role"] == "developer" else source["role"]
        message = {"role": role, "content": content_text(source.get("content"))}
        message.update({k: source[k] for k in ("name", "tool_calls", "tool_call_id") if k in source})
        messages.append(message)
    return messages


def function_tools(body: JSON) -> list[JSON]:
    """The validated `tools` (empty when absent); a named `tool_choice` must name one of them."""
    tools = body.get("tools")
    if not tools:
        return []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise InvalidRequest("'tools' must be an array of function tools", param="tools")
    choice = body.get("tool_choice")
    if choice is None or isinstance(choice, str):
        return tools
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if name not in {t["function"]["name"] for t in tools}:
        raise InvalidRequest("'tool_choice' names no function in 'tools'", param="tool_choice")
    return tools


# --- responses and chunks ---


def chat_response(head: JSON, messages: list[JSON], finish_reason: str, usage_value: JSON) -> JSON:
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": finish_reason}
        for i, message in enumerate(messages)
    ]
    return {
        **head,
        "object": "chat.completion",
        "choices": choices,
        "usage": usage_value,
        "system_fingerprint": None,
    }


def text_response(head: JSON, texts: list[str], finish_reason: str, usage_value: JSON) -> JSON:
    choices = [text_choice(i, text, finish_reason) for i, text in enumerate(texts)]
    return {**head, "object": "text_completion", "choices": choices, "usage": usage_value}


def chat_chunk(head: JSON, choices: list[JSON], usage_value: JSON | None = None) -> JSON:
    """A `chat.completion.chunk`; `head` carries id, created and model (same on every chunk)."""
    return {**head, "object": "chat.completion.chunk", "choices": choices, "usage": usage_value}


def delta_choice(index: int, delta: JSON, finish_reason: str | None = None) -> JSON:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def text_chunk(head: JSON, choices: list[JSON], usage_value: JSON | None = None) -> JSON:
    """A legacy completions stream chunk (`object: text_completion`)."""
    return {**head, "object": "text_completion", "choices": choices, "usage": usage_value}


def text_choice(index: int, text: str, finish_reason: str | None = None) -> JSON:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


class GeneratorStream:
    """A ChunkStream over an async generator; `aclose()` runs the generator's cleanup."""

    def __init__(self, generator: AsyncIterator[bytes]) -> None:
        self._generator = generator

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._generator

    async def aclose(self) -> None:
        closer = getattr(self._generator, "aclose", None)
        if closer is None:
            return
        try:
            await closer()
        except RuntimeError:  # another task is suspended inside the generator; it ends on its own
            pass


# --- embeddings -------------------------------------------------------------------------------


def embedding_inputs(body: JSON) -> list[EmbeddingInput]:
    """Normalises `input` (string, strings, token ids, lists of token ids) to a list of items."""
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(_is_int(t) for t in raw):
        items = [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        raise InvalidRequest("'input' must be a string or an array", param="input")
    if not items:
        raise InvalidRequest("'input' must not be empty", param="input")
    if len(items) > EMBEDDING_INPUT_CAP:
        raise InvalidRequest(f"'input' may hold at most {EMBEDDING_INPUT_CAP} items", param="input")
    return [_embedding_item(item) for item in items]


def _embedding_item(item: Any) -> EmbeddingInput:
    if isinstance(item, str) and item:
        return item
    if isinstance(item, list) and item and all(_is_int(t) and t >= 0 for t in item):
        return [int(t) for t in item]
    raise InvalidRequest(
        "each 'input' item must be a non-empty string or a non-empty array of token ids", param="input"
    )


def encoding_format(body: JSON) -> str:
    value = body.get("encoding_format")
    if value is None:
        return "float"
    if value not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    return str(value)


def encode_vector(values: Sequence[float], fmt: str) -> list[float] | str:
    """The OpenAI SDKs decode base64 as little-endian float32, so floats are rounded to float32
    in both formats: the two encodings then decode to identical numbers."""
    return encode_packed(struct.pack(f"<{len(values)}f", *values), fmt)


def encode_packed(packed: bytes, fmt: str) -> list[float] | str:
    """Encodes a vector given as little-endian float32 bytes."""
    if fmt == "base64":
        return base64.b64encode(packed).decode("ascii")
    return list(struct.unpack(f"<{len(packed) // 4}f", packed))


def embedding_response(model: Any, vectors: Sequence[list[float] | str], prompt_tokens: int) -> JSON:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
