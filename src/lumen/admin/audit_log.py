"""The audit log of administrative actions (`admin_audit`): who did what to whom, when.

Every state change made by a person writes one entry through `record`, after it succeeded: the
services of `lumen.actions` (key revocations, coins, access and limit overrides, disabling) for
every face, and the admin API's and the portal's other changes (users, projects, managers, keys
created). The entry names the face the change came through: `api`, `portal` or `cli`. Entries
are never changed or deleted by Lumen. `details` holds the values of the request, with any secret
left out by the caller (a created key's secret is never logged; `redact` drops fields whose name
says secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.tables import admin_audit

_SECRET_WORDS = ("secret", "password", "token", "api_key")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    created_at: datetime
    actor: str
    """The person who acted: `user:<id>`, or `cli:<login>` for a `lumen` command on the host."""
    actor_name: str
    """Their email when they acted (`<login>@<host>` for the CLI)."""
    action: str
    """What they did, `<thing>.<verb>`: `user.update`, `coins.grant`, `project.add_manager`, …"""
    target: str
    """Whom or what it changed: `user:<id>`, `project:<id>`, `key:<id>`."""
    details: dict[str, Any]
    face: str = ""
    """`api`, `portal` or `cli`; "" for entries written before the face was recorded."""


def redact(details: Mapping[str, Any]) -> dict[str, Any]:
    """`details` without the fields whose name says they hold a secret (recursively)."""
    clean: dict[str, Any] = {}
    for name, value in details.items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            continue
        clean[name] = redact(value) if isinstance(value, Mapping) else value
    return clean


async def record(
    *,
    engine: AsyncEngine,
    actor_id: str,
    actor_name: str,
    face: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Writes one entry. `details` must be JSON-serialisable (use `model_dump(mode="json")`)."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(admin_audit).values(
                created_at=at or datetime.now(UTC),
                actor=actor_id,
                actor_name=actor_name,
                face=face,
                action=action,
                target=target,
                details=redact(details or {}),
            )
        )


async def entries(
    *,
    engine: AsyncEngine,
    limit: int = 50,
    before: int | None = None,
    actor: str | None = None,
    target: str | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    """The newest entries first; `before` is the id of the last entry of the previous page."""
    query = select(admin_audit).order_by(admin_audit.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(admin_audit.c.id < before)
    if actor is not None:
        query = query.where(admin_audit.c.actor == actor)
    if target is not None:
        query = query.where(admin_audit.c.target == target)
    if action is not None:
        query = query.where(admin_audit.c.action == action)
    async with engine.connect() as conn:
        return [
            AuditEntry(
                id=int(row.id),
                created_at=row.created_at,
                actor=row.actor,
                actor_name=row.actor_name,
                action=row.action,
                target=row.target,
                details=dict(row.details or {}),
                face=row.face,
            )
            for row in await conn.execute(query)
        ]
