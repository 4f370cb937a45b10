from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.usage.queries import (
    EXPORT_COLUMNS,
    NO_KEY,
    StoredUsageRecord,
    Totals,
    UsageScope,
    export_rows,
    recent_requests,
    recent_usage,
    recent_volume,
    totals_by_principal,
    usage_series,
    usage_totals,
    window,
)
from lumen.usage.recorder import UsageRecord, UsageRecorder

T0 = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make(i: int, principal: str) -> UsageRecord:
    return UsageRecord(
        request_id=f"r{i}",
        created_at=T0 + timedelta(seconds=i),
        principal=principal,
        key_id=f"k-{principal}",
        model="smollm2",
        endpoint="local",
        source="chat" if i % 2 else "api",
        operation="chat.completions",
        prompt_tokens=i,
        completion_tokens=i + 1,
        estimated=i % 3 == 0,
        cost_micro=1_000_000 * i + 7,
        latency_ms=12.25,
        ttft_ms=None if i % 2 else 3.5,
        status=200 if i % 5 else 502,
        finish_reason="stop" if i % 5 else None,
        error_code=None if i % 5 else "upstream_error",
    )


def without_id(row: StoredUsageRecord) -> UsageRecord:
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(UsageRecord)}
    return UsageRecord(**values)


async def _record(engine: AsyncEngine, records: list[UsageRecord]) -> None:
    recorder = UsageRecorder(engine)
    for rec in records:
        recorder.record(rec)
    await recorder.aclose()


async def test_recent_usage_is_newest_first_and_round_trips_every_field(engine: AsyncEngine) -> None:
    # Recorded out of time order: the newest request is not the last row written.
    records = [make(i, "alice" if i % 2 else "bob") for i in (3, 1, 4, 0, 2, 5)]
    await _record(engine, records)
    rows = await recent_usage(engine=engine)
    assert [r.request_id for r in rows] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert {without_id(r) for r in rows} == set(records)
    assert all(r.created_at.tzinfo == UTC for r in rows)
    assert sorted(r.id for r in rows) == sorted({r.id for r in rows})


async def test_recent_usage_filters_by_principal_and_limits(engine: AsyncEngine) -> None:
    await _record(engine, [make(i, "alice" if i % 2 else "bob") for i in range(10)])
    rows = await recent_usage(engine=engine, principal="alice", limit=3)
    assert [r.request_id for r in rows] == ["r9", "r7", "r5"]
    assert await recent_usage(engine=engine, principal="nobody") == []


async def test_same_time_rows_come_newest_written_first(engine: AsyncEngine) -> None:
    same = [dataclasses.replace(make(0, "p"), request_id=f"same{i}") for i in range(3)]
    await _record(engine, same)
    assert [r.request_id for r in await recent_usage(engine=engine)] == ["same2", "same1", "same0"]


# --- aggregates: the same answers on SQLite and PostgreSQL ---------------------------------------

NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC)


def at(when: datetime, i: int, principal: str = "user:1", **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "request_id": f"q{i}",
        "created_at": when,
        "principal": principal,
        "key_id": "key_a",
        "model": "m1",
        "source": "api",
        "operation": "chat.completions",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_micro": 100,
        "latency_ms": 1.0,
        "status": 200,
    }
    values.update(fields)
    return UsageRecord(**values)  # type: ignore[arg-type]


def test_windows_end_with_the_current_bucket() -> None:
    since, hours = window("day", NOW)
    assert since == datetime(2026, 11, 27, 16, tzinfo=UTC)
    assert (len(hours), hours[0], hours[-1]) == (24, "2026-11-27T16:00", "2026-11-28T15:00")
    since, days = window("week", NOW)
    assert since == datetime(2026, 11, 22, tzinfo=UTC) and days[-1] == "2026-11-28" and len(days) == 7
    assert len(window("month", NOW)[1]) == 30
    since, months = window("year", datetime(2026, 2, 3, tzinfo=UTC))
    assert since == datetime(2025, 3, 1, tzinfo=UTC)
    assert months[0] == "2025-03" and months[-1] == "2026-02" and len(months) == 12


