"""The /v1 routes: thin handlers that check the request and hand it to the proxy.

Order matters: the key is checked before the body is read, and every check that can refuse runs
before the response starts (errors.md lists each status).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lumen.api.body import read_json_object
from lumen.api.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, validate
from lumen.api.proxy import Call, model_card
from lumen.billing.estimate import chat_prompt_tokens, prompt_tokens
from lumen.errors import ModelNotFound
from lumen.identity.principal import Principal
from lumen.state import AppState, app_state
from lumen.upstream.base import Operation


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


@dataclass(slots=True)
class _Incoming:
    state: AppState
    principal: Principal
    body: dict[str, Any]
    started: float
    request_id: str

    def call(self, op: Operation, model_name: str, prompt_estimate: int, include_usage: bool) -> Call:
        return Call(
            op=op,
            model=self.state.proxy.resolve(model_name, op),
            body=self.body,
            principal=self.principal,
            request_id=self.request_id,
            prompt_estimate=prompt_estimate,
            include_usage=include_usage,
            started=self.started,
        )


async def _incoming(request: Request) -> _Incoming:
    started = time.perf_counter()
    state = app_state(request)
    principal = await state.authenticate(request.headers.get("authorization"))
    body = await read_json_object(request, state.settings.server.max_body_bytes)
    return _Incoming(state, principal, body, started, request.state.request_id)


async def _serve(incoming: _Incoming, call: Call, stream: bool | None) -> Response:
    if stream:
        return await incoming.state.proxy.stream(call)
    return await incoming.state.proxy.unary(call)


async def chat_completions(request: Request) -> Response:
    incoming = await _incoming(request)
    checked = validate(ChatCompletionRequest, incoming.body)
    include_usage = bool(checked.stream_options and checked.stream_options.include_usage)
    prompt = chat_prompt_tokens(incoming.body["messages"])
    return await _serve(
        incoming, incoming.call("chat.completions", checked.model, prompt, include_usage), checked.stream
    )


async def completions(request: Request) -> Response:
    incoming = await _incoming(request)
    checked = validate(CompletionRequest, incoming.body)
    include_usage = bool(checked.stream_options and checked.stream_options.include_usage)
    prompt = prompt_tokens(incoming.body["prompt"])
    return await _serve(
        incoming, incoming.call("completions", checked.model, prompt, include_usage), checked.stream
    )


async def embeddings(request: Request) -> Response:
    incoming = await _incoming(request)
    checked = validate(EmbeddingRequest, incoming.body)
    call = incoming.call("embeddings", checked.model, prompt_tokens(incoming.body["input"]), False)
    return await _serve(incoming, call, False)


async def list_models(request: Request) -> Response:
    state = app_state(request)
    await state.authenticate(request.headers.get("authorization"))
    return _json({"object": "list", "data": [model_card(m.settings) for m in state.registry.models()]})


async def get_model(request: Request) -> Response:
    state = app_state(request)
    await state.authenticate(request.headers.get("authorization"))
    # Newer SDKs send `org/name` as `org%2Fname`; servers may or may not decode it first.
    name = unquote(request.path_params["model_id"])
    model = state.registry.get(name)
    if model is None:
        raise ModelNotFound(name)
    return _json(model_card(model.settings))


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    ]
