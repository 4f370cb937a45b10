"""The Redis ledger outbox: every movement is appended by the script that makes it, and drainers
move it to the database exactly once, however they overlap or die; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.audit import audit, audit_redis
from lumen.billing.bank import CoinBank
from lumen.billing.ledger import LedgerEntry
from lumen.billing.outbox import OutboxDrainer, OutboxEntry, OutboxKeys, movement_order, parse_entry
from lumen.billing.pools import HOUR_MS, PoolOverrides
from lumen.billing.redis_store import RedisPoolStore
from lumen.billing.store import START_CONTEXT, Context, Seed, beyond_hold_note
from lumen.store.tables import coin_ledger, coin_pools
from tests.billing.conftest import T0, FakeClock, MakeBank, RedisStores, _connect_redis, coins, pool
from tests.billing.support import ledger_rows, ledger_sum, pool_balance

U, V, W = "user:1", "user:2", "project:3"
PARAMS = pool(10, refresh=1, starting=5)  # below max: a refill is due whenever time passes
QUIET = 3600.0
"""A bank's own drain interval in these tests: its drainer waits, the test drains."""


@pytest.fixture
async def redis(redis_prefix: str) -> AsyncIterator[Redis]:
    client = await _connect_redis()
    yield client
    await client.aclose()


@pytest.fixture
def keys(redis_prefix: str) -> OutboxKeys:
    return OutboxKeys.under(redis_prefix)


@pytest.fixture
async def store(redis_prefix: str, redis: Redis) -> AsyncIterator[RedisPoolStore]:
    stores = RedisStores(redis_prefix)
    made = await stores.make()
    assert isinstance(made, RedisPoolStore)
    yield made
    await stores.aclose()


async def outbox(redis: Redis, keys: OutboxKeys) -> list[LedgerEntry]:
    return [parse_entry(raw) for raw in await redis.lrange(keys.entries, 0, -1)]


async def redis_balance(redis: Redis, prefix: str, principal: str) -> int:
    return int(await redis.hget(f"{prefix}{{{principal}}}:pool", "bal"))


