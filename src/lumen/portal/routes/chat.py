"""The chat page (`/chat`, `/chat/<conversation id>`) and the JSON calls it makes.

- `/api/chat/...` conversation storage, search, exports and uploads: `lumen.chat.api.chat_router`,
  signed in through the portal session and CSRF-protected like every portal router.
- `POST /api/chat/conversations/{id}/messages` (and `.../edit`, `.../regenerate`): streamed answers
  through the /v1 gate and proxy (`lumen.portal.chat_send`).
- `GET /api/chat/models` and `POST /api/chat/models/{model}/acknowledge`: the model picker, from
  the same access resolver as `/v1/models`.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import JSONResponse, Response

from lumen.api.params import IdPath
from lumen.chat.api import chat_router, owner_id
from lumen.chat.attachments import AttachmentLimits
from lumen.chat.checks import MAX_ATTACHMENTS
from lumen.errors import ModelNotFound
from lumen.identity.principal import Principal
from lumen.portal import chat_send
from lumen.portal.chat_models import ModelOption, model_options
from lumen.portal.chat_protocol import AcknowledgeBody, EditBody, RegenerateBody, SendBody
from lumen.portal.deps import CurrentUser, PortalDep, PortalUser, csrf_protect, portal_of

LIMITS = AttachmentLimits(text_bytes=2_000_000, pdf_bytes=20_000_000, image_bytes=5_000_000)
"""Upload limits. Images are sent inline (base64, a third larger) within the /v1 body limit
(`server.max_body_bytes`, 10 MiB by default), so they are capped well below it."""

# `chat_router` asks for the engine without the request; the portal is per app, so the session
# dependency (which runs first, in the request's own task and context) binds it for the request.
_engine: ContextVar[AsyncEngine] = ContextVar("chat_engine")


async def _principal(request: Request, user: CurrentUser) -> Principal:
    _engine.set(portal_of(request).state.engine)
    return user.principal


router = APIRouter()
router.include_router(
    chat_router(
        current_user=_principal, engine=_engine.get, limits=LIMITS, dependencies=[Depends(csrf_protect)]
    )
)


@dataclass(frozen=True, slots=True)
class ChatPage:
    conversation_id: str
    """The conversation to open; empty for a new chat."""
    models: list[ModelOption]
    limits: AttachmentLimits
    max_attachments: int
    max_message_bytes: int
    """The largest send (message, text and images) the server accepts."""

    @property
    def limits_text(self) -> str:
        return (
            f"Up to {self.max_attachments} files: text up to {_mb(self.limits.text_bytes)}, "
            f"PDF up to {_mb(self.limits.pdf_bytes)} ({self.limits.pdf_pages} pages, text only), "
            f"images (PNG, JPEG, GIF, WebP) up to {_mb(self.limits.image_bytes)} for models that take images."
        )


def _mb(size: int) -> str:
    return f"{size / 1_000_000:g} MB"


@router.get("/chat")
async def new_chat(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    return await _page(request, user, portal, "")


@router.get("/chat/{conversation_id}")
async def open_chat(conversation_id: str, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    return await _page(request, user, portal, conversation_id)


async def _page(request: Request, user: PortalUser, portal: PortalDep, conversation_id: str) -> Response:
    page = ChatPage(
        conversation_id=conversation_id,
        models=await model_options(portal.state, user.principal),
        limits=LIMITS,
        max_attachments=MAX_ATTACHMENTS,
        max_message_bytes=portal.state.settings.server.max_body_bytes,
    )
    return await portal.render(request, "chat.html", title="Chat", user=user, page=page)


@router.get("/api/chat/models")
async def models(user: CurrentUser, portal: PortalDep) -> Response:
    options = await model_options(portal.state, user.principal)
    return JSONResponse({"data": [_option_json(o) for o in options]})


@router.post("/api/chat/models/{model:path}/acknowledge")
async def acknowledge(model: str, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    """Acknowledges the model's notice for the user (the same as `/v1/models/{model}/acknowledge`)."""
    state = portal.state
    name = unquote(model)
    if state.registry.get(name) is None:
        raise ModelNotFound(name)
    body = await chat_send.read_body(request, state, AcknowledgeBody)
    principal = user.principal
    acknowledgement = await state.access.acknowledge(
        principal.id,
        name,
        actor=principal.id,
        via="web",
        groups=principal.groups,
        notice_hash=body.notice_hash,
        actor_is_admin=principal.is_admin,
    )
    return JSONResponse({"model": name, "acknowledged_at": acknowledgement.acknowledged_at.isoformat()})


@router.post("/api/chat/conversations/{conversation_id}/messages")
async def send(conversation_id: str, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    ctx = _context(request, user, portal)
    body = await chat_send.read_body(request, ctx.state, SendBody)
    return await chat_send.send(ctx, conversation_id, body, image_bytes=LIMITS.image_bytes)


@router.post("/api/chat/conversations/{conversation_id}/messages/{message_id}/edit")
async def edit(
    conversation_id: str, message_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep
) -> Response:
    ctx = _context(request, user, portal)
    body = await chat_send.read_body(request, ctx.state, EditBody)
    return await chat_send.edit(ctx, conversation_id, message_id, body)


@router.post("/api/chat/conversations/{conversation_id}/messages/{message_id}/regenerate")
async def regenerate(
    conversation_id: str, message_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep
) -> Response:
    ctx = _context(request, user, portal)
    body = await chat_send.read_body(request, ctx.state, RegenerateBody)
    return await chat_send.regenerate(ctx, conversation_id, message_id, body)


def _context(request: Request, user: PortalUser, portal: PortalDep) -> chat_send.Context:
    started = time.perf_counter()  # time to first token counts from here, as on /v1

    async def balance() -> str:
        return (await portal.balance(user.principal)).text

    return chat_send.Context(
        state=portal.state,
        principal=user.principal,
        owner_id=owner_id(user.principal),
        request_id=request.state.request_id,
        started=started,
        balance=balance,
    )


def _option_json(option: ModelOption) -> dict[str, Any]:
    return {
        "name": option.name,
        "description": option.description,
        "pricing": {"input": option.price_input, "output": option.price_output},
        "context_window": option.context_window,
        "max_output_tokens": option.max_output_tokens,
        "capabilities": option.capabilities,
        "needs_ack": option.needs_ack,
        "notice": option.notice,
        "notice_hash": option.notice_hash,
        "acknowledged": option.acknowledged,
        "available": option.available,
    }
