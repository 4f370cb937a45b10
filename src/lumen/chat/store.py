"""Conversations and their messages in the database.

Every function takes the engine and the owner's user id as keyword arguments and touches only that
user's conversations: another user's conversation is reported as not found (404), exactly like
one that does not exist, so ids cannot be probed. Bad values raise `lumen.errors.InvalidRequest`
before anything is written.

``updated_at`` is the last activity (a message added or edited); renaming, settings and
archiving do not move a conversation in the sidebar.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, func, insert, or_, select, tuple_, update
from sqlalchemy import delete as delete_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumen.chat import checks, tree
from lumen.chat.checks import UNSET, Unset
from lumen.chat.cursor import decode_cursor, encode_cursor
from lumen.chat.records import (
    AnswerStats,
    AttachmentMeta,
    Conversation,
    ConversationDetail,
    ImportedMessage,
    Message,
    NewMessage,
    Page,
    SearchHit,
    SearchPage,
)
from lumen.errors import InvalidRequest, NotFound
from lumen.store.engine import SQLITE_BEGIN_OPTION
from lumen.store.tables import conversations, messages

DEFAULT_TITLE = "New chat"


@asynccontextmanager
async def _write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction holding SQLite's write lock from its first statement (BEGIN IMMEDIATE).

    Most writes here read first (the owner check); a deferred SQLite transaction that has read
    cannot wait for another writer, so it would fail at once with "database is locked" whenever
    the usage recorder or a session wrote in between. PostgreSQL needs nothing special.
    """
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            yield conn


def _now() -> datetime:
    return datetime.now(UTC)


def new_conversation_id() -> str:
    """128 random bits, URL-safe: unguessable, so a leaked id alone reveals nothing."""
    return secrets.token_urlsafe(16)


def _conversation(row: Row[Any]) -> Conversation:
    return Conversation(**{f: getattr(row, f) for f in Conversation.__dataclass_fields__})


def _message(row: Mapping[Any, Any]) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        position=row["position"],
        role=row["role"],
        content=row["content"],
        attachments=tuple(AttachmentMeta.from_json(a) for a in row["attachments"] or ()),
        stats=AnswerStats(**{f: row[f] for f in AnswerStats.__dataclass_fields__}),
        created_at=row["created_at"],
    )


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"No conversation '{conversation_id}'.", code="conversation_not_found")


async def _owned(conn: AsyncConnection, owner_id: int, conversation_id: str) -> Conversation:
    row = (
        await conn.execute(
            select(conversations).where(
                conversations.c.id == conversation_id, conversations.c.owner_id == owner_id
            )
        )
    ).first()
    if row is None:
        raise _not_found(conversation_id)
    return _conversation(row)


def messages_query(conversation_id: str) -> Select[Any]:
    """Every message of a conversation, oldest first (``ix_messages_conversation_id_id``)."""
    return select(messages).where(messages.c.conversation_id == conversation_id).order_by(messages.c.id)


async def _messages_of(conn: AsyncConnection, conversation_id: str) -> list[Message]:
    return [_message(r._mapping) for r in await conn.execute(messages_query(conversation_id))]


