from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import lumen
from lumen.store.engine import create_engine
from lumen.store.migrate import (
    MIGRATION_LOCK_KEY,
    alembic_config,
    database_revision,
    head_revision,
    upgrade_database,
    upgrade_engine,
)
from lumen.store.tables import Base, usage_records

ROW = {
    "request_id": "req-1",
    "created_at": datetime(2026, 11, 1, tzinfo=UTC),
    "principal": "bootstrap",
    "model": "m",
    "source": "api",
    "operation": "chat.completions",
    "prompt_tokens": 1,
    "completion_tokens": 2,
    "latency_ms": 3.5,
    "status": 200,
}


async def _revision_and_tables(url: str) -> tuple[str | None, set[str], int]:
    engine = create_engine(url)
    try:
        revision = await database_revision(engine)
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            versions = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one()
    finally:
        await engine.dispose()
    return revision, tables, versions


async def test_empty_database_is_at_no_revision(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert await database_revision(engine) is None
    finally:
        await engine.dispose()


async def test_upgrade_from_empty_to_head(database_url: str) -> None:
    await upgrade_database(database_url)
    revision, tables, versions = await _revision_and_tables(database_url)
    assert revision == head_revision()
    assert {"alembic_version", "usage_records", "users", "projects", "project_managers", "api_keys"} <= tables
    assert versions == 1


async def test_upgrade_is_idempotent_and_keeps_data(engine: AsyncEngine, database_url: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(usage_records.insert(), [ROW])
    await upgrade_database(database_url)
    await upgrade_database(database_url)
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(usage_records))).scalar_one()
    assert count == 1
    assert (await _revision_and_tables(database_url))[0] == head_revision()


def _schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_build_exactly_the_declared_schema(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(_schema_diff)
    assert diff == []


def _downgrade_to_base(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, "base")


async def test_migrations_downgrade_to_base_and_up_again(engine: AsyncEngine, database_url: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_to_base)
    revision, tables, _ = await _revision_and_tables(database_url)
    assert revision is None
    assert "usage_records" not in tables
    await upgrade_database(database_url)
    assert (await _revision_and_tables(database_url))[0] == head_revision()


async def test_concurrent_upgrades_of_a_fresh_database_all_succeed(database_url: str) -> None:
    # The timeout turns a deadlock into a failure instead of a hung test run.
    async with asyncio.timeout(60):
        results = await asyncio.gather(
            *(upgrade_database(database_url) for _ in range(6)), return_exceptions=True
        )
    assert [r for r in results if r is not None] == []
    revision, tables, versions = await _revision_and_tables(database_url)
    assert revision == head_revision()
    assert "usage_records" in tables
    assert versions == 1


def test_concurrent_upgrades_from_separate_processes_all_succeed(database_url: str) -> None:
    src = str(Path(lumen.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    code = (
        "import asyncio, sys; from lumen.store.migrate import upgrade_database; "
        "asyncio.run(upgrade_database(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs: list[tuple[int, str]] = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=120)
            outputs.append((p.returncode, out.decode()))
    finally:
        for p in procs:
            p.kill()  # no-op for the ones that exited; a hung upgrader must not outlive the test
            p.communicate()
    assert [rc for rc, _ in outputs] == [0, 0, 0, 0], "\n".join(out for _, out in outputs)
    loop = asyncio.new_event_loop()
    try:
        revision, _, versions = loop.run_until_complete(_revision_and_tables(database_url))
    finally:
        loop.close()
    assert (revision, versions) == (head_revision(), 1)


async def test_postgresql_upgrade_waits_for_the_migration_lock(pg_url: str) -> None:
    holder = create_engine(pg_url)
    try:
        async with holder.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            await conn.commit()
            upgrade = asyncio.create_task(upgrade_database(pg_url))
            done, _ = await asyncio.wait({upgrade}, timeout=0.5)
            # Still waiting: it would have finished in this time had it not asked for the lock.
            assert not done
            assert await database_revision(holder) is None
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            await conn.commit()
            await upgrade
        assert await database_revision(holder) == head_revision()
    finally:
        await holder.dispose()


async def test_sqlite_upgrade_waits_for_another_writer(sqlite_url: str) -> None:
    holder = create_engine(sqlite_url)
    try:
        async with holder.connect() as conn:
            await conn.execution_options(lumen_sqlite_begin="IMMEDIATE")
            await conn.begin()
            await conn.exec_driver_sql("CREATE TABLE other_writer (x INTEGER)")
            upgrade = asyncio.create_task(upgrade_database(sqlite_url))
            done, _ = await asyncio.wait({upgrade}, timeout=0.5)
            assert not done
            await conn.commit()
            await upgrade
        assert await database_revision(holder) == head_revision()
    finally:
        await holder.dispose()


def test_head_revision_matches_the_newest_script() -> None:
    versions = Path(lumen.__file__).parent / "store" / "migrations" / "versions"
    newest = max(p.name.split("_", 1)[0] for p in versions.glob("[0-9]*_*.py"))
    assert head_revision() == newest


@pytest.mark.parametrize("url", ["mysql://u@h/db"])
async def test_upgrade_refuses_unsupported_databases(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        await upgrade_database(url)


async def test_an_in_memory_database_is_upgraded_through_its_engine() -> None:
    engine = create_engine("sqlite+aiosqlite://")
    try:
        await upgrade_engine(engine)
        assert await database_revision(engine) == head_revision()
        async with engine.begin() as conn:
            await conn.execute(usage_records.insert(), [ROW])
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(usage_records))).scalar_one() == 1
    finally:
        await engine.dispose()
