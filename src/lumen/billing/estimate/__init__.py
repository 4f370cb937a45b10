"""The prompt-token estimate: what a request's prompt will cost before the backend has counted it.

It is used twice for every request: to reserve coins and tokens before the call, and to bill a
request whose backend reports no usage (a stopped or failed stream, a server that sends none).
Both uses take the same number, computed once from the request body, so a stopped request is
billed the prompt its completed twin would have been estimated at. Records billed from it are
marked `estimated`.

The whole prompt counts: every message's text, names, tool calls and tool results, images,
audio and files (media.py), the tool or function definitions, a named `tool_choice`, the
response schema, and the chat template's framing. Text is counted by the backend's own tokenizer
when it has one (`TokenCounter`, upstream/base.py), else by the character rule: one token per four
bytes of UTF-8 (four ASCII characters), at least one per word. JSON parts (tool definitions,
schemas, call arguments) are counted as their compact JSON text. The rule errs high for English
prose and code, as a reservation should, and a backend's reported usage replaces it whenever
there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from lumen.billing.estimate.media import audio_part_tokens, file_part_tokens, image_part_tokens
from lumen.upstream.base import TokenCounter, token_counter

__all__ = [
    "CHARACTER_RULE",
    "TokenCounter",
    "chat_prompt_tokens",
    "content_text",
    "counter_for",
    "estimate_prompt",
    "prompt_tokens",
    "text_tokens",
]

MESSAGE_OVERHEAD = 4
"""Role and separators around each message (OpenAI's chat format takes 3; 4 errs high)."""
REPLY_PRIMING = 3
"""The start of the assistant's turn the template appends after the last message."""
NAME_OVERHEAD = 1
TOOLS_OVERHEAD = 12
"""The frame around the tool definitions (the namespace header OpenAI renders them into)."""
TOOL_CALL_OVERHEAD = 3
"""Per tool call in an assistant message, besides its id, name and arguments."""


def text_tokens(text: str) -> int:
    """The character rule: one token per four bytes of UTF-8, at least one per word. For ASCII
    that is four characters a token; bytes rather than characters keep scripts that tokenize
    densely (a CJK character is three bytes and about one token) from being counted a quarter."""
    if not text:
        return 0
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return max(len(text.split()), (size + 3) // 4)


CHARACTER_RULE = TokenCounter(text_tokens, per_message=MESSAGE_OVERHEAD, per_chat=REPLY_PRIMING)
"""The counter for backends without a tokenizer of their own (every HTTP upstream)."""


def estimate_prompt(op: str, body: Mapping[str, Any], *, counter: TokenCounter | None = None) -> int:
    """The estimated prompt tokens of one request to `op` ("chat.completions", "completions" or
    "embeddings"; anything else is 0). `counter` is the backend's own (`counter_for`); without
    one, the character rule. Never raises on a malformed body: it counts what it recognises."""
    counter = counter or CHARACTER_RULE
    count = _within_budget(counter)
    if op == "chat.completions":
        return _chat(body, counter, count)
    if op == "completions":
        prompt = _prompt(body.get("prompt"), counter, count)
        return prompt + _prompt(body.get("suffix"), counter, count, framed=False)
    if op == "embeddings":
        return _prompt(body.get("input"), counter, count)
    return 0


def _within_budget(counter: TokenCounter) -> Callable[[str], int]:
    """`counter.count` for the first `exact_chars` characters of the request, the character rule
    for any text that no longer fits in them."""
    if counter.exact_chars is None:
        return counter.count
    exact, left = counter.count, counter.exact_chars

    def count(text: str) -> int:
        nonlocal left
        if len(text) > left:
            return text_tokens(text)
        left -= len(text)
        return exact(text)

    return count


def counter_for(backends: Iterable[object]) -> TokenCounter | None:
    """The counter for a model served by `backends` (its endpoints' backends): the backends' own
    when they all share one; when they differ, or only some have one, a counter taking the
    largest of theirs and the character rule's, since any endpoint may serve the request. None
    (the character rule) when no backend has a counter of its own."""
    counters: list[TokenCounter] = []
    without = False
    for backend in backends:
        counter = token_counter(backend)
        if counter is None:
            without = True
        elif counter not in counters:
            counters.append(counter)
    if not counters:
        return None
    if len(counters) == 1 and not without:
        return counters[0]
    if without:
        counters.append(CHARACTER_RULE)
    return _largest(counters)


def _largest(counters: list[TokenCounter]) -> TokenCounter:
    functions = [c.count for c in counters]
    limits = [c.max_per_text for c in counters]
    budgets = [c.exact_chars for c in counters if c.exact_chars is not None]
    return TokenCounter(
        lambda text: max(count(text) for count in functions),
        per_message=max(c.per_message for c in counters),
        per_chat=max(c.per_chat for c in counters),
        default_system=max(c.default_system for c in counters),
        per_text=max(c.per_text for c in counters),
        max_per_text=None if None in limits else max(limit for limit in limits if limit is not None),
        exact_chars=min(budgets) if budgets else None,
    )


# --- names kept for older callers ---------------------------------------------------------------


def content_text(content: Any) -> str:
    """The text parts of a message's content, joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def chat_prompt_tokens(messages: list[Any]) -> int:
    """A chat of just these messages (no tools or schema), by the character rule."""
    return estimate_prompt("chat.completions", {"messages": messages})


def prompt_tokens(prompt: Any) -> int:
    """Legacy completions and embeddings input: a string, strings, token ids or lists of them."""
    return _prompt(prompt, CHARACTER_RULE, text_tokens)


# --- chat -----------------------------------------------------------------------------------


def _chat(body: Mapping[str, Any], counter: TokenCounter, count: Callable[[str], int]) -> int:
    total = counter.per_chat
    messages = body.get("messages")
    if isinstance(messages, list):
        if counter.default_system and not _opens_with_system(messages):
            total += counter.default_system
        for message in messages:
            if isinstance(message, Mapping):
                total += counter.per_message + _message(message, count)
    for field in ("tools", "functions"):
        definitions = body.get(field)
        if isinstance(definitions, list) and definitions:
            total += TOOLS_OVERHEAD + _json_tokens(definitions, count)
    for field in ("tool_choice", "function_call"):
        choice = body.get(field)
        if isinstance(choice, Mapping):
            total += _json_tokens(choice, count)
        elif isinstance(choice, str):
            total += count(choice)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") != "text":
        total += _json_tokens(response_format, count)
    return total


def _opens_with_system(messages: list[Any]) -> bool:
    first = messages[0] if messages else None
    return isinstance(first, Mapping) and first.get("role") in ("system", "developer")


def _message(message: Mapping[str, Any], count: Callable[[str], int]) -> int:
    total = _content(message.get("content"), count)
    for field in ("refusal", "tool_call_id"):
        value = message.get(field)
        if isinstance(value, str):
            total += count(value)
    name = message.get("name")
    if isinstance(name, str):
        total += NAME_OVERHEAD + count(name)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            if isinstance(call, Mapping):
                call_id = call.get("id")
                total += _function_call(call.get("function"), count)
                total += count(call_id) if isinstance(call_id, str) else 0
    legacy_call = message.get("function_call")
    if isinstance(legacy_call, Mapping):
        total += _function_call(legacy_call, count)
    return total


def _function_call(function: Any, count: Callable[[str], int]) -> int:
    if not isinstance(function, Mapping):
        return 0
    total = TOOL_CALL_OVERHEAD
    for field in ("name", "arguments"):
        value = function.get(field)
        if isinstance(value, str):
            total += count(value)
        elif value is not None:
            total += _json_tokens(value, count)
    return total


def _content(content: Any, count: Callable[[str], int]) -> int:
    if isinstance(content, str):
        return count(content)
    if not isinstance(content, list):
        return 0
    total = 0
    texts = 0
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        text = part.get("text") if kind != "refusal" else part.get("refusal")
        if isinstance(text, str):
            total += count(text)
            texts += 1
        elif kind == "image_url":
            total += image_part_tokens(part)
        elif kind == "input_audio":
            total += audio_part_tokens(part)
        elif kind == "file":
            total += file_part_tokens(part)
    # Templates see the text parts joined into one string: one separator between each two.
    return total + max(0, texts - 1)


def _json_tokens(value: Any, count: Callable[[str], int]) -> int:
    """A structure counted as its compact JSON text, as it travels to the model. By the
    character rule its UTF-8 length is enough: compact JSON has too few spaces for the
    one-per-word floor to matter, and skipping the split saves most of the time of a body with
    many tools."""
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # not JSON (a caller inside Lumen built it); still count something
        return count(str(value))
    if count is text_tokens:
        return (len(encoded) + 3) // 4
    return count(encoded.decode())


# --- completions and embeddings ---------------------------------------------------------------


def _prompt(prompt: Any, counter: TokenCounter, count: Callable[[str], int], *, framed: bool = True) -> int:
    """A string, strings, token ids or lists of token ids; each text gets `per_text` framing and
    is billed at most `max_per_text`."""
    if isinstance(prompt, str):
        tokens = count(prompt) + (counter.per_text if framed else 0)
    elif isinstance(prompt, list) and prompt and all(isinstance(item, int) for item in prompt):
        tokens = len(prompt) + (counter.per_text if framed else 0)
    elif isinstance(prompt, list):
        return sum(_prompt(item, counter, count, framed=framed) for item in prompt)
    else:
        return 0
    return tokens if counter.max_per_text is None else min(tokens, counter.max_per_text)
