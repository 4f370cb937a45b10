"""Lumen through the official openai Python SDK, as its users call it.

The echo model makes every answer exact: it repeats the last user message, one streamed chunk
per whitespace-anchored word, with usage = words (+4 per message for the prompt).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.e2e.conftest import ECHO_MODELS
from tests.fakes.upstream import WORDS, FakeUpstream
from tests.support import RunningLumen

PROMPT = "Explain quantum entanglement in plain English"
PROMPT_WORDS = len(PROMPT.split())
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
]


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def client(lumen: RunningLumen) -> Iterator[OpenAI]:
    with OpenAI(base_url=lumen.v1, api_key=lumen.key, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def upstream_client(proxied: RunningLumen, fake_upstream: FakeUpstream) -> Iterator[OpenAI]:
    with OpenAI(base_url=proxied.v1, api_key=proxied.key, max_retries=0) as sdk:
        yield sdk


# --- chat completions -----------------------------------------------------------------------


def test_basic_create(client: OpenAI) -> None:
    response = client.chat.completions.create(model="echo", messages=user(PROMPT))

    assert response.object == "chat.completion"
    assert response.model == "echo"
    assert response.id.startswith("chatcmpl-")
    assert len(response.choices) == 1
    choice = response.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == PROMPT
    assert choice.finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.prompt_tokens == PROMPT_WORDS + 4
    assert response.usage.completion_tokens == PROMPT_WORDS
    assert response.usage.total_tokens == 2 * PROMPT_WORDS + 4


def test_model_with_slash_in_name(client: OpenAI) -> None:
    response = client.chat.completions.create(model="org/echo-2", messages=user("hi there"))
    assert response.model == "org/echo-2"
    assert response.choices[0].message.content == "hi there"


def test_max_tokens_truncates_with_length(client: OpenAI) -> None:
    response = client.chat.completions.create(model="echo", messages=user(PROMPT), max_tokens=2)
    assert response.choices[0].message.content == "Explain quantum"
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 2


def test_multi_turn_conversation(client: OpenAI) -> None:
    # The seed's multi-turn example, with `client` and model "echo".
    history: list[Any] = []
    prompts: list[int] = []

    def chat(user_message: str) -> str | None:
        history.append({"role": "user", "content": user_message})
        response = client.chat.completions.create(model="echo", messages=history)
        assert response.usage is not None
        prompts.append(response.usage.prompt_tokens)
        reply = response.choices[0].message.content
        history.append({"role": "assistant", "content": reply})
        return reply

    assert chat("What is a transformer model?") == "What is a transformer model?"
    assert len(history) == 2
    assert chat("How does the attention mechanism work?") == "How does the attention mechanism work?"
    assert history == [
        {"role": "user", "content": "What is a transformer model?"},
        {"role": "assistant", "content": "What is a transformer model?"},
        {"role": "user", "content": "How does the attention mechanism work?"},
        {"role": "assistant", "content": "How does the attention mechanism work?"},
    ]
    # The second request carried the whole history: 3 messages of 5, 5 and 6 words.
    assert prompts == [5 + 4, (5 + 4) * 2 + 6 + 4]


def test_system_prompt(client: OpenAI) -> None:
    system = "You are a helpful research assistant who always cites sources."
    question = "Summarize recent advances in protein folding"
    response = client.chat.completions.create(
        model="echo",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
    )
    assert response.choices[0].message.content == question
    assert response.usage is not None
    assert response.usage.prompt_tokens == len(system.split()) + 4 + len(question.split()) + 4


# --- streaming ------------------------------------------------------------------------------


def test_stream_create_deltas_concatenate_to_content(client: OpenAI) -> None:
    whole = client.chat.completions.create(model="echo", messages=user(PROMPT))
    chunks = list(client.chat.completions.create(model="echo", messages=user(PROMPT), stream=True))

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(len(chunk.choices) == 1 for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content == PROMPT
    assert len([c for c in chunks if c.choices[0].delta.content]) == PROMPT_WORDS
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.model for c in chunks} == {"echo"}


def test_stream_create_include_usage_on_last_chunk(client: OpenAI) -> None:
    whole = client.chat.completions.create(model="echo", messages=user(PROMPT))
    chunks = list(
        client.chat.completions.create(
            model="echo", messages=user(PROMPT), stream=True, stream_options={"include_usage": True}
        )
    )

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and whole.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert all(len(chunk.choices) == 1 for chunk in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == PROMPT


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_helper_events(client: OpenAI, include_usage: bool) -> None:
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    deltas: list[str] = []
    done: list[str] = []
    types: list[str] = []
    with client.chat.completions.stream(model="echo", messages=user(PROMPT), **extra) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "content.delta":
                deltas.append(event.delta)
            elif event.type == "content.done":
                done.append(event.content)
        final = stream.get_final_completion()

    assert "".join(deltas) == PROMPT
    # The role chunk's `content: ""` is a content.delta too; then one per word.
    assert [d for d in deltas if d] == PROMPT.split(" ")[:1] + [" " + w for w in PROMPT.split(" ")[1:]]
    assert done == [PROMPT]
    assert types.index("content.done") > max(i for i, t in enumerate(types) if t == "content.delta")
    assert final.choices[0].message.content == PROMPT
    assert final.choices[0].message.role == "assistant"
    assert final.choices[0].finish_reason == "stop"
    assert final.model == "echo"
    if include_usage:
        assert final.usage is not None
        assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (PROMPT_WORDS + 4, PROMPT_WORDS)
    else:
        assert final.usage is None


def test_stream_helper_length_finish(client: OpenAI) -> None:
    deltas: list[str] = []
    with client.chat.completions.stream(model="echo", messages=user(PROMPT), max_tokens=3) as stream:
        for event in stream:
            if event.type == "content.delta":
                deltas.append(event.delta)
        # openai-python's helper refuses a truncated final completion, but hands it over.
        with pytest.raises(openai.LengthFinishReasonError) as caught:
            stream.get_final_completion()
    assert "".join(deltas) == "Explain quantum entanglement"
    final = caught.value.completion
    assert final.choices[0].message.content == "Explain quantum entanglement"
    assert final.choices[0].finish_reason == "length"


def test_stream_closed_early_leaves_server_usable(client: OpenAI) -> None:
    text = "[[echo:slow:20]] " + " ".join(f"w{i}" for i in range(50))
    with client.chat.completions.create(model="echo", messages=user(text), stream=True) as stream:
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
    response = client.chat.completions.create(model="echo", messages=user("still here"))
    assert response.choices[0].message.content == "still here"


# --- models ---------------------------------------------------------------------------------


def test_models_list(client: OpenAI) -> None:
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert ids == [m["name"] for m in ECHO_MODELS["models"]]
    assert {"echo", "org/echo-2"} <= set(ids)
    assert all(m.object == "model" and isinstance(m.created, int) and m.owned_by for m in models)


def test_models_retrieve_name_with_slash(client: OpenAI) -> None:
    raw = client.models.with_raw_response.retrieve("org/echo-2")
    # The SDK percent-encodes the `/` of the model id; Lumen must still find the model.
    assert "org%2Fecho-2" in str(raw.http_request.url)
    card = raw.parse()
    assert card.id == "org/echo-2"
    assert card.object == "model"


def test_models_retrieve_unknown(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("org/nope")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


# --- embeddings and legacy completions ------------------------------------------------------


def test_embeddings_base64_default_matches_float(client: OpenAI) -> None:
    texts = ["The quick brown fox", "jumps over the lazy dog"]
    raw = client.embeddings.with_raw_response.create(model="echo-embed", input=texts)
    # The SDK asked for base64 and got strings on the wire ...
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    wire = raw.http_response.json()
    assert all(isinstance(item["embedding"], str) for item in wire["data"])
    # ... which it decoded into the float32 values of the vectors.
    decoded = raw.parse()
    floats = client.embeddings.create(model="echo-embed", input=texts, encoding_format="float")

    assert [d.index for d in decoded.data] == [f.index for f in floats.data] == [0, 1]
    for item_decoded, item_float, item_wire in zip(decoded.data, floats.data, wire["data"], strict=True):
        vector = item_float.embedding
        assert len(vector) == 384
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-6)
        as_float32 = list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))
        assert list(item_decoded.embedding) == as_float32
        assert base64.b64decode(item_wire["embedding"]) == struct.pack(f"<{len(vector)}f", *vector)
    assert decoded.data[0].embedding != decoded.data[1].embedding
    assert decoded.model == floats.model == "echo-embed"
    assert decoded.usage.prompt_tokens == floats.usage.prompt_tokens == 9


def test_embeddings_on_chat_model_is_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="echo", input="hello")
    assert caught.value.code == "model_not_supported"
    assert caught.value.param == "model"


def test_legacy_completions(client: OpenAI) -> None:
    response = client.completions.create(model="echo", prompt="Say this is a test")
    assert response.object == "text_completion"
    assert response.model == "echo"
    assert response.choices[0].text == "Say this is a test"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 5)

    truncated = client.completions.create(model="echo", prompt="Say this is a test", max_tokens=2)
    assert truncated.choices[0].text == "Say this"
    assert truncated.choices[0].finish_reason == "length"


def test_legacy_completions_stream(client: OpenAI) -> None:
    chunks = list(client.completions.create(model="echo", prompt="Say this is a test", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "Say this is a test"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.object == "text_completion" for c in chunks)


# --- errors and headers ---------------------------------------------------------------------


def test_wrong_key_is_authentication_error(lumen: RunningLumen) -> None:
    with OpenAI(base_url=lumen.v1, api_key="sk_wrong_0000000000000000000000000000", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.chat.completions.create(model="echo", messages=user("hi"))
    error = caught.value
    assert error.status_code == 401
    assert error.code == "invalid_api_key"
    assert error.type == "invalid_request_error"
    assert error.request_id


def test_unknown_model_is_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=user("hi"))
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "no-such-model" in caught.value.message


def test_unknown_model_when_streaming_fails_before_the_stream(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=user("hi"), stream=True)
    assert caught.value.code == "model_not_found"


def test_bad_parameter_type_is_bad_request_not_422(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo", messages=user("hi"), extra_body={"max_tokens": "x"})
    error = caught.value
    assert error.status_code == 400
    assert not isinstance(error, openai.UnprocessableEntityError)
    assert error.type == "invalid_request_error"
    assert error.param == "max_tokens"


def test_bad_parameter_type_raw_http(lumen: RunningLumen) -> None:
    response = httpx.post(
        f"{lumen.v1}/chat/completions",
        headers=lumen.auth,
        json={"model": "echo", "messages": user("hi"), "max_tokens": "x"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "max_tokens"
    assert response.headers["x-request-id"]


def test_with_raw_response_exposes_request_id(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="echo", messages=user("hello"))
    request_id = raw.headers.get("x-request-id")
    assert request_id
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello"
    assert completion._request_id == request_id

    other = client.chat.completions.with_raw_response.create(model="echo", messages=user("hello"))
    assert other.headers.get("x-request-id") not in (None, request_id)


# --- AsyncOpenAI ----------------------------------------------------------------------------


async def test_async_create_and_stream(lumen: RunningLumen) -> None:
    async with AsyncOpenAI(base_url=lumen.v1, api_key=lumen.key, max_retries=0) as sdk:
        response = await sdk.chat.completions.create(model="org/echo-2", messages=user(PROMPT))
        assert response.choices[0].message.content == PROMPT
        assert response.model == "org/echo-2"

        stream = await sdk.chat.completions.create(
            model="echo", messages=user(PROMPT), stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PROMPT
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == PROMPT_WORDS


async def test_async_stream_helper(lumen: RunningLumen) -> None:
    async with AsyncOpenAI(base_url=lumen.v1, api_key=lumen.key, max_retries=0) as sdk:
        deltas: list[str] = []
        async with sdk.chat.completions.stream(
            model="echo", messages=user(PROMPT), stream_options={"include_usage": True}
        ) as stream:
            async for event in stream:
                if event.type == "content.delta":
                    deltas.append(event.delta)
            final = await stream.get_final_completion()
    assert "".join(deltas) == PROMPT
    assert final.choices[0].message.content == PROMPT
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens == 2 * PROMPT_WORDS + 4


async def test_async_error_mapping(lumen: RunningLumen) -> None:
    async with AsyncOpenAI(base_url=lumen.v1, api_key="sk_wrong_000000000000000000000", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.models.list()
    assert caught.value.code == "invalid_api_key"


# --- through an OpenAI-compatible upstream --------------------------------------------------


def test_upstream_answer_carries_lumen_model_name(
    upstream_client: OpenAI, fake_upstream: FakeUpstream
) -> None:
    response = upstream_client.chat.completions.create(model="m", messages=user("hi"))
    assert fake_upstream.requests[-1]["model"] == "up"
    assert response.model == "m"
    assert response.choices[0].message.content == "".join(WORDS)


def test_upstream_stream_carries_lumen_model_name(
    upstream_client: OpenAI, fake_upstream: FakeUpstream
) -> None:
    chunks = list(upstream_client.chat.completions.create(model="m", messages=user("hi"), stream=True))
    assert fake_upstream.requests[-1]["model"] == "up"
    assert {c.model for c in chunks} == {"m"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(WORDS)


def test_tools_pass_through(upstream_client: OpenAI, fake_upstream: FakeUpstream) -> None:
    tool_choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    upstream_client.chat.completions.create(
        model="m", messages=user("weather in Oslo?"), tools=TOOLS, tool_choice=tool_choice
    )
    sent = fake_upstream.requests[-1]
    assert sent["tools"] == TOOLS
    assert sent["tool_choice"] == tool_choice


def test_tool_call_history_passes_through(upstream_client: OpenAI, fake_upstream: FakeUpstream) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
    ]
    upstream_client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert fake_upstream.requests[-1]["messages"] == messages


@pytest.mark.parametrize("stream", [False, True])
def test_vendor_fields_reach_upstream(
    upstream_client: OpenAI, fake_upstream: FakeUpstream, stream: bool
) -> None:
    vendor = {"top_k": 5, "chat_template_kwargs": {"enable_thinking": False}}
    response = upstream_client.chat.completions.create(
        model="m", messages=user("hi"), stream=stream, extra_body=vendor
    )
    if stream:
        assert isinstance(response, openai.Stream)
        list(response)
    sent = fake_upstream.requests[-1]
    assert sent["top_k"] == 5
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["messages"] == user("hi")
