"""OpenAPI documents: /v1's, served at /v1/openapi.json, and the error responses of the admin API's.

The /v1 document is generated, not maintained by hand: its request bodies are the JSON schemas of
the wire models that validate them (`lumen.api.protocol`), so a bound added there (`MAX_TOKENS`)
is documented by the same change. Responses are described loosely (the fields clients rely on;
backends add their own), and every operation lists the error statuses it can answer with.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lumen import __version__
from lumen.api.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_MEANINGS = {
    400: "The request is malformed: bad JSON, JSON nested too deep, a wrong type or value "
    "(`param` names it), or a backend refused the request",
    401: "No API key, or an invalid, expired or revoked one",
    403: "The key may not do this (a model refused by policy, a notice to acknowledge, an "
    "administrator's key needed, a disabled account)",
    404: "Nothing with this name or id",
    408: "The request body did not arrive in time",
    413: "The request body is larger than `server.max_body_bytes`",
    429: "A rate limit is reached, or the coins do not cover the request",
    502: "The model's backend failed",
    503: "No backend of the model can serve now",
    504: "The backend did not answer in time",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for `statuses`, each the error envelope."""
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {status: {"description": _MEANINGS[status], "content": content} for status in statuses}


def document_errors(app: FastAPI) -> None:
    """Makes the admin API's schema say what it answers: Lumen's 400 envelope instead of FastAPI's
    422 (which it never sends), and 401, 403 and, with a body, 408 and 413 on every operation."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Error"] = ERROR_SCHEMA
        for operation in _operations(document):
            responses = operation["responses"]
            responses.pop("422", None)
            statuses = [400, 401, 403] + ([408, 413] if "requestBody" in operation else [])
            for status, response in error_responses(*statuses).items():
                responses.setdefault(str(status), response)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(document: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method in {"get", "put", "post", "delete", "patch"}:
                yield operation


# -- /v1 ------------------------------------------------------------------------------------------

_MODEL: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}
_USAGE: dict[str, Any] = {
    "type": "object",
    "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
}
_RESPONSES: dict[str, Any] = {
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": _USAGE,
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "text_completion"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": _USAGE,
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model"],
        "properties": {
            "object": {"const": "list"},
            "model": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object"}},
            "usage": _USAGE,
        },
    },
    "Model": _MODEL,
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _MODEL}},
    },
    "Acknowledgement": {
        "type": "object",
        "required": ["model", "principal", "acknowledged_at"],
        "properties": {
            "model": {"type": "string"},
            "principal": {"type": "string"},
            "acknowledged_at": {"type": "string"},
        },
    },
    "AcknowledgeRequest": {
        "type": "object",
        "properties": {
            "notice_hash": {"type": "string", "description": "The `notice_hash` of the model list."},
            "project": {"type": "string", "description": "Acknowledge for this project (its manager)."},
        },
    },
    "Error": ERROR_SCHEMA,
}

_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}

# What every model call can be refused or failed with (errors.md has the codes).
_CALL_ERRORS = (400, 401, 403, 404, 408, 413, 429, 502, 503, 504)


def _call(summary: str, request: str, response: str, *, streams: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(response)}}
    if streams:
        # With `"stream": true`: server-sent events (the schema is one event's), each `data` a
        # JSON chunk or an error envelope, the last one `[DONE]`.
        content["text/event-stream"] = {"schema": _SSE_EVENT}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
            "responses": {"200": {"description": "The answer", "content": content}, **_errors(*_CALL_ERRORS)},
        }
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): response for status, response in error_responses(*statuses).items()}


_MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}


@cache
def v1_document() -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(m, "validation") for m in (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lumen /v1 (OpenAI-compatible)",
            "version": __version__,
            "description": "The OpenAI-compatible API. Fields not listed are passed to the backend "
            "untouched. Authenticate with `Authorization: Bearer sk_...`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/chat/completions": _call(
                "Create a chat completion", "ChatCompletionRequest", "ChatCompletion", streams=True
            ),
            "/v1/completions": _call("Create a completion", "CompletionRequest", "Completion", streams=True),
            "/v1/embeddings": _call("Create embeddings", "EmbeddingRequest", "EmbeddingList", streams=False),
            "/v1/models": {
                "get": {
                    "summary": "The models the key may use",
                    "responses": {
                        "200": {"description": "The models", "content": _json("ModelList")},
                        **_errors(401),
                    },
                }
            },
            "/v1/models/{model_id}": {
                "get": {
                    "summary": "One model",
                    "parameters": [_MODEL_ID],
                    "responses": {
                        "200": {"description": "The model", "content": _json("Model")},
                        **_errors(401, 403, 404),
                    },
                }
            },
            "/v1/models/{model_id}/acknowledge": {
                "post": {
                    "summary": "Acknowledge the model's notice, for yourself or a project you manage",
                    "parameters": [_MODEL_ID],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("AcknowledgeRequest")}},
                    },
                    "responses": {
                        "200": {"description": "Acknowledged", "content": _json("Acknowledgement")},
                        **_errors(400, 401, 403, 404, 408, 413),
                    },
                }
            },
        },
        "components": {
            "schemas": {**definitions["$defs"], **_RESPONSES},
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


async def v1_openapi(request: Request) -> Response:
    return Response(orjson.dumps(v1_document()), media_type="application/json")


def route() -> BaseRoute:
    """`GET /v1/openapi.json`, without a key: the document describes the API, not the instance."""
    return Route("/v1/openapi.json", v1_openapi, methods=["GET"])
