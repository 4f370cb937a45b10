"""Anthropic's Messages API through the official `anthropic` SDK, in process (the SDK's httpx2
client over an ASGI transport: the whole app, no socket)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from tests.inprocess import InProcess, in_process
from tests.messages.tool_backend import ToolCaller
from tests.support import ECHO, TEST_KEY, model

CONFIG: dict[str, Any] = {
    "models": [model("echo", ECHO), model("tools", ECHO), model("secret", ECHO, access="blocked")]
}
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def sdk(lumen: InProcess, **options: Any) -> anthropic.AsyncAnthropic:
    transport = httpx2.ASGITransport(app=lumen.app)
    options = {"api_key": TEST_KEY, **options}
    return anthropic.AsyncAnthropic(
        base_url="http://lumen", http_client=httpx2.AsyncClient(transport=transport), max_retries=0, **options
    )


@pytest.fixture
async def lumen(tmp_path: Path) -> AsyncIterator[tuple[InProcess, ToolCaller]]:
    async with in_process(tmp_path, CONFIG) as lumen:
        caller = ToolCaller()
        tools = lumen.state.registry.get("tools")
        assert tools is not None
        for endpoint in tools.endpoints:
            endpoint.backend = caller
        yield lumen, caller


async def test_create_answers_a_message(lumen: tuple[InProcess, ToolCaller]) -> None:
    client = sdk(lumen[0])
    message = await client.messages.create(
        model="echo",
        max_tokens=50,
        system="You repeat.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there world"}]}],
    )
    assert message.type == "message" and message.role == "assistant" and message.model == "echo"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text" and message.content[0].text == "hello there world"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0


async def test_max_tokens_ends_with_max_tokens(lumen: tuple[InProcess, ToolCaller]) -> None:
    client = sdk(lumen[0])
    message = await client.messages.create(
        model="echo", max_tokens=2, messages=[{"role": "user", "content": "one two three four"}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text" and message.content[0].text == "one two"


async def test_stream_gives_text_and_the_final_message(lumen: tuple[InProcess, ToolCaller]) -> None:
    client = sdk(lumen[0], default_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"})
    async with client.messages.stream(
        model="echo", max_tokens=50, messages=[{"role": "user", "content": "alpha beta gamma"}]
    ) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == "alpha beta gamma" and len(pieces) == 3
    assert final.content[0].type == "text" and final.content[0].text == "alpha beta gamma"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3
    # message_start carried the prompt estimate; message_delta the backend's own count.
    count = await client.messages.count_tokens(
        model="echo", messages=[{"role": "user", "content": "alpha beta gamma"}]
    )
    assert final.usage.input_tokens > 0 and count.input_tokens > 0


async def test_tool_use_round_trip(lumen: tuple[InProcess, ToolCaller]) -> None:
    app, caller = lumen
    client = sdk(app)
    question: Any = {"role": "user", "content": "Weather in Paris?"}
    first = await client.messages.create(
        model="tools", max_tokens=100, tools=[WEATHER_TOOL], tool_choice={"type": "any"}, messages=[question]
    )
    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["text", "tool_use"]
    use = first.content[1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    sent = caller.bodies[-1]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "The weather in a city.",
            },
        }
    ]
    assert sent["tool_choice"] == "required"

    result: Any = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": "sunny"}]}
        ],
    }
    async with client.messages.stream(
        model="tools",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[question, {"role": "assistant", "content": first.content}, result],
    ) as stream:
        second = await stream.get_final_message()
    assert second.content[0].type == "text" and second.content[0].text == "The tool said: sunny"
    history = caller.bodies[-1]["messages"]
    assert history[1] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": use.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert history[2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}


async def test_a_streamed_tool_call_arrives_whole(lumen: tuple[InProcess, ToolCaller]) -> None:
    client = sdk(lumen[0])
    async with client.messages.stream(
        model="tools",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather?"}],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    use = final.content[1]
    assert use.type == "tool_use" and use.id == "call_1" and use.input == {"city": "Paris"}
    assert final.usage.output_tokens == 7 and final.usage.input_tokens == 30


async def test_count_tokens_is_the_pipeline_estimate(lumen: tuple[InProcess, ToolCaller]) -> None:
    app = lumen[0]
    client = sdk(app)
    messages: Any = [{"role": "user", "content": "one two three four five six"}]
    counted = await client.messages.count_tokens(model="echo", system="be brief", messages=messages)
    pipeline = app.state.pipeline
    body = {
        "model": "echo",
        "messages": [{"role": "system", "content": "be brief"}, *messages],
    }
    spec = pipeline.spec("chat.completions", pipeline.resolve("echo", "chat.completions"), body)
    assert counted.input_tokens == spec.prompt_estimate > 0
    longer = await client.messages.count_tokens(model="echo", system="be brief", messages=messages * 3)
    assert longer.input_tokens > counted.input_tokens


async def test_bearer_token_authenticates_too(lumen: tuple[InProcess, ToolCaller]) -> None:
    client = sdk(lumen[0], api_key=None, auth_token=TEST_KEY)
    message = await client.messages.create(
        model="echo", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "hi"


async def test_error_classes(lumen: tuple[InProcess, ToolCaller]) -> None:
    app = lumen[0]
    hello: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError) as denied:
        await sdk(app, api_key="sk_wrong_0123456789abcdefghijklmnopqrstuvw").messages.create(
            model="echo", max_tokens=5, messages=hello
        )
    assert denied.value.status_code == 401
    assert isinstance(denied.value.body, dict)
    assert (
        denied.value.body["type"] == "error" and denied.value.body["error"]["type"] == "authentication_error"
    )
    assert denied.value.request_id == denied.value.response.headers["x-request-id"]
    client = sdk(app)
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="nope", max_tokens=5, messages=hello)
    assert isinstance(missing.value.body, dict) and missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(model="nope", messages=hello)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        await client.messages.create(model="secret", max_tokens=5, messages=hello)
    assert isinstance(refused.value.body, dict) and refused.value.body["error"]["type"] == "permission_error"
    with pytest.raises(anthropic.PermissionDeniedError):
        await client.messages.count_tokens(model="secret", messages=hello)
    video: Any = {"role": "user", "content": [{"type": "video", "url": "x"}]}
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(
            model="echo",
            max_tokens=5,
            messages=[video],
        )
    assert isinstance(bad.value.body, dict) and bad.value.body["error"]["type"] == "invalid_request_error"
    assert (
        "'video'" in bad.value.body["error"]["message"]
        and "messages[0].content[0]" in bad.value.body["error"]["message"]
    )


async def test_the_beta_client_is_served(lumen: tuple[InProcess, ToolCaller]) -> None:
    """`client.beta.messages` posts to `/v1/messages?beta=true` with `anthropic-beta`, as Claude Code does."""
    client = sdk(lumen[0])
    message = await client.beta.messages.create(
        model="echo",
        max_tokens=5,
        betas=["interleaved-thinking-2025-05-14"],
        messages=[{"role": "user", "content": "hi"}],
    )
    assert message.content[0].type == "text" and message.content[0].text == "hi"


async def test_models_in_anthropic_shape(lumen: tuple[InProcess, ToolCaller]) -> None:
    client = sdk(lumen[0])
    page = await client.models.list()
    assert [m.id for m in page.data] == ["echo", "tools"] and page.data[0].type == "model"
    assert page.has_more is False and page.first_id == "echo" and page.last_id == "tools"
    plain = await lumen[0].client.get("/v1/models", headers=lumen[0].auth)
    assert plain.json()["object"] == "list"  # without anthropic-version: OpenAI's shape
