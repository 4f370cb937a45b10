from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table, inspect, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.engine import create_engine, default_sqlite_url, normalize_database_url, prepare_data_dir
from lumen.store.tables import UTCDateTime


async def test_sqlite_connections_use_wal_normal_sync_foreign_keys_and_busy_timeout(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url, busy_timeout_ms=1234)
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    # synchronous: 1 is NORMAL (2 would be FULL).
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 1234}


async def test_default_sqlite_url_creates_the_database_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "there" / "yet"
    url = default_sqlite_url(data_dir)
    assert url == f"sqlite+aiosqlite:///{data_dir}/lumen.db"
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    finally:
        await engine.dispose()
    assert (data_dir / "lumen.db").is_file()


def test_default_sqlite_url_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_sqlite_url(Path("data")) == f"sqlite+aiosqlite:///{tmp_path}/data/lumen.db"


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_urls_get_the_async_driver(given: str, driver: str) -> None:
    assert normalize_database_url(given).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "sqlite+pysqlite:///x.db"])
def test_other_databases_and_drivers_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        normalize_database_url(url)


async def test_sqlite_ddl_is_transactional(sqlite_url: str) -> None:
    # The driver's own transaction handling would commit before CREATE TABLE; ours must not.
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            async with conn.begin() as tx:
                await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                await tx.rollback()
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
    assert tables == []


async def test_sqlite_begin_mode_is_validated(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(lumen_sqlite_begin="SOMETIMES")
            with pytest.raises(ValueError, match="lumen_sqlite_begin"):
                await conn.exec_driver_sql("SELECT 1")
    finally:
        await engine.dispose()


async def test_postgresql_engine_connects_as_lumen(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            name = (await conn.execute(text("SELECT current_setting('application_name')"))).scalar()
    finally:
        await engine.dispose()
    assert name == "lumen"


async def _roundtrip(engine: AsyncEngine, value: datetime) -> datetime | None:
    table = Table("times", MetaData(), Column("at", UTCDateTime))
    async with engine.begin() as conn:
        await conn.run_sync(table.metadata.create_all)
        await conn.execute(table.insert(), [{"at": value}])
        stored: datetime | None = (await conn.execute(select(table.c.at))).scalar_one()
    return stored


async def test_datetimes_come_back_aware_utc(database_url: str) -> None:
    engine = create_engine(database_url)
    plus_two = timezone(timedelta(hours=2))
    try:
        stored = await _roundtrip(engine, datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=plus_two))
    finally:
        await engine.dispose()
    assert stored == datetime(2026, 1, 2, 1, 4, 5, 678901, tzinfo=UTC)
    assert stored is not None and stored.tzinfo == UTC


async def test_naive_datetimes_are_refused(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        with pytest.raises(StatementError, match="naive datetime"):
            await _roundtrip(engine, datetime(2026, 1, 2, 3, 4, 5))
    finally:
        await engine.dispose()


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common umask (022), under which files are world-readable unless made otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.usefixtures("usual_umask")
async def test_the_database_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "lumen-data"
    engine = create_engine(default_sqlite_url(data_dir))
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        files = {p.name: _mode(p) for p in data_dir.iterdir()}  # while open: with -wal and -shm
    finally:
        await engine.dispose()
    assert files == {"lumen.db": 0o600, "lumen.db-wal": 0o600, "lumen.db-shm": 0o600}
    assert _mode(data_dir) == 0o700


@pytest.mark.usefixtures("usual_umask")
async def test_an_existing_data_directory_and_database_are_narrowed(tmp_path: Path) -> None:
    data_dir = tmp_path / "lumen-data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "lumen.db").touch(mode=0o644)
    prepare_data_dir(data_dir)
    engine = create_engine(default_sqlite_url(data_dir))
    await engine.dispose()
    assert (_mode(data_dir), _mode(data_dir / "lumen.db")) == (0o700, 0o600)
