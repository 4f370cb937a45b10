"""The Messages <-> chat completions translation, unit by unit."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson
import pytest

from lumen.api.messages.codec import error_body, error_type, events, from_chat, to_chat
from lumen.api.messages.protocol import MessagesRequest, parse
from lumen.errors import (
    EngineUnavailable,
    InsufficientQuota,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    UpstreamTimeout,
)


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    return to_chat(parse(MessagesRequest, {"model": "m", "max_tokens": 10, **body}))


def test_a_request_becomes_a_chat_body() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    body = _chat(
        {
            "system": [
                {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "two"},
            ],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"}, image]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and this"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "is_error": False,
                            "content": [
                                {"type": "text", "text": "done"},
                                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                            ],
                        },
                    ],
                },
            ],
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_k": 3,
            "metadata": {"user_id": "u1"},
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            "tools": [
                {"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
            ],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "stream": True,
        }
    )
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "one\n\ntwo"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": "calling",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
                ],
            },
            # The tool's answer first (chat wants it right after the call), then the turn's text.
            {"role": "tool", "tool_call_id": "t1", "content": "done"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and this"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "max_tokens": 10,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["END"],
        "temperature": 0.5,
        "top_k": 3,
        "user": "u1",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "Unsupported type 'document' at 'messages[0].content[0]'",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": None},
            "Invalid value for 'max_tokens'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "Missing required parameter: 'messages[0].content[0].text'",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "w"}],
            },
            "'tools[0].type'",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "image", "source": {"type": "url", "url": "u"}}],
                    }
                ]
            },
            "An assistant message cannot contain a 'image' block",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "tool"}},
            "'tool_choice.name'",
        ),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _chat(body)
    assert message in refused.value.message


def test_a_missing_max_tokens_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="Missing required parameter: 'max_tokens'"):
        parse(MessagesRequest, {"model": "m", "messages": [{"role": "user", "content": "x"}]})


def test_a_completion_becomes_a_message() -> None:
    completion = {
        "choices": [
            {
                "message": {
                    "content": "",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "f", "arguments": '{"x": [1]}'}},
                        {"id": "c2", "function": {"name": "g", "arguments": "not json"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 6}},
    }
    message = from_chat(completion, "asked-name")
    assert message["model"] == "asked-name" and message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": [1]}},
        {"type": "tool_use", "id": "c2", "name": "g", "input": {"arguments": "not json"}},
    ]
    assert message["usage"] == {"input_tokens": 4, "output_tokens": 4, "cache_read_input_tokens": 6}
    stopped = from_chat(
        {"choices": [{"message": {"content": "a"}, "finish_reason": "stop", "stop_reason": "END"}]}, "m"
    )
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "END")


async def _chat_stream(*pieces: bytes) -> AsyncGenerator[bytes, None]:
    for piece in pieces:
        yield piece


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return (
        b"data: "
        + orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        + b"\n\n"
    )


async def test_keep_alives_become_pings_and_split_events_are_joined() -> None:
    text = _chunk({"content": "hi"})
    inner = _chat_stream(b": keep-alive\n\n", text[:7], text[7:] + _chunk({}, "length"), b"data: [DONE]\n\n")
    out = [piece async for piece in events(inner, "m", 9)]
    names = [piece.split(b"\n", 1)[0].decode() for piece in out]
    assert names == [
        "event: message_start",
        "event: ping",
        "event: content_block_start",
        "event: content_block_delta",
        "event: content_block_stop",
        "event: message_delta",
        "event: message_stop",
    ]
    delta = orjson.loads(out[5].split(b"data: ", 1)[1])
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"] == {"input_tokens": 9, "output_tokens": 0}  # no usage chunk: the estimate


async def test_closing_the_translation_closes_the_chat_stream() -> None:
    closed = []

    async def inner() -> AsyncGenerator[bytes, None]:
        try:
            yield _chunk({"content": "hi"})
            yield _chunk({"content": " there"})
        finally:
            closed.append(True)

    translated = events(inner(), "m", 1)
    await anext(translated)
    await anext(translated)
    await translated.aclose()
    assert closed == [True]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("x"), "invalid_request_error"),
        (ModelNotAllowed("m"), "permission_error"),
        (ModelNotFound("m"), "not_found_error"),
        (PayloadTooLarge("x"), "request_too_large"),
        (InsufficientQuota("x"), "rate_limit_error"),
        (EngineUnavailable("x"), "overloaded_error"),
        (UpstreamTimeout("x"), "api_error"),
    ],
)
def test_error_types_by_status(error: Any, kind: str) -> None:
    assert error_type(error.status, error.code) == kind
    assert error_body(error, "req_1") == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": "req_1",
    }
