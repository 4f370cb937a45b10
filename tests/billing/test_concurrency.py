"""200 concurrent requests against a pool that affords 10: exactly 10 succeed, the balance ends at
or above zero, and the ledger explains the balance. In one process (memory or Redis store) and
across several `CoinBank`s sharing one Redis and one database, as separate processes would."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.audit import audit
from lumen.billing.bank import CoinBank
from lumen.errors import InsufficientQuota
from lumen.store.engine import create_engine
from tests.billing.conftest import MakeBank, coins, pool
from tests.billing.support import ledger_rows, ledger_sum, pool_balance

P = "project:7"
PARAMS = pool(10)  # a new pool holding 10 coins, no refill
REQUESTS = 200


async def _request(bank: CoinBank, i: int, cost: int, gate: asyncio.Event | None) -> bool:
    try:
        r = await bank.reserve(P, coins(1), request_id=f"req-{i}", params=PARAMS)
    except InsufficientQuota:
        return False
    # The upstream call: yield to the others a few times.
    for _ in range(random.randint(0, 3)):
        await asyncio.sleep(0)
    if gate is not None:
        await gate.wait()
    await bank.settle(r, cost)
    return True


async def _run(banks: list[CoinBank], cost: int, *, gated: bool) -> int:
    gate = asyncio.Event() if gated else None
    tasks = [asyncio.create_task(_request(banks[i % len(banks)], i, cost, gate)) for i in range(REQUESTS)]
    if gate is not None:
        # Everyone has reserved (or been refused) before anyone settles.
        while sum(t.done() for t in tasks) < REQUESTS - 10:
            await asyncio.sleep(0.01)
        gate.set()
    results = await asyncio.gather(*tasks)
    return sum(results)


async def _check(banks: list[CoinBank], engine: AsyncEngine, expected_balance: int) -> None:
    for bank in banks:
        await bank.flush()
    for bank in banks:
        view = await bank.balance(P, params=PARAMS)
        assert (view.balance_micro, view.reserved_micro) == (expected_balance, 0)
    assert await pool_balance(engine, P) == await ledger_sum(engine, P) == expected_balance
    rows = await ledger_rows(engine, P)
    assert [r["kind"] for r in rows].count("start") == 1
    assert [r["kind"] for r in rows].count("charge") == 10
    assert await audit(engine) == []


@pytest.mark.parametrize("gated", [False, True], ids=["interleaved", "all-reserve-first"])
async def test_200_concurrent_requests_in_one_process(
    make_bank: MakeBank, engine: AsyncEngine, gated: bool
) -> None:
    bank = await make_bank()
    cost = coins(0.5) if gated else coins(1)
    assert await _run([bank], cost, gated=gated) == 10
    await _check([bank], engine, coins(10) - 10 * cost)


@pytest.mark.parametrize("gated", [False, True], ids=["interleaved", "all-reserve-first"])
async def test_200_concurrent_requests_across_three_banks(
    make_redis_bank: MakeBank, engine: AsyncEngine, database_url: str, gated: bool
) -> None:
    # Three "processes": each its own Redis connection and its own database engine.
    engines = [create_engine(database_url) for _ in range(2)]
    banks: list[CoinBank] = []
    try:
        banks = [await make_redis_bank()] + [await make_redis_bank(engine=e) for e in engines]
        cost = coins(0.5) if gated else coins(1)
        assert await _run(banks, cost, gated=gated) == 10
        await _check(banks, engine, coins(10) - 10 * cost)
    finally:
        for bank in banks:
            await bank.aclose()
        for e in engines:
            await e.dispose()
