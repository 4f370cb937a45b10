"""Database fixtures for the storage and usage tests: SQLite files and throwaway PostgreSQL databases.

PostgreSQL is reached at ``LUMEN_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``; the role must be allowed to create databases).
Each test that asks for one gets a fresh database named ``lumen_test_<session>_<n>``, dropped after
the test; any left behind by a crash are dropped at the end of the session. If the server is not
reachable the PostgreSQL tests are skipped, except under ``CI=true``, where they fail.

`tests/usage/conftest.py` re-exports these fixtures.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.engine import create_engine
from lumen.store.migrate import upgrade_database

_ADMIN_URL = os.environ.get("LUMEN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_SESSION = f"{uuid.uuid4().hex[:8]}_{os.getpid()}"
_counter = itertools.count(1)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    # A private loop, so a sync fixture never touches the loop pytest-asyncio has set.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def _admin(*statements: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_ADMIN_URL, timeout=5)
    try:
        rows: list[asyncpg.Record] = []
        for statement in statements:
            rows = await conn.fetch(statement)
        return rows
    finally:
        await conn.close()


async def _drop_session_databases() -> None:
    rows = await _admin(f"SELECT datname FROM pg_database WHERE datname LIKE 'lumen_test_{_SESSION}_%'")
    for row in rows:
        await _admin(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The admin URL of a reachable PostgreSQL server, or skip (fail under CI=true)."""
    try:
        _run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL not reachable at {_ADMIN_URL}: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: the PostgreSQL tests are required)")
        pytest.skip(message)
    yield _ADMIN_URL
    _run(_drop_session_databases())


@pytest.fixture
async def pg_url(pg_server: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (as a postgresql+asyncpg URL), dropped after the test."""
    name = f"lumen_test_{_SESSION}_{next(_counter)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server).set(drivername="postgresql+asyncpg", database=name)
    yield url.render_as_string(hide_password=False)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file (not created yet)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'lumen.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on each backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database migrated to head."""
    await upgrade_database(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()
