"""Holds are renewed while their request runs and expire soon after their process dies; on the
memory and the Redis store, on SQLite and PostgreSQL. Time is simulated (the bank's clock); the
renewal loop runs on the event loop at a short real interval."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Sequence

import pytest

from lumen.billing.bank import CoinBank
from lumen.billing.config import BillingSettings
from lumen.billing.redis_store import RedisPoolStore
from lumen.errors import InsufficientQuota
from tests.billing.conftest import FakeClock, MakeBank, coins, pool

U = "user:1"
TTL_MS = 60_000


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for the background renewal; the timeout only guards against a hang."""
    async with asyncio.timeout(30):
        while not predicate():
            await asyncio.sleep(0.005)


def test_the_default_ttl_is_at_most_a_minute() -> None:
    assert BillingSettings().reservation_ttl <= 60


async def test_a_renewed_hold_outlives_many_ttls(make_bank: MakeBank, clock: FakeClock) -> None:
    bank = await make_bank(reservation_ttl=60, renew_interval=3600)  # renewed by hand below
    params = pool(10)
    r = await bank.reserve(U, coins(4), request_id="long", params=params)
    free = await bank.reserve(U, 0, request_id="free", params=params)
    assert bank.live_reservations == 1  # a hold of nothing needs no renewal
    for _ in range(5):
        clock.advance(TTL_MS * 2 // 3)
        assert await bank.renew_live() == 1
    assert r.expires_at == clock.now + TTL_MS
    assert (await bank.balance(U, params=params)).reserved_micro == coins(4)
    await bank.settle(r, coins(1))
    await bank.settle(free, 0)
    assert bank.live_reservations == 0 and await bank.renew_live() == 0


async def test_the_loop_renews_and_a_dead_process_holds_expire(make_bank: MakeBank, clock: FakeClock) -> None:
    process = await make_bank(reservation_ttl=60, renew_interval=0.005)
    survivor = await make_bank(reservation_ttl=60, store=process._store)
    params = pool(10)
    a = await process.reserve(U, coins(6), request_id="a", params=params)
    b = await process.reserve("user:2", coins(6), request_id="b", params=params)
    for _ in range(3):
        clock.advance(TTL_MS // 2)
        await until(lambda: a.expires_at == b.expires_at == clock.now + TTL_MS)
    with pytest.raises(InsufficientQuota):
        await survivor.reserve(U, coins(5), request_id="c", params=params)
    # The process dies: nothing renews its holds any more.
    assert process._renewer is not None
    process._renewer.cancel()
    clock.advance(TTL_MS)
    r = await survivor.reserve(U, coins(10), request_id="d", params=params)
    assert (await survivor.balance(U, params=params)).reserved_micro == coins(10)
    await survivor.release(r)


async def test_a_hold_whose_caller_dropped_it_is_not_renewed(make_bank: MakeBank, clock: FakeClock) -> None:
    bank = await make_bank(reservation_ttl=60, renew_interval=3600)
    params = pool(10)
    await bank.reserve(U, coins(4), request_id="forgotten", params=params)  # never settled: a bug
    gc.collect()
    assert bank.live_reservations == 0 and await bank.renew_live() == 0
    clock.advance(TTL_MS)
    assert (await bank.balance(U, params=params)).reserved_micro == 0


async def test_an_expired_hold_is_not_brought_back(make_bank: MakeBank, clock: FakeClock) -> None:
    bank = await make_bank(reservation_ttl=60, renew_interval=3600)
    params = pool(10)
    r = await bank.reserve(U, coins(4), request_id="stalled", params=params)
    clock.advance(TTL_MS)  # the process stalled for a whole TTL
    assert await bank.renew_live() == 0
    assert bank.live_reservations == 0
    assert (await bank.balance(U, params=params)).reserved_micro == 0
    assert (await bank.settle(r, coins(3))).balance_micro == coins(7)  # still charged in full


async def test_a_reload_changes_the_ttl_of_the_next_renewal(make_bank: MakeBank, clock: FakeClock) -> None:
    bank = await make_bank(reservation_ttl=60, renew_interval=3600)
    r = await bank.reserve(U, coins(1), request_id="a", params=pool(10))
    bank.configure(BillingSettings(reservation_ttl=30))
    await bank.renew_live()
    assert r.expires_at == clock.now + 30_000


async def test_with_redis_a_round_is_one_call_for_every_hold(
    make_redis_bank: MakeBank, clock: FakeClock
) -> None:
    bank = await make_redis_bank(reservation_ttl=60, renew_interval=3600)
    store = bank._store
    assert isinstance(store, RedisPoolStore)
    calls: list[int] = []
    script = store._renew_many

    async def counted(*, keys: Sequence[str], args: Sequence[object]) -> object:
        calls.append(len(args) - 2)
        return await script(keys=keys, args=args)

    store._renew_many = counted  # type: ignore[assignment]
    holds = [
        await bank.reserve(f"user:{i}", coins(1), request_id=f"r{i}", params=pool(10)) for i in range(20)
    ]
    clock.advance(TTL_MS // 2)
    assert await bank.renew_live() == 20
    assert calls == [20]
    assert all(h.expires_at == clock.now + TTL_MS for h in holds)


async def test_closing_the_bank_stops_the_renewal(make_bank: MakeBank) -> None:
    bank: CoinBank = await make_bank(renew_interval=0.005)
    renewer = bank._renewer
    assert renewer is not None and not renewer.done()
    await bank.aclose()
    assert renewer.done()
