"""The usage pages' queries stay on indexes with a million usage records, on SQLite and PostgreSQL.

Each backend gets 1,000,000 rows spread over two years, 1,000 users, 10 models and 2,000 keys
(PostgreSQL: one INSERT … SELECT over generate_series, then ANALYZE as autovacuum would; SQLite:
executemany in batches, and no ANALYZE, since Lumen never runs it). Then every statement the usage,
project and admin pages run is EXPLAINed: the plan must read `usage_records` through one of its
indexes, never by scanning the whole table. Plans, not timings: a plan is the same on a busy CI
machine; a duration is not.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.engine import create_engine
from lumen.store.migrate import upgrade_database
from lumen.usage import queries as q

ROWS = 1_000_000
USERS = 1_000
MODELS = 10
SPAN_SECONDS = 2 * 365 * 24 * 3600
STEP_SECONDS = SPAN_SECONDS / ROWS
NOW = datetime.now(UTC).replace(microsecond=0)


def _row(n: int) -> tuple[Any, ...]:
    """Row `n` of the seed; the PostgreSQL seed computes the same values in SQL."""
    at = NOW - timedelta(seconds=n * STEP_SECONDS)
    user = 1 + (n * 7919) % USERS
    key = None if n % 3 == 0 else f"key_{user}_{n % 2}"
    return (
        f"r{n}",
        at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),
        f"user:{user}",
        key,
        f"model-{n % MODELS}",
        "local:echo",
        "chat" if key is None else "api",
        "chat.completions",
        n % 500,
        n % 300,
        0,
        (n % 1000) * 10,
        12.5,
        200,
    )


_INSERT = (
    "INSERT INTO usage_records (request_id, created_at, principal, key_id, model, endpoint, source,"
    " operation, prompt_tokens, completion_tokens, estimated, cost_micro, latency_ms, status)"
)

_PG_SEED = (
    _INSERT
    + f""" SELECT 'r' || n, $1::timestamptz - n * interval '{STEP_SECONDS} seconds',
      'user:' || (1 + (n::bigint * 7919) % {USERS}),
      CASE WHEN n % 3 = 0 THEN NULL ELSE 'key_' || (1 + (n::bigint * 7919) % {USERS}) || '_' || (n % 2) END,
      'model-' || (n % {MODELS}), 'local:echo', CASE WHEN n % 3 = 0 THEN 'chat' ELSE 'api' END,
      'chat.completions', n % 500, n % 300, false, (n % 1000) * 10, 12.5, 200
    FROM generate_series(1, {ROWS}) AS n"""
)


def _seed_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        placeholders = ", ".join("?" * 14)
        batch = 50_000
        for start in range(1, ROWS + 1, batch):
            rows = (_row(n) for n in range(start, min(start + batch, ROWS + 1)))
            conn.executemany(f"{_INSERT} VALUES ({placeholders})", rows)


async def _seed_postgresql(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(_PG_SEED, (NOW,))
    async with engine.connect() as conn:
        # ANALYZE is what autovacuum does after a bulk load; without statistics the planner guesses.
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).exec_driver_sql(
            "VACUUM ANALYZE usage_records"
        )


@pytest.fixture
async def million(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A database at head with the million rows, on each backend (`database_url` is parametrised)."""
    await upgrade_database(database_url)
    if database_url.startswith("sqlite"):
        _seed_sqlite(Path(database_url.partition(":///")[2]))
    engine = create_engine(database_url)
    if engine.dialect.name == "postgresql":
        await _seed_postgresql(engine)
    yield engine
    await engine.dispose()


