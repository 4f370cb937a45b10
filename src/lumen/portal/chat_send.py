"""The chat page's streaming answers, through the same path as `POST /v1/chat/completions`.

A send stores the user's message, then runs the model with the user's principal and source
"chat": the call pipeline (`lumen.gateway.pipeline`: access, coins, rate limits, endpoint
choice, failover, relay, settlement and usage record). Refusals before the stream are HTTP errors
in the OpenAI envelope; the message stays stored and the page offers to retry. A client that goes
away (the page's Stop aborts its fetch) cancels the upstream through the same disconnect-aware SSE
response as /v1; the partial answer is stored with ``stopped=True`` and the tokens and coins that
were billed for it.

Events sent to the page, each ``event: NAME`` and ``data: JSON``:

    user    {"message", "title"}: the stored user message (send and edit)
    delta   {"text"}: answer text as it arrives (one event per batch of upstream chunks)
    done    {"message", "balance"}: the stored answer, and the balance to show in the header
    error   {"error": {message, type, code, status}, "message": the stored partial answer or
            null, "balance"}: the model failed after the stream had started
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request

from lumen.api.body import read_json_object
from lumen.api.sse import SSEResponse
from lumen.chat import checks, store
from lumen.chat.api import message_public
from lumen.chat.records import AnswerStats, AttachmentMeta, Conversation, Message, NewMessage
from lumen.chat.store import DEFAULT_TITLE
from lumen.errors import InvalidRequest, PayloadTooLarge
from lumen.gateway.pipeline import Call
from lumen.gateway.relay import KEEPALIVE
from lumen.identity.principal import Principal
from lumen.portal.chat_protocol import AttachmentIn, EditBody, RegenerateBody, SendBody
from lumen.portal.chat_wire import event, openai_messages, read_relayed
from lumen.state import AppState
from lumen.upstream.base import Operation
from lumen.upstream.registry import Model
from lumen.usage.recorder import UsageRecord

OP: Operation = "chat.completions"
TITLE_CHARS = 60
B = TypeVar("B", bound=BaseModel)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Context:
    """Who asks, and the services they are served by (one per request)."""

    state: AppState
    principal: Principal
    owner_id: int
    request_id: str
    started: float
    balance: Callable[[], Awaitable[str]]
    """The text of the header's balance, read after the answer's coins are settled."""


@dataclass(frozen=True, slots=True)
class _Turn:
    conversation: Conversation
    model: Model
    question: Message
    announce: bool
    """Send the stored question to the page first (a send or an edit made it)."""


async def read_body(request: Request, state: AppState, model: type[B]) -> B:
    """The JSON body as `model`, within the same size limit as /v1; a bad one is a plain 400."""
    raw = await read_json_object(request, state.settings.server.max_body_bytes)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"Invalid value for '{where}': {first['msg']}.", param=where) from exc


async def send(ctx: Context, conversation_id: str, body: SendBody, *, image_bytes: int) -> SSEResponse:
    """Store the user's message (with its attachments, images included), then answer it.
    `image_bytes` is the upload limit: the page sends the data URL back, so it is checked again."""
    conversation = await _conversation(ctx, conversation_id)
    images = [a for a in body.attachments if a.data_url is not None]
    for image in images:
        size = checks.image_bytes(image.data_url or "")
        if size is None:
            raise InvalidRequest(f"The image '{image.name}' is not valid base64 data.", param="attachments")
        if size > image_bytes:
            raise PayloadTooLarge(
                f"The image '{image.name}' has {size:,} bytes; the limit is {image_bytes:,} bytes.",
                param="attachments",
                code="attachment_too_large",
            )
    model = _model(ctx, conversation, body.model, images=bool(images))
    if not body.content.strip() and not body.attachments:
        raise InvalidRequest("Write a message or attach a file.", param="content", code="empty_message")
    question = await store.append_message(
        engine=ctx.state.engine,
        owner_id=ctx.owner_id,
        conversation_id=conversation_id,
        message=NewMessage(role="user", content=body.content, attachments=_metas(body.attachments)),
    )
    if conversation.leaf_message_id is None and conversation.title == DEFAULT_TITLE:
        title = _title(body.content, body.attachments)
        conversation = await store.update_conversation(
            engine=ctx.state.engine, owner_id=ctx.owner_id, conversation_id=conversation_id, title=title
        )
    conversation = await _use_model(ctx, conversation, model)
    return await _answer(ctx, _Turn(conversation, model, question, announce=True))


async def edit(ctx: Context, conversation_id: str, message_id: int, body: EditBody) -> SSEResponse:
    """Branch at a user message with new text, then answer it (the old branch stays)."""
    conversation = await _conversation(ctx, conversation_id)
    path = await store.message_path(
        engine=ctx.state.engine, owner_id=ctx.owner_id, conversation_id=conversation_id, message_id=message_id
    )
    old = path[-1]
    if old.role != "user":
        raise InvalidRequest("Only your own messages can be edited and sent again.", param="message_id")
    if not body.content.strip() and not old.attachments:
        raise InvalidRequest("Write a message.", param="content", code="empty_message")
    model = _model(ctx, conversation, body.model, images=False)
    question = await store.edit_message(
        engine=ctx.state.engine,
        owner_id=ctx.owner_id,
        conversation_id=conversation_id,
        message_id=message_id,
        content=body.content,
    )
    conversation = await _use_model(ctx, conversation, model)
    return await _answer(ctx, _Turn(conversation, model, question, announce=True))


async def regenerate(
    ctx: Context, conversation_id: str, message_id: int, body: RegenerateBody
) -> SSEResponse:
    """A new answer, beside the old one, to the question of answer `message_id`; or a first answer
    to user message `message_id` (a retry after a refusal or failure)."""
    conversation = await _conversation(ctx, conversation_id)
    engine, owner = ctx.state.engine, ctx.owner_id
    path = await store.message_path(
        engine=engine, owner_id=owner, conversation_id=conversation_id, message_id=message_id
    )
    if path[-1].role == "assistant":
        path = await store.regeneration_context(
            engine=engine, owner_id=owner, conversation_id=conversation_id, message_id=message_id
        )
    if not path or path[-1].role != "user":
        raise InvalidRequest("Only an answer to your message can be regenerated.", param="message_id")
    model = _model(ctx, conversation, body.model, images=False)
    conversation = await _use_model(ctx, conversation, model)
    return await _answer(ctx, _Turn(conversation, model, path[-1], announce=False))


# --- the call ---------------------------------------------------------------------------------


async def _answer(ctx: Context, turn: _Turn) -> SSEResponse:
    state = ctx.state
    history = await store.message_path(
        engine=state.engine,
        owner_id=ctx.owner_id,
        conversation_id=turn.conversation.id,
        message_id=turn.question.id,
    )
    takes_images = "image" in turn.model.settings.capabilities.modalities
    messages = openai_messages(turn.conversation.system_prompt, history, images=takes_images)
    body: dict[str, Any] = {
        "model": turn.model.name,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if turn.conversation.temperature is not None:
        body["temperature"] = turn.conversation.temperature
    if turn.conversation.max_tokens is not None:
        body["max_tokens"] = turn.conversation.max_tokens
    records: list[UsageRecord] = []
    pipeline = state.pipeline
    spec = pipeline.spec(OP, turn.model, body)
    call = pipeline.call(
        spec,
        ctx.principal,
        request_id=ctx.request_id,
        source="chat",
        started=ctx.started,
        on_record=records.append,
    )
    announce = b""
    if turn.announce:
        shown = await _shown(ctx, turn.conversation.id, turn.question.id)
        announce = event("user", {"message": shown, "title": turn.conversation.title})
    await call.admit()  # a refusal is recorded and raised as an HTTP error
    relayed = await call.stream()  # so is a backend that cannot answer at once
    events = _events(ctx, turn, relayed, records, call, announce)
    response = SSEResponse(events, headers=call.headers, on_abandon=call.aclose)
    # FastAPI hands a returned response its (here empty) background tasks through this attribute,
    # which SSEResponse, made for plain Starlette routes, does not set itself.
    response.background = None
    return response


async def _events(
    ctx: Context,
    turn: _Turn,
    relayed: AsyncGenerator[bytes, None],
    records: list[UsageRecord],
    call: Call,
    announce: bytes,
) -> AsyncGenerator[bytes, None]:
    text: list[str] = []
    error: dict[str, Any] | None = None
    finished = False
    try:
        async for raw in relayed:
            out = raw if raw == KEEPALIVE else b""
            if not out:
                delta, failed = read_relayed(raw)
                error = failed or error
                if delta:
                    text.append(delta)
                    out = event("delta", {"text": delta})
            # The stored question goes out with the relay's first bytes, never on its own before
            # them: only a relay that has started runs its cleanup (cancel upstream, settle) when
            # the page goes away.
            out, announce = announce + out, b""
            if out:
                yield out
        finished = True
    finally:
        if not finished:
            # Stopped: closing the relay cancels the upstream and bills what was generated (its
            # usage record arrives in `records`); the partial answer is kept. Shielded, so that a
            # second cancellation cannot lose an answer that was paid for.
            await relayed.aclose()
            await asyncio.shield(
                asyncio.ensure_future(_store_logged(ctx, turn, "".join(text), records, stopped=True))
            )
    try:
        stored = await _store(ctx, turn, "".join(text), records, stopped=False, failed=error is not None)
    except SQLAlchemyError:
        log.exception("could not store the answer of request %s", ctx.request_id)
        stored, error = None, {"message": "The answer could not be saved. Try again.", "code": "not_saved"}
    balance = await ctx.balance()  # the call is settled: its relay settles before its last bytes
    if error is None:
        yield announce + event("done", {"message": stored, "balance": balance})
    else:
        status = records[-1].status if records else 502
        failure = {"error": {**error, "status": status}, "message": stored, "balance": balance}
        yield announce + event("error", failure)


async def _store_logged(
    ctx: Context, turn: _Turn, text: str, records: list[UsageRecord], *, stopped: bool
) -> None:
    # Nobody is listening any more: a failure can only be logged.
    try:
        await _store(ctx, turn, text, records, stopped=stopped)
    except SQLAlchemyError:
        log.exception("could not store the stopped answer of request %s", ctx.request_id)


async def _store(
    ctx: Context, turn: _Turn, text: str, records: list[UsageRecord], *, stopped: bool, failed: bool = False
) -> dict[str, Any] | None:
    """Stores the answer with what its usage record says it cost; nothing when it failed empty."""
    if failed and not text:
        return None
    record = records[-1] if records else None
    stats = AnswerStats(
        model=turn.model.name,
        prompt_tokens=record.prompt_tokens if record else None,
        completion_tokens=record.completion_tokens if record else None,
        cost_micro=record.cost_micro if record else None,
        ttft_ms=record.ttft_ms if record else None,
        finish_reason="error" if failed else (record.finish_reason if record else None),
        stopped=stopped,
        request_id=ctx.request_id,
    )
    answer = await store.append_message(
        engine=ctx.state.engine,
        owner_id=ctx.owner_id,
        conversation_id=turn.conversation.id,
        message=NewMessage(role="assistant", content=text, stats=stats),
        parent_id=turn.question.id,
    )
    return await _shown(ctx, turn.conversation.id, answer.id)


async def _shown(ctx: Context, conversation_id: str, message_id: int) -> dict[str, Any]:
    """The message as the page shows it, with its alternatives (it is on the shown branch)."""
    detail = await store.get_conversation(
        engine=ctx.state.engine, owner_id=ctx.owner_id, conversation_id=conversation_id
    )
    shown = next(m for m in detail.messages if m.message.id == message_id)
    return message_public(shown).model_dump(mode="json")


# --- helpers ----------------------------------------------------------------------------------


async def _conversation(ctx: Context, conversation_id: str) -> Conversation:
    detail = await store.get_conversation(
        engine=ctx.state.engine, owner_id=ctx.owner_id, conversation_id=conversation_id
    )
    return detail.conversation


def _model(ctx: Context, conversation: Conversation, requested: str | None, *, images: bool) -> Model:
    name = requested or conversation.model
    if not name:
        raise InvalidRequest("Choose a model for this conversation.", param="model", code="model_required")
    model = ctx.state.pipeline.resolve(name, OP)
    if images and "image" not in model.settings.capabilities.modalities:
        raise InvalidRequest(
            f"The model '{name}' does not take images. Choose a model that does, or remove the image.",
            param="attachments",
            code="images_not_supported",
        )
    return model


async def _use_model(ctx: Context, conversation: Conversation, model: Model) -> Conversation:
    if conversation.model == model.name:
        return conversation
    return await store.update_conversation(
        engine=ctx.state.engine, owner_id=ctx.owner_id, conversation_id=conversation.id, model=model.name
    )


def _metas(attachments: Sequence[AttachmentIn]) -> tuple[AttachmentMeta, ...]:
    return tuple(
        AttachmentMeta(
            name=a.name, type=a.type, size=a.size, text_chars=a.text_chars, text=a.text, data_url=a.data_url
        )
        for a in attachments
    )


def _title(content: str, attachments: Sequence[AttachmentIn]) -> str:
    first = next((line.strip() for line in content.splitlines() if line.strip()), "")
    first = first.lstrip("#>*-` ").strip() or (attachments[0].name if attachments else DEFAULT_TITLE)
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1].rstrip() + "…"
