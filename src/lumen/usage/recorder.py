"""The write-behind usage recorder: the hot path hands over a record, a background task writes.

`UsageRecorder.record` appends to an in-memory buffer and returns: no await, no database. A
background task writes the buffer in batches, one multi-row INSERT and one transaction per batch
(a group commit), every ``flush_interval`` seconds or as soon as ``batch_size`` records wait.

Guarantees:

- Graceful shutdown loses nothing: `aclose` writes every record recorded before it returns (it
  retries for up to ``close_timeout`` seconds if the database is failing; what is still unwritten
  then is logged and counted as dropped).
- A failing database loses nothing while it is down for less than the buffer takes to fill: a
  failed batch goes back to the front of the buffer and is retried with exponential backoff.
  The buffer is bounded by ``max_queue``; when it is full the *oldest* record is dropped and
  counted (memory stays bounded at ``max_queue`` records plus the one batch in flight).
- A record the database refuses as data (a constraint or value error) is not retried forever:
  its batch is retried row by row, and only the refused rows are dropped, logged and counted as
  ``rejected``, so one bad record never blocks the others.
- Crash (SIGKILL, power loss) loses at most what was not yet committed: the records of the last
  ``flush_interval`` (at most ``batch_size`` of them, since a full batch is flushed at once) plus
  the one batch in flight, or everything buffered if the database was already failing.
- Delivery is at-least-once, writing is idempotent: every record has a unique ``record_id``
  (``usage_records.record_id``), and a record already in the table is skipped, so a batch written
  again (its commit's acknowledgement was lost) adds nothing.

With Redis, a request's record usually does not come here at all: `CoinBank.finish` puts it in
the coin ledger outbox together with its charge (`usage_json`), and the outbox drainer writes it
with `insert_usage`, so a killed process loses neither (see docs/coins.md).

Counters for metrics (plain ints, monotonic): ``queued`` (records accepted by `record`),
``written``, ``dropped`` (buffer overflow, or recorded after close, or unwritten at close),
``rejected`` (refused by the database as data) and ``flush_failures`` (failed write attempts).
At rest ``queued == written + dropped + rejected + pending``.

`record` must be called from the event loop thread the recorder runs on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumen.ids import unique_id
from lumen.store.tables import usage_records
from lumen.store.writebehind import FlushLoop

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def new_record_id() -> str:
    return unique_id()


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRecord:
    """What one request consumed; the columns of ``usage_records`` without the id."""

    request_id: str
    created_at: datetime = field(default_factory=_utcnow)
    principal: str
    key_id: str | None = None
    model: str
    endpoint: str | None = None
    source: str  # "api" or "chat"
    operation: str  # "chat.completions", "completions" or "embeddings"
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    cost_micro: int = 0
    latency_ms: float
    ttft_ms: float | None = None
    status: int
    finish_reason: str | None = None
    error_code: str | None = None
    record_id: str = field(default_factory=new_record_id)
    """Unique per record: writing a record twice (a retried batch, a re-drained outbox) adds one row."""

    def __post_init__(self) -> None:
        # Refuse here, with the caller on the stack, rather than at flush time in the background.
        if self.created_at.tzinfo is None or self.created_at.utcoffset() is None:
            raise ValueError("UsageRecord.created_at must be timezone-aware (UTC)")


_COLUMNS = tuple(f.name for f in fields(UsageRecord))


def _row(rec: UsageRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in _COLUMNS}


def usage_json(rec: UsageRecord) -> str:
    """A record as one JSON object (for the coin ledger outbox); `usage_from_json` reads it back."""
    return orjson.dumps(_row(rec)).decode()


_TYPES: dict[str, tuple[type, ...]] = {
    "request_id": (str,),
    "principal": (str,),
    "model": (str,),
    "source": (str,),
    "operation": (str,),
    "record_id": (str,),
    "key_id": (str, type(None)),
    "endpoint": (str, type(None)),
    "finish_reason": (str, type(None)),
    "error_code": (str, type(None)),
    "prompt_tokens": (int,),
    "completion_tokens": (int,),
    "cost_micro": (int,),
    "status": (int,),
    "estimated": (bool,),
    "latency_ms": (int, float),
    "ttft_ms": (int, float, type(None)),
    "created_at": (str,),
}


def usage_from_json(value: Any) -> UsageRecord:
    """The record `usage_json` wrote; ValueError for anything else."""
    if not isinstance(value, dict) or set(value) != set(_COLUMNS):
        raise ValueError(f"not a usage record: {value!r}")
    for name, types in _TYPES.items():
        item = value[name]
        if not isinstance(item, types) or (isinstance(item, bool) and bool not in types):
            raise ValueError(f"usage record field {name} is {item!r}")
    try:
        created_at = datetime.fromisoformat(value["created_at"])
        return UsageRecord(**{**value, "created_at": created_at})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a usage record: {value!r}") from exc


async def insert_usage(conn: AsyncConnection, records: Iterable[UsageRecord]) -> int:
    """Insert the records not yet in ``usage_records`` (by ``record_id``); returns how many were new."""
    rows = [_row(r) for r in records]
    if not rows:
        return 0
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(usage_records)
        .on_conflict_do_nothing(index_elements=[usage_records.c.record_id])
        .returning(usage_records.c.id)
    )
    return len((await conn.execute(stmt, rows)).all())


def is_data_error(exc: BaseException) -> bool:
    """True when the values were refused (retrying cannot help), not when the database is unavailable."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, ValueError | TypeError | ArithmeticError):
        return True  # raised unwrapped by a driver encoding a value (sqlite3: int too large)
    if not isinstance(exc, StatementError):
        return False
    if not isinstance(exc, DBAPIError):
        return True  # failed while binding parameters, before the database was reached
    # SQLSTATE class 22 (data exception) or 23 (integrity violation), which some drivers report
    # as a generic DBAPI error; or the driver refused a value client-side (asyncpg: ValueError).
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    cause = exc.orig.__cause__ if exc.orig is not None else None
    return sqlstate[:2] in ("22", "23") or isinstance(cause, ValueError | TypeError | ArithmeticError)


