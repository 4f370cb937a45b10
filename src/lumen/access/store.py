"""Per-user and per-project access rules and acknowledgements in the database.

Every write here must be followed by `AccessResolver.invalidate(principal)` in the writing process
and the cross-process invalidation (the resolver does both for the acknowledgements it records).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Row, Table, delete, exists, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumen.access.config import Access, EntityAccess, notice_hash
from lumen.store.engine import SQLITE_BEGIN_OPTION
from lumen.store.tables import model_access_rules, model_acknowledgements, project_managers, projects

log = logging.getLogger(__name__)

Via = Literal["web", "api"]
PrincipalKind = Literal["user", "project"]

# What a rule that cannot be read back becomes: everything blocked, so a damaged row never opens
# access it was meant to close.
UNREADABLE_RULE = EntityAccess(block=("*",))


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    principal: str
    """Who it covers: `user:<id>`, or `project:<id>` (all the project's keys)."""
    model: str
    notice_hash: str
    notice: str
    """The notice text as it was when acknowledged."""
    acknowledged_at: datetime
    acknowledged_by: str
    """The person who acknowledged: `user:<id>` (for a project, one of its managers)."""
    via: str
    """`web` or `api`."""


@dataclass(frozen=True, slots=True)
class StoredAccess:
    """Everything the database holds about one principal's access."""

    rule: EntityAccess | None = None
    acknowledgements: tuple[Acknowledgement, ...] = ()


def parse_principal(principal: str) -> tuple[PrincipalKind, int]:
    """`"user:12"` → `("user", 12)`; anything else is a ValueError."""
    kind, sep, raw_id = principal.partition(":")
    if sep and raw_id.isdigit() and kind in ("user", "project"):
        return ("user" if kind == "user" else "project"), int(raw_id)
    raise ValueError(f"not a principal: {principal!r} (expected 'user:<id>' or 'project:<id>')")


def _now(at: datetime | None) -> datetime:
    return at if at is not None else datetime.now(UTC)


# --- rules ---------------------------------------------------------------------------------------


async def get_rule(*, engine: AsyncEngine, principal: str) -> EntityAccess | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(model_access_rules).where(model_access_rules.c.principal == principal))
        ).first()
    return None if row is None else _rule(row)


async def all_rules(*, engine: AsyncEngine) -> dict[str, EntityAccess]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(model_access_rules))).all()
    return {row.principal: _rule(row) for row in rows}


async def set_rule(
    *,
    engine: AsyncEngine,
    principal: str,
    rule: EntityAccess,
    actor: str | None = None,
    at: datetime | None = None,
) -> None:
    """Replaces the principal's rule; an empty rule deletes it."""
    parse_principal(principal)
    async with engine.begin() as conn:
        await _write_rule(conn, principal, rule, actor, _now(at))


async def delete_rule(*, engine: AsyncEngine, principal: str) -> bool:
    """Removes the principal's rule; True if there was one."""
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(model_access_rules).where(model_access_rules.c.principal == principal)
        )
    return bool(result.rowcount)


async def set_model_rule(
    *,
    engine: AsyncEngine,
    principal: str,
    model: str,
    access: Access | None,
    actor: str | None = None,
    at: datetime | None = None,
) -> EntityAccess | None:
    """Allows, blocks (or, with None, un-lists) one model name or pattern in the principal's rule,
    leaving the rest of the rule as it is; returns the new rule (None when it became empty).

    Read-modify-write under a lock, so two administrators editing the same rule at once both keep
    their change.
    """
    parse_principal(principal)
    async with _locked_write(engine) as conn:
        if conn.dialect.name == "postgresql":
            # Make sure there is a row to lock; FOR UPDATE locks nothing on a missing row.
            await conn.execute(
                postgresql.insert(model_access_rules)
                .values(_rule_values(principal, EntityAccess(), actor, _now(at)))
                .on_conflict_do_nothing(index_elements=["principal"])
            )
        query = select(model_access_rules).where(model_access_rules.c.principal == principal)
        row = (await conn.execute(query.with_for_update())).first()
        current = EntityAccess() if row is None else _rule(row)
        allow = [e for e in current.allow if e != model]
        block = [e for e in current.block if e != model]
        if access == "allowed":
            allow.append(model)
        elif access == "blocked":
            block.append(model)
        rule = EntityAccess(default=current.default, allow=tuple(allow), block=tuple(block))
        await _write_rule(conn, principal, rule, actor, _now(at))
    return None if rule.is_empty() else rule


async def _write_rule(
    conn: AsyncConnection, principal: str, rule: EntityAccess, actor: str | None, at: datetime
) -> None:
    if rule.is_empty():
        await conn.execute(delete(model_access_rules).where(model_access_rules.c.principal == principal))
        return
    values = _rule_values(principal, rule, actor, at)
    update = {k: v for k, v in values.items() if k != "principal"}
    await conn.execute(_upsert(conn, model_access_rules, values, ["principal"], update))


def _rule_values(principal: str, rule: EntityAccess, actor: str | None, at: datetime) -> dict[str, Any]:
    return {
        "principal": principal,
        "default_access": rule.default,
        "allow": list(rule.allow),
        "block": list(rule.block),
        "updated_at": at,
        "updated_by": actor,
    }


