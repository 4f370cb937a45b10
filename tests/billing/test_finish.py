"""`CoinBank.finish`: a request's charges and its usage record, made durable together; on the
memory and the Redis store, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.audit import audit, audit_redis
from lumen.billing.bank import CoinBank
from lumen.billing.outbox import OutboxDrainer, OutboxKeys
from lumen.billing.pools import PoolParams
from lumen.errors import InsufficientQuota
from lumen.store.tables import usage_records
from lumen.usage.recorder import UsageRecord, UsageRecorder
from tests.billing.conftest import MakeBank, _connect_redis, coins, pool
from tests.billing.support import ledger_rows, ledger_sum, pool_balance

U = "user:1"
KEY = "key:7"
CAP = PoolParams("limited", coins(5), 0, coins(5))
QUIET = 3600.0
"""A drain interval long enough that only the test drains."""


def usage(cost: int, request_id: str = "req-1", **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "created_at": datetime(2027, 1, 15, 8, 0, tzinfo=UTC),
        "principal": U,
        "key_id": "7",
        "model": "echo",
        "source": "api",
        "operation": "chat.completions",
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "cost_micro": cost,
        "latency_ms": 12.5,
        "status": 200,
    }
    return UsageRecord(**(fields | overrides))


@pytest.fixture
async def recorder(engine: AsyncEngine) -> AsyncIterator[UsageRecorder]:
    """A recorder that writes only when the test says so (`flush`)."""
    made = UsageRecorder(engine)
    yield made
    await made.aclose()


async def usage_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(usage_records).order_by(usage_records.c.id))
        return [dict(row._mapping) for row in rows]


async def reserve_both(bank: CoinBank, amount: int, request_id: str = "req-1") -> list[Any]:
    params = pool(10)
    cause = "chat.completions echo"
    owner = await bank.reserve(U, amount, request_id=request_id, params=params, actor="key:7", cause=cause)
    key = await bank.reserve(KEY, amount, request_id=request_id, params=CAP, actor=U, cause=cause)
    return [owner, key]


async def test_finish_charges_every_pool_and_stores_the_record_once(
    make_bank: MakeBank, engine: AsyncEngine, recorder: UsageRecorder
) -> None:
    bank = await make_bank(recorder=recorder)
    reservations = await reserve_both(bank, coins(3))
    record = usage(coins(2))
    settlement = await bank.finish(reservations, record)
    assert (settlement.charged_micro, settlement.balance_micro) == (coins(2), coins(8))
    assert (await bank.balance(KEY, params=CAP)).balance_micro == coins(3)
    assert bank.live_reservations == 0
    await bank.finish(reservations, record)  # a second finish charges nothing more
    await bank.flush()
    await recorder.flush()
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == coins(8)
    assert await pool_balance(engine, KEY) == await ledger_sum(engine, KEY) == coins(3)
    owner_charge = (await ledger_rows(engine, U))[-1]
    key_charge = (await ledger_rows(engine, KEY))[-1]
    assert (owner_charge["kind"], owner_charge["actor"], owner_charge["request_id"]) == (
        "charge",
        "key:7",
        "req-1",
    )
    assert owner_charge["note"] == key_charge["note"] == "chat.completions echo"
    assert key_charge["actor"] == U
    [row] = await usage_rows(engine)
    assert (row["record_id"], row["cost_micro"], row["request_id"]) == (record.record_id, coins(2), "req-1")


async def test_finish_charges_a_cost_beyond_the_hold_as_debt(
    make_bank: MakeBank, engine: AsyncEngine, recorder: UsageRecorder
) -> None:
    bank = await make_bank(recorder=recorder)
    owner = await bank.reserve(U, coins(1), request_id="a", params=pool(10, starting=1), cause="x")
    settlement = await bank.finish([owner], usage(coins(3), "a"))
    assert (settlement.charged_micro, settlement.beyond_hold_micro, settlement.owed_micro) == (
        coins(3),
        coins(2),
        coins(2),
    )
    with pytest.raises(InsufficientQuota, match="owes 2 coins"):
        await bank.reserve(U, 1, request_id="b", params=pool(10, starting=1))
    await bank.flush()
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == -coins(2)
    assert await audit(engine) == []


async def test_a_refused_or_free_request_still_has_its_record(
    make_bank: MakeBank, engine: AsyncEngine, recorder: UsageRecorder
) -> None:
    bank = await make_bank(recorder=recorder)
    refused = usage(0, "refused", status=429, error_code="insufficient_quota")
    assert (await bank.finish([], refused)).balance_micro is None
    free = await bank.reserve(U, 0, request_id="free", params=pool(10))
    await bank.finish([free], usage(0, "free"))
    await bank.flush()
    await recorder.flush()
    assert sorted(row["request_id"] for row in await usage_rows(engine)) == ["free", "refused"]
    assert [row["kind"] for row in await ledger_rows(engine, U)] == ["start"]


async def test_finish_without_a_recorder_refuses_before_charging(make_bank: MakeBank) -> None:
    bank = await make_bank()
    r = await bank.reserve(U, coins(1), request_id="a", params=pool(10))
    with pytest.raises(RuntimeError, match="recorder"):
        await bank.finish([], usage(0))
    if not bank._store.journals:
        with pytest.raises(RuntimeError, match="recorder"):
            await bank.finish([r], usage(coins(1)))
        assert not r.done
    await bank.settle(r, coins(1))


async def test_a_cancelled_caller_does_not_stop_the_finish(
    make_bank: MakeBank, engine: AsyncEngine, recorder: UsageRecorder
) -> None:
    bank = await make_bank(recorder=recorder)
    reservations = await reserve_both(bank, coins(3))
    task = asyncio.create_task(bank.finish(reservations, usage(coins(2))))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await bank.aclose()  # waits for the finish under way
    await recorder.flush()
    assert await pool_balance(engine, U) == coins(8)
    assert await pool_balance(engine, KEY) == coins(3)
    assert len(await usage_rows(engine)) == 1


async def test_graceful_shutdown_without_redis_loses_no_record(
    engine: AsyncEngine, make_bank: MakeBank, recorder: UsageRecorder
) -> None:
    bank = await make_bank(recorder=recorder, flush_interval=QUIET)
    await recorder.start()
    for i in range(5):
        [owner, key] = await reserve_both(bank, coins(1), f"r{i}")
        await bank.finish([owner, key], usage(coins(1), f"r{i}"))
    await bank.aclose()
    await recorder.aclose()
    assert len(await usage_rows(engine)) == 5
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == coins(5)


# -- with Redis: the record travels in the outbox with its charge ---------------------------------


@pytest.fixture
async def redis(redis_prefix: str) -> AsyncIterator[Redis]:
    client = await _connect_redis()
    yield client
    await client.aclose()


async def test_with_redis_a_killed_process_loses_neither_charge_nor_record(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    redis_prefix: str,
    recorder: UsageRecorder,
) -> None:
    # The process's own recorder is never flushed and its drainer never runs: all it did is in Redis.
    doomed = await make_redis_bank(recorder=recorder, flush_interval=QUIET)
    records = []
    for i in range(3):
        reservations = await reserve_both(doomed, coins(1), f"r{i}")  # each costs 2: beyond its hold
        records.append(usage(coins(2), f"r{i}"))
        await doomed.finish(reservations, records[-1])
    unlimited = await doomed.reserve("user:9", coins(1), request_id="u", params=pool(1, state="unlimited"))
    records.append(usage(coins(1), "u", principal="user:9"))
    await doomed.finish([unlimited], records[-1])
    assert recorder.pending == 0  # nothing waited in the process
    keys = OutboxKeys.under(redis_prefix)
    entries = await redis.lrange(keys.entries, 0, -1)
    checked = await audit_redis(engine, redis, prefix=redis_prefix)
    assert checked.discrepancies == [] and checked.outbox == len(entries) - len(records)

    # Another process drains; then the same entries are drained again (at-least-once).
    survivor = OutboxDrainer(redis, engine, keys=keys, interval=QUIET)
    await survivor.flush()
    await redis.rpush(keys.entries, *entries)
    again = OutboxDrainer(redis, engine, keys=keys, interval=QUIET)
    await again.flush()
    assert (survivor.usage_written, again.usage_written, again.written) == (4, 0, 0)
    assert again.duplicates == len(entries)

    rows = await usage_rows(engine)
    assert sorted(r["record_id"] for r in rows) == sorted(r.record_id for r in records)
    charges = [r for r in await ledger_rows(engine, U) if r["kind"] == "charge"]
    assert [c["request_id"] for c in charges] == ["r0", "r1", "r2"]
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == coins(4)
    assert await pool_balance(engine, KEY) == await ledger_sum(engine, KEY) == -coins(1)
    assert await audit(engine) == []


async def test_with_redis_a_record_the_database_refuses_does_not_block_the_outbox(
    make_redis_bank: MakeBank, engine: AsyncEngine, redis_prefix: str, redis: Redis, recorder: UsageRecorder
) -> None:
    bank = await make_redis_bank(recorder=recorder, flush_interval=QUIET)
    r = await bank.reserve(U, coins(1), request_id="big", params=pool(10))
    # Beyond PostgreSQL's integer column; SQLite stores it.
    await bank.finish([r], usage(coins(1), "big", prompt_tokens=2**40))
    drainer = OutboxDrainer(redis, engine, keys=OutboxKeys.under(redis_prefix), interval=QUIET)
    await drainer.flush()
    assert await redis.llen(OutboxKeys.under(redis_prefix).entries) == 0
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == coins(9)
    refused = engine.dialect.name == "postgresql"
    assert (drainer.usage_rejected, drainer.usage_written) == (int(refused), int(not refused))
    assert len(await usage_rows(engine)) == int(not refused)


async def test_with_redis_a_failed_charge_hands_the_record_to_the_recorder(
    make_redis_bank: MakeBank, engine: AsyncEngine, recorder: UsageRecorder
) -> None:
    bank = await make_redis_bank(recorder=recorder)
    r = await bank.reserve(U, coins(1), request_id="a", params=pool(10))

    async def redis_down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Redis is down")

    bank._store.settle = redis_down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await bank.finish([r], usage(coins(1), "a"))
    assert recorder.pending == 1
