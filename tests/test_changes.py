"""The change bus against a real Redis: what one process publishes, the others apply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from lumen.changes import Change, ChangeBus
from tests.limits.conftest import redis_url

__all__ = ["redis_url"]

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
