"""The key cache: entries cached together do not expire together, a key is read once however many
requests wait for it, an entry about to expire is re-read while the cached one answers, and a
read that a revocation overtook is not cached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import AuthenticationFailed
from lumen.identity import auth, store
from lumen.identity.auth import KeyAuthenticator

SECRET = b"s" * 32
TTL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingReads:
    """`key_owner_by_hash`, counted; while `gate` is clear, its answer (read at once) is held back."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self._real = auth.key_owner_by_hash

    async def __call__(self, **kwargs: Any) -> Any:
        self.count += 1
        found = await self._real(**kwargs)
        await self.gate.wait()
        return found


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> CountingReads:
    counting = CountingReads()
    monkeypatch.setattr(auth, "key_owner_by_hash", counting)
    return counting


async def _keys(engine: AsyncEngine, count: int) -> list[str]:
    user = await store.create_user(engine=engine, email="kay@example.edu")
    made = []
    for _ in range(count):
        _, plain = await store.create_key(engine=engine, secret=SECRET, owner_kind="user", owner_id=user.id)
        made.append(f"Bearer {plain}")
    return made


def _authenticator(engine: AsyncEngine, clock: Clock) -> KeyAuthenticator:
    return KeyAuthenticator(
        engine=engine, secret=SECRET, groups=lambda: (), admins=lambda: (), ttl=lambda: TTL, clock=clock
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_many_requests_of_a_cold_key_read_it_once(engine: AsyncEngine, reads: CountingReads) -> None:
    [key] = await _keys(engine, 1)
    cache = _authenticator(engine, Clock())
    await asyncio.gather(*(cache.authenticate(key) for _ in range(64)))
    assert reads.count == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_keys_cached_together_do_not_expire_together(engine: AsyncEngine, reads: CountingReads) -> None:
    keys = await _keys(engine, 20)
    clock = Clock()
    cache = _authenticator(engine, clock)
    for key in keys:
        await cache.authenticate(key)
    reads.count = 0
    reads.gate.clear()  # a request that has to wait for the database does not finish
    clock.now = TTL * 0.9
    waiting = [asyncio.ensure_future(cache.authenticate(key)) for key in keys]
    await asyncio.sleep(0.05)
    answered = sum(task.done() for task in waiting)
    # Some entries have expired (those requests wait), the others answer from the cache.
    assert 0 < answered < len(keys)
    reads.gate.set()
    await asyncio.gather(*waiting)
    assert reads.count == len(keys)  # the ones that answered were re-read in the background


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_entry_about_to_expire_is_refreshed_while_it_answers(
    engine: AsyncEngine, reads: CountingReads
) -> None:
    [key] = await _keys(engine, 1)
    clock = Clock()
    cache = _authenticator(engine, clock)
    await cache.authenticate(key)
    reads.gate.clear()
    clock.now = TTL * 0.78  # past 3/4 of its life, whatever its spread; not yet expired
    await asyncio.wait_for(cache.authenticate(key), 1)  # answered without the database
    assert reads.count == 2  # and re-read in the background
    reads.gate.set()
    await asyncio.sleep(0.05)
    clock.now = TTL * 1.3  # expired counted from the first read; young counted from the refresh
    await asyncio.wait_for(cache.authenticate(key), 1)
    assert reads.count == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_read_overtaken_by_a_revocation_is_not_cached(
    engine: AsyncEngine, reads: CountingReads
) -> None:
    [key] = await _keys(engine, 1)
    cache = _authenticator(engine, Clock())
    reads.gate.clear()
    before = asyncio.ensure_future(cache.authenticate(key))
    await asyncio.sleep(0.01)
    [stored] = await store.list_keys(engine=engine, owner_kind="user", owner_id=1)
    await store.revoke_key(engine=engine, key_id=stored.id)  # ...committed while the read waits
    cache.invalidate()
    reads.gate.set()
    await before  # read before the revocation: it passes, but leaves nothing cached
    with pytest.raises(AuthenticationFailed):
        await cache.authenticate(key)
