"""The Redis backend: limits hold across processes (simulated by limiter instances with their own
connections, as separate processes would have), server time, key expiry, and an unreachable Redis."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from lumen.errors import RateLimited
from lumen.limits import EffectiveLimits, LimiterSettings, Rates
from lumen.limits.backend import Bucket, Pool, Refund
from lumen.limits.limiter import Limiter, LimiterUnavailable
from lumen.limits.memory import MemoryBackend
from lumen.limits.redis_backend import RedisBackend
from tests.limits.conftest import SLOT_TTL, FakeClock, delete_keys

INSTANCES = 3


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    prefix = f"lumen-test:{uuid.uuid4().hex}:"
    yield prefix
    await delete_keys(redis_url, prefix)


@pytest.fixture
async def instances(redis_url: str, prefix: str, clock: FakeClock) -> AsyncIterator[list[Limiter]]:
    limiters = [
        Limiter(RedisBackend.from_url(redis_url, prefix=prefix, slot_ttl=SLOT_TTL, timeout=2), clock=clock)
        for _ in range(INSTANCES)
    ]
    yield limiters
    for limiter in limiters:
        await limiter.aclose()


async def attempt(limiter: Limiter, limits: EffectiveLimits, **kwargs: object) -> bool:
    args: dict[str, object] = {"principal": "user:1", "model": "m", "key_id": "key_1", **kwargs}
    try:
        await limiter.check_and_acquire(limits, **args)  # type: ignore[arg-type]
    except RateLimited:
        return False
    return True


async def test_rpm_holds_across_instances(instances: list[Limiter]) -> None:
    limits = EffectiveLimits(principal=Rates(rpm=10))
    results = await asyncio.gather(*(attempt(instances[i % INSTANCES], limits) for i in range(30)))
    assert sum(results) == 10


async def test_every_scope_holds_across_instances(instances: list[Limiter]) -> None:
    limits = EffectiveLimits(key=Rates(rpm=4), model=Rates(rpm=6), model_total=Rates(rpm=9))
    calls = [
        attempt(instances[i % INSTANCES], limits, key_id=f"key_{i % 2}", principal=f"user:{i % 3}")
        for i in range(60)
    ]
    # 2 keys x 4 = 8 by key, 3 principals x 6 = 18 by principal-model, 9 in total: the total binds
    assert sum(await asyncio.gather(*calls)) == 9


async def test_tpm_holds_across_instances_with_settlement(instances: list[Limiter]) -> None:
    limits = EffectiveLimits(principal=Rates(tpm=1000))
    admitted = await asyncio.gather(
        *(
            instances[i % INSTANCES].check_and_acquire(limits, principal="user:1", model="m", tokens=100)
            for i in range(10)
        )
    )
    assert not await attempt(instances[0], limits, tokens=100)
    # each used 40 of its 100: 600 tokens come back, whichever instance settles
    await asyncio.gather(*(admission.release(40) for admission in admitted))
    results = await asyncio.gather(*(attempt(instances[i % INSTANCES], limits, tokens=100) for i in range(9)))
    assert sum(results) == 6


async def test_concurrency_holds_across_instances(instances: list[Limiter]) -> None:
    limits = EffectiveLimits(principal=Rates(concurrent=5))

    async def take(limiter: Limiter) -> object:
        try:
            return await limiter.check_and_acquire(limits, principal="user:1", model="m")
        except RateLimited:
            return None

    held = [a for a in await asyncio.gather(*(take(instances[i % INSTANCES]) for i in range(15))) if a]
    assert len(held) == 5
    await held[0].release(0)  # type: ignore[attr-defined]
    assert await attempt(instances[2], limits)
    assert not await attempt(instances[1], limits)


async def test_keys_expire_by_themselves(redis_url: str, prefix: str, instances: list[Limiter]) -> None:
    limits = EffectiveLimits(principal=Rates(rpm=60, tpm=6000, concurrent=2))
    await instances[0].check_and_acquire(limits, principal="user:1", model="m", tokens=100)
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = sorted([key.decode() async for key in client.scan_iter(match=prefix + "*")])
        assert keys == [prefix + "{user:1}p:c", prefix + "{user:1}p:r", prefix + "{user:1}p:t"]
        ttls = {key.removeprefix(prefix): await client.pttl(key) for key in keys}
    finally:
        await client.aclose()
    # a bucket's key lives until the bucket is full again; the slots' set until the TTL of its last slot
    assert 0 < ttls["{user:1}p:r"] <= 1001
    assert 0 < ttls["{user:1}p:t"] <= 1001
    assert SLOT_TTL * 1000 - 5000 < ttls["{user:1}p:c"] <= SLOT_TTL * 1000


async def test_server_time_is_used_without_an_injected_clock(redis_url: str, prefix: str) -> None:
    """Several processes agree on the Redis server's clock. At 2 RPM a request comes back after 30 s,
    far longer than this test takes."""
    limiters = [
        Limiter(RedisBackend.from_url(redis_url, prefix=prefix, slot_ttl=60, timeout=2)) for _ in range(2)
    ]
    limits = EffectiveLimits(principal=Rates(rpm=2))
    try:
        results = [await attempt(limiters[i % 2], limits) for i in range(4)]
        assert results == [True, True, False, False]
        with pytest.raises(RateLimited) as info:
            await limiters[0].check_and_acquire(limits, principal="user:1", model="m")
        assert 29 <= int(info.value.headers["retry-after"]) <= 30
    finally:
        for limiter in limiters:
            await limiter.aclose()


async def test_releases_in_one_loop_turn_share_a_round_trip(
    redis_url: str, prefix: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = RedisBackend.from_url(redis_url, prefix=prefix, slot_ttl=SLOT_TTL, timeout=2)
    limiter = Limiter(backend, clock=clock)
    limits = EffectiveLimits(principal=Rates(tpm=1000, concurrent=10))
    try:
        admissions = [
            await limiter.check_and_acquire(limits, principal="user:1", model="m", tokens=100)
            for _ in range(10)
        ]
        calls = 0
        settle = backend._settle

        async def counting(**kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return await settle(**kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(backend, "_settle", counting)
        await asyncio.gather(*(admission.release(10) for admission in admissions))
        assert calls == 1
        headers = await limiter.peek(limits, principal="user:1")
        assert headers["x-ratelimit-remaining-tokens"] == "900"
        assert await attempt(limiter, limits, tokens=100)
    finally:
        await limiter.aclose()


UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


async def test_unreachable_redis_lets_requests_through_when_configured_to_allow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = Limiter.from_settings(
        LimiterSettings(backend="redis", redis_url=SecretStr(UNREACHABLE), redis_timeout=0.2)
    )
    try:
        with caplog.at_level(logging.WARNING, logger="lumen.limits.limiter"):
            admission = await limiter.check_and_acquire(
                EffectiveLimits(principal=Rates(rpm=1, concurrent=1)), principal="user:1", model="m"
            )
        assert admission.headers == {}
        await admission.release(10)
        assert "rate limiter unavailable, requests pass unlimited" in caplog.text
    finally:
        await limiter.aclose()


async def test_unreachable_redis_refuses_with_503_when_configured_to_reject() -> None:
    settings = LimiterSettings(
        backend="redis", redis_url=SecretStr(UNREACHABLE), redis_timeout=0.2, on_backend_error="reject"
    )
    limiter = Limiter.from_settings(settings)
    try:
        with pytest.raises(LimiterUnavailable) as info:
            await limiter.check_and_acquire(
                EffectiveLimits(principal=Rates(rpm=1)), principal="user:1", model="m"
            )
        assert info.value.status == 503
        assert info.value.headers["retry-after"] == "1"
        # no limit, no Redis needed
        assert (
            await limiter.check_and_acquire(EffectiveLimits(), principal="user:1", model="m")
        ).headers == {}
    finally:
        await limiter.aclose()


async def test_memory_and_redis_backends_agree_step_by_step(redis_url: str, prefix: str) -> None:
    """A differential test of the Lua script against the Python implementation: the same random
    sequence of checks, settlements and clock moves gives the same verdicts on both."""
    rng = random.Random(20261125)
    memory = MemoryBackend(slot_ttl=30)
    shared = RedisBackend.from_url(redis_url, prefix=prefix, slot_ttl=30, timeout=2)
    now = 5_000.0
    held: list[tuple[list[Refund], list[str], str]] = []
    try:
        for step in range(300):
            now += rng.choice([0.0, 0.0, 0.05, 0.5, 3.0, 31.0])
            if held and rng.random() < 0.3:
                refunds, pools, slot = held.pop(rng.randrange(len(held)))
                await memory.settle(refunds, pools, slot, now)
                await shared.settle(refunds, pools, slot, now)
                continue
            who = rng.choice(["a", "b"])
            buckets = [
                Bucket(f"{{{who}}}r", "principal", "requests", rng.choice([3, 7, 60]), 1, 1),
                Bucket(f"{{{who}}}t", "principal", "tokens", 1000, rng.choice([0, 10, 400, 1000]), 0),
            ]
            pools = [Pool(f"{{{who}}}c", "principal", rng.choice([1, 2]))]
            commit = rng.random() < 0.9
            slot = f"s{step}"
            expected = await memory.acquire(buckets, pools, slot, now, commit=commit)
            got = await shared.acquire(buckets, pools, slot, now, commit=commit)
            assert (got.ok, got.bucket_full, got.held, got.pool_full) == (
                expected.ok,
                expected.bucket_full,
                expected.held,
                expected.pool_full,
            ), f"step {step}"
            assert got.backlogs == pytest.approx(expected.backlogs, abs=1e-9), f"step {step}"
            if got.ok and commit:
                units = rng.choice([-400, -10, 0, 25, 900])
                held.append(([Refund(buckets[1].key, 1000, units)], [pools[0].key], slot))
    finally:
        await shared.aclose()
