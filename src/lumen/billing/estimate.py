"""Local token counts for when a backend reports no usage.

Without the backend's tokenizer an exact count is impossible; the estimate is the usual rule of
thumb of one token per four characters (at least one per word), plus four tokens of framing per
chat message. Records built from it are marked `estimated`.
"""

from __future__ import annotations

from typing import Any

MESSAGE_OVERHEAD = 4


def text_tokens(text: str) -> int:
    if not text:
        return 0
    return max(len(text.split()), (len(text) + 3) // 4)


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def chat_prompt_tokens(messages: list[Any]) -> int:
    total = 0
    for message in messages:
        if isinstance(message, dict):
            total += MESSAGE_OVERHEAD + text_tokens(content_text(message.get("content")))
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict):
                    function = call.get("function") or {}
                    total += text_tokens(str(function.get("name", ""))) + text_tokens(
                        str(function.get("arguments", ""))
                    )
    return total


def prompt_tokens(prompt: Any) -> int:
    """Legacy completions and embeddings input: a string, strings, token ids or lists of them."""
    if isinstance(prompt, str):
        return text_tokens(prompt)
    if isinstance(prompt, list):
        if all(isinstance(item, int) for item in prompt):
            return len(prompt)
        return sum(prompt_tokens(item) for item in prompt)
    return 0
