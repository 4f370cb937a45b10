"""The Responses API through the official openai SDK, in process: answers, streams, tool calls,
stored responses and their privacy, and the errors a client gets."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.responses.conftest import Lumen
from tests.responses.tools import ARGUMENTS

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


async def test_a_text_answer_is_a_response_object(lumen: Lumen) -> None:
    client = lumen.client()
    response = await client.responses.create(model="echo", input="hello there", instructions="Be brief.")
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "echo"
    assert response.output_text == "hello there"
    [item] = response.output
    assert item.type == "message" and item.id.startswith("msg_") and item.status == "completed"
    assert item.content[0].type == "output_text" and item.content[0].annotations == []
    assert response.usage is not None
    assert response.usage.output_tokens == 2
    assert response.usage.total_tokens == response.usage.input_tokens + 2
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.instructions == "Be brief."


async def test_a_cut_answer_is_incomplete(lumen: Lumen) -> None:
    response = await lumen.client().responses.create(
        model="echo", input="one two three four", max_output_tokens=2
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "one two"


async def test_the_request_becomes_a_chat_body(lumen: Lumen) -> None:
    await lumen.client().responses.create(
        model="tools",
        instructions="Use tools.",
        input=[
            {"role": "developer", "content": [{"type": "input_text", "text": "Mind the units."}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                ],
            },
        ],
        tools=[WEATHER, {"type": "web_search"}, {"type": "namespace", "name": "agents", "tools": []}],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
        max_output_tokens=50,
        reasoning={"effort": "low"},
        temperature=0.5,
        top_p=0.9,
        user="u-1",
        metadata={"k": "v"},
    )
    body = lumen.tools.bodies[-1]
    assert body["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "developer", "content": "Mind the units."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ],
        },
    ]
    assert body["tools"] == [  # the tools a chat backend cannot carry out are not offered
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert body["max_tokens"] == 50
    assert body["reasoning_effort"] == "low"
    assert (body["temperature"], body["top_p"], body["user"]) == (0.5, 0.9, "u-1")
    assert "metadata" not in body


async def test_a_streamed_answer_follows_openais_event_order(lumen: Lumen) -> None:
    client = lumen.client()
    async with client.responses.stream(model="echo", input="streamed words here") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "streamed words here"
    assert final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == 3
    done = [e for e in events if e.type == "response.output_item.done"][0]
    assert done.item.id == final.output[0].id


async def test_a_stream_cut_short_ends_incomplete(lumen: Lumen) -> None:
    stream = await lumen.client().responses.create(
        model="echo", input="a b c d", max_output_tokens=1, stream=True
    )
    events = [event async for event in stream]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_function_call_round_trip(lumen: Lumen, stream: bool) -> None:
    client = lumen.client()
    if stream:
        async with client.responses.stream(
            model="tools", input="Weather in Oslo?", tools=[WEATHER]
        ) as events:
            kinds = [event.type async for event in events]
            first = await events.get_final_response()
        assert kinds == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    else:
        first = await client.responses.create(model="tools", input="Weather in Oslo?", tools=[WEATHER])
    [call] = first.output
    assert call.type == "function_call"
    assert call.id.startswith("fc_") and call.call_id == "call_0"
    assert call.name == "get_weather" and json.loads(call.arguments) == json.loads(ARGUMENTS)
    assert call.status == "completed"
    # The client runs the tool and sends the whole transcript back (stateless, as Codex does).
    second = await client.responses.create(
        model="tools",
        store=False,
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "It is sunny in Oslo."
    assert lumen.tools.bodies[-1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    ]


async def test_previous_response_id_continues_the_stored_conversation(lumen: Lumen) -> None:
    client = lumen.client()
    first = await client.responses.create(model="tools", input="Weather in Oslo?", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call"
    second = await client.responses.create(
        model="tools",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}],
        tools=[WEATHER],
    )
    assert second.output_text == "It is rainy in Oslo."
    assert second.previous_response_id == first.id
    assert [m["role"] for m in lumen.tools.bodies[-1]["messages"]] == ["user", "assistant", "tool"]


async def test_stored_responses_are_retrieved_listed_and_deleted(lumen: Lumen) -> None:
    client = lumen.client()
    created = await client.responses.create(
        model="echo",
        input=[
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "kept-verbatim"},
            {"role": "user", "content": "remember me"},
        ],
        metadata={"topic": "memory"},
    )
    again = await client.responses.retrieve(created.id)
    assert again.model_dump() == created.model_dump()
    items = await client.responses.input_items.list(created.id, order="asc")
    assert [item.type for item in items.data] == ["reasoning", "message"]
    assert items.data[0].model_dump()["encrypted_content"] == "kept-verbatim"
    assert items.data[1].id.startswith("msg_")
    newest_first = await client.responses.input_items.list(created.id, limit=1)
    assert [item.type for item in newest_first.data] == ["message"] and newest_first.has_more
    deleted = await client.responses.delete(created.id)
    assert deleted is None  # the SDK returns nothing for a delete
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(created.id)


async def test_another_users_response_is_as_absent_as_a_missing_one(lumen: Lumen) -> None:
    mine = await lumen.client().responses.create(model="echo", input="private")
    other = lumen.client(await lumen.other_user_key())
    for attempt in (
        other.responses.retrieve(mine.id),
        other.responses.delete(mine.id),
        other.responses.input_items.list(mine.id),
        other.responses.create(model="echo", input="go on", previous_response_id=mine.id),
    ):
        with pytest.raises(openai.NotFoundError) as refused:
            await attempt
        assert mine.id in refused.value.message
    assert (await lumen.client().responses.retrieve(mine.id)).id == mine.id


async def test_a_projects_responses_belong_to_the_project_not_to_its_owner(lumen: Lumen) -> None:
    project = lumen.client(await lumen.project_key())
    theirs = await project.responses.create(model="echo", input="project work")
    assert (await project.responses.retrieve(theirs.id)).id == theirs.id
    with pytest.raises(openai.NotFoundError):
        await lumen.client().responses.retrieve(theirs.id)  # the owner's own key is another principal


async def test_store_false_stores_nothing(lumen: Lumen) -> None:
    client = lumen.client()
    response = await client.responses.create(model="echo", input="forget me", store=False)
    streamed = await client.responses.create(model="echo", input="forget me too", store=False, stream=True)
    last = [event async for event in streamed][-1]
    for response_id in (response.id, last.response.id):
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(response_id)


@pytest.mark.parametrize(
    ("request_input", "param", "words"),
    [
        ([{"type": "web_search_call", "id": "ws_1"}], "input[0].type", "'web_search_call'"),
        (
            [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}],
            "input[0].content[0].file_data",
            "file storage",
        ),
        ([{"role": "robot", "content": "hi"}], "input[0].role", "role"),
    ],
)
async def test_input_without_a_chat_equivalent_is_a_clear_400(
    lumen: Lumen, request_input: list[dict[str, Any]], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await lumen.client().responses.create(model="echo", input=request_input)  # type: ignore[arg-type]
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]


async def test_a_text_file_is_read_inline(lumen: Lumen) -> None:
    data = "data:text/plain;base64," + __import__("base64").b64encode(b"file words").decode()
    response = await lumen.client().responses.create(
        model="echo",
        input=[{"role": "user", "content": [{"type": "input_file", "filename": "a.txt", "file_data": data}]}],
    )
    assert response.output_text == "a.txt:\nfile words"


async def test_an_unknown_previous_response_is_a_404(lumen: Lumen) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        await lumen.client().responses.create(model="echo", input="hi", previous_response_id="resp_nope")
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_forcing_a_tool_the_server_cannot_carry_out_is_a_400(lumen: Lumen) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await lumen.client().responses.create(
            model="echo", input="hi", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"}
        )
    assert refused.value.body["param"] == "tool_choice.type"  # type: ignore[index]


async def test_an_expired_response_is_absent_and_pruned(
    lumen: Lumen, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select

    from lumen.api.responses import store
    from lumen.store.tables import stored_responses

    client = lumen.client()
    monkeypatch.setattr(store, "RETENTION", timedelta(seconds=-1))  # expired as soon as it is kept
    old = await client.responses.create(model="echo", input="short-lived")
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(old.id)
    monkeypatch.setattr(store, "RETENTION", timedelta(days=30))
    new = await client.responses.create(model="echo", input="kept")
    async with lumen.app.state.engine.connect() as conn:
        ids = (await conn.execute(select(stored_responses.c.id))).scalars().all()
        assert await conn.scalar(select(func.count()).select_from(stored_responses)) == 1
    assert ids == [new.id]


async def test_replaying_a_stored_response_as_a_stream_is_refused(lumen: Lumen) -> None:
    created = await lumen.client().responses.create(model="echo", input="hi")
    answer = await lumen.app.client.get(f"/v1/responses/{created.id}?stream=true", headers=lumen.app.auth)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "stream"


@pytest.mark.parametrize(
    ("field", "value"),
    [("conversation", "conv_1"), ("background", True), ("prompt", {"id": "pmpt_1"})],
)
async def test_features_without_an_equivalent_are_refused_not_ignored(
    lumen: Lumen, field: str, value: Any
) -> None:
    answer = await lumen.app.client.post(
        "/v1/responses", headers=lumen.app.auth, json={"model": "echo", "input": "hi", field: value}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == field
    assert answer.json()["error"]["code"] == "unsupported_parameter"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_models_reasoning_comes_first_as_a_reasoning_item(lumen: Lumen, stream: bool) -> None:
    lumen.tools.reasoning = "Oslo is rainy"
    client = lumen.client()
    if stream:
        async with client.responses.stream(model="tools", input="Weather?", tools=[WEATHER]) as events:
            kinds = [event.type async for event in events]
            response = await events.get_final_response()
        assert kinds[2:10] == [
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ]
        assert kinds[10:] == [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    else:
        response = await client.responses.create(model="tools", input="Weather?", tools=[WEATHER])
    reasoning, call = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.content is not None
    assert reasoning.content[0].text.strip() == "Oslo is rainy"
    assert call.type == "function_call"
    # Continued, the reasoning goes nowhere (a chat backend cannot take it back); the call does.
    await client.responses.create(
        model="tools",
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}],
    )
    assert [m["role"] for m in lumen.tools.bodies[-1]["messages"]] == ["user", "assistant", "tool"]