class UsageRecorder:
    """Buffers `UsageRecord`s and writes them in batches behind the hot path.

    Lifecycle: construct, ``await start()`` in the app's startup, ``record()`` per request,
    ``await aclose()`` at shutdown (before disposing the engine).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        retry_initial: float = 0.1,
        retry_max: float = 10.0,
        close_timeout: float = 30.0,
    ) -> None:
        if batch_size < 1 or max_queue < batch_size:
            raise ValueError("need 1 <= batch_size <= max_queue")
        if flush_interval <= 0 or retry_initial <= 0 or retry_max < retry_initial or close_timeout < 0:
            raise ValueError("flush_interval and retry_initial must be > 0, retry_max >= retry_initial")
        self._engine = engine
        self._batch_size = batch_size
        self._max_queue = max_queue

        self.queued = 0
        self.written = 0
        self.dropped = 0
        self.rejected = 0
        self.flush_failures = 0

        self._buffer: deque[UsageRecord] = deque()
        self._inflight = 0
        self._lock = asyncio.Lock()  # one writer at a time: the background task, flush() or aclose()
        self._loop = FlushLoop(
            self.flush,
            name="lumen-usage-recorder",
            interval=flush_interval,
            retry_initial=retry_initial,
            retry_max=retry_max,
            close_timeout=close_timeout,
        )
        self._closed = False

    @property
    def pending(self) -> int:
        """Records accepted but not yet written (buffered plus the batch in flight)."""
        return len(self._buffer) + self._inflight

    def record(self, rec: UsageRecord) -> None:
        """Accept one record for writing. O(1); never awaits, never touches the database."""
        self.queued += 1
        if self._closed:
            self.dropped += 1
            log.warning("usage record %s arrived after the recorder closed; dropped", rec.request_id)
            return
        if len(self._buffer) >= self._max_queue:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(rec)
        if len(self._buffer) >= self._batch_size:
            self._loop.wake()

    async def start(self) -> None:
        """Launch the background flush task (idempotent)."""
        if self._loop.closing:
            raise RuntimeError("UsageRecorder is closed")
        self._loop.start()

    async def flush(self) -> None:
        """Write everything buffered now. Raises if a write fails; the records are kept for a retry."""
        async with self._lock:
            while self._buffer:
                await self._write_next_batch()

    async def aclose(self) -> None:
        """Write everything recorded so far, then stop. Safe to call twice."""
        if self._closed:
            return
        try:
            await self._loop.aclose()
        finally:
            self._closed = True
            lost = len(self._buffer)
            if lost:
                self._buffer.clear()
                self.dropped += lost
                log.error("usage recorder closed with the database failing: %d usage records lost", lost)

    async def _write_next_batch(self) -> None:
        """Write up to batch_size records from the front of the buffer; on failure put back the unwritten."""
        n = min(len(self._buffer), self._batch_size)
        batch = deque(self._buffer.popleft() for _ in range(n))
        self._inflight = n
        try:
            try:
                await self._insert(batch)
                self.written += n
                batch.clear()
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                await self._insert_one_by_one(batch)
        except Exception:
            self.flush_failures += 1
            log.warning("usage flush failed; %d records kept for retry", len(batch), exc_info=True)
            raise
        finally:
            self._inflight = 0
            self._requeue(batch)  # whatever is left in `batch` was not written (also on cancellation)

    async def _insert(self, records: deque[UsageRecord]) -> None:
        # One statement for the whole batch (SQLAlchemy sends it as multi-row INSERTs) in one
        # transaction: one commit, one fsync, for up to batch_size requests.
        async with self._engine.begin() as conn:
            await insert_usage(conn, records)

    async def _insert_one_by_one(self, batch: deque[UsageRecord]) -> None:
        # Rare path: the batch held a record the database refuses. Pops each record once it is
        # written or rejected, so on an unrelated failure `batch` holds exactly the unwritten ones.
        while batch:
            rec = batch[0]
            try:
                await self._insert(deque((rec,)))
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                self.rejected += 1
                log.error("usage record refused by the database, dropped: %r", rec, exc_info=True)
            else:
                self.written += 1
            batch.popleft()

    def _requeue(self, batch: deque[UsageRecord]) -> None:
        if not batch:
            return
        self._buffer.extendleft(reversed(batch))
        overflow = len(self._buffer) - self._max_queue
        for _ in range(max(overflow, 0)):
            self._buffer.popleft()  # the oldest go first, as in record()
        self.dropped += max(overflow, 0)