async def test_series_buckets_groups_and_totals(engine: AsyncEngine) -> None:
    records = [
        at(NOW - timedelta(minutes=5), 1),  # this hour
        at(NOW - timedelta(minutes=40), 2, model="m2", key_id=None, source="chat"),  # last hour
        at(NOW - timedelta(hours=2), 3, completion_tokens=7),
        at(NOW - timedelta(days=3), 4, model="m2"),  # in the week, not the day
        at(NOW - timedelta(days=40), 5),  # in the year only
        at(NOW - timedelta(days=500), 6),  # outside every window
        at(NOW - timedelta(minutes=1), 7, principal="user:2"),  # somebody else
    ]
    await _record(engine, records)
    mine = UsageScope.of("user:1")

    day = await usage_series(engine=engine, scope=mine, period="day", by="model", now=NOW)
    assert day.groups == ["m1", "m2"]
    assert day.cell("2026-11-28T15:00", "m1") == Totals(1, 10, 5, 100)
    assert day.cell("2026-11-28T14:00", "m2") == Totals(1, 10, 5, 100)
    assert day.cell("2026-11-28T13:00", "m1") == Totals(1, 10, 7, 100)
    assert day.total == Totals(3, 30, 17, 300)

    by_key = await usage_series(engine=engine, scope=mine, period="week", by="key", now=NOW)
    assert by_key.groups == ["key_a", NO_KEY]  # the portal chat's requests have no key
    assert by_key.group_total("key_a").requests == 3 and by_key.group_total(NO_KEY).requests == 1
    assert by_key.cell("2026-11-25", "key_a").requests == 1

    year = await usage_series(engine=engine, scope=mine, period="year", by="source", now=NOW)
    assert year.total.requests == 5 and year.cell("2026-10", "api").requests == 1
    assert set(year.groups) == {"api", "chat"}

    everyone = await usage_series(engine=engine, scope=UsageScope(), period="day", by="model", now=NOW)
    assert everyone.total.requests == 4
    nobody = await usage_series(engine=engine, scope=UsageScope(principals=()), period="day", by="model")
    assert nobody.total == Totals() and nobody.groups == []
    only_m2 = UsageScope(principals=("user:1", "user:2"), model="m2")
    assert (await usage_totals(engine=engine, scope=only_m2)).requests == 2
    three_hours = NOW - timedelta(hours=3)
    key_a = await usage_totals(engine=engine, scope=UsageScope(key_id="key_a"), since=three_hours)
    assert key_a == Totals(3, 30, 17, 300)
    by_principal = await totals_by_principal(
        engine=engine, principals=["user:1", "user:2", "user:3"], since=NOW - timedelta(days=1)
    )
    assert by_principal == {"user:1": Totals(3, 30, 17, 300), "user:2": Totals(1, 10, 5, 100)}


async def test_recent_requests_page_by_keyset(engine: AsyncEngine) -> None:
    same = NOW - timedelta(minutes=1)
    records = [at(same, i) for i in range(5)] + [at(NOW - timedelta(minutes=i), 10 + i) for i in range(3, 8)]
    await _record(engine, records)
    scope = UsageScope.of("user:1")
    seen: list[str] = []
    before = None
    while True:
        page = await recent_requests(engine=engine, scope=scope, limit=3, before=before)
        if not page:
            break
        seen += [r.request_id for r in page]
        before = (page[-1].created_at, page[-1].id)
    # Rows with the same time are not skipped or repeated at a page boundary.
    assert seen == ["q4", "q3", "q2", "q1", "q0", "q13", "q14", "q15", "q16", "q17"]


async def test_recent_volume_counts_the_window_only(engine: AsyncEngine) -> None:
    await _record(
        engine,
        [
            at(NOW - timedelta(seconds=10), 1),
            at(NOW - timedelta(seconds=20), 2, key_id=None, model="m2", prompt_tokens=100),
            at(NOW - timedelta(seconds=90), 3),
            at(NOW - timedelta(seconds=5), 4, principal="user:2"),
        ],
    )
    volume = await recent_volume(engine=engine, principal="user:1", since=NOW - timedelta(minutes=1))
    assert volume.total == Totals(2, 110, 10, 200)
    assert volume.by_model == {"m1": Totals(1, 10, 5, 100), "m2": Totals(1, 100, 5, 100)}
    assert set(volume.by_key) == {"key_a", None}


async def test_export_reads_every_row_in_batches(engine: AsyncEngine) -> None:
    await _record(engine, [at(NOW - timedelta(seconds=i % 4), i) for i in range(25)])
    batches = [
        batch
        async for batch in export_rows(engine=engine, scope=UsageScope.of("user:1"), since=None, batch=10)
    ]
    assert [len(b) for b in batches] == [10, 10, 5]
    ids = [row["request_id"] for batch in batches for row in batch]
    assert sorted(ids) == sorted(f"q{i}" for i in range(25)) and len(set(ids)) == 25
    assert set(batches[0][0]) == {*EXPORT_COLUMNS, "id"}
    assert [b async for b in export_rows(engine=engine, scope=UsageScope(principals=()), since=None)] == []
