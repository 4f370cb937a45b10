"""Reservation semantics, on the memory and the Redis store, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.memory import MemoryPoolStore
from lumen.billing.pools import HOUR_MS, MICRO, PoolOverrides, PoolParams
from lumen.errors import InsufficientQuota
from tests.billing.conftest import FakeClock, MakeBank, coins, pool
from tests.billing.support import ledger_rows, ledger_sum, pool_balance

U = "user:1"


async def test_a_new_pool_starts_with_its_starting_balance(make_bank: MakeBank, engine: AsyncEngine) -> None:
    bank = await make_bank()
    view = await bank.balance(U, params=pool(10, starting=4))
    assert (view.balance_micro, view.reserved_micro, view.available_micro) == (coins(4), 0, coins(4))
    await bank.flush()
    rows = await ledger_rows(engine, U)
    assert [(r["kind"], r["amount_micro"], r["balance_after_micro"]) for r in rows] == [
        ("start", coins(4), coins(4))
    ]
    assert await pool_balance(engine, U) == coins(4)


async def test_reserve_holds_and_settle_charges_the_real_cost(
    make_bank: MakeBank, engine: AsyncEngine
) -> None:
    bank = await make_bank()
    params = pool(10)
    r = await bank.reserve(U, coins(3), request_id="req-1", params=params, actor="key_1")
    view = await bank.balance(U, params=params)
    assert (view.balance_micro, view.reserved_micro, view.available_micro) == (coins(10), coins(3), coins(7))
    settlement = await bank.settle(r, coins(1))
    assert (settlement.charged_micro, settlement.balance_micro, settlement.beyond_hold_micro) == (
        coins(1),
        coins(9),
        0,
    )
    view = await bank.balance(U, params=params)
    assert (view.balance_micro, view.reserved_micro) == (coins(9), 0)
    await bank.flush()
    charge = (await ledger_rows(engine, U))[-1]
    assert (charge["kind"], charge["amount_micro"], charge["balance_after_micro"]) == (
        "charge",
        -coins(1),
        coins(9),
    )
    assert (charge["request_id"], charge["actor"]) == ("req-1", "key_1")
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == coins(9)


async def test_hard_mode_refuses_what_the_pool_cannot_pay(make_bank: MakeBank, clock: FakeClock) -> None:
    bank = await make_bank()
    params = pool(10, refresh=1, starting=2)
    await bank.reserve(U, coins(1.5), request_id="a", params=params)
    with pytest.raises(InsufficientQuota) as info:
        await bank.reserve(U, coins(1), request_id="b", params=params)
    error = info.value
    assert (error.status, error.type, error.code) == (429, "insufficient_quota", "insufficient_quota")
    assert error.headers["x-should-retry"] == "false"
    assert "may cost up to 1 coins" in error.message and "0.5 are available" in error.message
    assert "in 30 minutes" in error.message  # 0.5 coins at 1 coin per hour
    # The refused request held nothing: exactly the rest of the pool can still be reserved.
    await bank.reserve(U, coins(0.5), request_id="c", params=params)


async def test_a_request_larger_than_the_pool_says_so(make_bank: MakeBank) -> None:
    bank = await make_bank()
    with pytest.raises(InsufficientQuota, match="more than your pool can hold"):
        await bank.reserve(U, coins(11), request_id="a", params=pool(10, refresh=1))
    with pytest.raises(InsufficientQuota, match="not refilled automatically"):
        await bank.reserve(U, coins(11), request_id="a", params=pool(10, refresh=0))


async def test_a_cost_beyond_the_hold_is_charged_in_full_as_a_debt(
    make_bank: MakeBank, engine: AsyncEngine, clock: FakeClock
) -> None:
    bank = await make_bank()
    params = pool(10, refresh=6)  # 0.1 coin a minute
    first = await bank.reserve(U, coins(6), request_id="a", params=params, cause="chat.completions m")
    second = await bank.reserve(U, coins(4), request_id="b", params=params)
    # Each request costs more than it held (the prompt estimate fell short): nothing is forgiven.
    s1 = await bank.settle(first, coins(8))
    assert (s1.charged_micro, s1.beyond_hold_micro, s1.balance_micro, s1.owed_micro) == (
        coins(8),
        coins(2),
        coins(2),
        0,
    )
    s2 = await bank.settle(second, coins(5))
    assert (s2.charged_micro, s2.beyond_hold_micro, s2.balance_micro, s2.owed_micro) == (
        coins(5),
        coins(1),
        -coins(3),
        coins(3),
    )
    assert (await bank.balance(U, params=params)).balance_micro == -coins(3)
    await bank.flush()
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == -coins(3)
    notes = [row["note"] for row in await ledger_rows(engine, U) if row["kind"] == "charge"]
    assert notes == [
        "chat.completions m; cost 8000000, 2000000 beyond the hold, owed as debt if the pool is short "
        "(micro-coins)",
        "cost 5000000, 1000000 beyond the hold, owed as debt if the pool is short (micro-coins)",
    ]


async def test_a_pool_in_debt_admits_nothing_priced_until_refills_paid_it(
    make_bank: MakeBank, clock: FakeClock
) -> None:
    bank = await make_bank()
    params = pool(10, refresh=6, starting=1)  # 0.1 coin a minute
    r = await bank.reserve(U, coins(1), request_id="a", params=params)
    await bank.settle(r, coins(4))  # 3 coins owed
    for amount, minimum in ((coins(1), None), (1, None), (coins(1), 0), (coins(1), 1)):
        with pytest.raises(InsufficientQuota) as info:
            await bank.reserve(U, amount, request_id="b", params=params, minimum_micro=minimum)
    assert "owes 3 coins" in info.value.message
    assert "It is paid at 2027-01-15T08:30:00Z (in 30 minutes)" in info.value.message
    # retry-after: when the last request (1 coin, with a floor of 1 micro-coin) fits: debt + 1 coin.
    assert info.value.headers["retry-after"] == str(40 * 60)
    free = await bank.reserve(U, 0, request_id="free", params=params)  # free models still run
    await bank.settle(free, 0)
    clock.advance(30 * 60_000)  # the refill has paid the debt: nothing available yet
    assert (await bank.balance(U, params=params)).balance_micro == 0
    with pytest.raises(InsufficientQuota):
        await bank.reserve(U, 1, request_id="c", params=params)
    clock.advance(10 * 60_000)
    r = await bank.reserve(U, coins(1), request_id="d", params=params)
    assert r.amount_micro == coins(1)


async def test_the_soft_mode_also_refuses_a_pool_in_debt(make_bank: MakeBank) -> None:
    bank = await make_bank(mode="soft")
    params = pool(10, refresh=1, starting=1)
    r = await bank.reserve(U, coins(1), request_id="a", params=params)
    await bank.settle(r, coins(2))
    with pytest.raises(InsufficientQuota, match="owes 1 coins"):
        await bank.reserve(U, 1, request_id="b", params=params)


async def test_a_floor_reservation_holds_what_the_pool_has(make_bank: MakeBank) -> None:
    bank = await make_bank()
    params = pool(10)
    other = await bank.reserve(U, coins(7), request_id="other", params=params)
    r = await bank.reserve(U, coins(5), request_id="a", params=params, minimum_micro=coins(2))
    assert r.amount_micro == coins(3)  # what was available, not what was asked
    view = await bank.balance(U, params=params)
    assert (view.reserved_micro, view.available_micro) == (coins(10), 0)
    with pytest.raises(InsufficientQuota):  # nothing left: a floor of 0 admits nothing priced
        await bank.reserve(U, coins(5), request_id="b", params=params, minimum_micro=0)
    await bank.release(other)
    with pytest.raises(InsufficientQuota):  # 7 available, the floor asks for more
        await bank.reserve(U, coins(9), request_id="c", params=params, minimum_micro=coins(8))
    full = await bank.reserve(U, coins(6), request_id="d", params=params, minimum_micro=coins(1))
    assert full.amount_micro == coins(6)  # enough for the whole amount: the amount
    with pytest.raises(ValueError):
        await bank.reserve(U, coins(1), request_id="e", params=params, minimum_micro=coins(2))


async def test_the_soft_mode_holds_the_amount_whatever_the_floor(make_bank: MakeBank) -> None:
    bank = await make_bank(mode="soft")
    params = pool(10, starting=1)
    r = await bank.reserve(U, coins(5), request_id="a", params=params, minimum_micro=coins(1))
    assert r.amount_micro == coins(5)


async def test_soft_mode_admits_while_positive_and_may_go_negative(
    make_bank: MakeBank, engine: AsyncEngine
) -> None:
    bank = await make_bank(mode="soft")
    params = pool(10, starting=1)
    r = await bank.reserve(U, coins(5), request_id="a", params=params)  # more than the balance
    settlement = await bank.settle(r, coins(3))
    assert (settlement.charged_micro, settlement.balance_micro) == (coins(3), -coins(2))
    with pytest.raises(InsufficientQuota, match="admitted while it is above zero"):
        await bank.reserve(U, coins(1), request_id="b", params=params)
    await bank.flush()
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == -coins(2)


async def test_free_requests_run_on_an_empty_pool(make_bank: MakeBank) -> None:  # also in debt: above
    bank = await make_bank()
    params = pool(10, starting=0)
    r = await bank.reserve(U, 0, request_id="a", params=params)
    assert (await bank.settle(r, 0)).charged_micro == 0


async def test_blocked_and_unlimited_pools(make_bank: MakeBank) -> None:
    bank = await make_bank()
    with pytest.raises(InsufficientQuota, match="blocked"):
        await bank.reserve(U, 0, request_id="a", params=pool(10, state="blocked"))
    unlimited = pool(1, state="unlimited")
    rs = [await bank.reserve("user:2", coins(1000), request_id=f"r{i}", params=unlimited) for i in range(3)]
    for r in rs:
        assert (await bank.settle(r, coins(500))).charged_micro == 0
    view = await bank.balance("user:2", params=unlimited)
    assert (view.balance_micro, view.reserved_micro) == (coins(1), 0)


async def test_release_gives_the_hold_back(make_bank: MakeBank) -> None:
    bank = await make_bank()
    params = pool(10)
    r = await bank.reserve(U, coins(10), request_id="a", params=params)
    await bank.release(r)
    await bank.release(r)  # twice is harmless
    assert (await bank.balance(U, params=params)).available_micro == coins(10)


async def test_settling_twice_charges_once(make_bank: MakeBank) -> None:
    bank = await make_bank()
    params = pool(10)
    r = await bank.reserve(U, coins(2), request_id="a", params=params)
    await bank.settle(r, coins(2))
    await bank.settle(r, coins(2))
    assert (await bank.balance(U, params=params)).balance_micro == coins(8)


async def test_expired_reservations_are_released(make_bank: MakeBank, clock: FakeClock) -> None:
    crashed = await make_bank(reservation_ttl=60)
    params = pool(10)
    await crashed.reserve(U, coins(10), request_id="lost", params=params)  # never settled
    survivor = await make_bank(reservation_ttl=60, store=crashed._store)
    with pytest.raises(InsufficientQuota):
        await survivor.reserve(U, coins(1), request_id="a", params=params)
    clock.advance(60_000)
    r = await survivor.reserve(U, coins(10), request_id="b", params=params)
    assert (await survivor.balance(U, params=params)).reserved_micro == coins(10)
    await survivor.release(r)


async def test_a_late_settle_still_charges_what_was_used(make_bank: MakeBank, clock: FakeClock) -> None:
    bank = await make_bank(reservation_ttl=60)
    params = pool(10)
    r = await bank.reserve(U, coins(4), request_id="long", params=params)
    clock.advance(120_000)  # the hold expired
    settlement = await bank.settle(r, coins(3))
    assert (settlement.charged_micro, settlement.balance_micro) == (coins(3), coins(7))


async def test_renew_keeps_a_long_request_held(make_bank: MakeBank, clock: FakeClock) -> None:
    bank = await make_bank(reservation_ttl=60)
    params = pool(10)
    r = await bank.reserve(U, coins(4), request_id="long", params=params)
    clock.advance(50_000)
    assert await bank.renew(r)
    clock.advance(50_000)
    assert (await bank.balance(U, params=params)).reserved_micro == coins(4)
    clock.advance(60_000)
    assert not await bank.renew(r)


async def test_refill_over_simulated_time(make_bank: MakeBank, clock: FakeClock, engine: AsyncEngine) -> None:
    bank = await make_bank()
    params = pool(10, refresh=2, starting=0)  # 2 coins per hour, continuously
    clock.advance(HOUR_MS // 4)
    assert (await bank.balance(U, params=params)).balance_micro == 0  # the clock starts at first use
    clock.advance(HOUR_MS // 4)
    assert (await bank.balance(U, params=params)).balance_micro == coins(0.5)
    r = await bank.reserve(U, coins(0.5), request_id="a", params=params)
    await bank.settle(r, coins(0.5))  # refill materialised, then charged
    clock.advance(HOUR_MS)
    assert (await bank.balance(U, params=params)).balance_micro == coins(2)
    clock.advance(100 * HOUR_MS)
    assert (await bank.balance(U, params=params)).balance_micro == coins(10)  # never above max
    for i in range(1000):  # many small steps, each one a movement: still exact
        clock.advance(7)
        r = await bank.reserve(U, 1, request_id=f"s{i}", params=params)
        await bank.settle(r, 1)
    await bank.flush()
    expected = (await bank.balance(U, params=params)).balance_micro
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == expected
    kinds = {row["kind"] for row in await ledger_rows(engine, U)}
    assert {"start", "refill", "charge"} <= kinds


async def test_administrative_movements(make_bank: MakeBank, engine: AsyncEngine) -> None:
    bank = await make_bank()
    params = pool(10, starting=5)
    assert await bank.grant(U, coins(20), params=params, actor="user:9", note="conference") == coins(25)
    assert await bank.refund(U, coins(1), params=params, request_id="req-7") == coins(26)
    assert await bank.set_balance(U, coins(3), params=params, actor="user:9") == coins(3)
    assert await bank.reset(U, params=params, actor="user:9") == coins(5)
    await bank.flush()
    rows = await ledger_rows(engine, U)
    assert [(r["kind"], r["amount_micro"]) for r in rows] == [
        ("start", coins(5)),
        ("grant", coins(20)),
        ("refund", coins(1)),
        ("set", -coins(23)),
        ("reset", coins(2)),
    ]
    assert rows[1]["actor"] == "user:9" and rows[1]["note"] == "conference"
    assert rows[2]["request_id"] == "req-7"
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == coins(5)
    with pytest.raises(ValueError):
        await bank.grant(U, 0, params=params)
    with pytest.raises(TypeError):
        await bank.grant(U, 1.5, params=params)  # type: ignore[arg-type]


async def test_own_pool_settings_override_and_persist(make_bank: MakeBank, engine: AsyncEngine) -> None:
    bank = await make_bank()
    inherited = pool(10, refresh=1)
    view = await bank.set_pool_settings(
        U, PoolOverrides(max_micro=coins(50), starting_micro=coins(40)), params=inherited
    )
    # Set before first use: the pool opens with the entity's own starting balance.
    assert (view.balance_micro, view.params.max_micro, view.params.refresh_micro) == (
        coins(40),
        coins(50),
        coins(1),
    )
    await bank.set_pool_settings(U, PoolOverrides(state="blocked"), params=inherited)
    with pytest.raises(InsufficientQuota, match="blocked"):
        await bank.reserve(U, 0, request_id="a", params=inherited)
    await bank.flush()
    # A new process (a fresh memory store; for Redis, a cache that lost its data) loads it all.
    other = await make_bank(store=MemoryPoolStore())
    view = await other.balance(U, params=inherited)
    assert view.overrides == PoolOverrides(state="blocked")
    assert view.balance_micro == coins(40)


async def test_state_is_reloaded_from_the_database(make_bank: MakeBank, clock: FakeClock) -> None:
    bank = await make_bank()
    params = pool(10, refresh=1, starting=0)
    clock.advance(HOUR_MS // 3)  # some refill, with a remainder
    await bank.grant(U, 7, params=params)
    clock.advance(1234)
    before = await bank.balance(U, params=params)
    await bank.aclose()
    again = await make_bank(store=MemoryPoolStore())
    after = await again.balance(U, params=params)
    assert (after.balance_micro, after.carry, after.refilled_at) == (
        before.balance_micro,
        before.carry,
        before.refilled_at,
    )


async def test_a_cancelled_reservation_gives_its_hold_back(make_bank: MakeBank) -> None:
    bank = await make_bank()
    params = pool(10)
    await bank.balance(U, params=params)
    task = asyncio.create_task(bank.reserve(U, coins(10), request_id="a", params=params))
    await asyncio.sleep(0)
    task.cancel()
    try:
        reservation = await task
    except asyncio.CancelledError:
        reservation = None
    if reservation is not None:
        # The memory store reserves without suspending, so the reservation was complete before
        # the cancel arrived: it is the caller's, and the caller gives it back.
        await bank.release(reservation)
    for _ in range(50):
        if (await bank.balance(U, params=params)).reserved_micro == 0:
            break
        await asyncio.sleep(0.01)
    assert (await bank.balance(U, params=params)).available_micro == coins(10)


async def test_refill_ledger_rows_explain_the_balance_exactly(
    make_bank: MakeBank, clock: FakeClock, engine: AsyncEngine
) -> None:
    bank = await make_bank()
    params = PoolParams("limited", coins(100), MICRO + 7, 0)  # an awkward rate
    await bank.balance(U, params=params)  # opens the pool: the refill clock starts
    for i in range(200):
        clock.advance(100 + (i * 7919) % 50_000)
        r = await bank.reserve(U, 3, request_id=f"r{i}", params=params)
        await bank.settle(r, 3)
    await bank.flush()
    total = await ledger_sum(engine, U)
    assert total == await pool_balance(engine, U) == (await bank.balance(U, params=params)).balance_micro


async def test_a_redis_that_lost_its_data_is_refilled_from_the_database(
    make_redis_bank: MakeBank, engine: AsyncEngine, redis_prefix: str
) -> None:
    from redis.asyncio import Redis

    from tests.billing.conftest import REDIS_URL

    bank = await make_redis_bank()
    params = pool(10)
    r = await bank.reserve(U, coins(2), request_id="a", params=params)
    await bank.settle(r, coins(2))
    await bank.flush()
    client = Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=redis_prefix + "*")]
    assert keys
    await client.delete(*keys)  # a Redis restart without persistence
    await client.aclose()
    r = await bank.reserve(U, coins(8), request_id="b", params=params)  # reloads the pool
    with pytest.raises(InsufficientQuota):
        await bank.reserve(U, 1, request_id="c", params=params)
    await bank.settle(r, coins(8))
    await bank.flush()
    assert await pool_balance(engine, U) == await ledger_sum(engine, U) == 0
    assert [row["kind"] for row in await ledger_rows(engine, U)].count("start") == 1


async def test_no_database_read_in_the_steady_state(make_bank: MakeBank, engine: AsyncEngine) -> None:
    from sqlalchemy import event

    bank = await make_bank()
    params = pool(1000)
    await bank.balance(U, params=params)  # first use: the one read
    statements: list[str] = []

    def on_execute(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        for i in range(100):
            r = await bank.reserve(U, coins(1), request_id=f"r{i}", params=params)
            await bank.settle(r, coins(0.5))
        await bank.flush()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)
    # Only the ledger writer's batched writes; no read.
    assert statements and not any("SELECT" in s.upper() for s in statements)
