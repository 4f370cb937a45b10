"""Fixtures for the rate-limit tests: a fake clock, and limiters on both backends.

Redis is reached at ``LUMEN_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Each test uses
its own key prefix and deletes its keys afterwards. If Redis is not reachable the Redis tests are
skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from lumen.limits.limiter import Limiter
from lumen.limits.memory import MemoryBackend
from lumen.limits.redis_backend import RedisBackend

REDIS_URL = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CI = os.environ.get("CI") == "true"
SLOT_TTL = 900.0


class FakeClock:
    """Seconds that only move when a test says so (starts at an arbitrary, non-zero time)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_url() -> str:
    # Synchronous, so that async fixtures can ask for it through `request.getfixturevalue`.
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        message = f"Redis is not reachable at {REDIS_URL}: {exc}"
        if CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


MakeLimiter = Callable[..., Limiter]


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[MakeLimiter]:
    """Builds limiters on the test's backend, all on the fake clock. On Redis, every limiter built in
    one test shares the same keys (as several processes would), each with its own connections; in
    memory, each call gives the one shared in-process backend to a new limiter."""
    limiters: list[Limiter] = []
    prefix = f"lumen-test:{uuid.uuid4().hex}:"
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")

        def make(**kwargs: object) -> Limiter:
            backend = RedisBackend.from_url(url, prefix=prefix, slot_ttl=SLOT_TTL, timeout=2)
            limiter = Limiter(backend, clock=clock, **kwargs)  # type: ignore[arg-type]
            limiters.append(limiter)
            return limiter

    else:
        memory = MemoryBackend(slot_ttl=SLOT_TTL)

        def make(**kwargs: object) -> Limiter:
            limiter = Limiter(memory, clock=clock, **kwargs)  # type: ignore[arg-type]
            limiters.append(limiter)
            return limiter

    yield make
    for limiter in limiters:
        await limiter.aclose()
    if request.param == "redis":
        await delete_keys(REDIS_URL, prefix)


async def delete_keys(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
