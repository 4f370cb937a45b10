"""Fixtures for the coin tests: the database fixtures of `tests/store`, Redis, a fake clock and
`make_bank`, which builds started `CoinBank`s on the memory or the Redis store.

Redis is reached at ``LUMEN_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Each test uses
its own key prefix and deletes its keys afterwards. If Redis is down the Redis tests are skipped,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.bank import CoinBank
from lumen.billing.memory import MemoryPoolStore
from lumen.billing.pools import MICRO, PoolParams
from lumen.billing.redis_store import RedisPoolStore, redis_client
from lumen.billing.store import PoolStore
from tests.store.conftest import database_url, engine, pg_server, pg_url, sqlite_url

__all__ = ["database_url", "engine", "pg_server", "pg_url", "sqlite_url"]

REDIS_URL = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_800_000_000_000  # an arbitrary start of simulated time, epoch ms


def coins(n: float | int) -> int:
    return round(n * MICRO)


def pool(
    max_: float = 10, refresh: float = 0, starting: float | None = None, state: str = "limited"
) -> PoolParams:
    return PoolParams(
        state,  # type: ignore[arg-type]
        coins(max_),
        coins(refresh),
        coins(max_ if starting is None else starting),
    )


class FakeClock:
    """Simulated time in epoch milliseconds; tests move it with `advance`."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _connect_redis() -> Redis:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        message = f"Redis not reachable at {REDIS_URL}: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: the Redis tests are required)")
        pytest.skip(message)
    return client


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"lumen-test:{uuid.uuid4().hex}:"
    yield prefix
    try:
        with SyncRedis.from_url(REDIS_URL) as client:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
    except (RedisError, OSError):
        pass


MakeStore = Callable[[], Awaitable[PoolStore]]
MakeBank = Callable[..., Awaitable[CoinBank]]


class RedisStores:
    """Redis stores sharing one key prefix, each with its own connection pool (as processes)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._clients: list[Redis] = []

    async def make(self) -> PoolStore:
        client = redis_client(REDIS_URL, max_connections=16)
        self._clients.append(client)
        return RedisPoolStore(client, prefix=self.prefix)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


class Banks:
    """Builds started `CoinBank`s on the test's database and clock; closes them at the end."""

    def __init__(self, make_store: MakeStore, engine: AsyncEngine, clock: FakeClock) -> None:
        self._make_store = make_store
        self._engine = engine
        self._clock = clock
        self._banks: list[CoinBank] = []

    async def make(
        self, *, store: PoolStore | None = None, engine: AsyncEngine | None = None, **kwargs: Any
    ) -> CoinBank:
        kwargs.setdefault("clock", self._clock)
        kwargs.setdefault("flush_interval", 0.05)
        bank = CoinBank(store or await self._make_store(), engine or self._engine, **kwargs)
        await bank.start()
        self._banks.append(bank)
        return bank

    async def aclose(self) -> None:
        for bank in self._banks:
            await bank.aclose()


async def _memory_store() -> PoolStore:
    return MemoryPoolStore()


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """Stores of one backend: memory stores are independent; Redis stores share one key prefix."""
    if request.param == "memory":
        yield _memory_store
        return
    await (await _connect_redis()).aclose()
    stores = RedisStores(request.getfixturevalue("redis_prefix"))
    yield stores.make
    await stores.aclose()


@pytest.fixture
async def make_bank(make_store: MakeStore, engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[MakeBank]:
    """``await make_bank(store=None, engine=None, **CoinBank_kwargs)``: a started `CoinBank`."""
    banks = Banks(make_store, engine, clock)
    yield banks.make
    await banks.aclose()


@pytest.fixture
async def make_redis_bank(
    redis_prefix: str, engine: AsyncEngine, clock: FakeClock
) -> AsyncIterator[MakeBank]:
    """Like `make_bank`, always on Redis stores sharing one prefix (for multi-process tests)."""
    await (await _connect_redis()).aclose()
    stores = RedisStores(redis_prefix)
    banks = Banks(stores.make, engine, clock)
    yield banks.make
    await banks.aclose()
    await stores.aclose()
