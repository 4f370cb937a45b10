"""Upgrading a database that already holds data, from every earlier revision, on SQLite and PostgreSQL.

For each revision R of the shipped migrations (read from the script directory, so a new migration is
covered without touching this file): bring an empty database to R, put rows into every table that
exists at R (values generated from the reflected column types, so a new table is seeded without
touching this file either), upgrade to head, and check that

- every seeded row is still there and reads back, through the head models, with the value seeded;
- the schema is exactly the declared one (`compare_metadata` finds nothing).

A migration that deliberately changes stored values declares it in `TRANSFORMED`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Uuid,
    select,
)
from sqlalchemy.engine import Connection

from lumen.store.engine import create_engine
from lumen.store.migrate import alembic_config, database_revision, head_revision, upgrade_database
from lumen.store.tables import Base

ROWS_PER_TABLE = 3
NULL_ROW = 1
"""In this row every nullable column (that is not part of the primary key) is NULL."""

Row = dict[str, Any]
Key = tuple[Any, ...]

TRANSFORMED: dict[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {}
"""(table, column) -> (the revision whose migration rewrites the column's values, how a value seeded
before that revision reads at head). Empty while no migration rewrites existing data."""


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions()))]


REVISIONS = _revisions()


def _order(revision: str) -> int:
    return REVISIONS.index(revision)


def _reference(
    column: Column[Any], i: int, rows: list[Row], parents: dict[tuple[str, str], list[Any]]
) -> Any:
    """A foreign key's value: row `i` of the referenced table, or for a reference to the same table
    (a tree, such as replies) the row before, the first row being a root (or its own parent)."""
    target = next(iter(column.foreign_keys)).column
    if target.table.name != column.table.name:
        return parents[(target.table.name, target.name)][i]
    if i == 0:
        return None if column.nullable else rows[0][target.name]
    return rows[i - 1][target.name]


def _value(table: Table, column: Column[Any], i: int) -> Any:
    """A value for row `i` of `column`: distinct per row (unique constraints), of the column's type,
    chosen to expose truncation or conversion (64-bit integers, microseconds, non-ASCII text)."""
    kind = column.type
    if isinstance(kind, Boolean):
        return i % 2 == 0
    if isinstance(kind, BigInteger):
        return 2**40 + 1000 * i + 7
    if isinstance(kind, Integer):
        return 1000 + i
    if isinstance(kind, Float):
        return 1.25 + i  # exact in binary floating point, so it compares equal after a round trip
    if isinstance(kind, Numeric):
        return Decimal("1.25") + i
    if isinstance(kind, DateTime):
        return datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC) + timedelta(days=i, seconds=i)
    if isinstance(kind, Date):
        return date(2026, 1, 2) + timedelta(days=i)
    if isinstance(kind, JSON):
        return {"row": i, "list": ["a", 2, None], "text": "Grüße €"}
    if isinstance(kind, Uuid):
        return uuid.UUID(int=i + 1)
    if isinstance(kind, LargeBinary):
        return bytes([0, 255, i])
    if isinstance(kind, String):
        return f"{table.name}.{column.name}.{i}-Grüße €"
    raise TypeError(
        f"no value generator for {table.name}.{column.name} of type {kind!r}: add one to _value in {__file__}"
    )


def _seed(connection: Connection) -> dict[str, dict[Key, Row]]:
    """Inserts ROWS_PER_TABLE rows into every table the database has now; returns them by primary key."""
    reflected = MetaData()
    reflected.reflect(connection)
    parents: dict[tuple[str, str], list[Any]] = {}
    seeded: dict[str, dict[Key, Row]] = {}
    for table in reflected.sorted_tables:  # referenced tables first
        if table.name == "alembic_version":
            continue
        rows: list[Row] = []
        for i in range(ROWS_PER_TABLE):
            rows.append({})
            # Plain columns first: a reference to the same table may point at this row's own key.
            columns = sorted(table.columns, key=lambda c: bool(c.foreign_keys))
            for column in columns:
                if column.nullable and not column.primary_key and i == NULL_ROW:
                    rows[i][column.name] = None
                elif column.foreign_keys:
                    rows[i][column.name] = _reference(column, i, rows, parents)
                else:
                    rows[i][column.name] = _value(table, column, i)
        connection.execute(table.insert(), rows)
        for column in table.columns:
            parents[(table.name, column.name)] = [row[column.name] for row in rows]
        key = [c.name for c in table.primary_key.columns]
        assert key, f"table {table.name} has no primary key: its rows could not be found again"
        seeded[table.name] = {tuple(row[k] for k in key): row for row in rows}
    return seeded


def _read_at_head(connection: Connection, names: list[str]) -> dict[str, dict[Key, Row]]:
    """Every row of the named tables, read through the head models (as Lumen reads them)."""
    found: dict[str, dict[Key, Row]] = {}
    for name in names:
        table = Base.metadata.tables.get(name)
        assert table is not None, f"table {name} (with data) was dropped by a migration"
        key = [c.name for c in table.primary_key.columns]
        rows = connection.execute(select(table)).mappings()
        found[name] = {tuple(row[k] for k in key): dict(row) for row in rows}
    return found


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _expected(name: str, column: str, value: Any, start: str) -> Any:
    transform = TRANSFORMED.get((name, column))
    if transform is not None and _order(start) < _order(transform[0]):
        return transform[1](value)
    return value


def test_revisions_form_one_line_from_base_to_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [head_revision()]
    assert REVISIONS[-1] == head_revision()
    assert script.get_revision(REVISIONS[0]).down_revision is None  # type: ignore[union-attr]


@pytest.mark.parametrize("start", REVISIONS, ids=[f"from-{r}" for r in REVISIONS])
async def test_upgrading_from_an_earlier_revision_keeps_every_row(database_url: str, start: str) -> None:
    await upgrade_database(database_url, revision=start)
    engine = create_engine(database_url)
    try:
        assert await database_revision(engine) == start
        async with engine.begin() as conn:
            seeded = await conn.run_sync(_seed)
        assert seeded, f"revision {start} has no tables to seed"

        await upgrade_database(database_url)

        assert await database_revision(engine) == head_revision()
        async with engine.connect() as conn:
            found = await conn.run_sync(_read_at_head, sorted(seeded))
            diff = await conn.run_sync(_schema_diff)
    finally:
        await engine.dispose()
    for name, rows in seeded.items():
        assert set(rows) <= set(found[name]), f"{name}: seeded rows missing after the upgrade from {start}"
        for key, row in rows.items():
            after = found[name][key]
            for column, value in row.items():
                assert column in after, f"{name}.{column} (with data) was dropped by a migration"
                expected = _expected(name, column, value, start)
                assert after[column] == expected, (
                    f"{name}.{column} of row {key}: seeded {value!r} at {start}, "
                    f"read {after[column]!r} at head"
                )
    assert diff == []
