from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.usage.queries import StoredUsageRecord, recent_usage
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
