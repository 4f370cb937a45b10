"""The `/api/chat` JSON API: the portal's conversation sidebar, settings, exports and uploads.

`chat_router` is built by a factory so the portal plugs in its own session dependency (which
returns the signed-in `Principal`) and, for state-changing requests, its CSRF check through
`dependencies`. Only users own conversations; a project key gets 403. Errors are `LumenError`s:
the app that includes the router maps them once (`add_error_handlers` does it for a bare app).
The streaming send is not here: it goes through the /v1 gate and stores with `lumen.chat.store`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException
from starlette.responses import Response

from lumen.api.body import LimitedBodyRoute
from lumen.api.errors import error_response, handle_http_exception, handle_lumen_error
from lumen.chat import export, store
from lumen.chat.attachments import AttachmentLimits, extract
from lumen.chat.checks import MAX_PAGE, UNSET
from lumen.chat.protocol import (
    AttachmentInfo,
    AttachmentUploaded,
    BranchSelect,
    ConversationCreate,
    ConversationPage,
    ConversationPublic,
    ConversationSummary,
    ConversationUpdate,
    MessagePublic,
    SearchHitPublic,
    SearchPagePublic,
)
from lumen.chat.records import Conversation, ConversationDetail, ShownMessage
from lumen.errors import InvalidRequest, LumenError, PayloadTooLarge, PermissionDenied
from lumen.identity.principal import Principal

CurrentUser = Callable[..., Awaitable[Principal]]

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]

# An export is at most MAX_IMPORT_MESSAGES messages of at most MAX_CONTENT_CHARS each in theory;
# in practice a conversation's JSON is kilobytes to a few megabytes.
DEFAULT_MAX_IMPORT_BYTES = 50_000_000


def chat_router(
    *,
    current_user: CurrentUser,
    engine: Callable[[], AsyncEngine],
    limits: AttachmentLimits | None = None,
    max_import_bytes: int = DEFAULT_MAX_IMPORT_BYTES,
    dependencies: Sequence[DependsParam] = (),
) -> APIRouter:
    """The router; `current_user` may raise `AuthenticationFailed` for a request without a session."""
    limits = limits or AttachmentLimits()
    router = APIRouter(
        prefix="/api/chat", tags=["chat"], dependencies=list(dependencies), route_class=LimitedBodyRoute
    )

    async def owner(principal: Principal = Depends(current_user)) -> int:
        return owner_id(principal)

    # Dependencies as defaults, not `Annotated` aliases: FastAPI resolves string annotations
    # (from __future__) in the module's globals, where a name local to this factory is unknown.
    signed_in = Depends(owner)

    @router.get("/conversations", response_model=ConversationPage)
    async def list_conversations(
        archived: bool = False, limit: Limit = 50, cursor: str | None = None, user: int = signed_in
    ) -> ConversationPage:
        page = await store.list_conversations(
            engine=engine(), owner_id=user, archived=archived, limit=limit, cursor=cursor
        )
        return ConversationPage(
            items=[summary_public(c) for c in page.conversations], next_cursor=page.next_cursor
        )

    @router.get("/search", response_model=SearchPagePublic)
    async def search(
        q: str, archived: bool = False, limit: Limit = 50, cursor: str | None = None, user: int = signed_in
    ) -> SearchPagePublic:
        page = await store.search_conversations(
            engine=engine(), owner_id=user, query=q, archived=archived, limit=limit, cursor=cursor
        )
        items = [
            SearchHitPublic(
                **summary_public(h.conversation).model_dump(), message_id=h.message_id, snippet=h.snippet
            )
            for h in page.hits
        ]
        return SearchPagePublic(items=items, next_cursor=page.next_cursor)

    @router.post("/conversations", response_model=ConversationPublic, status_code=201)
    async def create(body: ConversationCreate, user: int = signed_in) -> ConversationPublic:
        conversation = await store.create_conversation(engine=engine(), owner_id=user, **body.model_dump())
        return conversation_public(ConversationDetail(conversation=conversation, messages=()))

    @router.post("/conversations/import", response_model=ConversationPublic, status_code=201)
    async def import_conversation(request: Request, user: int = signed_in) -> ConversationPublic:
        document = export.parse_document(await _read_body(request, max_import_bytes, "export"))
        detail = await store.import_conversation(
            engine=engine(), owner_id=user, **export.import_arguments(document)
        )
        return conversation_public(detail)

    @router.get("/conversations/{conversation_id}", response_model=ConversationPublic)
    async def get(conversation_id: str, user: int = signed_in) -> ConversationPublic:
        return conversation_public(
            await store.get_conversation(engine=engine(), owner_id=user, conversation_id=conversation_id)
        )

    @router.patch("/conversations/{conversation_id}", response_model=ConversationPublic)
    async def update(
        conversation_id: str, body: ConversationUpdate, user: int = signed_in
    ) -> ConversationPublic:
        """Rename, change the settings or (un)archive: only the fields sent change."""
        sent = body.model_fields_set
        if "title" in sent and body.title is None:
            raise InvalidRequest("The title cannot be null.", param="title")
        if "system_prompt" in sent and body.system_prompt is None:
            raise InvalidRequest('The system prompt cannot be null; send "" for none.', param="system_prompt")
        if "archived" in sent and body.archived is None:
            raise InvalidRequest("archived must be true or false.", param="archived")
        changes: dict[str, Any] = {name: getattr(body, name) for name in sent}
        await store.update_conversation(
            engine=engine(),
            owner_id=user,
            conversation_id=conversation_id,
            **{name: changes.get(name, UNSET) for name in ConversationUpdate.model_fields},
        )
        return conversation_public(
            await store.get_conversation(engine=engine(), owner_id=user, conversation_id=conversation_id)
        )

    @router.delete("/conversations/{conversation_id}", status_code=204)
    async def delete(conversation_id: str, user: int = signed_in) -> Response:
        await store.delete_conversation(engine=engine(), owner_id=user, conversation_id=conversation_id)
        return Response(status_code=204)

    @router.put("/conversations/{conversation_id}/branch", response_model=ConversationPublic)
    async def select_branch(
        conversation_id: str, body: BranchSelect, user: int = signed_in
    ) -> ConversationPublic:
        detail = await store.select_branch(
            engine=engine(), owner_id=user, conversation_id=conversation_id, message_id=body.message_id
        )
        return conversation_public(detail)

    @router.get("/conversations/{conversation_id}/export")
    async def export_conversation(
        conversation_id: str, format: Literal["markdown", "json"] = "markdown", user: int = signed_in
    ) -> Response:
        conversation, messages = await store.conversation_tree(
            engine=engine(), owner_id=user, conversation_id=conversation_id
        )
        if format == "json":
            body, media, suffix = export.to_json(conversation, messages), "application/json", "json"
        else:
            body = export.to_markdown(conversation, messages).encode()
            media, suffix = "text/markdown; charset=utf-8", "md"
        return Response(body, media_type=media, headers=_download_headers(conversation.title, suffix))

    @router.post("/attachments", response_model=AttachmentUploaded)
    async def upload(
        request: Request, name: Annotated[str, Query(max_length=1000)], user: int = signed_in
    ) -> AttachmentUploaded:
        """The file is the raw request body (any Content-Type: the type is sniffed from the bytes)."""
        data = await _read_body(request, limits.max_bytes, "file")
        extracted = await extract(name, data, limits)
        meta = extracted.meta
        return AttachmentUploaded(
            name=meta.name,
            type=meta.type,
            size=meta.size,
            text_chars=meta.text_chars,
            kind=extracted.kind,
            text=meta.text,
            data_url=extracted.data_url,
        )

    return router


def owner_id(principal: Principal) -> int:
    """The user id whose conversations `principal` may use; projects have none (403)."""
    kind, _, number = principal.id.partition(":")
    if kind != "user" or not number.isdigit():
        raise PermissionDenied("Conversations belong to people: sign in as a user.", code="user_required")
    return int(number)


def add_error_handlers(app: FastAPI) -> None:
    """Map errors to the OpenAI-style envelope on an app that has not done so already."""

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        return error_response(InvalidRequest(f"Invalid value for '{param}': {first['msg']}.", param=param))

    app.add_exception_handler(LumenError, handle_lumen_error)
    app.add_exception_handler(HTTPException, handle_http_exception)
    app.add_exception_handler(RequestValidationError, invalid)


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (never read whole first)."""
    too_large = PayloadTooLarge(
        f"The {what} is larger than {limit:,} bytes.", param=what, code="request_too_large"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _download_headers(title: str, suffix: str) -> dict[str, str]:
    # An ASCII fallback name plus the exact UTF-8 one (RFC 6266); nothing from the title can end
    # the header. nosniff: a browser must not render an export as HTML.
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")[:80] or "conversation"
    return {
        "content-disposition": f'attachment; filename="{ascii_name}.{suffix}"; '
        f"filename*=UTF-8''{quote(title[:120] + '.' + suffix, safe='')}",
        "x-content-type-options": "nosniff",
    }


def summary_public(conversation: Conversation) -> ConversationSummary:
    return ConversationSummary(
        id=conversation.id,
        title=conversation.title,
        model=conversation.model,
        archived=conversation.archived,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )


def message_public(shown: ShownMessage) -> MessagePublic:
    message, stats = shown.message, shown.message.stats
    return MessagePublic(
        id=message.id,
        parent_id=message.parent_id,
        position=message.position,
        role=message.role,
        content=message.content,
        attachments=[
            AttachmentInfo(name=a.name, type=a.type, size=a.size, text_chars=a.text_chars)
            for a in message.attachments
        ],
        created_at=message.created_at,
        sibling_ids=list(shown.sibling_ids),
        model=stats.model,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        cost=None if stats.cost_micro is None else Decimal(stats.cost_micro) / 1_000_000,
        ttft_ms=stats.ttft_ms,
        finish_reason=stats.finish_reason,
        stopped=stats.stopped,
    )


def conversation_public(detail: ConversationDetail) -> ConversationPublic:
    conversation = detail.conversation
    return ConversationPublic(
        **summary_public(conversation).model_dump(),
        system_prompt=conversation.system_prompt,
        temperature=conversation.temperature,
        max_tokens=conversation.max_tokens,
        messages=[message_public(m) for m in detail.messages],
    )
