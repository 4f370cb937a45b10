"""The ledger outbox in Redis and its drainer: no coin movement, and no usage record of a charged
request, is lost when a Lumen process dies.

With Redis, the Lua script that changes a balance also appends the movement to one Redis list, the
outbox (`lumen.billing.redis_store`), in the same atomic step. The list lives as long as Redis
does, so a movement a caller was told about survives the process that made it. Every process runs
an `OutboxDrainer`, which moves the outbox to the database:

1. take the drain lock (``SET lock token NX PX lock_ttl``): one drainer at a time, normally;
2. peek a batch from the head (``LRANGE``) without removing it;
3. write it in one transaction (`lumen.billing.ledger.insert_movements` and
   `lumen.usage.recorder.insert_usage`): each movement carries a unique movement id, a row whose
   id is already in ``coin_ledger`` is skipped, and only the rows actually inserted are added to
   ``coin_pools``; each usage record carries a unique ``record_id`` and is likewise inserted once;
4. remove the batch with a check-and-trim script: ``LTRIM`` only if the head of the list is still
   the batch's first entry, and release the lock if it is still ours.

Entries are only ever removed from the head, in order, and ids never repeat, so "the head is still
my first entry" means nobody removed anything since the peek: exactly the batch is trimmed. A
drainer whose lock expired while it wrote (a slow database) may overlap with the next one; both
write the same rows, the ids make the second write a no-op, and whichever trims second finds a
different head and trims nothing. A drainer that dies after its commit and before its trim leaves
the batch in the outbox; the next drainer writes it again, inserting nothing.

An entry is a movement (a JSON array of 11 items, `parse_entry`) or a request's usage record
(``[id, "usage", {record}]``), appended by the same script call as the request's charge. Both
kinds take their ids from one counter. A usage record the database refuses as data (it was
validated when made, so this means a bug) is dropped, logged and counted, rather than block the
outbox; the movements of its batch are written.

Each process drains every ``interval`` seconds (one ``LLEN`` when the outbox is empty) and at a
graceful shutdown; the survivors drain a dead process's entries. While the database is down the
outbox grows in Redis (about 200 bytes a movement): Redis must have room for it
(``maxmemory-policy noeviction`` refuses writes when full rather than dropping pools).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.ledger import LedgerEntry, insert_movements, write_movements
from lumen.store.writebehind import FlushLoop
from lumen.usage.recorder import UsageRecord, insert_usage, is_data_error, usage_from_json

log = logging.getLogger(__name__)

LOCK_TTL = 5.0
"""Seconds a drainer holds the drain lock for one batch; a dead drainer blocks the others this long."""
LOCK_POLL = 0.01
"""Seconds `OutboxDrainer.flush` waits before asking again for a lock another drainer holds."""

# KEYS: the outbox, the lock. ARGV: the batch's first entry, the batch's length, the lock token.
_TRIM = r"""
local trimmed = 0
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
  trimmed = 1
end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return trimmed
"""

# KEYS: the lock. ARGV: the lock token.
_UNLOCK = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the outbox, the rejected list. ARGV: an entry that cannot be read, if it is still the head.
_QUARANTINE = r"""
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class OutboxKeys:
    entries: str
    """The list of movements not yet in the database, oldest first."""
    meta: str
    """Hash: ``epoch`` (random, made when missing) and ``seq`` (the movement id counter)."""
    lock: str
    """The drain lock: a random token while a drainer holds it."""
    rejected: str
    """Entries that could not be read (never written by Lumen): kept for a person to look at."""

    @classmethod
    def under(cls, prefix: str) -> OutboxKeys:
        base = prefix + "outbox"
        return cls(base, base + ":meta", base + ":lock", base + ":rejected")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def movement_order(movement_id: str) -> tuple[str, int]:
    """(epoch, seq) of a movement id ``"<epoch>-<seq>"``; raises ValueError for anything else."""
    epoch, _, seq = movement_id.rpartition("-")
    if not epoch or not seq.isdigit():
        raise ValueError(f"not a movement id: {movement_id!r}")
    return epoch, int(seq)


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """A request's usage record in the outbox, with its entry id."""

    entry_id: str
    record: UsageRecord


OutboxEntry = LedgerEntry | UsageEntry


def entry_id(entry: OutboxEntry) -> str:
    return entry.entry_id if isinstance(entry, UsageEntry) else entry.movement_id or ""


