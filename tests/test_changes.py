"""The change bus: against a real Redis, what one process publishes the others apply by push;
without Redis, through the change log they poll (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.changes import Change, ChangeBus, ChangeLog, Heartbeat, LoggedChange, LogPoller
from tests.limits.conftest import redis_url
from tests.store.conftest import database_url, engine, pg_server, pg_url, sqlite_url
from tests.support import running_lumen

__all__ = ["database_url", "engine", "pg_server", "pg_url", "redis_url", "sqlite_url"]

Seen = list[tuple[Change, str | None]]


def recorder() -> tuple[Seen, Callable[[Change, str | None], Awaitable[None]]]:
    seen: Seen = []

    async def apply(change: Change, principal: str | None) -> None:
        seen.append((change, principal))

    return seen, apply


async def eventually(check: Callable[[], bool], *, deadline: float = 10.0) -> None:
    """Polls until `check()` holds; the deadline only stops a broken test from hanging."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        assert loop.time() < end, "the condition never held"
        await asyncio.sleep(0.01)


@pytest.fixture
def channel() -> str:
    return f"lumen-test-changes-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def listening(redis_url: str, channel: str) -> AsyncIterator[tuple[ChangeBus, Seen]]:
    seen, apply = recorder()
    # Named, so that a test can cut this connection and no other.
    bus = ChangeBus(apply, redis=Redis.from_url(redis_url, client_name=channel), channel=channel)
    task = asyncio.create_task(bus.run())
    await asyncio.wait_for(bus.wait_live(), 10)
    seen.clear()  # subscribing applies ALL once; the tests look at what follows
    try:
        yield bus, seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.aclose()


async def test_without_redis_a_change_is_applied_here_only() -> None:
    seen, apply = recorder()
    bus = ChangeBus(apply)
    await bus.publish(Change.ACCESS, "user:7")
    assert seen == [(Change.ACCESS, "user:7")]
    assert not bus.live


async def test_another_process_applies_a_published_change(
    listening: tuple[ChangeBus, Seen], redis_url: str, channel: str
) -> None:
    other, other_seen = listening
    assert other.live
    seen, apply = recorder()
    publisher = ChangeBus(apply, redis=Redis.from_url(redis_url), channel=channel)
    try:
        await publisher.publish(Change.KEYS)
        await publisher.publish(Change.ACCESS, "project:3")
    finally:
        await publisher.aclose()
    assert seen == [(Change.KEYS, None), (Change.ACCESS, "project:3")]
    await eventually(lambda: len(other_seen) == 2)
    assert other_seen == [(Change.KEYS, None), (Change.ACCESS, "project:3")]


async def test_a_process_does_not_apply_its_own_message_twice(listening: tuple[ChangeBus, Seen]) -> None:
    bus, seen = listening
    await bus.publish(Change.LIMITS, "user:1")
    # A marker published by someone else arrives after our own message would have.
    marker = ChangeBus(recorder()[1], redis=bus._redis, channel=bus._channel)
    await marker.publish(Change.KEYS)
    await eventually(lambda: (Change.KEYS, None) in seen)
    assert seen == [(Change.LIMITS, "user:1"), (Change.KEYS, None)]


async def test_malformed_messages_are_ignored(listening: tuple[ChangeBus, Seen], redis_url: str) -> None:
    bus, seen = listening
    client = Redis.from_url(redis_url)
    try:
        for junk in (b"not json", b"[]", b'{"origin": "x", "change": "bogus"}', b'{"origin": "x"}'):
            await client.publish(bus._channel, junk)
        await client.publish(bus._channel, b'{"origin": "x", "change": "access", "principal": "user:2"}')
    finally:
        await client.aclose()
    await eventually(lambda: len(seen) == 1)
    assert seen == [(Change.ACCESS, "user:2")]


async def test_a_lost_subscription_comes_back_and_drops_every_cache(
    listening: tuple[ChangeBus, Seen], redis_url: str
) -> None:
    """Messages sent while unsubscribed are lost, so resubscribing applies ALL."""
    bus, seen = listening
    admin = Redis.from_url(redis_url)
    try:
        ours = [c for c in await admin.client_list(_type="pubsub") if c.get("name") == bus._channel]
        assert ours, "the bus holds no subscription"
        for client in ours:
            await admin.client_kill_filter(_id=client["id"])
    finally:
        await admin.aclose()
    await eventually(lambda: (Change.ALL, None) in seen)
    await asyncio.wait_for(bus.wait_live(), 10)
    assert bus.live


