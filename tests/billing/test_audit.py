from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.audit import Discrepancy, audit
from lumen.store.tables import coin_ledger, coin_pools
from tests.billing.conftest import MakeBank, coins, pool


async def _busy_history(make_bank: MakeBank) -> None:
    bank = await make_bank()
    params = pool(10, refresh=1)
    for principal in ("user:1", "user:2", "project:3"):
        r = await bank.reserve(principal, coins(2), request_id="a", params=params)
        await bank.settle(r, coins(1.25))
        await bank.grant(principal, coins(3), params=params)
    await bank.set_balance("user:2", coins(4), params=params)
    await bank.flush()


async def test_a_consistent_ledger_has_no_discrepancy(make_bank: MakeBank, engine: AsyncEngine) -> None:
    assert await audit(engine) == []  # empty database
    await _busy_history(make_bank)
    assert await audit(engine) == []


async def test_audit_finds_a_changed_balance(make_bank: MakeBank, engine: AsyncEngine) -> None:
    await _busy_history(make_bank)
    async with engine.begin() as conn:
        await conn.execute(
            update(coin_pools)
            .where(coin_pools.c.principal == "user:1")
            .values(balance_micro=coin_pools.c.balance_micro + 5)
        )
    [found] = await audit(engine)
    assert found.principal == "user:1"
    assert found.difference_micro == 5
    assert found.pool_balance_micro == found.ledger_sum_micro + 5
    assert "user:1" in str(found)


async def test_audit_finds_ledger_rows_without_a_pool(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(coin_ledger),
            [
                {
                    "principal": "user:9",
                    "kind": "grant",
                    "amount_micro": 7,
                    "balance_after_micro": 7,
                    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                }
            ],
        )
    assert await audit(engine) == [Discrepancy("user:9", None, 7)]
