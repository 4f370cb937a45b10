"""Cache invalidation across Lumen processes.

Every process caches keys, access decisions and rate-limit overrides so that the hot path reads
no database. When something they depend on changes — a key revoked, an account disabled, an
access rule, an acknowledgement, a rate-limit override — the process that made the change
publishes it. The publishing process applies it at once; with Redis configured every other
process receives it on a pub/sub channel and applies it too, within milliseconds.

Pub/sub delivers at most once: a process that is not subscribed when a message is sent never
sees it. So while the subscription is down, caches fall back to the short expiry
(`server.auth_cache_seconds`), and on every (re)subscription the whole cache is dropped. While
the subscription is up, cached entries are still re-read after `server.redis_cache_seconds`,
the safety net for changes written straight into the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0)


class Change(StrEnum):
    KEYS = "keys"
    """Keys, or the users and projects that own them (revoked, expired, disabled, admin flag)."""
    ACCESS = "access"
    """Access rules and acknowledgements of one principal (or of everyone)."""
    LIMITS = "limits"
    """Rate-limit overrides."""
    ALL = "all"
    """Anything: drop every cache."""


Apply = Callable[[Change, str | None], Awaitable[None]]


class ChangeBus:
    """Publishes changes and applies the ones other processes publish. Without a Redis client
    it only applies changes locally (one process)."""

    def __init__(self, apply: Apply, *, redis: Redis | None = None, channel: str = "lumen:changes") -> None:
        self._apply = apply
        self._redis = redis
        self._channel = channel
        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._subscribed = asyncio.Event()
        self.received = 0

    @property
    def pushed(self) -> bool:
        """True while changes from other processes arrive by push (caches may live longer)."""
        return self._redis is not None and self._subscribed.is_set()

    async def publish(self, change: Change, principal: str | None = None) -> None:
        await self._apply(change, principal)
        if self._redis is None:
            return
        message = orjson.dumps({"origin": self._origin, "change": change.value, "principal": principal})
        try:
            await self._redis.publish(self._channel, message)
        except RedisError:
            # Other processes fall back to cache expiry; the change itself is already stored.
            log.warning("could not publish a %s change; other processes see it on cache expiry", change)

    async def wait_subscribed(self) -> None:
        await self._subscribed.wait()

    async def run(self) -> None:
        """Listens until cancelled, resubscribing after any Redis failure."""
        if self._redis is None:
            return
        failures = 0
        while True:
            try:
                await self._listen(self._redis)
                failures = 0
            except (RedisError, OSError):
                failures += 1
                if failures == 1:
                    log.warning("change channel lost; caches expire on their own until it is back")
            await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def _listen(self, redis: Redis) -> None:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            # Whatever was published while no subscription existed is lost: start from scratch.
            await self._apply(Change.ALL, None)
            self._subscribed.set()
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is not None:
                    await self._receive(message.get("data"))
        finally:
            self._subscribed.clear()
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _receive(self, data: object) -> None:
        try:
            decoded = orjson.loads(data) if isinstance(data, bytes | str) else None
            if not isinstance(decoded, dict) or decoded.get("origin") == self._origin:
                return
            change = Change(decoded["change"])
            principal = decoded.get("principal")
        except (orjson.JSONDecodeError, KeyError, ValueError):
            log.warning("ignored a malformed message on the change channel")
            return
        self.received += 1
        await self._apply(change, principal if isinstance(principal, str) else None)
