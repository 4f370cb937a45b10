"""The coin ledger in the database: writing movements, the in-process write-behind writer, and
reading a pool's durable state.

`write_movements` writes a batch in one transaction that inserts the ledger rows *and* adds each
principal's sum of amounts to ``coin_pools.balance_micro`` (one upsert per principal, not per
request), so in the database the balance is always exactly the sum of the ledger, whatever the
order in which processes write. ``lumen audit`` checks that. Movements from the Redis outbox carry
a unique id and are inserted at most once (`lumen.billing.outbox`).

`LedgerWriter` is the writer of a store that does not journal (the memory store, one process):
`record` appends a movement to an in-memory buffer (no await, no database); a background task
writes the buffer in batches. Unlike usage records, coin movements are never dropped to bound
memory: while the database is down the buffer grows (about 200 bytes a movement; watch `pending`)
and failed batches are retried with backoff. A graceful shutdown (`aclose`) writes everything; only
if the database stays unreachable for `close_timeout` are the remaining movements logged, each
one, and lost. A crash loses what was not committed: the movements of the last `flush_interval`
(at most `batch_size`, as a full batch is written at once) plus the batch in flight, or all that
is buffered while the database fails; the pools' balances die with the process too, and are
reloaded from the (consistent) database at the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumen.billing.pools import PoolOverrides
from lumen.billing.store import Change, Seed
from lumen.store.tables import coin_ledger, coin_pools
from lumen.store.writebehind import FlushLoop

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime, exactly (no float)."""
    return _EPOCH + ms * _MS