def _statements(dialect: str) -> Iterator[tuple[str, Select[Any]]]:
    """Every statement the pages run, with the scopes and windows they use."""
    user = q.UsageScope.of("user:5")
    group = q.UsageScope(principals=tuple(f"user:{i}" for i in range(100, 150)))
    for period in q.PERIODS:
        since, _ = q.window(period, NOW)
        yield f"a user's {period} by model", q.series_statement(dialect, user, period, "model", since)
    month, _ = q.window("month", NOW)
    year, _ = q.window("year", NOW)
    yield "a user's year by key", q.series_statement(dialect, user, "year", "key", year)
    yield "everyone's month by model", q.series_statement(dialect, q.UsageScope(), "month", "model", month)
    yield (
        "everyone's day by source",
        q.series_statement(dialect, q.UsageScope(), "day", "source", q.window("day", NOW)[0]),
    )
    yield (
        "one model's month",
        q.series_statement(dialect, q.UsageScope(model="model-3"), "month", "key", month),
    )
    yield "a group's month", q.series_statement(dialect, group, "month", "model", month)
    yield "a key's year", q.series_statement(dialect, q.UsageScope(key_id="key_5_1"), "year", "model", year)
    yield "a user's totals", q.totals_statement(user, month)
    yield "users' totals (admin list)", q.by_principal_statement([f"user:{i}" for i in range(1, 51)], month)
    yield "a user's recent requests", q.recent_statement(user, 50)
    yield "a user's next page", q.recent_statement(user, 50, CURSOR)
    yield "everyone's recent requests", q.recent_statement(q.UsageScope(), 50)
    yield "a model's recent requests", q.recent_statement(q.UsageScope(model="model-3"), 50)
    yield "a user's last minute", q.volume_statement("user:5", NOW - timedelta(minutes=1))
    yield "everyone's next page", q.recent_statement(q.UsageScope(), 50, CURSOR)
    yield "an export's next batch", q.export_statement(q.UsageScope(), year, None, CURSOR)


CURSOR = (NOW - timedelta(days=200), 123_456)
"""Where a deep page starts: the index must begin its walk there, not at the newest row."""


def _starts_at_the_cursor(dialect: str, plan: str) -> bool:
    if dialect == "sqlite":
        return "created_at<?" in plan
    return any("Index Cond" in line and "created_at <=" in line for line in plan.splitlines())


def _uses_an_index(dialect: str) -> Callable[[str], bool]:
    if dialect == "sqlite":
        # "SEARCH usage_records USING [COVERING] INDEX ix_…" or "SCAN usage_records USING INDEX ix_…"
        # (an ordered walk that stops at the LIMIT); a bare "SCAN usage_records" reads everything.
        return lambda plan: (
            "USING INDEX ix_usage_records" in plan.replace("COVERING ", "")
            and not any(line.strip() == "SCAN usage_records" for line in plan.splitlines())
        )
    return lambda plan: "ix_usage_records" in plan and "Seq Scan on usage_records" not in plan


async def test_every_usage_query_reads_through_an_index(million: AsyncEngine) -> None:
    # The plans mean something only if the data is spread as intended: a month is a small share
    # of the rows, one user a thousandth of them.
    month, _ = q.window("month", NOW)
    everyone = await q.usage_totals(engine=million, scope=q.UsageScope(), since=None)
    this_month = await q.usage_totals(engine=million, scope=q.UsageScope(), since=month)
    one_user = await q.usage_totals(engine=million, scope=q.UsageScope.of("user:5"), since=None)
    assert everyone.requests == ROWS
    assert 0.03 * ROWS < this_month.requests < 0.06 * ROWS
    assert one_user.requests == ROWS // USERS

    async with million.connect() as conn:
        dialect = conn.dialect.name
        uses_an_index = _uses_an_index(dialect)
        failures = []
        for name, statement in _statements(dialect):
            plan = await q.explain(conn, statement)
            if not uses_an_index(plan):
                failures.append(f"{name}:\n{plan}")
            elif "next" in name and not _starts_at_the_cursor(dialect, plan):
                failures.append(f"{name} (walks from the newest row, not from the cursor):\n{plan}")
    assert not failures, f"{dialect}: queries that do not use an index:\n\n" + "\n\n".join(failures)
