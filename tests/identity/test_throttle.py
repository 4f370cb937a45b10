"""Failed logins per account and address, in one process's memory and shared through Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from lumen.identity.throttle import ADDRESS_FACTOR, LoginThrottle
from lumen.limits.memory import MemoryBackend
from lumen.limits.redis_backend import RedisBackend
from tests.limits.conftest import FakeClock, redis_url

__all__ = ["redis_url"]


async def test_failures_beyond_the_limit_are_refused_per_account_and_address() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(MemoryBackend(slot_ttl=60), lambda: 3, clock=clock)
    for _ in range(3):
        assert await throttle.wait_seconds("ann@example.edu", "10.0.0.1") == 0
        await throttle.failed("ann@example.edu", "10.0.0.1")
    wait = await throttle.wait_seconds("ANN@example.edu ", "10.0.0.1")
    assert 1 <= wait <= 20  # one more attempt per 60/3 seconds
    # Another address, or another account, is not affected.
    assert await throttle.wait_seconds("ann@example.edu", "10.0.0.2") == 0
    assert await throttle.wait_seconds("ben@example.edu", "10.0.0.1") == 0
    clock.advance(wait)
    assert await throttle.wait_seconds("ann@example.edu", "10.0.0.1") == 0


async def test_one_address_trying_many_accounts_is_slowed_too() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(MemoryBackend(slot_ttl=60), lambda: 2, clock=clock)
    for n in range(2 * ADDRESS_FACTOR):
        assert await throttle.wait_seconds(f"user{n}@example.edu", "10.0.0.1") == 0
        await throttle.failed(f"user{n}@example.edu", "10.0.0.1")
    assert await throttle.wait_seconds("fresh@example.edu", "10.0.0.1") >= 1
    # The accounts themselves are not locked: from another address they log in as usual.
    assert await throttle.wait_seconds("user0@example.edu", "10.0.0.2") == 0


@pytest.fixture
async def redis_throttles(redis_url: str) -> AsyncIterator[tuple[LoginThrottle, LoginThrottle, FakeClock]]:
    prefix = f"lumen-test-{uuid.uuid4().hex[:8]}:"
    clock = FakeClock()
    # Two throttles with their own clients stand for two Lumen processes.
    pair = [
        LoginThrottle(
            RedisBackend.from_url(redis_url, prefix=prefix, slot_ttl=60, timeout=2), lambda: 2, clock=clock
        )
        for _ in range(2)
    ]
    yield pair[0], pair[1], clock
    for throttle in pair:
        await throttle.aclose()


async def test_processes_share_the_count_through_redis(
    redis_throttles: tuple[LoginThrottle, LoginThrottle, FakeClock],
) -> None:
    one, two, clock = redis_throttles
    await one.failed("ann@example.edu", "10.0.0.1")
    await two.failed("ann@example.edu", "10.0.0.1")
    assert await one.wait_seconds("ann@example.edu", "10.0.0.1") > 0
    assert await two.wait_seconds("ann@example.edu", "10.0.0.1") > 0
    clock.advance(30)
    assert await one.wait_seconds("ann@example.edu", "10.0.0.1") == 0