def datetime_to_ms(value: datetime) -> int:
    return (value - _EPOCH) // _MS


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One movement, plus the pool's refill clock after it (for the ``coin_pools`` row)."""

    principal: str
    kind: str
    amount_micro: int
    balance_after_micro: int
    at_ms: int
    refilled_at_ms: int
    carry: int
    request_id: str | None = None
    actor: str | None = None
    note: str | None = None
    movement_id: str | None = None
    """Set by the Redis store (its outbox); the in-process writer's movements have none."""

    def row(self) -> dict[str, Any]:
        return {
            "movement_id": self.movement_id,
            "principal": self.principal,
            "kind": self.kind,
            "amount_micro": self.amount_micro,
            "balance_after_micro": self.balance_after_micro,
            "request_id": self.request_id,
            "created_at": ms_to_datetime(self.at_ms),
            "actor": self.actor,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """A ``coin_pools`` row: `seed` is None when the pool was never opened (no starting balance)."""

    seed: Seed | None
    overrides: PoolOverrides


def _overrides(row: Any) -> PoolOverrides:
    return PoolOverrides(row.state, row.max_micro, row.refresh_micro, row.starting_micro)


async def load_pool(engine: AsyncEngine, principal: str) -> PoolRecord | None:
    """The durable state of one pool: the one database read of a principal's first use."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(coin_pools).where(coin_pools.c.principal == principal))).first()
    if row is None:
        return None
    overrides = _overrides(row)
    if row.opened_at is None:
        return PoolRecord(None, overrides)
    refilled = datetime_to_ms(row.refilled_at or row.opened_at)
    return PoolRecord(Seed(row.balance_micro, refilled, row.refill_carry, overrides), overrides)


def _upsert(dialect_name: str) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(coin_pools)


async def save_overrides(engine: AsyncEngine, principal: str, overrides: PoolOverrides, now_ms: int) -> None:
    """Store an entity's own pool settings (creating an unopened pool row if needed)."""
    values = {
        "state": overrides.state,
        "max_micro": overrides.max_micro,
        "refresh_micro": overrides.refresh_micro,
        "starting_micro": overrides.starting_micro,
        "updated_at": ms_to_datetime(now_ms),
    }
    stmt = _upsert(engine.dialect.name).values(principal=principal, **values)
    stmt = stmt.on_conflict_do_update(index_elements=[coin_pools.c.principal], set_=values)
    async with engine.begin() as conn:
        await conn.execute(stmt)


class LedgerWriter:
    """Lifecycle: ``await start()``, ``record()`` per movement, ``await aclose()`` at shutdown."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        retry_max: float = 10.0,
        close_timeout: float = 30.0,
    ) -> None:
        if batch_size < 1 or flush_interval <= 0 or retry_max <= 0 or close_timeout < 0:
            raise ValueError("batch_size >= 1, flush_interval > 0, retry_max > 0, close_timeout >= 0")
        self._engine = engine
        self._batch_size = batch_size
        self._buffer: deque[LedgerEntry] = deque()
        self._inflight = 0
        self._lock = asyncio.Lock()
        self._loop = FlushLoop(
            self.flush,
            name="lumen-coin-ledger",
            interval=flush_interval,
            retry_initial=min(0.1, retry_max),
            retry_max=retry_max,
            close_timeout=close_timeout,
        )
        self._closed = False
        self.written = 0
        self.flush_failures = 0
        self.lost = 0

    @property
    def pending(self) -> int:
        return len(self._buffer) + self._inflight

    def record_change(
        self,
        principal: str,
        change: Change,
        at_ms: int,
        *,
        request_id: str | None = None,
        actor: str | None = None,
        note: str | None = None,
    ) -> None:
        """Record a store operation's movements; refills are the system's, the rest the caller's."""
        for m in change.movements:
            system = m.kind == "refill"
            self.record(
                LedgerEntry(
                    principal,
                    m.kind,
                    m.amount_micro,
                    m.balance_after_micro,
                    at_ms,
                    change.refilled_at,
                    change.carry,
                    request_id=None if system else request_id,
                    actor="system" if system else actor,
                    note=None if system else note,
                )
            )

    def record(self, entry: LedgerEntry) -> None:
        """Accept one movement for writing. O(1); never awaits."""
        if self._closed:
            # A movement after close is a bug in the shutdown order; never lose it silently.
            self.lost += 1
            log.error("coin movement after the ledger writer closed, not written: %r", entry)
            return
        self._buffer.append(entry)
        if len(self._buffer) >= self._batch_size:
            self._loop.wake()

    async def start(self) -> None:
        self._loop.start()

    async def flush(self) -> None:
        """Write everything buffered now; raises if a write fails (the movements stay buffered)."""
        async with self._lock:
            while self._buffer:
                await self._write_next_batch()

    async def aclose(self) -> None:
        """Write every movement recorded so far, then stop. Safe to call twice."""
        if self._closed:
            return
        try:
            await self._loop.aclose()
        finally:
            self._closed = True
            for entry in self._buffer:
                log.error("coin ledger closed with the database failing; movement lost: %r", entry)
            self.lost += len(self._buffer)
            self._buffer.clear()

    async def _write_next_batch(self) -> None:
        n = min(len(self._buffer), self._batch_size)
        batch = [self._buffer.popleft() for _ in range(n)]
        self._inflight = n
        written = False
        try:
            await self._write(batch)
            written = True
            self.written += n
        except Exception:
            self.flush_failures += 1
            log.warning("coin ledger flush failed; %d movements kept for retry", n, exc_info=True)
            raise
        finally:
            self._inflight = 0
            if not written:  # also on cancellation: back to the front, in order
                self._buffer.extendleft(reversed(batch))

    async def _write(self, batch: list[LedgerEntry]) -> None:
        await write_movements(self._engine, batch)


def _pool_sums(entries: Iterable[LedgerEntry]) -> list[dict[str, Any]]:
    """Per principal: the sum of the amounts, and the refill clock and times of its last entry."""
    pools: dict[str, dict[str, Any]] = {}
    for e in entries:
        agg = pools.get(e.principal)
        if agg is None:
            agg = pools[e.principal] = {
                "principal": e.principal,
                "balance_micro": 0,
                "refilled_at": ms_to_datetime(e.refilled_at_ms),
                "refill_carry": e.carry,
                "opened_at": None,
                "updated_at": ms_to_datetime(e.at_ms),
            }
        agg["balance_micro"] += e.amount_micro
        # Entries of one principal are in the order its store applied them: the last wins.
        agg["refilled_at"] = ms_to_datetime(e.refilled_at_ms)
        agg["refill_carry"] = e.carry
        agg["updated_at"] = ms_to_datetime(e.at_ms)
        if e.kind == "start":
            agg["opened_at"] = ms_to_datetime(e.at_ms)
    # Sorted, so two writers updating the same principals lock them in the same order.
    return [pools[p] for p in sorted(pools)]


async def write_movements(engine: AsyncEngine, entries: Sequence[LedgerEntry]) -> int:
    """Insert the movements into the ledger and add their sums to ``coin_pools``, in one
    transaction; returns how many were inserted (see `insert_movements`)."""
    if not entries:
        return 0
    async with engine.begin() as conn:
        return await insert_movements(conn, entries)


async def insert_movements(conn: AsyncConnection, entries: Sequence[LedgerEntry]) -> int:
    """`write_movements` inside the caller's transaction (the outbox drainer writes usage records
    in the same one); returns how many were inserted.

    A movement with a `movement_id` already in the ledger is skipped, and only the rows actually
    inserted count towards the balances: writing a batch again (a retry after a crash between the
    commit and the removal from the outbox, or two drainers at once) changes nothing.
    """
    if not entries:
        return 0
    if any(e.movement_id is not None for e in entries):
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        insert_new = (
            dialect.insert(coin_ledger)
            .on_conflict_do_nothing(index_elements=[coin_ledger.c.movement_id])
            .returning(coin_ledger.c.movement_id)
        )
        result = await conn.execute(insert_new, [e.row() for e in entries])
        new_ids = set(result.scalars())
        entries = [e for e in entries if e.movement_id is None or e.movement_id in new_ids]
        if not entries:
            return 0
    else:
        # The in-process writer's movements have no id: a plain insert, no RETURNING.
        await conn.execute(insert(coin_ledger), [e.row() for e in entries])
    await conn.execute(_add_to_pools(conn.dialect.name), _pool_sums(entries))
    return len(entries)


def _add_to_pools(dialect_name: str) -> Any:
    stmt = _upsert(dialect_name)
    old, new = coin_pools.c, stmt.excluded
    # Another process may have written a later refill clock first: keep the latest one.
    newer = or_(old.refilled_at.is_(None), new.refilled_at > old.refilled_at)
    return stmt.on_conflict_do_update(
        index_elements=[old.principal],
        set_={
            "balance_micro": old.balance_micro + new.balance_micro,
            "refilled_at": case((newer, new.refilled_at), else_=old.refilled_at),
            "refill_carry": case((newer, new.refill_carry), else_=old.refill_carry),
            "opened_at": func.coalesce(old.opened_at, new.opened_at),
            "updated_at": new.updated_at,
        },
    )
