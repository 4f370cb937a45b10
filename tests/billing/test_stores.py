"""The Lua store computes exactly what the Python store computes: random operations on both,
compared result by result, with awkward rates, long gaps and values near the limits."""

from __future__ import annotations

import random

import pytest

from lumen.billing.memory import MemoryPoolStore
from lumen.billing.pools import HOUR_MS, MICRO, PoolOverrides, PoolParams
from lumen.billing.store import AdjustKind, PoolNotLoaded, PoolStore, Seed
from tests.billing.conftest import T0, RedisStores, _connect_redis

LIMIT = 10**15


def random_params(rng: random.Random) -> PoolParams:
    state = rng.choice(["limited"] * 8 + ["unlimited", "blocked"])
    max_micro = rng.choice([0, 1, MICRO, 7 * MICRO + 3, 10**12, LIMIT])
    refresh = rng.choice([0, 1, 3599, MICRO + 7, HOUR_MS, HOUR_MS * 1000 + 17, LIMIT])
    return PoolParams(state, max_micro, refresh, rng.randint(0, max_micro))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(6))
async def test_redis_matches_memory(seed: int, redis_prefix: str) -> None:
    await (await _connect_redis()).aclose()
    redis_stores = RedisStores(redis_prefix)
    stores: list[PoolStore] = [MemoryPoolStore(), await redis_stores.make()]
    rng = random.Random(seed)
    now = T0
    principals = [f"user:{i}" for i in range(3)]
    holds: list[tuple[str, str]] = []
    try:
        for store in stores:
            with pytest.raises(PoolNotLoaded):
                await store.view("user:0", now=now, params=random_params(random.Random(0)))
        for p in principals:
            initial = Seed(rng.randint(0, 10**12), now, rng.randint(0, HOUR_MS - 1), PoolOverrides())
            seeded = [await s.seed(p, initial) for s in stores]
            assert seeded == [True, True]
        for step in range(600):
            now += rng.choice([0, 1, 999, 60_000, HOUR_MS, 37 * 24 * HOUR_MS, 3 * 365 * 24 * HOUR_MS])
            p = rng.choice(principals)
            params = random_params(rng)
            op = rng.choice(
                ["reserve", "reserve", "settle", "settle", "release", "renew", "adjust", "view", "overrides"]
            )
            results: list[object] = []
            for store in stores:
                rng.seed(f"{seed}-{step}")  # both stores draw the same arguments
                if op == "reserve":
                    result: object = await store.reserve(
                        p,
                        now=now,
                        params=params,
                        soft=step % 5 == 0,
                        amount=rng.choice([0, 1, MICRO, 10**12]),
                        hold_id=f"h{step}",
                        expires_at=now + rng.choice([1, HOUR_MS]),
                        minimum=rng.choice([None, None, 0, 1, MICRO // 2, 10**11]),
                    )
                elif op in ("settle", "release") and holds:
                    hp, hid = holds[step % len(holds)]
                    if op == "settle":
                        result = await store.settle(
                            hp,
                            now=now,
                            params=params,
                            hold_id=hid,
                            cost=rng.choice([0, 5, 10**11]),
                        )
                    else:
                        await store.release(hp, now=now, hold_id=hid)
                        result = await store.view(hp, now=now, params=params)
                elif op == "renew" and holds:
                    some = [holds[(step + i) % len(holds)] for i in range(3)]
                    result = await store.renew_many(some, now=now, expires_at=now + rng.choice([1, HOUR_MS]))
                elif op == "adjust":
                    kind: AdjustKind = rng.choice(["grant", "refund", "set", "reset"])
                    result = await store.adjust(
                        p, now=now, params=params, kind=kind, amount=rng.randint(1, 10**12)
                    )
                elif op == "overrides":
                    overrides = PoolOverrides(rng.choice([None, "limited"]), rng.choice([None, 5 * MICRO]))
                    await store.set_overrides(p, overrides)
                    result = await store.view(p, now=now, params=params)
                else:
                    result = await store.view(p, now=now, params=params)
                results.append(result)
            assert results[0] == results[1], (step, op)
            if op == "reserve":
                holds.append((p, f"h{step}"))
    finally:
        await redis_stores.aclose()
