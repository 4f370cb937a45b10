"""The raw SSE stream of /v1/chat/completions, checked field by field (wire-format notes A5).

What the SDKs rely on: `data: ` lines only (no `event:`), comments for keep-alives, the object
`chat.completion.chunk` on every chunk, one id/created/model for the whole stream, `role` once
per choice, exactly one finish_reason per choice, the usage chunk (choices == []) last and only
when asked for, and exactly `data: [DONE]` at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.fakes.upstream import WORDS, FakeUpstream
from tests.support import RunningLumen, model, running_lumen, upstream

PROMPT = "Write a short poem about data science"


@dataclass
class Stream:
    status: int
    headers: httpx.Headers
    raw: str
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def post_stream(lumen: RunningLumen, body: dict[str, Any], path: str = "/chat/completions") -> Stream:
    with httpx.stream("POST", lumen.v1 + path, headers=lumen.auth, json=body, timeout=30) as response:
        raw = "".join(response.iter_text())
        result = Stream(response.status_code, response.headers, raw)
    # Lines as an SSE parser sees them; blank lines separate events.
    result.lines = raw.split("\n")
    for line in result.lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            result.events.append(json.loads(line[len("data: ") :]))
    return result


def check_framing(stream: Stream) -> None:
    assert stream.status == 200, stream.raw
    assert stream.headers["content-type"].split(";")[0].strip() == "text/event-stream"
    for line in stream.lines:
        if line == "" or line.startswith(":"):
            continue
        assert line.startswith("data: "), f"not a data line: {line!r}"
    assert not any(line.startswith("event:") for line in stream.lines)
    # The stream ends with exactly one `data: [DONE]` event, after all chunks.
    assert stream.raw.endswith("\n\ndata: [DONE]\n\n")
    assert [line for line in stream.lines if "[DONE]" in line] == ["data: [DONE]"]
    # Every event is a single data line followed by a blank line.
    events = [block for block in stream.raw.split("\n\n") if block]
    non_comment = [b for b in events if not all(line.startswith(":") for line in b.split("\n"))]
    assert len(non_comment) == len(stream.events) + 1


def check_chunks(stream: Stream, *, model: str, choices: int, include_usage: bool) -> dict[int, str]:
    """Checks the chunk fields; returns each choice's concatenated content."""
    events = stream.events
    assert events, stream.raw
    assert all(event["object"] == "chat.completion.chunk" for event in events)
    assert len({event["id"] for event in events}) == 1
    assert len({event["created"] for event in events}) == 1
    assert isinstance(events[0]["created"], int)
    assert {event["model"] for event in events} == {model}
    assert not any("error" in event for event in events)

    usage_chunks = [i for i, event in enumerate(events) if event["choices"] == []]
    if include_usage:
        assert usage_chunks == [len(events) - 1], "the usage chunk must be the last, and only one"
        usage = events[-1]["usage"]
        assert set(usage) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        choice_events = events[:-1]
    else:
        assert usage_chunks == []
        choice_events = events
    assert all(event.get("usage") is None for event in choice_events)

    seen: list[int] = []
    roles: dict[int, int] = {}
    finishes: dict[int, list[str]] = {}
    contents: dict[int, str] = {}
    for event in choice_events:
        for choice in event["choices"]:
            index = choice["index"]
            delta = choice["delta"]
            if index not in seen:
                seen.append(index)
                assert delta.get("role") == "assistant", "role must come in the first delta of a choice"
            elif "role" in delta:
                roles[index] = roles.get(index, 1) + 1
            assert index not in finishes, "nothing may follow a choice's finish_reason"
            if choice.get("finish_reason") is not None:
                finishes.setdefault(index, []).append(choice["finish_reason"])
            contents[index] = contents.get(index, "") + (delta.get("content") or "")
    assert roles == {}, "role repeated in a later delta"
    assert seen == list(range(choices)), "choices must first appear in index order"
    assert {i: len(f) for i, f in finishes.items()} == dict.fromkeys(range(choices), 1)
    return contents