def _rule(row: Row[Any]) -> EntityAccess:
    try:
        return EntityAccess(default=row.default_access, allow=row.allow or (), block=row.block or ())
    except ValidationError as exc:
        # Only a hand-edited row can get here: every write goes through EntityAccess.
        log.error("unreadable model access rule of %s, treating it as 'block *': %s", row.principal, exc)
        return UNREADABLE_RULE


# --- acknowledgements ----------------------------------------------------------------------------


async def record_acknowledgement(
    *,
    engine: AsyncEngine,
    principal: str,
    model: str,
    notice: str,
    actor: str,
    via: Via,
    at: datetime | None = None,
) -> tuple[Acknowledgement, bool]:
    """Records that `actor` acknowledged `notice` of `model` for `principal`.

    Idempotent: acknowledging the same notice again keeps the first record. Returns the record and
    whether it is new. Who may acknowledge is checked by the caller (`can_acknowledge`).
    """
    parse_principal(principal)
    parse_principal(actor)
    values = {
        "principal": principal,
        "model": model,
        "notice_hash": notice_hash(notice),
        "notice": notice,
        "acknowledged_at": _now(at),
        "acknowledged_by": actor,
        "via": via,
    }
    keys = ["principal", "model", "notice_hash"]
    async with engine.begin() as conn:
        result = await conn.execute(_upsert(conn, model_acknowledgements, values, keys, None))
        row = (
            await conn.execute(
                select(model_acknowledgements).where(
                    *(model_acknowledgements.c[k] == values[k] for k in keys)
                )
            )
        ).one()
    return _acknowledgement(row), bool(result.rowcount)


async def acknowledgements(
    *, engine: AsyncEngine, principal: str, model: str | None = None
) -> list[Acknowledgement]:
    """The principal's acknowledgements (optionally of one model), oldest first."""
    query = select(model_acknowledgements).where(model_acknowledgements.c.principal == principal)
    if model is not None:
        query = query.where(model_acknowledgements.c.model == model)
    query = query.order_by(model_acknowledgements.c.acknowledged_at, model_acknowledgements.c.id)
    async with engine.connect() as conn:
        return [_acknowledgement(row) for row in await conn.execute(query)]


async def can_acknowledge(*, engine: AsyncEngine, principal: str, actor: str) -> bool:
    """Whether the person `actor` may acknowledge for `principal`: themselves, or a project they
    manage (or own)."""
    kind, principal_id = parse_principal(principal)
    actor_kind, actor_id = parse_principal(actor)
    if actor_kind != "user":
        return False  # a project's key cannot consent on the project's behalf; a person must
    if kind == "user":
        return principal_id == actor_id
    manager = exists().where(
        project_managers.c.project_id == principal_id, project_managers.c.user_id == actor_id
    )
    owner = exists().where(projects.c.id == principal_id, projects.c.owner_id == actor_id)
    async with engine.connect() as conn:
        return bool((await conn.execute(select(literal(True)).where(or_(manager, owner)))).first())


def _acknowledgement(row: Row[Any]) -> Acknowledgement:
    return Acknowledgement(
        principal=row.principal,
        model=row.model,
        notice_hash=row.notice_hash,
        notice=row.notice,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        via=row.via,
    )


# --- loading for the resolver --------------------------------------------------------------------


async def load_principal(*, engine: AsyncEngine, principal: str) -> StoredAccess:
    """One principal's rule and acknowledgements, in one transaction (a consistent pair)."""
    async with engine.connect() as conn, conn.begin():
        rule_row = (
            await conn.execute(select(model_access_rules).where(model_access_rules.c.principal == principal))
        ).first()
        ack_rows = await conn.execute(
            select(model_acknowledgements).where(model_acknowledgements.c.principal == principal)
        )
        acks = tuple(_acknowledgement(row) for row in ack_rows)
    return StoredAccess(rule=None if rule_row is None else _rule(rule_row), acknowledgements=acks)


async def load_all(*, engine: AsyncEngine) -> dict[str, StoredAccess]:
    """Every principal that has a rule or an acknowledgement (for the resolver at start)."""
    async with engine.connect() as conn, conn.begin():
        rules = {row.principal: _rule(row) for row in await conn.execute(select(model_access_rules))}
        acks: dict[str, list[Acknowledgement]] = {}
        for row in await conn.execute(select(model_acknowledgements)):
            acks.setdefault(row.principal, []).append(_acknowledgement(row))
    return {
        principal: StoredAccess(rule=rules.get(principal), acknowledgements=tuple(acks.get(principal, ())))
        for principal in rules.keys() | acks.keys()
    }


# --- helpers -------------------------------------------------------------------------------------


def _upsert(
    conn: AsyncConnection,
    table: Table,
    values: dict[str, Any],
    keys: list[str],
    update: dict[str, Any] | None,
) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE (or DO NOTHING when `update` is None), on either backend."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(values)
    if update is None:
        return statement.on_conflict_do_nothing(index_elements=keys)
    return statement.on_conflict_do_update(index_elements=keys, set_=update)


@asynccontextmanager
async def _locked_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction that holds the lock from its first statement: BEGIN IMMEDIATE on SQLite
    (PostgreSQL locks the row with SELECT … FOR UPDATE)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            yield conn
