"""The database fixtures of `tests/store/conftest.py`, and small builders for access tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.access.config import ModelAccess
from lumen.store.tables import project_managers, projects, users
from tests.store.conftest import database_url, engine, pg_server, pg_url, sqlite_url

__all__ = ["Model", "database_url", "engine", "pg_server", "pg_url", "people", "sqlite_url"]


@dataclass(frozen=True)
class Model:
    """A model as the policy sees it (`lumen.access.policy.ModelLike`)."""

    name: str
    access: ModelAccess = field(default_factory=ModelAccess)
    enabled: bool = True


async def people(engine: AsyncEngine) -> None:
    """Users 1 (ann), 2 (ben, manager of project 1), 3 (cat, owner of project 1), 4 (dee); project 1."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(
            users.insert(),
            [
                {"id": i, "email": f"{n}@example.edu", "created_at": now}
                for i, n in [(1, "ann"), (2, "ben"), (3, "cat"), (4, "dee")]
            ],
        )
        await conn.execute(projects.insert(), [{"id": 1, "name": "bot", "owner_id": 3, "created_at": now}])
        await conn.execute(project_managers.insert(), [{"project_id": 1, "user_id": 2}])