async def history(bank: CoinBank, clock: FakeClock, principal: str = U, n: int = 1) -> None:
    """Every kind of movement: start, refill, charge, grant, set."""
    for i in range(n):
        r = await bank.reserve(
            principal, coins(2), request_id=f"{principal}-{i}", params=PARAMS, actor="key_1"
        )
        clock.advance(HOUR_MS // 10)  # a refill is due at the next movement
        await bank.settle(r, coins(1.25))
        await bank.grant(principal, coins(3), params=PARAMS, actor="cli", note="thanks")
    await bank.set_balance(principal, coins(4), params=PARAMS, actor="cli")


async def assert_explained(
    engine: AsyncEngine, redis: Redis, prefix: str, principals: tuple[str, ...]
) -> None:
    """Each live balance in Redis equals its coin_pools row and the sum of its ledger rows."""
    for p in principals:
        assert (
            await pool_balance(engine, p)
            == await ledger_sum(engine, p)
            == await redis_balance(redis, prefix, p)
        )
    assert await audit(engine) == []


async def assert_each_movement_once(engine: AsyncEngine, redis: Redis, keys: OutboxKeys) -> None:
    """The ledger holds every movement id the counter handed out, each exactly once."""
    epoch, seq = await redis.hmget(keys.meta, ["epoch", "seq"])
    async with engine.connect() as conn:
        ids = list((await conn.execute(select(coin_ledger.c.movement_id))).scalars())
    assert sorted(ids) == sorted(f"{epoch.decode()}-{i}" for i in range(1, int(seq) + 1))
    assert await redis.llen(keys.entries) == 0


def drainer(redis: Redis, engine: AsyncEngine, keys: OutboxKeys, cls: Any = OutboxDrainer, **kw: Any) -> Any:
    return cls(redis, engine, keys=keys, interval=QUIET, **kw)


# -- the outbox is written with the balance -----------------------------------------------------


async def test_every_movement_enters_the_outbox_with_its_balance_change(
    store: RedisPoolStore, redis: Redis, keys: OutboxKeys, redis_prefix: str
) -> None:
    assert await store.seed(U, Seed(coins(6), T0, 0, PoolOverrides()), opens=True)
    assert not await store.seed(U, Seed(coins(99), T0, 0, PoolOverrides()), opens=True)  # exists: no row
    [start] = await outbox(redis, keys)
    assert (start.kind, start.amount_micro, start.balance_after_micro, start.at_ms) == (
        "start",
        coins(6),
        coins(6),
        T0,
    )
    assert (start.actor, start.note, start.request_id) == (START_CONTEXT.actor, START_CONTEXT.note, None)

    now = T0 + HOUR_MS // 2  # half a coin of refill due
    admission = await store.reserve(
        U, now=now, params=PARAMS, soft=False, amount=coins(4), hold_id="h", expires_at=now + 1
    )
    assert admission.admitted
    await store.view(U, now=now, params=PARAMS)
    assert len(await outbox(redis, keys)) == 1  # reserving and viewing move no coins
    ctx = Context("req-1", "key_1")
    changes = [
        await store.settle(U, now=now, params=PARAMS, hold_id="h", cost=coins(2), ctx=ctx),
        await store.adjust(
            U, now=now, params=PARAMS, kind="grant", amount=coins(1), ctx=Context(None, "cli", "gift")
        ),
        await store.adjust(U, now=now, params=PARAMS, kind="set", amount=coins(3), ctx=Context(None, "cli")),
    ]
    # A charge beyond its hold and what the pool has: charged in full, the pool goes into debt.
    await store.reserve(
        U, now=now, params=PARAMS, soft=False, amount=coins(3), hold_id="h2", expires_at=now + 1
    )
    changes.append(await store.settle(U, now=now, params=PARAMS, hold_id="h2", cost=coins(5), ctx=ctx))
    entries = (await outbox(redis, keys))[1:]
    expected = [
        (m.kind, m.amount_micro, m.balance_after_micro, c.refilled_at, c.carry)
        for c in changes
        for m in c.movements
    ]
    assert [
        (e.kind, e.amount_micro, e.balance_after_micro, e.refilled_at_ms, e.carry) for e in entries
    ] == expected
    assert [e.kind for e in entries] == ["refill", "charge", "grant", "set", "charge"]
    refill, charge, grant, set_, debt = entries
    assert (refill.actor, refill.request_id, refill.note) == ("system", None, None)
    assert (charge.actor, charge.request_id, charge.note, charge.at_ms) == ("key_1", "req-1", None, now)
    assert (grant.actor, grant.note) == ("cli", "gift")
    assert debt.note == beyond_hold_note(None, coins(5), coins(2)) and changes[-1].beyond_hold_micro == coins(
        2
    )
    assert (debt.amount_micro, debt.balance_after_micro) == (-coins(5), -coins(2))
    # The outbox alone explains the live balance, and the ids count up in one epoch.
    every = await outbox(redis, keys)
    assert (
        sum(e.amount_micro for e in every)
        == every[-1].balance_after_micro
        == await redis_balance(redis, redis_prefix, U)
    )
    order = [movement_order(e.movement_id or "") for e in every]
    assert order == sorted(order) and len({epoch for epoch, _ in order}) == 1
    assert [seq for _, seq in order] == list(range(1, len(every) + 1))


async def test_a_pool_loaded_from_the_database_adds_no_start_row(
    store: RedisPoolStore, redis: Redis, keys: OutboxKeys
) -> None:
    assert await store.seed(U, Seed(coins(4), T0, 7, PoolOverrides()))
    assert await outbox(redis, keys) == []


async def test_no_balance_changes_if_its_movement_cannot_be_appended(
    store: RedisPoolStore, redis: Redis, keys: OutboxKeys, redis_prefix: str
) -> None:
    await store.seed(U, Seed(coins(10), T0, 0, PoolOverrides()), opens=True)
    await redis.delete(keys.entries)
    await redis.set(keys.entries, "not a list")  # RPUSH fails inside the script
    with pytest.raises(ResponseError):
        await store.adjust(U, now=T0, params=PARAMS, kind="grant", amount=coins(1))
    assert await redis_balance(redis, redis_prefix, U) == coins(10)
    await redis.delete(keys.entries)
    await store.adjust(U, now=T0, params=PARAMS, kind="grant", amount=coins(1))
    assert await redis_balance(redis, redis_prefix, U) == coins(11)
    assert [e.amount_micro for e in await outbox(redis, keys)] == [coins(1)]


# -- draining --------------------------------------------------------------------------------------


async def test_a_drain_writes_the_outbox_and_removes_it(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
) -> None:
    bank = await make_redis_bank(flush_interval=QUIET)
    await history(bank, clock)
    made = await outbox(redis, keys)
    assert len(made) == 5 and await ledger_rows(engine, U) == []  # nothing written yet
    d = drainer(redis, engine, keys)
    assert await d.drain_batch() == 5
    assert await d.drain_batch() == 0
    rows = await ledger_rows(engine, U)
    assert [
        (r["movement_id"], r["kind"], r["amount_micro"], r["request_id"], r["actor"], r["note"]) for r in rows
    ] == [(e.movement_id, e.kind, e.amount_micro, e.request_id, e.actor, e.note) for e in made]
    assert (d.written, d.duplicates, d.trims_skipped) == (5, 0, 0)
    await assert_explained(engine, redis, redis_prefix, (U,))
    await assert_each_movement_once(engine, redis, keys)


class GatedDrainer(OutboxDrainer):
    """Holds its write until `release` is set: the test acts while its batch is in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def _write(self, entries: list[OutboxEntry]) -> tuple[int, int]:
        self.entered.set()
        await self.release.wait()
        return await super()._write(entries)


async def _until_lock_expired(redis: Redis, keys: OutboxKeys) -> None:
    async with asyncio.timeout(30):  # a guard against a hang, not a measurement
        while await redis.exists(keys.lock):
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("first_to_finish", ["late", "early"])
async def test_a_drainer_whose_lock_expired_overlaps_without_duplicates(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
    first_to_finish: str,
) -> None:
    bank = await make_redis_bank(flush_interval=QUIET)
    await history(bank, clock)  # 5 movements
    slow = drainer(redis, engine, keys, GatedDrainer, lock_ttl=0.05)
    slow_batch = asyncio.create_task(slow.drain_batch())
    await slow.entered.wait()
    await _until_lock_expired(redis, keys)  # the slow drainer's lock is gone mid-write
    await bank.grant(U, coins(1), params=PARAMS)  # a 6th movement, after the slow one's peek
    if first_to_finish == "late":
        # The next drainer writes and trims everything; the slow one then inserts nothing and,
        # finding another head, trims nothing.
        fast = drainer(redis, engine, keys)
        assert await fast.drain_batch() == 6
        slow.release.set()
        assert await slow_batch == 5
        assert (fast.written, slow.written, slow.duplicates, slow.trims_skipped) == (6, 0, 5, 1)
    else:
        # Both peeked; the slow one commits and trims its 5 first. The other inserts only the 6th,
        # cannot trim (its first entry is gone), and the 6th is trimmed by the drain after.
        other = drainer(redis, engine, keys, GatedDrainer)
        other_batch = asyncio.create_task(other.drain_batch())
        await other.entered.wait()
        slow.release.set()
        assert await slow_batch == 5
        assert await redis.llen(keys.entries) == 1
        other.release.set()
        assert await other_batch == 6
        assert (slow.written, other.written, other.duplicates, other.trims_skipped) == (5, 1, 5, 1)
        assert await redis.llen(keys.entries) == 1  # already in the ledger, still in the outbox
        last = drainer(redis, engine, keys)
        assert await last.drain_batch() == 1
        assert (last.written, last.duplicates) == (0, 1)
    await assert_explained(engine, redis, redis_prefix, (U,))
    await assert_each_movement_once(engine, redis, keys)


async def test_a_drainer_that_dies_after_its_commit_leaves_nothing_duplicated(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
) -> None:
    class DiesBeforeTrim(OutboxDrainer):
        async def _trim(self, first: Any, count: int, token: str) -> bool:
            raise ConnectionError("SIGKILL between the commit and the trim")

    bank = await make_redis_bank(flush_interval=QUIET)
    await history(bank, clock, n=3)
    made = await redis.llen(keys.entries)
    dead = drainer(redis, engine, keys, DiesBeforeTrim, lock_ttl=0.05)
    with pytest.raises(ConnectionError):
        await dead.drain_batch()
    assert len(await ledger_rows(engine, U)) == made  # committed...
    assert await redis.llen(keys.entries) == made  # ...and still in the outbox, its lock still held
    survivor = drainer(redis, engine, keys)
    await survivor.flush()  # waits for the dead drainer's lock to expire
    assert (survivor.written, survivor.duplicates) == (0, made)
    assert len(await ledger_rows(engine, U)) == made
    await assert_explained(engine, redis, redis_prefix, (U,))
    await assert_each_movement_once(engine, redis, keys)


class OutlivesItsLock(OutboxDrainer):
    """Writes only after its lock has expired, so the other drainers overlap with it."""

    async def _write(self, entries: list[OutboxEntry]) -> tuple[int, int]:
        await asyncio.sleep(0.003)  # longer than the 1 ms lock: a slow database
        return await super()._write(entries)


async def test_concurrent_drainers_never_duplicate_or_lose_a_movement(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
) -> None:
    banks = [await make_redis_bank(flush_interval=QUIET) for _ in range(3)]
    drainers = [drainer(redis, engine, keys, OutlivesItsLock, lock_ttl=0.001, batch_size=7) for _ in range(4)]
    producing = True

    async def drain(d: OutboxDrainer) -> None:
        while producing or await d.length():
            await d.drain_batch()
            await asyncio.sleep(0)

    async def produce(i: int) -> None:
        bank, principal = banks[i % 3], (U, V, W)[i % 3]
        for j in range(6):
            r = await bank.reserve(principal, coins(0.25), request_id=f"r{i}-{j}", params=PARAMS)
            await asyncio.sleep(0)
            await bank.settle(r, coins(0.125))
            if j % 3 == 0:
                await bank.grant(principal, coins(0.5), params=PARAMS)
                clock.advance(60_000)

    draining = [asyncio.create_task(drain(d)) for d in drainers]
    await asyncio.gather(*(produce(i) for i in range(12)))
    producing = False
    await asyncio.gather(*draining)
    assert sum(d.duplicates + d.trims_skipped for d in drainers) > 0, "the drainers never overlapped"
    await assert_explained(engine, redis, redis_prefix, (U, V, W))
    await assert_each_movement_once(engine, redis, keys)
    async with engine.connect() as conn:
        charges = list(
            (
                await conn.execute(select(coin_ledger.c.request_id).where(coin_ledger.c.kind == "charge"))
            ).scalars()
        )
    assert sorted(charges) == sorted(f"r{i}-{j}" for i in range(12) for j in range(6))


async def test_movement_ids_stay_unique_after_redis_loses_its_data(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
) -> None:
    bank = await make_redis_bank(flush_interval=QUIET)
    await history(bank, clock)
    await bank.flush()
    before = len(await ledger_rows(engine, U))
    async for key in redis.scan_iter(match=redis_prefix + "*"):  # Redis restarts empty
        await redis.delete(key)
    # A new process: the pool is loaded from the database, the counter starts again at 1.
    bank = await make_redis_bank(flush_interval=QUIET)
    await history(bank, clock)
    await bank.flush()
    rows = await ledger_rows(engine, U)
    assert len(rows) == before + 4  # no new start row; the rest all written, none mistaken for an old one
    assert len({movement_order(r["movement_id"])[0] for r in rows}) == 2
    await assert_explained(engine, redis, redis_prefix, (U,))


async def test_an_unreadable_entry_is_set_aside_and_the_rest_written(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
) -> None:
    bank = await make_redis_bank(flush_interval=QUIET)
    await history(bank, clock)
    await redis.rpush(keys.entries, b'["not", "a movement"]')
    await bank.grant(U, coins(1), params=PARAMS)
    d = drainer(redis, engine, keys)
    await d.flush()
    assert d.rejected == 1 and d.written == 6
    assert await redis.lrange(keys.rejected, 0, -1) == [b'["not", "a movement"]']
    await assert_explained(engine, redis, redis_prefix, (U,))


async def test_bank_flush_and_close_drain_every_process_movements(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
) -> None:
    one, two = await make_redis_bank(flush_interval=QUIET), await make_redis_bank(flush_interval=QUIET)
    await history(one, clock, principal=U)
    await history(two, clock, principal=V)
    await one.flush()  # also what the other bank made
    await assert_explained(engine, redis, redis_prefix, (U, V))
    await two.grant(V, coins(1), params=PARAMS)
    await two.aclose()
    await assert_explained(engine, redis, redis_prefix, (U, V))
    await assert_each_movement_once(engine, redis, keys)


async def test_closing_waits_for_another_drainers_batch_then_drains(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
) -> None:
    bank = await make_redis_bank(flush_interval=QUIET)
    await history(bank, clock)
    other = drainer(redis, engine, keys, GatedDrainer)
    other_batch = asyncio.create_task(other.drain_batch())
    await other.entered.wait()  # holds the lock, mid-write
    await bank.grant(U, coins(1), params=PARAMS)  # after the other drainer's peek
    closing = asyncio.create_task(bank.aclose())
    await asyncio.sleep(0.1)
    assert not closing.done()  # a shutdown does not give up while another process drains
    other.release.set()
    await other_batch
    await closing
    await assert_explained(engine, redis, redis_prefix, (U,))
    await assert_each_movement_once(engine, redis, keys)


# -- the audit of Redis against the database -------------------------------------------------------


async def test_the_redis_audit_counts_the_outbox_and_finds_a_lost_movement(
    make_redis_bank: MakeBank,
    engine: AsyncEngine,
    redis: Redis,
    keys: OutboxKeys,
    redis_prefix: str,
    clock: FakeClock,
) -> None:
    bank = await make_redis_bank(flush_interval=QUIET)
    await history(bank, clock, principal=U)
    await history(bank, clock, principal=V)
    await drainer(redis, engine, keys).drain_batch()
    await bank.grant(V, coins(2), params=PARAMS)  # still in the outbox (V's refill is up to date)
    live = await audit_redis(engine, redis, prefix=redis_prefix)
    assert (live.pools, live.outbox, live.discrepancies) == (2, 1, [])

    # A movement applied in Redis that never reaches the ledger: what a crash did before the outbox.
    await redis.lpop(keys.entries)
    [found] = (await audit_redis(engine, redis, prefix=redis_prefix)).discrepancies
    assert (found.principal, found.difference_micro, found.outbox_micro) == (V, coins(2), 0)
    assert "user:2" in str(found)

    # A database changed behind Lumen's back.
    async with engine.begin() as conn:
        await conn.execute(
            update(coin_pools)
            .where(coin_pools.c.principal == U)
            .values(balance_micro=coin_pools.c.balance_micro + 5)
        )
    found = (await audit_redis(engine, redis, prefix=redis_prefix)).discrepancies
    assert [(d.principal, d.difference_micro) for d in found] == [(U, -5), (V, coins(2))]
