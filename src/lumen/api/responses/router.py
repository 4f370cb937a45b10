"""The Responses API (`/v1/responses`), served as chat completions through the call pipeline.

A request is translated into a chat completions body (`protocol`), served by `lumen.api.calls`
like any other call, and the answer rendered back as a Response object or a stream of Responses
events (`codec`). With `store` (the default) the response, its input items and the conversation
before them are kept for the caller (`store`), so it can be retrieved, listed, deleted and
continued with `previous_response_id`. Errors before a stream starts use the OpenAI envelope, as
for every /v1 route.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lumen.api.calls import prepare, respond
from lumen.api.protocol import validate
from lumen.api.responses import store
from lumen.api.responses.codec import JSON, Draft, StreamTranslator, from_completion, new_id
from lumen.api.responses.protocol import ResponsesRequest, chat_body, input_items
from lumen.errors import InvalidRequest
from lumen.state import app_state

ITEM_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def _json(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), media_type="application/json", headers=headers)


async def create_response(request: Request) -> Response:
    state = app_state(request)
    principal = await state.authenticate(request.headers.get("authorization"))
    built: list[tuple[ResponsesRequest, list[JSON], list[JSON]]] = []

    async def build(raw: dict[str, Any]) -> dict[str, Any]:
        wire = validate(ResponsesRequest, raw)
        history: list[JSON] = []
        previous_id = raw.get("previous_response_id")
        if isinstance(previous_id, str):
            # Missing or someone else's: refused here, so the refusal is recorded like any other.
            previous = await store.load(
                state.engine, owner=principal.id, response_id=previous_id, param="previous_response_id"
            )
            history = previous.conversation
        items = _with_ids(input_items(wire))
        built.append((wire, history, items))
        return chat_body(wire, history, items)

    prepared = await prepare(request, principal, "chat.completions", build)
    wire, history, items = built[0]
    draft = Draft(wire)

    async def keep(response: JSON) -> None:
        if wire.store is not False:
            await store.save(
                state.engine, owner=principal.id, response=response, input_items=items, history=history
            )

    async def render(answer: JSON) -> JSON:
        response = from_completion(draft, answer)
        await keep(response)
        return response

    return await respond(request, prepared, render=render, translate=StreamTranslator(draft, keep).events)


async def get_response(request: Request) -> Response:
    state = app_state(request)
    principal = await state.authenticate(request.headers.get("authorization"))
    if request.query_params.get("stream") == "true":
        raise InvalidRequest("Replaying a stored response as a stream is not supported.", param="stream")
    stored = await store.load(
        state.engine, owner=principal.id, response_id=request.path_params["response_id"]
    )
    return _json(stored.response)


async def delete_response(request: Request) -> Response:
    state = app_state(request)
    principal = await state.authenticate(request.headers.get("authorization"))
    response_id = request.path_params["response_id"]
    await store.remove(state.engine, owner=principal.id, response_id=response_id)
    return _json({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(request: Request) -> Response:
    """A page of the response's own input items (`after`, `limit` 1–100, `order` desc by default)."""
    state = app_state(request)
    principal = await state.authenticate(request.headers.get("authorization"))
    query = request.query_params
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise InvalidRequest("Invalid value for 'limit': an integer from 1 to 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid value for 'order': asc or desc.", param="order")
    stored = await store.load(
        state.engine, owner=principal.id, response_id=request.path_params["response_id"]
    )
    items = stored.input_items if order == "asc" else stored.input_items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after}' in this response.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[: int(limit_text)]
    return _json(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page),
        }
    )


def _with_ids(items: list[JSON]) -> list[JSON]:
    """Input items as stored and listed: each with its `type` and an `id` (clients list them by id)."""
    named = []
    for item in items:
        kind = item.get("type", "message" if "role" in item else None)
        if not isinstance(kind, str):
            named.append(item)  # refused by the translation, which names it
            continue
        named.append({"id": new_id(ITEM_ID_PREFIXES.get(kind, "item")), **item, "type": kind})
    return named


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    ]
