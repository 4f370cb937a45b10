from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.engine import create_engine
from lumen.store.migrate import upgrade_database
from lumen.store.tables import usage_records
from lumen.usage.recorder import UsageRecord, UsageRecorder, usage_from_json, usage_json

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make(i: int, **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "request_id": f"r{i}",
        "created_at": T0 + timedelta(milliseconds=i),
        "principal": "bootstrap",
        "model": "smollm2",
        "source": "api",
        "operation": "chat.completions",
        "prompt_tokens": i,
        "completion_tokens": 2 * i,
        "cost_micro": 10 * i,
        "latency_ms": 1.5,
        "status": 200,
    }
    return UsageRecord(**(fields | overrides))


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a state change of the background task; the timeout only guards against a hang."""
    async with asyncio.timeout(30):
        while not predicate():
            await asyncio.sleep(0.002)


async def stored(engine: AsyncEngine) -> tuple[int, int, int, int]:
    t = usage_records.c
    query = select(
        func.count(), func.sum(t.prompt_tokens), func.sum(t.completion_tokens), func.sum(t.cost_micro)
    )
    async with engine.connect() as conn:
        count, prompt, completion, cost = (await conn.execute(query)).one()
    return count, prompt or 0, completion or 0, cost or 0


async def stored_request_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(select(usage_records.c.request_id).order_by(usage_records.c.id))).scalars()
        )


async def break_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE usage_records RENAME TO usage_records_away"))


async def repair_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE usage_records_away RENAME TO usage_records"))


def assert_balanced(r: UsageRecorder) -> None:
    assert r.queued == r.written + r.dropped + r.rejected + r.pending


class GatedRecorder(UsageRecorder):
    """Holds every insert until `release` is set, so a test can act while a flush is in flight."""

    def __init__(self, engine: AsyncEngine, **options: Any) -> None:
        super().__init__(engine, **options)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def _insert(self, records: deque[UsageRecord]) -> None:
        self.entered.set()
        await self.release.wait()
        await super()._insert(records)


async def test_writes_every_record_with_the_right_sums(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, batch_size=100)
    await recorder.start()
    for i in range(1234):
        recorder.record(make(i))
    await recorder.aclose()
    n = 1234
    assert await stored(engine) == (n, n * (n - 1) // 2, n * (n - 1), 5 * n * (n - 1))
    assert (recorder.queued, recorder.written, recorder.dropped, recorder.pending) == (n, n, 0, 0)
    assert recorder.flush_failures == 0


async def test_each_batch_is_one_transaction(engine: AsyncEngine) -> None:
    commits = 0

    def on_commit(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(engine.sync_engine, "commit", on_commit)
    recorder = UsageRecorder(engine)  # batch_size=500
    for i in range(1234):
        recorder.record(make(i))
    await recorder.flush()
    assert commits == 3
    assert (await stored(engine))[0] == 1234
    await recorder.aclose()


async def test_record_never_touches_the_database(engine: AsyncEngine) -> None:
    checkouts = 0

    def on_checkout(*_args: Any) -> None:
        nonlocal checkouts
        checkouts += 1

    event.listen(engine.sync_engine.pool, "checkout", on_checkout)
    recorder = UsageRecorder(engine, flush_interval=3600, batch_size=5000, max_queue=5000)
    await recorder.start()
    for i in range(1000):
        recorder.record(make(i))
    await asyncio.sleep(0)  # let the background task run once: it must still be waiting
    assert checkouts == 0
    assert recorder.pending == 1000
    await recorder.aclose()
    assert checkouts == 1
    assert (await stored(engine))[0] == 1000


async def test_a_full_batch_is_written_without_waiting_for_the_interval(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, batch_size=10, flush_interval=3600)
    await recorder.start()
    for i in range(9):
        recorder.record(make(i))
    await asyncio.sleep(0.05)
    assert recorder.written == 0  # a partial batch waits for the (hour-long) interval
    recorder.record(make(9))
    await until(lambda: recorder.written == 10)  # would time out if it waited for the interval
    await recorder.aclose()
    assert (await stored(engine))[0] == 10


async def test_a_partial_batch_is_written_after_the_interval(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, batch_size=500, flush_interval=0.01)
    await recorder.start()
    for i in range(3):
        recorder.record(make(i))
    await until(lambda: recorder.written == 3)
    await recorder.aclose()
    assert (await stored(engine))[0] == 3


async def test_aclose_while_a_flush_is_in_flight_loses_nothing(engine: AsyncEngine) -> None:
    recorder = GatedRecorder(engine, batch_size=100, flush_interval=3600)
    await recorder.start()
    for i in range(150):
        recorder.record(make(i))
    await recorder.entered.wait()  # the background task holds a batch of 100 in flight
    assert recorder.pending == 150
    closing = asyncio.create_task(recorder.aclose())
    for i in range(150, 200):
        recorder.record(make(i))  # still accepted: aclose has not finished
    await asyncio.sleep(0.05)
    assert not closing.done()
    recorder.release.set()
    await closing
    assert await stored_request_ids(engine) == [f"r{i}" for i in range(200)]
    assert (recorder.written, recorder.dropped) == (200, 0)


async def test_a_batch_in_flight_when_the_task_is_cancelled_is_kept_and_written_at_close(
    engine: AsyncEngine,
) -> None:
    recorder = GatedRecorder(engine, batch_size=10, flush_interval=3600)
    await recorder.start()
    for i in range(15):
        recorder.record(make(i))
    await recorder.entered.wait()
    task = recorder._loop.task
    assert task is not None
    task.cancel()  # e.g. the event loop shutting down without aclose()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.pending == 15
    recorder.release.set()
    await recorder.aclose()
    assert await stored_request_ids(engine) == [f"r{i}" for i in range(15)]


async def test_a_failing_flush_keeps_the_records_until_the_database_is_repaired(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, batch_size=100)
    await break_table(engine)
    for i in range(300):
        recorder.record(make(i))
    with pytest.raises(DBAPIError):
        await recorder.flush()
    assert (recorder.pending, recorder.written, recorder.flush_failures) == (300, 0, 1)
    await repair_table(engine)
    await recorder.flush()
    assert await stored_request_ids(engine) == [f"r{i}" for i in range(300)]
    assert_balanced(recorder)
    await recorder.aclose()


async def test_the_background_task_retries_with_backoff_until_repaired(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, batch_size=10, flush_interval=0.01, retry_initial=0.01, retry_max=0.02)
    await break_table(engine)
    await recorder.start()
    for i in range(50):
        recorder.record(make(i))
    await until(lambda: recorder.flush_failures >= 3)
    assert (recorder.written, recorder.pending) == (0, 50)
    await repair_table(engine)
    await until(lambda: recorder.written == 50)
    await recorder.aclose()
    assert await stored_request_ids(engine) == [f"r{i}" for i in range(50)]
    assert_balanced(recorder)


async def test_an_unmigrated_database_fails_then_works_once_migrated(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        recorder = UsageRecorder(engine)
        recorder.record(make(1))
        with pytest.raises(DBAPIError):
            await recorder.flush()
        await upgrade_database(database_url)
        await recorder.aclose()
        assert await stored_request_ids(engine) == ["r1"]
    finally:
        await engine.dispose()


async def test_an_unreachable_postgresql_database_fails_then_works_once_created(pg_url: str) -> None:
    missing = pg_url + "_late"
    name = missing.rsplit("/", 1)[1]
    admin = create_engine(pg_url)
    engine = create_engine(missing)
    try:
        recorder = UsageRecorder(engine)
        recorder.record(make(1))
        with pytest.raises(DBAPIError):
            await recorder.flush()  # the database does not exist yet
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await upgrade_database(missing)
        await recorder.aclose()
        assert await stored_request_ids(engine) == ["r1"]
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_a_full_buffer_drops_the_oldest_and_counts_them(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, batch_size=10, max_queue=100)
    for i in range(250):
        recorder.record(make(i))
    assert (recorder.queued, recorder.dropped, recorder.pending) == (250, 150, 100)
    await recorder.aclose()
    assert await stored_request_ids(engine) == [f"r{i}" for i in range(150, 250)]
    assert_balanced(recorder)


async def test_a_failed_batch_goes_back_to_the_front_and_the_bound_still_holds(engine: AsyncEngine) -> None:
    recorder = GatedRecorder(engine, batch_size=10, max_queue=20)
    await break_table(engine)
    for i in range(20):
        recorder.record(make(i))
    flushing = asyncio.create_task(recorder.flush())
    await recorder.entered.wait()  # r0..r9 in flight, r10..r19 buffered
    for i in range(20, 35):
        recorder.record(make(i))  # the buffer is full at 20: r10..r14 are dropped
    assert recorder.dropped == 5
    recorder.release.set()
    with pytest.raises(DBAPIError):
        await flushing
    # r0..r9 went back to the front, then the oldest went first: r15..r34 remain.
    assert (recorder.dropped, recorder.pending) == (15, 20)
    await repair_table(engine)
    await recorder.aclose()
    assert await stored_request_ids(engine) == [f"r{i}" for i in range(15, 35)]
    assert_balanced(recorder)


BAD_VALUES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("null request_id", {"request_id": None}, {"sqlite", "postgresql"}),
    ("bigint overflow", {"cost_micro": 2**70}, {"sqlite", "postgresql"}),
    ("integer overflow", {"prompt_tokens": 2**40}, {"postgresql"}),
    ("NUL in a string", {"model": "bad\x00model"}, {"postgresql"}),
    ("text for an integer", {"status": "teapot"}, {"postgresql"}),
]


@pytest.mark.parametrize(
    ("bad", "backends"), [(b, k) for _, b, k in BAD_VALUES], ids=[n for n, _, _ in BAD_VALUES]
)
async def test_a_record_the_database_refuses_is_rejected_alone(
    engine: AsyncEngine, bad: dict[str, Any], backends: set[str]
) -> None:
    recorder = UsageRecorder(engine, batch_size=100)
    for i in range(10):
        recorder.record(dataclasses.replace(make(i), **bad) if i == 4 else make(i))
    await recorder.flush()
    if engine.dialect.name in backends:
        assert await stored_request_ids(engine) == [f"r{i}" for i in range(10) if i != 4]
        assert (recorder.written, recorder.rejected, recorder.pending) == (9, 1, 0)
    else:  # this backend stores the value: nothing is rejected
        assert len(await stored_request_ids(engine)) == 10
        assert (recorder.written, recorder.rejected, recorder.pending) == (10, 0, 0)
    await recorder.aclose()


async def test_records_after_close_are_dropped_and_counted(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine)
    await recorder.start()
    await recorder.aclose()
    recorder.record(make(1))
    assert (recorder.queued, recorder.dropped, recorder.pending) == (1, 1, 0)
    await recorder.aclose()  # a second close is a no-op
    assert (await stored(engine))[0] == 0


async def test_aclose_gives_up_on_a_failing_database_and_counts_the_loss(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, retry_initial=0.01, retry_max=0.01, close_timeout=0.2)
    await break_table(engine)
    for i in range(5):
        recorder.record(make(i))
    await recorder.aclose()
    assert recorder.flush_failures >= 1
    assert (recorder.written, recorder.dropped, recorder.pending) == (0, 5, 0)
    assert_balanced(recorder)


def test_created_at_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make(1, created_at=datetime(2026, 1, 1))


def test_created_at_defaults_to_now_in_utc() -> None:
    rec = UsageRecord(
        request_id="r",
        principal="p",
        model="m",
        source="chat",
        operation="embeddings",
        prompt_tokens=1,
        completion_tokens=0,
        latency_ms=1,
        status=200,
    )
    assert rec.created_at.tzinfo is UTC


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"batch_size": 10, "max_queue": 5}, {"flush_interval": 0}, {"retry_max": 0.01}],
)
async def test_bad_options_are_refused(sqlite_url: str, options: dict[str, Any]) -> None:
    engine = create_engine(sqlite_url)
    try:
        with pytest.raises(ValueError):
            UsageRecorder(engine, **options)
    finally:
        await engine.dispose()


async def test_a_batch_written_again_adds_no_row(engine: AsyncEngine) -> None:
    # At-least-once: a commit whose acknowledgement was lost is retried; the ids make it a no-op.
    recorder = UsageRecorder(engine)
    records = [make(i) for i in range(3)]
    for rec in records:
        recorder.record(rec)
    await recorder.flush()
    for rec in [*records, make(3)]:
        recorder.record(rec)
    await recorder.flush()
    await recorder.aclose()
    assert await stored_request_ids(engine) == ["r0", "r1", "r2", "r3"]
    assert (recorder.written, recorder.rejected, recorder.dropped) == (7, 0, 0)


def test_every_record_gets_its_own_id_and_survives_json() -> None:
    a, b = make(1, ttft_ms=3.25, key_id="k1", estimated=True), make(1)
    assert a.record_id != b.record_id and len(a.record_id) == 32
    assert usage_from_json(orjson.loads(usage_json(a))) == a
    with pytest.raises(ValueError):
        usage_from_json({**orjson.loads(usage_json(a)), "prompt_tokens": "3"})
    with pytest.raises(ValueError):
        usage_from_json({**orjson.loads(usage_json(a)), "created_at": "yesterday"})
    with pytest.raises(ValueError):
        usage_from_json([1, 2])
