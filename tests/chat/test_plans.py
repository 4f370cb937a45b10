"""The conversation queries use their indexes, checked on the query plan (never on timings).

A user with thousands of conversations sits among other users with many more; the planner has
statistics (ANALYZE). The sidebar page and a conversation's messages must come from an index in
order (no sort, no full scan); search must read only the user's own messages through the owner
index, never scan the messages table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from lumen.chat import store
from lumen.store.tables import conversations, messages, users

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ANN = 1
ANN_CONVERSATIONS = 2_000
OTHERS, OTHER_CONVERSATIONS = 20, 1_000
MESSAGES_EACH = 3


class Explain(Executable, ClauseElement):
    """``EXPLAIN <statement>`` with the statement's parameters bound as in a real execution."""

    inherit_cache = False

    def __init__(self, statement: Any, prefix: str) -> None:
        self.statement = statement
        self.prefix = prefix


@compiles(Explain)
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return f"{element.prefix} {compiler.process(element.statement, **kw)}"


async def _fill(engine: AsyncEngine) -> None:
    people = [{"id": i, "email": f"u{i}@example.edu", "created_at": T0} for i in range(1, OTHERS + 2)]
    owners = [ANN] * ANN_CONVERSATIONS + [u for u in range(2, OTHERS + 2) for _ in range(OTHER_CONVERSATIONS)]
    rows = [
        {
            "id": f"c{n:06d}",
            "owner_id": owner,
            "title": f"conversation {n}",
            "archived": n % 10 == 0,
            "created_at": T0,
            # Interleaved in time across users, as real activity is.
            "updated_at": T0 + timedelta(seconds=n),
        }
        for n, owner in enumerate(owners)
    ]
    notes = [
        {
            "conversation_id": row["id"],
            "owner_id": row["owner_id"],
            "position": k,
            "role": "user" if k % 2 == 0 else "assistant",
            "content": f"message {k} of {row['id']} about topic {n % 97}",
            "created_at": T0,
        }
        for n, row in enumerate(rows)
        for k in range(MESSAGES_EACH)
    ]
    async with engine.begin() as conn:
        await conn.execute(users.insert(), people)
        for start in range(0, len(rows), 5_000):
            await conn.execute(conversations.insert(), rows[start : start + 5_000])
        for start in range(0, len(notes), 10_000):
            await conn.execute(messages.insert(), notes[start : start + 10_000])
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))


async def _sqlite_plan(conn: AsyncConnection, statement: Any) -> list[str]:
    return [row[-1] for row in await conn.execute(Explain(statement, "EXPLAIN QUERY PLAN"))]


def _pg_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _pg_nodes(child)
    return found


async def _pg_plan(conn: AsyncConnection, statement: Any) -> list[dict[str, Any]]:
    raw = (await conn.execute(Explain(statement, "EXPLAIN (FORMAT JSON)"))).scalar_one()
    plan = raw if isinstance(raw, list) else json.loads(raw)
    return _pg_nodes(plan[0]["Plan"])


def _check(dialect: str, plan: Any, *, index: str, table: str, ordered: bool) -> None:
    if dialect == "sqlite":
        details = " | ".join(plan)
        assert f"INDEX {index}" in details, details
        # "SCAN t" (even "SCAN t USING INDEX") reads the whole table or index; "SEARCH" does not.
        assert not any(step.startswith(f"SCAN {table}") for step in plan), details
        if ordered:
            assert "TEMP B-TREE" not in details, details
        return
    kinds = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in plan]
    assert any(name == index for _, _, name in kinds), kinds
    assert not any(
        kind == "Seq Scan" and relation in ("conversations", "messages") for kind, relation, _ in kinds
    ), kinds
    if ordered:
        assert not any(kind in ("Sort", "Incremental Sort") for kind, _, _ in kinds), kinds


async def _plans(engine: AsyncEngine, statement: Any) -> Any:
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return await _sqlite_plan(conn, statement)
        return await _pg_plan(conn, statement)


async def test_the_conversation_queries_use_their_indexes(engine: AsyncEngine) -> None:
    await _fill(engine)
    dialect = engine.dialect.name
    first = await store.list_conversations(engine=engine, owner_id=ANN, limit=50)
    assert len(first.conversations) == 50 and first.next_cursor is not None
    sidebar = "ix_conversations_owner_id_archived_updated_at_id"
    for cursor in (None, first.next_cursor):
        plan = await _plans(engine, store.list_query(ANN, False, cursor, 50))
        _check(dialect, plan, index=sidebar, table="conversations", ordered=True)

    plan = await _plans(engine, store.messages_query(first.conversations[0].id))
    _check(dialect, plan, index="ix_messages_conversation_id_id", table="messages", ordered=True)

    statement = store.search_query(ANN, "topic 5", False, first.next_cursor, 50)
    plan = await _plans(engine, statement)
    _check(dialect, plan, index="ix_messages_owner_id_conversation_id", table="messages", ordered=False)
    _check(dialect, plan, index=sidebar, table="conversations", ordered=True)
    # And the search gives the right answer at this size.
    found = await store.search_conversations(engine=engine, owner_id=ANN, query="TOPIC 96", limit=200)
    expected = [n for n in range(ANN_CONVERSATIONS) if n % 97 == 96 and n % 10 != 0]
    assert [h.conversation.id for h in found.hits] == [f"c{n:06d}" for n in reversed(expected)]
