"""Cache invalidation across Lumen processes, and the way commands reach a running server.

Every process caches keys, access decisions and rate-limit overrides so that the hot path reads
no database. When something they depend on changes — a key revoked, an account disabled, an
access rule, an acknowledgement, a rate-limit override — whoever made the change publishes it on
a `ChangeBus`: a serving process, or a `lumen` command on the host. Publishing applies the change
in the publishing process at once, appends it to the `change_log` table and, with Redis, pushes it
on a pub/sub channel.

How the other processes learn of it:

- With Redis, by push, within milliseconds. Pub/sub delivers at most once, so on every
  (re)subscription the whole cache is dropped, and while the subscription is down caches fall
  back to the short expiry (`server.auth_cache_seconds`).
- Without Redis, a serving process polls `change_log` every `POLL_SECONDS` (one query on the
  primary key: `WHERE id > last seen`) and applies each row as if it had been pushed. A row whose
  id was skipped (on PostgreSQL a transaction that took a lower id may commit after a higher one)
  is looked for again for `GAP_SECONDS`.

While changes arrive this way (`live`), cached entries live `server.redis_cache_seconds`, the
safety net for changes written straight into the database; otherwise `server.auth_cache_seconds`.

Every serving process keeps a heartbeat row (`process_heartbeats`, `Heartbeat`). A polling
process writes there the newest change it has applied, so a `lumen` command on the host waits
until every running server has applied its change (`ChangeLog.wait_read`) before it reports it
done: the CLI never reports a state the servers do not use yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.tables import change_log, process_heartbeats

log = logging.getLogger(__name__)
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0)
POLL_SECONDS = 0.5
"""How often a process without Redis reads the change log: the bound on how late it applies a
change made elsewhere (a revoked key is refused within this time)."""
GAP_SECONDS = 10.0
"""How long a skipped id is looked for again before it is taken for a rolled-back insert."""
MAX_GAPS = 1_000
KEEP_SECONDS = 3600.0
"""How long rows stay in the change log (`ChangeLog.prune`)."""
HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 10.0
"""A heartbeat older than this is a process that died without deleting its row."""
READ_WAIT_SECONDS = 5.0
"""How long a `lumen` command waits for the running servers to apply its change."""


class Change(StrEnum):
    KEYS = "keys"
    """Keys, or the users and projects that own them (revoked, expired, disabled, admin flag)."""
    ACCESS = "access"
    """Access rules and acknowledgements of one principal (or of everyone)."""
    LIMITS = "limits"
    """Rate-limit overrides."""
    ALL = "all"
    """Anything: drop every cache."""
    COINS = "coins"
    """A coin command waits in `coin_commands` (the principal field holds its id) for the process
    that keeps the balances in its memory (no Redis); other processes ignore it."""


Apply = Callable[[Change, str | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LoggedChange:
    id: int
    change: Change
    principal: str | None
    origin: str


class ChangeLog:
    """The `change_log` table: every change appended, read back in id order by pollers."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, change: Change, principal: str | None, origin: str) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(change_log).values(
                    created_at=datetime.now(UTC), change=change.value, principal=principal, origin=origin
                )
            )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    async def last_id(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.coalesce(func.max(change_log.c.id), 0)))).scalar_one())

    async def after(self, last_seen: int, *, limit: int = 500) -> list[LoggedChange]:
        """The changes with an id above `last_seen`, oldest first."""
        query = (
            select(change_log.c.id, change_log.c.change, change_log.c.principal, change_log.c.origin)
            .where(change_log.c.id > last_seen)
            .order_by(change_log.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        found = []
        for row in rows:
            try:
                change = Change(row.change)
            except ValueError:
                change = Change.ALL  # written by a newer Lumen: drop everything rather than guess
            found.append(LoggedChange(int(row.id), change, row.principal, row.origin))
        return found

    async def prune(self, *, keep_seconds: float = KEEP_SECONDS) -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=keep_seconds)
        async with self._engine.begin() as conn:
            await conn.execute(delete(change_log).where(change_log.c.created_at < cutoff))

    async def mark_read(self, origin: str, up_to: int) -> None:
        """Says that the process `origin` has applied every change up to id `up_to`."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(process_heartbeats)
                .where(process_heartbeats.c.origin == origin, process_heartbeats.c.seen_change < up_to)
                .values(seen_change=up_to)
            )

    async def wait_read(self, up_to: int, *, seconds: float = READ_WAIT_SECONDS) -> bool:
        """Waits until every running process that polls has applied the changes up to `up_to`;
        False when one has not within `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            fresh = datetime.now(UTC) - timedelta(seconds=STALE_SECONDS)
            behind = (
                select(process_heartbeats.c.origin)
                .where(
                    process_heartbeats.c.local_state.is_(True),
                    process_heartbeats.c.beat_at >= fresh,
                    process_heartbeats.c.seen_change < up_to,
                )
                .limit(1)
            )
            async with self._engine.connect() as conn:
                if (await conn.execute(behind)).first() is None:
                    return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)


class Heartbeat:
    """This process's row in `process_heartbeats`: written at start and every
    `HEARTBEAT_SECONDS`, deleted on a clean stop."""

    def __init__(self, engine: AsyncEngine, origin: str, *, local_state: bool) -> None:
        self._engine = engine
        self._origin = origin
        self._local_state = local_state

    async def beat(self) -> None:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            found = await conn.execute(
                update(process_heartbeats)
                .where(process_heartbeats.c.origin == self._origin)
                .values(beat_at=now)
            )
            if found.rowcount == 0:
                await conn.execute(
                    insert(process_heartbeats).values(
                        origin=self._origin,
                        pid=os.getpid(),
                        host=socket.gethostname(),
                        started_at=now,
                        beat_at=now,
                        local_state=self._local_state,
                        seen_change=0,
                    )
                )
            # The rows of processes that died without a clean stop.
            gone = now - timedelta(seconds=STALE_SECONDS * 6)
            await conn.execute(delete(process_heartbeats).where(process_heartbeats.c.beat_at < gone))

    async def run(self, *, every_minute: Callable[[], Awaitable[None]]) -> None:
        """Beats until cancelled; runs `every_minute` (the pruning of old rows) about once a minute."""
        beats = 0
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            beats += 1
            try:
                await self.beat()
                if beats % int(60 / HEARTBEAT_SECONDS) == 0:
                    await every_minute()
            except SQLAlchemyError:
                log.warning("could not write this process's heartbeat; trying again", exc_info=True)

    async def stop(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(process_heartbeats).where(process_heartbeats.c.origin == self._origin))


async def local_server_runs(engine: AsyncEngine) -> bool:
    """Whether a running server keeps its state locally (no Redis; its heartbeat is fresh)."""
    fresh = datetime.now(UTC) - timedelta(seconds=STALE_SECONDS)
    query = select(process_heartbeats.c.origin).where(
        process_heartbeats.c.local_state.is_(True), process_heartbeats.c.beat_at >= fresh
    )
    async with engine.connect() as conn:
        return (await conn.execute(query.limit(1))).first() is not None


class ChangeBus:
    """Publishes changes and applies the ones other processes publish.

    `redis` pushes changes between processes; `log` (the change table) records them for processes
    without Redis, which poll it. With neither, changes are applied in this process only."""

    def __init__(
        self,
        apply: Apply,
        *,
        redis: Redis | None = None,
        channel: str = "lumen:changes",
        log: ChangeLog | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._apply = apply
        self._redis = redis
        self._channel = channel
        self._log = log
        self._poll_seconds = poll_seconds
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._live = asyncio.Event()
        self.received = 0
        self.last_logged = 0
        """The id of the newest change this bus appended to the change log (0: none)."""

    @property
    def live(self) -> bool:
        """True while changes from other processes reach this one promptly (pushed or polled), so
        caches may live longer."""
        return self._live.is_set()

    async def publish(self, change: Change, principal: str | None = None) -> None:
        await self._apply(change, principal)
        if self._log is not None:
            try:
                self.last_logged = await self._log.append(change, principal, self.origin)
            except SQLAlchemyError:
                log.exception(
                    "could not log a %s change; processes without Redis see it on cache expiry", change
                )
        if self._redis is None:
            return
        message = orjson.dumps({"origin": self.origin, "change": change.value, "principal": principal})
        try:
            await self._redis.publish(self._channel, message)
        except RedisError:
            # Other processes fall back to cache expiry; the change itself is already stored.
            log.warning("could not publish a %s change; other processes see it on cache expiry", change)

    async def wait_live(self) -> None:
        await self._live.wait()

    async def run(self) -> None:
        """Receives other processes' changes until cancelled: by push with Redis, else by polling
        the change log (with neither, there is nothing to receive)."""
        if self._redis is not None:
            await self._run_pushed(self._redis)
        elif self._log is not None:
            await self._run_polled(self._log)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    # -- by push (Redis) --------------------------------------------------------------------

    async def _run_pushed(self, redis: Redis) -> None:
        failures = 0
        while True:
            try:
                await self._listen(redis)
                failures = 0
            except (RedisError, OSError):
                failures += 1
                if failures == 1:
                    log.warning("change channel lost; caches expire on their own until it is back")
            await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])

    async def _listen(self, redis: Redis) -> None:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            # Whatever was published while no subscription existed is lost: start from scratch.
            await self._apply(Change.ALL, None)
            self._live.set()
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is not None:
                    await self._receive(message.get("data"))
        finally:
            self._live.clear()
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _receive(self, data: object) -> None:
        try:
            decoded = orjson.loads(data) if isinstance(data, bytes | str) else None
            if not isinstance(decoded, dict) or decoded.get("origin") == self.origin:
                return
            change = Change(decoded["change"])
            principal = decoded.get("principal")
        except (orjson.JSONDecodeError, KeyError, ValueError):
            log.warning("ignored a malformed message on the change channel")
            return
        await self._deliver(change, principal if isinstance(principal, str) else None)

    async def _deliver(self, change: Change, principal: str | None) -> None:
        self.received += 1
        try:
            await self._apply(change, principal)
        except Exception:
            # One change that cannot be applied (a coin command that fails) must not stop the
            # channel: the others still have to arrive.
            log.exception("could not apply a %s change", change)

    # -- by polling (no Redis) --------------------------------------------------------------

    async def _run_polled(self, change_log: ChangeLog) -> None:
        poller: LogPoller | None = None
        failures = 0
        while True:
            try:
                if poller is None:
                    poller = LogPoller(change_log, await change_log.last_id())
                    # Nothing was seen while not polling: start from scratch.
                    await self._apply(Change.ALL, None)
                    await change_log.mark_read(self.origin, poller.last)
                fresh = await poller.poll(asyncio.get_running_loop().time())
                for row in fresh:
                    if row.origin != self.origin:
                        await self._deliver(row.change, row.principal)
                if fresh:
                    await change_log.mark_read(self.origin, poller.last)
                failures = 0
                self._live.set()
            except (SQLAlchemyError, OSError):
                failures += 1
                self._live.clear()
                poller = None  # start again from the newest row, after dropping every cache
                if failures == 1:
                    log.warning("cannot read the change log; caches expire on their own until it can")
            await asyncio.sleep(self._poll_seconds * (1 if failures == 0 else 2))


class LogPoller:
    """Reads the change log in id order, without skipping a row whose id was taken before a
    higher one but committed after it: ids missing below the newest seen are asked for again for
    `GAP_SECONDS` (on SQLite there are none: it has one writer at a time)."""

    def __init__(self, change_log: ChangeLog, last_seen: int) -> None:
        self._log = change_log
        self._last = last_seen
        self._gaps: dict[int, float] = {}  # a missing id -> until when it is looked for

    @property
    def last(self) -> int:
        """The newest id read."""
        return self._last

    async def poll(self, now: float) -> list[LoggedChange]:
        self._gaps = {gap: until for gap, until in self._gaps.items() if until > now}
        floor = min(self._gaps, default=self._last + 1) - 1
        fresh = []
        for row in await self._log.after(floor):
            if row.id in self._gaps:
                del self._gaps[row.id]
            elif row.id > self._last:
                for missing in range(self._last + 1, min(row.id, self._last + 1 + MAX_GAPS)):
                    self._gaps[missing] = now + GAP_SECONDS
                self._last = row.id
            else:
                continue  # seen already
            fresh.append(row)
        if len(self._gaps) > MAX_GAPS:
            self._gaps.clear()
            fresh.append(LoggedChange(self._last, Change.ALL, None, ""))
        return fresh
