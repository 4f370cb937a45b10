"""The routes of Anthropic's Messages surface, translated over chat completions through the call
pipeline (`lumen.api.calls`): what Claude Code and the Anthropic SDKs speak.

    POST /v1/messages                 a Messages call, streaming or not
    POST /v1/messages/count_tokens    the prompt estimate of a Messages request; spends nothing

Both accept the key as `x-api-key` or `Authorization: Bearer`, and `?beta=true`,
`anthropic-version` and `anthropic-beta` (read by nobody: there is no native Anthropic backend to
forward them to). Every refusal is rendered in Anthropic's error envelope, with the status and the
headers (`retry-after`, `x-ratelimit-*`, `x-should-retry`) it has on the OpenAI surface.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lumen.api.body import read_json_object
from lumen.api.calls import prepare, respond
from lumen.api.errors import error_response
from lumen.api.messages.codec import chat_prompt, error_body, events, from_chat, to_chat
from lumen.api.messages.protocol import CountTokensRequest, MessagesRequest, parse
from lumen.errors import LumenError, MethodNotAllowed
from lumen.gateway.admission import acknowledge_url
from lumen.state import app_state
from lumen.upstream.base import Operation

log = logging.getLogger(__name__)

OPERATION: Operation = "chat.completions"


def authorization(request: Request) -> str | None:
    """The key as `Authorization: Bearer` (what `authenticate` reads): Anthropic's SDKs send it as
    `x-api-key` (`ANTHROPIC_API_KEY`) or as a bearer token (`ANTHROPIC_AUTH_TOKEN`)."""
    key = request.headers.get("x-api-key")
    return f"Bearer {key}" if key else request.headers.get("authorization")


def _anthropic_errors(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Renders whatever `handler` raises in Anthropic's envelope instead of the app's OpenAI one."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except LumenError as exc:
            return error(request, exc)
        except Exception as exc:
            log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
            return error(request, LumenError("The server had an error while processing your request."))

    return handle


def error(request: Request, exc: LumenError) -> Response:
    request_id: str | None = getattr(request.state, "request_id", None)
    response = error_response(exc, error_body(exc, request_id))
    if request_id is not None:
        response.headers["request-id"] = request_id  # the header the SDKs report
    return response


@_anthropic_errors
async def create_message(request: Request) -> Response:
    state = app_state(request)
    principal = await state.authenticate(authorization(request))
    parsed: list[MessagesRequest] = []

    def build(body: dict[str, Any]) -> dict[str, Any]:
        parsed.append(parse(MessagesRequest, body))
        return to_chat(parsed[0])

    prepared = await prepare(request, principal, OPERATION, build)
    model, estimate = parsed[0].model, prepared.call.spec.prompt_estimate
    return await respond(
        request,
        prepared,
        render=lambda answer: from_chat(answer, model),
        translate=lambda stream: events(stream, model, estimate),
        headers={"request-id": request.state.request_id},
    )


@_anthropic_errors
async def count_tokens(request: Request) -> Response:
    """The prompt estimate the pipeline would hold coins for (the model's own tokenizer where Lumen
    runs it), under the same access policy as a call; no coins, no rate-limit tokens, no usage."""
    state = app_state(request)
    principal = await state.authenticate(authorization(request))
    raw = await read_json_object(request, state.settings.server.max_body_bytes)
    body = chat_prompt(parse(CountTokensRequest, raw))
    pipeline = state.pipeline
    model = pipeline.resolve(body["model"], OPERATION)
    view = await state.access.resolve(principal.id, principal.groups)
    view.require(
        model.name, acknowledge_url=acknowledge_url(state.settings, model.name), key_models=principal.models
    )
    spec = pipeline.spec(OPERATION, model, body)
    return Response(orjson.dumps({"input_tokens": spec.prompt_estimate}), media_type="application/json")


@_anthropic_errors
async def wrong_method(request: Request) -> Response:
    raise MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}.")


OTHER_METHODS = ["GET", "PUT", "PATCH", "DELETE"]
"""Answered 405 in Anthropic's envelope (a route of their own: Starlette's own 405 would be
rendered by the app's OpenAI handler)."""


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/messages", create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/messages", wrong_method, methods=OTHER_METHODS),
        Route("/v1/messages/count_tokens", wrong_method, methods=OTHER_METHODS),
    ]