async def _message_in(conn: AsyncConnection, conversation_id: str, message_id: int) -> Message:
    row = (
        await conn.execute(
            select(messages).where(messages.c.id == message_id, messages.c.conversation_id == conversation_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"No message {message_id} in this conversation.", code="message_not_found")
    return _message(row._mapping)


# --- conversations ----------------------------------------------------------------------------


async def create_conversation(
    *,
    engine: AsyncEngine,
    owner_id: int,
    title: str | None = None,
    model: str | None = None,
    system_prompt: str = "",
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> Conversation:
    now = _now()
    conversation = Conversation(
        id=new_conversation_id(),
        owner_id=owner_id,
        title=DEFAULT_TITLE if title is None else checks.title(title),
        model=checks.model(model),
        system_prompt=checks.system_prompt(system_prompt),
        temperature=checks.temperature(temperature),
        max_tokens=checks.max_tokens(max_tokens),
        archived=False,
        leaf_message_id=None,
        created_at=now,
        updated_at=now,
    )
    async with _write(engine) as conn:
        await conn.execute(insert(conversations).values(**_fields(conversation)))
    return conversation


def list_query(owner_id: int, archived: bool, cursor: str | None, limit: int) -> Select[Any]:
    """One page of conversations (plus one row, to know whether there is a next page)."""
    return _page_query(owner_id, archived, cursor).limit(limit + 1)


def _page_query(owner_id: int, archived: bool, cursor: str | None) -> Select[Any]:
    query = select(conversations).where(
        conversations.c.owner_id == owner_id, conversations.c.archived == archived
    )
    if cursor is not None:
        updated_at, conversation_id = decode_cursor(cursor)
        # Keyset pagination: rows strictly after the last one seen, in the index's order, so pages
        # neither repeat nor skip rows when conversations are added or touched in between.
        query = query.where(
            tuple_(conversations.c.updated_at, conversations.c.id) < tuple_(updated_at, conversation_id)
        )
    return query.order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())


def _cut(found: Sequence[Conversation], limit: int) -> tuple[tuple[Conversation, ...], str | None]:
    if len(found) <= limit:
        return tuple(found), None
    last = found[limit - 1]
    return tuple(found[:limit]), encode_cursor(last.updated_at, last.id)


async def list_conversations(
    *, engine: AsyncEngine, owner_id: int, archived: bool = False, limit: int = 50, cursor: str | None = None
) -> Page:
    """One page of the user's conversations, most recently active first."""
    limit = checks.page_limit(limit)
    async with engine.connect() as conn:
        rows = await conn.execute(list_query(owner_id, archived, cursor, limit))
        found = [_conversation(r) for r in rows]
    page, next_cursor = _cut(found, limit)
    return Page(conversations=page, next_cursor=next_cursor)


def like_pattern(term: str) -> str:
    """A LIKE pattern matching `term` anywhere, its own ``%``, ``_`` and ``\\`` taken literally."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_conversations(
    *,
    engine: AsyncEngine,
    owner_id: int,
    query: str,
    archived: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> SearchPage:
    """The user's conversations whose title or any message (on any branch) contains `query`,
    case-insensitively, most recently active first, with a snippet of the first matching message.

    The scan is bounded by the user's own data: conversations through their owner index, messages
    through ``ix_messages_owner_id_conversation_id``; other users' rows are never read.
    """
    term = checks.search_term(query)
    limit = checks.page_limit(limit)
    pattern = like_pattern(term)
    async with engine.connect() as conn:
        statement = search_query(owner_id, term, archived, cursor, limit)
        found = [_conversation(r) for r in await conn.execute(statement)]
        page, next_cursor = _cut(found, limit)
        first = await _first_matches(conn, owner_id, [c.id for c in page], pattern)
    hits = tuple(
        SearchHit(
            conversation=c,
            message_id=first[c.id][0] if c.id in first else None,
            snippet=snippet(first[c.id][1], term) if c.id in first else None,
        )
        for c in page
    )
    return SearchPage(hits=hits, next_cursor=next_cursor)


def search_query(owner_id: int, term: str, archived: bool, cursor: str | None, limit: int) -> Select[Any]:
    """A page of conversations whose title or any message contains `term` (one row more)."""
    pattern = like_pattern(term)
    matching = select(messages.c.conversation_id).where(
        messages.c.owner_id == owner_id, messages.c.content.ilike(pattern, escape="\\")
    )
    return (
        _page_query(owner_id, archived, cursor)
        .where(or_(conversations.c.title.ilike(pattern, escape="\\"), conversations.c.id.in_(matching)))
        .limit(limit + 1)
    )


async def _first_matches(
    conn: AsyncConnection, owner_id: int, conversation_ids: list[str], pattern: str
) -> dict[str, tuple[int, str]]:
    if not conversation_ids:
        return {}
    first_ids = (
        select(func.min(messages.c.id))
        .where(
            messages.c.owner_id == owner_id,
            messages.c.conversation_id.in_(conversation_ids),
            messages.c.content.ilike(pattern, escape="\\"),
        )
        .group_by(messages.c.conversation_id)
    )
    rows = await conn.execute(
        select(messages.c.conversation_id, messages.c.id, messages.c.content).where(
            messages.c.id.in_(first_ids)
        )
    )
    return {r.conversation_id: (r.id, r.content) for r in rows}


def snippet(content: str, term: str, *, width: int = 60) -> str:
    """About `width` characters either side of the first occurrence of `term`, on one line."""
    flat = " ".join(content.split())
    at = flat.lower().find(term.lower())
    if at < 0:
        return flat[: 2 * width] + ("…" if len(flat) > 2 * width else "")
    start, end = max(0, at - width), min(len(flat), at + len(term) + width)
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


async def get_conversation(*, engine: AsyncEngine, owner_id: int, conversation_id: str) -> ConversationDetail:
    """The conversation with its shown branch (see `lumen.chat.tree`)."""
    async with engine.connect() as conn:
        conversation = await _owned(conn, owner_id, conversation_id)
        found = await _messages_of(conn, conversation_id)
    return ConversationDetail(
        conversation=conversation, messages=tree.shown_branch(found, conversation.leaf_message_id)
    )


async def conversation_tree(
    *, engine: AsyncEngine, owner_id: int, conversation_id: str
) -> tuple[Conversation, tuple[Message, ...]]:
    """The conversation and every message of every branch, oldest first (for exports)."""
    async with engine.connect() as conn:
        conversation = await _owned(conn, owner_id, conversation_id)
        return conversation, tuple(await _messages_of(conn, conversation_id))


async def update_conversation(
    *,
    engine: AsyncEngine,
    owner_id: int,
    conversation_id: str,
    title: str | Unset = UNSET,
    model: str | None | Unset = UNSET,
    system_prompt: str | Unset = UNSET,
    temperature: float | None | Unset = UNSET,
    max_tokens: int | None | Unset = UNSET,
    archived: bool | Unset = UNSET,
) -> Conversation:
    """Change the given fields (None clears model, temperature and max_tokens: the model's default)."""
    values: dict[str, object] = {}
    if not isinstance(title, Unset):
        values["title"] = checks.title(title)
    if not isinstance(model, Unset):
        values["model"] = checks.model(model)
    if not isinstance(system_prompt, Unset):
        values["system_prompt"] = checks.system_prompt(system_prompt)
    if not isinstance(temperature, Unset):
        values["temperature"] = checks.temperature(temperature)
    if not isinstance(max_tokens, Unset):
        values["max_tokens"] = checks.max_tokens(max_tokens)
    if not isinstance(archived, Unset):
        values["archived"] = bool(archived)
    async with _write(engine) as conn:
        await _owned(conn, owner_id, conversation_id)
        if values:
            await conn.execute(
                update(conversations).where(conversations.c.id == conversation_id).values(**values)
            )
        return await _owned(conn, owner_id, conversation_id)


async def rename_conversation(
    *, engine: AsyncEngine, owner_id: int, conversation_id: str, title: str
) -> Conversation:
    return await update_conversation(
        engine=engine, owner_id=owner_id, conversation_id=conversation_id, title=title
    )


async def delete_conversation(*, engine: AsyncEngine, owner_id: int, conversation_id: str) -> None:
    """Delete the conversation and all its messages, for good."""
    async with _write(engine) as conn:
        result = await conn.execute(
            delete_(conversations).where(
                conversations.c.id == conversation_id, conversations.c.owner_id == owner_id
            )
        )
        if result.rowcount == 0:
            raise _not_found(conversation_id)


# --- messages ---------------------------------------------------------------------------------


def _row_values(
    conversation: Conversation, parent: Message | None, new: NewMessage, created_at: datetime
) -> dict[str, Any]:
    return {
        "conversation_id": conversation.id,
        "owner_id": conversation.owner_id,
        "parent_id": None if parent is None else parent.id,
        "position": 0 if parent is None else parent.position + 1,
        "role": new.role,
        "content": checks.storable(new.content),
        "attachments": [_storable_json(a.to_json()) for a in new.attachments] or None,
        **_storable_json({f: getattr(new.stats, f) for f in AnswerStats.__dataclass_fields__}),
        "created_at": created_at,
    }


def _storable_json(values: dict[str, Any]) -> dict[str, Any]:
    return {k: checks.storable(v) if isinstance(v, str) else v for k, v in values.items()}


async def _insert_row(conn: AsyncConnection, values: dict[str, Any]) -> Message:
    result = await conn.execute(insert(messages).values(**values).returning(messages.c.id))
    return _message({**values, "id": int(result.scalar_one())})


async def _set_leaf(
    conn: AsyncConnection, conversation_id: str, leaf: int | None, *, touch: datetime | None
) -> None:
    values: dict[str, object] = {"leaf_message_id": leaf}
    if touch is not None:
        values["updated_at"] = touch
    await conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(**values))


async def _insert(
    conn: AsyncConnection, conversation: Conversation, parent: Message | None, new: NewMessage
) -> Message:
    """Insert `new` under `parent`, make it the conversation's leaf and touch ``updated_at``."""
    checks.new_message(new)
    now = _now()
    message = await _insert_row(conn, _row_values(conversation, parent, new, now))
    await _set_leaf(conn, conversation.id, message.id, touch=now)
    return message


async def append_message(
    *,
    engine: AsyncEngine,
    owner_id: int,
    conversation_id: str,
    message: NewMessage,
    parent_id: int | None = None,
) -> Message:
    """Add a message and show it: after the shown leaf, or under `parent_id` when given.

    The chat send stores the user's message this way, then the answer with ``parent_id`` set to
    the user's message (so the answer lands there even if the user switched branches meanwhile).
    A stopped answer is stored with what had been generated and ``stats.stopped=True``.
    A second answer under the same parent is a regenerated alternative (a sibling).
    """
    async with _write(engine) as conn:
        conversation = await _owned(conn, owner_id, conversation_id)
        parent: Message | None
        if parent_id is not None:
            parent = await _message_in(conn, conversation_id, parent_id)
        elif conversation.leaf_message_id is not None:
            parent = await _message_in(conn, conversation_id, conversation.leaf_message_id)
        else:
            parent = None
        return await _insert(conn, conversation, parent, message)


async def edit_message(
    *,
    engine: AsyncEngine,
    owner_id: int,
    conversation_id: str,
    message_id: int,
    content: str,
    attachments: Sequence[AttachmentMeta] | None = None,
) -> Message:
    """Branch at `message_id`: a new sibling with the same role and the new content becomes the leaf.

    The old message and everything after it stay, on their own branch. Attachments are kept unless
    new ones are given. An edited answer records no model statistics: the user wrote it.
    """
    async with _write(engine) as conn:
        conversation = await _owned(conn, owner_id, conversation_id)
        old = await _message_in(conn, conversation_id, message_id)
        parent = None if old.parent_id is None else await _message_in(conn, conversation_id, old.parent_id)
        new = NewMessage(
            role=old.role,
            content=content,
            attachments=old.attachments if attachments is None else tuple(attachments),
        )
        return await _insert(conn, conversation, parent, new)


async def message_path(
    *, engine: AsyncEngine, owner_id: int, conversation_id: str, message_id: int
) -> list[Message]:
    """The messages from the root to `message_id`: what a model sees when it answers that message."""
    async with engine.connect() as conn:
        await _owned(conn, owner_id, conversation_id)
        await _message_in(conn, conversation_id, message_id)
        return tree.path_to(await _messages_of(conn, conversation_id), message_id)


async def regeneration_context(
    *, engine: AsyncEngine, owner_id: int, conversation_id: str, message_id: int
) -> list[Message]:
    """What to send to regenerate the answer `message_id`: the path up to the message it answers.

    Store the new answer with ``append_message(parent_id=path[-1].id, ...)``: it becomes a sibling
    of the old one, which is kept.
    """
    async with engine.connect() as conn:
        await _owned(conn, owner_id, conversation_id)
        target = await _message_in(conn, conversation_id, message_id)
        if target.role != "assistant" or target.parent_id is None:
            raise InvalidRequest(
                "Only an answer to a message can be regenerated.", param="message_id", code="not_an_answer"
            )
        return tree.path_to(await _messages_of(conn, conversation_id), target.parent_id)


async def select_branch(
    *, engine: AsyncEngine, owner_id: int, conversation_id: str, message_id: int
) -> ConversationDetail:
    """Show the branch through `message_id` (e.g. the user chose alternative 2 of 3): its newest leaf."""
    async with _write(engine) as conn:
        conversation = await _owned(conn, owner_id, conversation_id)
        await _message_in(conn, conversation_id, message_id)
        found = await _messages_of(conn, conversation_id)
        leaf = tree.newest_leaf(found, message_id)
        await _set_leaf(conn, conversation_id, leaf, touch=None)
    return ConversationDetail(
        conversation=Conversation(**{**_fields(conversation), "leaf_message_id": leaf}),
        messages=tree.shown_branch(found, leaf),
    )


def _fields(obj: object) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}  # type: ignore[attr-defined]


# --- import -----------------------------------------------------------------------------------


async def import_conversation(
    *,
    engine: AsyncEngine,
    owner_id: int,
    title: str,
    model: str | None,
    system_prompt: str,
    temperature: float | None,
    max_tokens: int | None,
    archived: bool,
    created_at: datetime,
    items: Sequence[ImportedMessage],
    leaf: int | None,
) -> ConversationDetail:
    """Create a new conversation (with a new id) holding `items`, all in one transaction."""
    checks.import_shape([i.parent for i in items], leaf)
    now = _now()
    conversation = Conversation(
        id=new_conversation_id(),
        owner_id=owner_id,
        title=checks.title(title),
        model=checks.model(model),
        system_prompt=checks.system_prompt(system_prompt),
        temperature=checks.temperature(temperature),
        max_tokens=checks.max_tokens(max_tokens),
        archived=archived,
        leaf_message_id=None,
        created_at=checks.aware(created_at),
        updated_at=now,
    )
    for item in items:
        checks.new_message(item.message)
        checks.aware(item.created_at)
    async with _write(engine) as conn:
        await conn.execute(insert(conversations).values(**_fields(conversation)))
        stored: list[Message] = []
        for item in items:
            parent = None if item.parent is None else stored[item.parent]
            stored.append(
                await _insert_row(conn, _row_values(conversation, parent, item.message, item.created_at))
            )
        leaf_id = stored[leaf].id if leaf is not None else (stored[-1].id if stored else None)
        await _set_leaf(conn, conversation.id, leaf_id, touch=None)
    return await get_conversation(engine=engine, owner_id=owner_id, conversation_id=conversation.id)
