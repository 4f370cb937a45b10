"""Chat completions stream events, as the in-process test backends send them (the relay reads
the payloads; `id`, `created` and `model` are fixed)."""

from __future__ import annotations

from typing import Any

import orjson


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One `chat.completion.chunk` for choice 0."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return orjson.dumps(
        {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [choice]}
    )


def usage_chunk(usage: dict[str, int]) -> bytes:
    """The last chunk of a stream whose client asked for usage: no choices, the usage."""
    return orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [],
            "usage": usage,
        }
    )
