"""The database fixtures of `tests/store/conftest.py` (SQLite and PostgreSQL), plus two users."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.tables import users
from tests.store.conftest import database_url, engine, pg_server, pg_url, sqlite_url

__all__ = ["ANN", "BEN", "database_url", "engine", "people", "pg_server", "pg_url", "sqlite_url"]

ANN, BEN = 1, 2


async def add_people(engine: AsyncEngine) -> None:
    """Users 1 (ann@example.edu) and 2 (ben@example.edu)."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(
            users.insert(),
            [
                {"id": ANN, "email": "ann@example.edu", "created_at": now},
                {"id": BEN, "email": "ben@example.edu", "created_at": now},
            ],
        )


@pytest.fixture
async def people(engine: AsyncEngine) -> AsyncEngine:
    """A migrated database (each backend) with users ANN and BEN."""
    await add_people(engine)
    return engine
