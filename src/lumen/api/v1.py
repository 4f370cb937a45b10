"""The /v1 routes of the OpenAI surface: thin handlers that check the request and hand it to the
call pipeline (`lumen.api.calls`).

Order matters: the key is checked before the body is read, and every check that can refuse runs
before the response starts (errors.md lists each status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lumen.api.body import read_json_object
from lumen.api.calls import prepare, respond
from lumen.api.messages import router as messages
from lumen.api.messages.codec import model_list
from lumen.api.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, validate
from lumen.errors import ModelNotFound, PermissionDenied
from lumen.identity import store as identity_store
from lumen.identity.groups import project_groups
from lumen.settings import ModelSettings
from lumen.state import app_state
from lumen.upstream.base import Operation


def _json(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), media_type="application/json", headers=headers)


@dataclass(frozen=True, slots=True)
class _Surface:
    """What differs between the three model-calling routes."""

    op: Operation
    protocol: type[ChatCompletionRequest] | type[CompletionRequest] | type[EmbeddingRequest]


CHAT = _Surface("chat.completions", ChatCompletionRequest)
COMPLETIONS = _Surface("completions", CompletionRequest)
EMBEDDINGS = _Surface("embeddings", EmbeddingRequest)


async def _handle(request: Request, surface: _Surface) -> Response:
    state = app_state(request)
    principal = await state.authenticate(request.headers.get("authorization"))

    def build(body: dict[str, Any]) -> dict[str, Any]:
        validate(surface.protocol, body)
        return body  # forwarded as it came: only the model, the cap and stream options change

    return await respond(request, await prepare(request, principal, surface.op, build))


async def chat_completions(request: Request) -> Response:
    return await _handle(request, CHAT)


async def completions(request: Request) -> Response:
    return await _handle(request, COMPLETIONS)


async def embeddings(request: Request) -> Response:
    return await _handle(request, EMBEDDINGS)


async def list_models(request: Request) -> Response:
    """Exactly the models the caller may use, or use after acknowledging their notice."""
    state = app_state(request)
    principal = await state.authenticate(messages.authorization(request))
    view = await state.access.resolve(principal.id, principal.groups)
    if "anthropic-version" in request.headers:  # Claude Code and the Anthropic SDKs
        names = [d.model for d in view.listed(principal.models) if state.registry.get(d.model) is not None]
        return _json(model_list(names), await state.gate.peek_headers(principal))
    cards = []
    for decision in view.listed(principal.models):
        model = state.registry.get(decision.model)
        if model is not None:
            cards.append({**model_card(model.settings), **view.model_fields(decision.model)})
    response = _json({"object": "list", "data": cards})
    response.headers.update(await state.gate.peek_headers(principal))
    return response


async def get_model(request: Request) -> Response:
    state = app_state(request)
    principal = await state.authenticate(request.headers.get("authorization"))
    # Newer SDKs send `org/name` as `org%2Fname`; servers may or may not decode it first.
    name = unquote(request.path_params["model_id"])
    model = state.registry.get(name)
    if model is None:
        raise ModelNotFound(name)
    view = await state.access.resolve(principal.id, principal.groups)
    view.retrieve(name, key_models=principal.models)
    response = _json({**model_card(model.settings), **view.model_fields(name)})
    response.headers.update(await state.gate.peek_headers(principal, name))
    return response


async def acknowledge_model(request: Request) -> Response:
    """Acknowledges a model's notice for the caller, or, with `{"project": NAME}`, for a project the
    caller manages. `notice_hash` (from the model list) guards against a notice changed meanwhile."""
    state = app_state(request)
    principal = await state.authenticate(request.headers.get("authorization"))
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    body = await read_json_object(request, state.settings.server.max_body_bytes) if has_body else {}
    name = unquote(request.path_params["model_id"])
    if state.registry.get(name) is None:
        raise ModelNotFound(name)
    notice_hash = body.get("notice_hash")
    project_name = body.get("project")
    if principal.kind != "user":
        raise PermissionDenied(
            "A project's notice is acknowledged by one of its managers, with their own key."
        )
    target, groups = principal.id, principal.groups
    if isinstance(project_name, str):
        project = await identity_store.find_project(engine=state.engine, name=project_name)
        target, groups = f"project:{project.id}", project_groups(state.settings.groups, project.name)
    acknowledgement = await state.access.acknowledge(
        target,
        name,
        actor=principal.id,
        via="api",
        groups=groups,
        notice_hash=notice_hash if isinstance(notice_hash, str) else None,
        actor_is_admin=principal.is_admin,
    )
    return _json(
        {"model": name, "principal": target, "acknowledged_at": acknowledgement.acknowledged_at.isoformat()}
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}/acknowledge", acknowledge_model, methods=["POST"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    ]


def model_card(model: ModelSettings) -> dict[str, Any]:
    """The `/v1/models` entry: the spec's fields plus Lumen's extensions."""
    caps = model.capabilities
    return {
        "id": model.name,
        "object": "model",
        "created": 0,
        "owned_by": model.owned_by,
        "description": model.description,
        "kind": model.kind,
        "max_model_len": caps.context_window,
        "context_window": caps.context_window,
        "max_output_tokens": caps.max_output_tokens,
        "capabilities": {
            "modalities": list(caps.modalities),
            "tools": caps.tools,
            "reasoning": caps.reasoning,
        },
        "pricing": {
            "unit": "coins per million tokens",
            "input": model.price.input,
            "output": model.price.output,
        },
    }
