from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.ledger import LedgerEntry, LedgerWriter, datetime_to_ms, load_pool, ms_to_datetime
from lumen.store.tables import coin_pools
from tests.billing.conftest import T0
from tests.billing.support import ledger_rows, ledger_sum, pool_balance


def entry(
    amount: int, *, at: int = T0, refilled_at: int = T0, carry: int = 0, kind: str = "grant"
) -> LedgerEntry:
    return LedgerEntry("user:1", kind, amount, 0, at, refilled_at, carry)


def test_millisecond_times_convert_exactly() -> None:
    for ms in (0, 1, T0, T0 + 999, 2**45 + 1):
        assert datetime_to_ms(ms_to_datetime(ms)) == ms


async def test_close_writes_everything(engine: AsyncEngine) -> None:
    writer = LedgerWriter(engine, flush_interval=60)
    await writer.start()
    writer.record(entry(100, kind="start"))
    for _ in range(2500):
        writer.record(entry(-1))
    await writer.aclose()
    assert writer.pending == 0 and writer.written == 2501
    assert await ledger_sum(engine, "user:1") == await pool_balance(engine, "user:1") == 100 - 2500
    record = await load_pool(engine, "user:1")
    assert record is not None and record.seed is not None  # opened by the "start" row


async def test_a_failing_database_loses_nothing(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = LedgerWriter(engine, flush_interval=0.01, retry_max=0.01)
    real_write = writer._write
    failures = 0

    async def flaky(batch: list[LedgerEntry]) -> Any:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise ConnectionError("database down")
        return await real_write(batch)

    monkeypatch.setattr(writer, "_write", flaky)
    await writer.start()
    for amount in (5, 6, 7):
        writer.record(entry(amount))
    await writer.aclose()
    assert writer.flush_failures == 3 and writer.written == 3 and writer.lost == 0
    assert [r["amount_micro"] for r in await ledger_rows(engine, "user:1")] == [5, 6, 7]
    assert await pool_balance(engine, "user:1") == 18


async def test_the_latest_refill_clock_wins_whatever_the_flush_order(engine: AsyncEngine) -> None:
    late, early = LedgerWriter(engine), LedgerWriter(engine)
    late.record(entry(1, refilled_at=T0 + 5000, carry=55))
    await late.flush()
    early.record(entry(2, refilled_at=T0 + 1000, carry=11))  # flushed later by another process
    await early.flush()
    async with engine.connect() as conn:
        row = (await conn.execute(select(coin_pools))).one()
    assert (row.balance_micro, datetime_to_ms(row.refilled_at), row.refill_carry) == (3, T0 + 5000, 55)
    await late.aclose()
    await early.aclose()


async def test_a_movement_after_close_is_counted_as_lost(engine: AsyncEngine) -> None:
    writer = LedgerWriter(engine)
    await writer.aclose()
    writer.record(entry(1))
    assert writer.lost == 1
