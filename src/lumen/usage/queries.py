"""Read usage records back (tests, the usage pages)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.tables import usage_records
from lumen.usage.recorder import UsageRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredUsageRecord(UsageRecord):
    """A `UsageRecord` as stored, with its row id."""

    id: int


async def recent_usage(
    *, engine: AsyncEngine, limit: int = 100, principal: str | None = None
) -> list[StoredUsageRecord]:
    """The newest usage records (by request time, then insertion order), optionally of one principal."""
    query = select(usage_records).order_by(usage_records.c.created_at.desc(), usage_records.c.id.desc())
    if principal is not None:
        query = query.where(usage_records.c.principal == principal)
    async with engine.connect() as conn:
        result = await conn.execute(query.limit(limit))
        return [StoredUsageRecord(**row._asdict()) for row in result]
