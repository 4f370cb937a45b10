"""Helpers for reading the coin tables in tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.tables import coin_ledger, coin_pools


async def pool_balance(engine: AsyncEngine, principal: str) -> int | None:
    async with engine.connect() as conn:
        value = (
            await conn.execute(select(coin_pools.c.balance_micro).where(coin_pools.c.principal == principal))
        ).scalar_one_or_none()
    return None if value is None else int(value)


async def ledger_sum(engine: AsyncEngine, principal: str) -> int:
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                select(func.coalesce(func.sum(coin_ledger.c.amount_micro), 0)).where(
                    coin_ledger.c.principal == principal
                )
            )
        ).scalar_one()
    return int(value)


async def ledger_rows(engine: AsyncEngine, principal: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(coin_ledger).where(coin_ledger.c.principal == principal).order_by(coin_ledger.c.id)
        )
        return [dict(row._mapping) for row in rows]