@pytest.mark.parametrize("include_usage", [False, True])
def test_echo_stream_wire(lumen: RunningLumen, include_usage: bool) -> None:
    body: dict[str, Any] = {
        "model": "echo",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    stream = post_stream(lumen, body)

    check_framing(stream)
    contents = check_chunks(stream, model="echo", choices=1, include_usage=include_usage)
    assert contents == {0: PROMPT}
    assert stream.events[-2 if include_usage else -1]["choices"][0]["finish_reason"] == "stop"
    if include_usage:
        words = len(PROMPT.split())
        assert stream.events[-1]["usage"] == {
            "prompt_tokens": words + 4,
            "completion_tokens": words,
            "total_tokens": 2 * words + 4,
        }


def test_echo_stream_wire_n2(lumen: RunningLumen) -> None:
    body = {
        "model": "org/echo-2",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "n": 2,
        "max_tokens": 3,
        "stream_options": {"include_usage": True},
    }
    stream = post_stream(lumen, body)

    check_framing(stream)
    contents = check_chunks(stream, model="org/echo-2", choices=2, include_usage=True)
    assert contents == {0: "Write a short", 1: "Write a short"}
    finishes = [c["finish_reason"] for e in stream.events for c in e["choices"] if c["finish_reason"]]
    assert finishes == ["length", "length"]
    assert stream.events[-1]["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("include_usage", [False, True])
def test_upstream_stream_wire(
    proxied: RunningLumen, fake_upstream: FakeUpstream, include_usage: bool
) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    stream = post_stream(proxied, body)

    check_framing(stream)
    contents = check_chunks(stream, model="m", choices=1, include_usage=include_usage)
    assert contents == {0: "".join(WORDS)}
    if include_usage:
        assert stream.events[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}


def test_upstream_usage_inline_still_arrives_last(proxied: RunningLumen, fake_upstream: FakeUpstream) -> None:
    # This upstream puts usage on its finish chunk; clients still get a usage chunk at the end.
    fake_upstream.mode = "usage_inline"
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream = post_stream(proxied, body)

    check_framing(stream)
    check_chunks(stream, model="m", choices=1, include_usage=True)
    assert stream.events[-1]["usage"]["total_tokens"] == 13


def test_error_before_stream_is_json(lumen: RunningLumen) -> None:
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    stream = post_stream(lumen, body)
    assert stream.status == 404
    assert stream.headers["content-type"].startswith("application/json")
    assert json.loads(stream.raw)["error"]["code"] == "model_not_found"


def test_legacy_completions_stream_wire(lumen: RunningLumen) -> None:
    body = {"model": "echo", "prompt": "Say this is a test", "stream": True}
    stream = post_stream(lumen, body, "/completions")

    check_framing(stream)
    events = stream.events
    assert all(event["object"] == "text_completion" for event in events)
    assert len({(event["id"], event["created"], event["model"]) for event in events}) == 1
    assert "".join(c["text"] for e in events for c in e["choices"]) == "Say this is a test"
    assert [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]] == ["stop"]


def test_error_after_stream_started(fake: FakeUpstream, tmp_path: Path) -> None:
    # Once the stream has started, a broken upstream becomes a `data:` error event, then [DONE].
    fake.mode = "malformed_sse"
    config = {"models": [model("m", upstream(fake.url, upstream_model="up"))]}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with running_lumen(tmp_path, config) as lumen:
        stream = post_stream(lumen, body)
        check_framing(stream)
        *chunks, last = stream.events
        assert chunks and all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
        assert set(last) == {"error"}
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert last["error"]["type"] == "server_error"

        with OpenAI(base_url=lumen.v1, api_key=lumen.key, max_retries=0) as client:
            with pytest.raises(openai.APIError) as caught:
                list(client.chat.completions.create(**body))
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.message == last["error"]["message"]