def parse_outbox_entry(raw: bytes | str) -> OutboxEntry:
    """An outbox entry: a movement or a usage record; ValueError if it is not one the store wrote."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"unreadable coin ledger outbox entry {raw!r}") from exc
    if isinstance(value, list) and len(value) == 3 and value[1] == "usage":
        eid, _, record = value
        if not isinstance(eid, str):
            raise ValueError(f"malformed coin ledger outbox entry {raw!r}")
        movement_order(eid)
        return UsageEntry(eid, usage_from_json(record))
    return _movement(value, raw)


def parse_entry(raw: bytes | str) -> LedgerEntry:
    """An outbox entry that is a movement, as a ledger entry; ValueError for anything else."""
    entry = parse_outbox_entry(raw)
    if not isinstance(entry, LedgerEntry):
        raise ValueError(f"not a coin movement: {raw!r}")
    return entry


def _movement(value: Any, raw: bytes | str) -> LedgerEntry:
    try:
        mid, kind, amount, after, at_ms, refilled_at, carry, principal, rid, actor, note = value
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unreadable coin ledger outbox entry {raw!r}") from exc
    numbers = (amount, after, at_ms, refilled_at, carry)
    texts = (rid, actor, note)
    if (
        not isinstance(mid, str)
        or not isinstance(kind, str)
        or not isinstance(principal, str)
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
        or not all(t is None or isinstance(t, str) for t in texts)
    ):
        raise ValueError(f"malformed coin ledger outbox entry {raw!r}")
    movement_order(mid)
    return LedgerEntry(
        principal,
        kind,
        amount,
        after,
        at_ms,
        refilled_at,
        carry,
        request_id=rid,
        actor=actor,
        note=note,
        movement_id=mid,
    )


class OutboxDrainer:
    """Lifecycle: ``await start()``, ``await aclose()`` at shutdown. `redis` is not closed here.

    Counters (monotonic): ``written`` (ledger rows this drainer inserted), ``duplicates`` (entries
    it found already in the database: a retry after a crash, or an overlapping drainer),
    ``usage_written`` (usage rows inserted), ``usage_rejected`` (usage records the database
    refused, dropped), ``rejected`` (unreadable entries moved aside), ``trims_skipped`` (batches
    another drainer had already removed) and ``flush_failures``.
    """

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        *,
        keys: OutboxKeys,
        interval: float = 0.5,
        batch_size: int = 1000,
        lock_ttl: float = LOCK_TTL,
        retry_max: float = 10.0,
        close_timeout: float = 30.0,
    ) -> None:
        if batch_size < 1 or lock_ttl <= 0:
            raise ValueError("need batch_size >= 1 and lock_ttl > 0")
        self.keys = keys
        self._redis = redis
        self._engine = engine
        self._batch_size = batch_size
        self._lock_ttl_ms = max(1, round(lock_ttl * 1000))
        self._trim_script = redis.register_script(_TRIM)
        self._unlock_script = redis.register_script(_UNLOCK)
        self._quarantine_script = redis.register_script(_QUARANTINE)
        self._loop = FlushLoop(
            self._drain_ready,
            name="lumen-coin-outbox",
            interval=interval,
            retry_initial=min(0.1, retry_max),
            retry_max=retry_max,
            close_timeout=close_timeout,
            # The periodic drain gives way to another drainer; the last one waits for its turn.
            final=self.flush,
        )
        self.written = 0
        self.duplicates = 0
        self.usage_written = 0
        self.usage_rejected = 0
        self.rejected = 0
        self.trims_skipped = 0
        self.flush_failures = 0

    async def start(self) -> None:
        self._loop.start()

    async def aclose(self) -> None:
        """Drain what is in the outbox now, then stop. Nothing is lost if that fails: the
        movements stay in Redis for the other processes (or this one's next start)."""
        if not await self._loop.aclose():
            log.warning(
                "coin ledger outbox not drained at shutdown (database failing); the entries stay in Redis"
            )

    async def length(self) -> int:
        """Movements in the outbox (made, and not yet removed after their write to the database)."""
        return int(await self._redis.llen(self.keys.entries))

    async def flush(self) -> None:
        """Drain every movement the outbox held when called (whoever made it); raises if a write fails."""
        epoch, seq = await self._redis.hmget(self.keys.meta, ["epoch", "seq"])
        last = (_text(epoch), int(seq or 0)) if epoch is not None else None
        while True:
            head = await self._redis.lindex(self.keys.entries, 0)
            if head is None or _after(head, last):
                return
            if await self.drain_batch() is None:
                await asyncio.sleep(LOCK_POLL)  # another drainer's batch; it ends within LOCK_TTL

    async def drain_batch(self) -> int | None:
        """Move one batch from the head of the outbox to the database: None when another drainer
        holds the lock, else the number of entries handled (0: the outbox was empty)."""
        token = os.urandom(16).hex()
        if not await self._redis.set(self.keys.lock, token, nx=True, px=self._lock_ttl_ms):
            return None
        released = False
        try:
            raw = await self._redis.lrange(self.keys.entries, 0, self._batch_size - 1)
            if not raw:
                return 0
            entries = self._readable_prefix(raw)
            if not entries:
                await self._quarantine(raw[0])
                return 1
            try:
                movements, records = await self._write(entries)
            except Exception:
                self.flush_failures += 1
                log.warning(
                    "coin ledger outbox: writing %d entries failed; kept", len(entries), exc_info=True
                )
                raise
            self.written += movements
            self.usage_written += records
            self.duplicates += len(entries) - movements - records
            released = True  # the trim script releases the lock
            if not await self._trim(raw[0], len(entries), token):
                self.trims_skipped += 1
            return len(entries)
        finally:
            if not released:
                await self._unlock(token)

    def _readable_prefix(self, raw: list[Any]) -> list[OutboxEntry]:
        entries: list[OutboxEntry] = []
        for item in raw:
            try:
                entries.append(parse_outbox_entry(item))
            except ValueError:
                break  # write what comes before it; it is set aside when it reaches the head
        return entries

    async def _write(self, entries: list[OutboxEntry]) -> tuple[int, int]:
        """Write a batch; returns (ledger rows, usage rows) inserted."""
        movements = [e for e in entries if isinstance(e, LedgerEntry)]
        records = [e.record for e in entries if isinstance(e, UsageEntry)]
        try:
            async with self._engine.begin() as conn:
                return await insert_movements(conn, movements), await insert_usage(conn, records)
        except Exception as exc:
            if not records or not is_data_error(exc):
                raise
        # A usage record the database refuses must not hold up the outbox: write the movements
        # (which raise again if they were the problem), then the records one by one.
        written = await write_movements(self._engine, movements)
        return written, await self._write_usage_one_by_one(records)

    async def _write_usage_one_by_one(self, records: list[UsageRecord]) -> int:
        inserted = 0
        for record in records:
            try:
                async with self._engine.begin() as conn:
                    inserted += await insert_usage(conn, [record])
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                self.usage_rejected += 1
                log.error("usage record refused by the database, dropped: %r", record, exc_info=True)
        return inserted

    async def _trim(self, first: Any, count: int, token: str) -> bool:
        result = await self._trim_script(keys=[self.keys.entries, self.keys.lock], args=[first, count, token])
        return int(result) == 1

    async def _unlock(self, token: str) -> None:
        try:
            await self._unlock_script(keys=[self.keys.lock], args=[token])
        except RedisError:
            log.warning("could not release the coin outbox lock; it expires by itself", exc_info=True)

    async def _quarantine(self, raw: Any) -> None:
        if int(await self._quarantine_script(keys=[self.keys.entries, self.keys.rejected], args=[raw])):
            self.rejected += 1
            log.error("coin ledger outbox: unreadable entry moved to %s: %r", self.keys.rejected, raw)

    async def _drain_ready(self) -> None:
        try:
            if not await self.length():
                return
            while True:
                handled = await self.drain_batch()
                if handled is None or handled < self._batch_size:
                    return
        except RedisError:
            log.warning("coin ledger outbox: Redis failed while draining", exc_info=True)
            raise


def _after(head: Any, last: tuple[str, int] | None) -> bool:
    """Whether the outbox's head was made after the movement `last` (epoch, seq)."""
    if last is None:
        return False  # nothing was counted: drain whatever is there
    try:
        epoch, seq = movement_order(entry_id(parse_outbox_entry(head)))
    except ValueError:
        return False  # drain_batch sets it aside
    return epoch == last[0] and seq > last[1]
