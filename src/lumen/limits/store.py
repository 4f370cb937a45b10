"""Users' and projects' own rate limits in the database.

The table is small (one row per entity with its own limits), so every process keeps all of it in
memory and reloads it as often as it refreshes its other caches (`server.auth_cache_seconds`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.limits.config import LimitSettings
from lumen.store.tables import rate_limit_overrides


async def all_overrides(*, engine: AsyncEngine) -> dict[str, LimitSettings]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(rate_limit_overrides.c.principal, rate_limit_overrides.c.limits))
        return {principal: LimitSettings.model_validate(limits) for principal, limits in rows}


async def set_override(
    *, engine: AsyncEngine, principal: str, limits: LimitSettings, actor: str | None = None
) -> None:
    """Stores what `limits` sets (fields left out stay inherited); nothing set removes the row."""
    stored = limits.model_dump(mode="json", exclude_unset=True)
    async with engine.begin() as conn:
        await conn.execute(delete(rate_limit_overrides).where(rate_limit_overrides.c.principal == principal))
        if stored:
            await conn.execute(
                rate_limit_overrides.insert().values(
                    principal=principal, limits=stored, updated_at=datetime.now(UTC), updated_by=actor
                )
            )
