"""Three real processes share one pool through Redis and one database: of 200 requests exactly the
10 the pool affords succeed, the balance ends at zero and the ledger explains it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.audit import audit
from tests.billing.conftest import REDIS_URL, _connect_redis
from tests.billing.support import ledger_rows, ledger_sum, pool_balance

ROOT = Path(__file__).resolve().parents[2]
COUNTS = (67, 67, 66)


async def test_three_processes_share_one_pool(
    engine: AsyncEngine, database_url: str, redis_prefix: str
) -> None:
    await (await _connect_redis()).aclose()
    procs = []
    first = 0
    for count in COUNTS:
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.billing.coin_worker",
                database_url,
                REDIS_URL,
                redis_prefix,
                str(first),
                str(count),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
            )
        )
        first += count
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"ready"
        client = Redis.from_url(REDIS_URL)
        await client.set(redis_prefix + "go", 1)
        await client.aclose()
        outputs = [await asyncio.wait_for(proc.communicate(), 120) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    admitted = [int(out.strip()) for out, _ in outputs]
    assert sum(admitted) == 10
    assert await pool_balance(engine, "project:7") == await ledger_sum(engine, "project:7") == 0
    kinds = [row["kind"] for row in await ledger_rows(engine, "project:7")]
    assert sorted(kinds) == ["charge"] * 10 + ["start"]
    assert await audit(engine) == []