# --- without Redis: the change log --------------------------------------------------------------


@pytest.fixture
async def polling(engine: AsyncEngine) -> AsyncIterator[tuple[ChangeBus, Seen]]:
    """A server without Redis: it polls the change log."""
    seen, apply = recorder()
    bus = ChangeBus(apply, log=ChangeLog(engine), poll_seconds=0.02)
    heartbeat = Heartbeat(engine, bus.origin, local_state=True)
    await heartbeat.beat()
    task = asyncio.create_task(bus.run())
    await asyncio.wait_for(bus.wait_live(), 10)
    assert seen == [(Change.ALL, None)]  # starting to poll drops every cache once
    seen.clear()
    try:
        yield bus, seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_without_redis_another_process_applies_a_logged_change(
    polling: tuple[ChangeBus, Seen], engine: AsyncEngine
) -> None:
    server, server_seen = polling
    assert server.live
    seen, apply = recorder()
    command = ChangeBus(apply, log=ChangeLog(engine))  # e.g. `lumen keys revoke` on the host
    await command.publish(Change.KEYS, "user:4")
    await command.publish(Change.ACCESS, "project:2")
    assert seen == [(Change.KEYS, "user:4"), (Change.ACCESS, "project:2")]
    # The command can wait until the server has applied both: it then reports them done.
    assert await ChangeLog(engine).wait_read(command.last_logged, seconds=10)
    assert server_seen == [(Change.KEYS, "user:4"), (Change.ACCESS, "project:2")]


async def test_a_polling_process_does_not_apply_its_own_change_twice(
    polling: tuple[ChangeBus, Seen], engine: AsyncEngine
) -> None:
    server, seen = polling
    await server.publish(Change.LIMITS, "user:1")
    marker = ChangeBus(recorder()[1], log=ChangeLog(engine))
    await marker.publish(Change.KEYS)
    await eventually(lambda: (Change.KEYS, None) in seen)
    assert seen == [(Change.LIMITS, "user:1"), (Change.KEYS, None)]


async def test_wait_read_says_when_a_running_server_has_not_applied_a_change(engine: AsyncEngine) -> None:
    """A server that beats but does not poll (stuck) keeps a command waiting, then failing."""
    await Heartbeat(engine, "stuck-server", local_state=True).beat()
    command = ChangeBus(recorder()[1], log=ChangeLog(engine))
    await command.publish(Change.KEYS)
    assert not await ChangeLog(engine).wait_read(command.last_logged, seconds=0.2)


class FakeLog(ChangeLog):
    """Rows become visible in the order a test commits them, whatever their ids."""

    def __init__(self) -> None:
        self.committed: list[LoggedChange] = []

    async def after(self, last_seen: int, *, limit: int = 500) -> list[LoggedChange]:
        return sorted((r for r in self.committed if r.id > last_seen), key=lambda r: r.id)[:limit]


def row(id_: int) -> LoggedChange:
    return LoggedChange(id_, Change.ACCESS, f"user:{id_}", "other")


async def test_a_row_committed_after_a_higher_id_is_not_skipped() -> None:
    """On PostgreSQL, a transaction that took id 2 may commit after the one that took id 3."""
    log = FakeLog()
    poller = LogPoller(log, 0)
    log.committed += [row(1), row(3)]
    assert [r.id for r in await poller.poll(0.0)] == [1, 3]
    log.committed.append(row(2))
    assert [r.id for r in await poller.poll(1.0)] == [2]
    assert await poller.poll(2.0) == []  # each row once


async def test_a_gap_that_never_fills_is_given_up() -> None:
    log = FakeLog()
    poller = LogPoller(log, 0)
    log.committed += [row(1), row(3)]  # 2 was rolled back
    await poller.poll(0.0)
    assert await poller.poll(100.0) == []
    log.committed.append(row(2))  # cannot happen after a rollback; shows the gap is no longer read
    assert await poller.poll(101.0) == []


def test_without_redis_a_polling_server_keeps_its_caches_long(tmp_path: Path) -> None:
    """Changes reach it from the change log, so the long expiry is safe (was one second)."""
    with running_lumen(tmp_path, {"server": {"auth_cache_seconds": 1, "redis_cache_seconds": 60}}) as lumen:
        assert lumen.state.changes.live
        assert lumen.state.cache_seconds() == 60
