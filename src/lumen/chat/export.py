"""Exports of a conversation: readable Markdown (the shown branch) and versioned JSON (every branch).

The JSON document (`lumen.chat.protocol.ExportDocument`, ``"format": "lumen.conversation"``,
``"version": 1``) holds every message of every branch with its parent, so importing it rebuilds
the same tree; `parse_document` reads it back and refuses anything else with a clear message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from lumen.api.body import check_parsed
from lumen.chat import tree
from lumen.chat.protocol import (
    ExportAttachment,
    ExportConversation,
    ExportDocument,
    ExportMessage,
)
from lumen.chat.records import (
    AnswerStats,
    AttachmentMeta,
    Conversation,
    ImportedMessage,
    Message,
    NewMessage,
)
from lumen.chat.safe_markdown import safe_inline, safe_markdown
from lumen.errors import InvalidRequest

FORMAT = "lumen.conversation"
VERSION = 1

_ROLE_TITLES = {"system": "System", "user": "User", "assistant": "Assistant"}


# --- JSON -------------------------------------------------------------------------------------


def to_document(
    conversation: Conversation, messages: Sequence[Message], *, exported_at: datetime | None = None
) -> ExportDocument:
    shown = tree.shown_branch(messages, conversation.leaf_message_id)
    return ExportDocument(
        format=FORMAT,
        version=VERSION,
        exported_at=exported_at or datetime.now(UTC),
        conversation=ExportConversation(
            title=conversation.title,
            model=conversation.model,
            system_prompt=conversation.system_prompt,
            temperature=conversation.temperature,
            max_tokens=conversation.max_tokens,
            archived=conversation.archived,
            created_at=conversation.created_at,
            updated_at=conversation.updated_at,
        ),
        messages=[_export_message(m) for m in sorted(messages, key=lambda m: m.id)],
        current=shown[-1].message.id if shown else None,
    )


def _export_message(message: Message) -> ExportMessage:
    stats = message.stats
    return ExportMessage(
        id=message.id,
        parent=message.parent_id,
        role=message.role,
        content=message.content,
        attachments=[ExportAttachment(**a.to_json()) for a in message.attachments],
        created_at=message.created_at,
        model=stats.model,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        cost_micro=stats.cost_micro,
        ttft_ms=stats.ttft_ms,
        finish_reason=stats.finish_reason,
        stopped=stats.stopped,
    )


def to_json(conversation: Conversation, messages: Sequence[Message]) -> bytes:
    document = to_document(conversation, messages)
    return orjson.dumps(document.model_dump(mode="json"), option=orjson.OPT_INDENT_2)


def _not_an_export(why: str) -> InvalidRequest:
    return InvalidRequest(f"This is not a Lumen conversation export: {why}", code="invalid_export")


def parse_document(raw: bytes) -> ExportDocument:
    """Read a JSON export; `InvalidRequest` names the first problem (with its JSON path)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _not_an_export(f"the JSON does not parse ({exc.msg} at character {exc.pos}).") from exc
    check_parsed(raw, data)  # no NUL, no hostile nesting: as every other JSON body
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _not_an_export(f'it has no "format": "{FORMAT}".')
    if data.get("version") != VERSION:
        raise _not_an_export(
            f"its version {data.get('version')!r} is not one this Lumen reads (version {VERSION})."
        )
    try:
        return ExportDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise _not_an_export(f"{where}: {first['msg']}.") from exc


def import_arguments(document: ExportDocument) -> dict[str, Any]:
    """Keyword arguments for `lumen.chat.store.import_conversation` (less engine and owner)."""
    index: dict[int, int] = {}
    items: list[ImportedMessage] = []
    for position, message in enumerate(document.messages):
        if message.id in index:
            raise _not_an_export(f"messages.{position}.id: the id {message.id} is used twice.")
        if message.parent is not None and message.parent not in index:
            raise _not_an_export(
                f"messages.{position}.parent: {message.parent} is not the id of an earlier message."
            )
        index[message.id] = position
        items.append(
            ImportedMessage(
                parent=None if message.parent is None else index[message.parent],
                message=_new_message(message),
                created_at=message.created_at,
            )
        )
    if document.current is not None and document.current not in index:
        raise _not_an_export(f"current: {document.current} is not the id of a message.")
    conversation = document.conversation
    return {
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "max_tokens": conversation.max_tokens,
        "archived": conversation.archived,
        "created_at": conversation.created_at,
        "items": items,
        "leaf": None if document.current is None else index[document.current],
    }


def _new_message(message: ExportMessage) -> NewMessage:
    return NewMessage(
        role=message.role,
        content=message.content,
        attachments=tuple(AttachmentMeta(**a.model_dump()) for a in message.attachments),
        stats=AnswerStats(
            model=message.model,
            prompt_tokens=message.prompt_tokens,
            completion_tokens=message.completion_tokens,
            cost_micro=message.cost_micro,
            ttft_ms=message.ttft_ms,
            finish_reason=message.finish_reason,
            stopped=message.stopped,
        ),
    )


# --- Markdown ---------------------------------------------------------------------------------


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _coins(micro: int) -> str:
    return f"{Decimal(micro) / 1_000_000:f}"


def _answer_line(stats: AnswerStats) -> str | None:
    parts: list[str] = []
    if stats.prompt_tokens is not None or stats.completion_tokens is not None:
        parts.append(f"{stats.prompt_tokens or 0} prompt + {stats.completion_tokens or 0} completion tokens")
    if stats.cost_micro is not None:
        parts.append(f"{_coins(stats.cost_micro)} coins")
    if stats.ttft_ms is not None:
        parts.append(f"first token after {stats.ttft_ms:.0f} ms")
    if stats.stopped:
        parts.append("stopped by the user")
    elif stats.finish_reason not in (None, "stop"):
        parts.append(f"finish reason: {safe_inline(stats.finish_reason or '')}")
    return "*" + " · ".join(parts) + "*" if parts else None


def to_markdown(conversation: Conversation, messages: Sequence[Message]) -> str:
    """The shown branch as a Markdown document; all text from the conversation made safe."""
    lines = [f"# {safe_inline(conversation.title)}", ""]
    facts = [f"Created {_when(conversation.created_at)}", f"last activity {_when(conversation.updated_at)}"]
    if conversation.model:
        facts.insert(0, f"Model: {safe_inline(conversation.model)}")
    if conversation.temperature is not None:
        facts.append(f"temperature {conversation.temperature:g}")
    if conversation.max_tokens is not None:
        facts.append(f"max tokens {conversation.max_tokens}")
    lines += [" · ".join(facts), ""]
    if conversation.system_prompt.strip():
        lines += ["## System prompt", "", safe_markdown(conversation.system_prompt), ""]
    for shown in tree.shown_branch(messages, conversation.leaf_message_id):
        message = shown.message
        heading = _ROLE_TITLES[message.role]
        if message.role == "assistant" and message.stats.model:
            heading += f" ({safe_inline(message.stats.model)})"
        if len(shown.sibling_ids) > 1:
            heading += f" · version {shown.sibling_ids.index(message.id) + 1} of {len(shown.sibling_ids)}"
        lines += ["---", "", f"## {heading}", "", safe_markdown(message.content), ""]
        for attachment in message.attachments:
            kind = safe_inline(attachment.type)
            lines += [f"📎 {safe_inline(attachment.name)} ({kind}, {attachment.size:,} bytes)", ""]
        answer = _answer_line(message.stats) if message.role == "assistant" else None
        if answer:
            lines += [answer, ""]
    return "\n".join(lines).rstrip("\n") + "\n"
