"""Apply the schema migrations programmatically (``lumen db upgrade``, or at startup).

No alembic.ini is needed: the Alembic config is built here and points at the migration scripts
shipped inside the package. Several processes may start at once (uvicorn workers, replicas), so an
upgrade is serialised across processes:

- PostgreSQL: a session-level ``pg_advisory_lock`` is held around the whole upgrade; the others
  wait, then find the schema at head and do nothing. DDL is transactional, so a failed upgrade
  leaves the schema as it was.
- SQLite: the upgrade runs in one ``BEGIN IMMEDIATE`` transaction, which takes the file's write
  lock *before* reading the current revision; a concurrent upgrader waits on the busy timeout
  (and retries if that expires), then finds the schema at head.
"""

from __future__ import annotations

import asyncio
import logging

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumen.store.engine import SQLITE_BEGIN_OPTION, create_engine

log = logging.getLogger(__name__)

# Any fixed 64-bit key shared by every Lumen process; the bytes spell "lumen-db".
MIGRATION_LOCK_KEY = 0x6C756D656E2D6462

_SQLITE_LOCK_RETRIES = 5


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config for the packaged migrations, e.g. for ``command.revision(cfg, ...)``.

    New revision files are named ``<rev>_<slug>.py``; pass ``rev_id="0002"`` and so on.
    """
    cfg = Config()
    cfg.set_main_option("script_location", "lumen.store:migrations")
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if database_url is not None:
        cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision the shipped migrations know."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the packaged migrations have no head revision")
    return head


async def database_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None for an empty database); e.g. for a readiness check."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


async def upgrade_database(database_url: str, *, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision` (all migrations by default).

    Idempotent, and safe to call from several processes at the same moment.
    """
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        await upgrade_engine(engine, revision=revision)
    finally:
        # Closing the connection also releases the advisory lock if the upgrade failed midway.
        await engine.dispose()


async def upgrade_engine(engine: AsyncEngine, *, revision: str = "head") -> None:
    """Like `upgrade_database`, on an engine made by `lumen.store.engine.create_engine`.

    Needed for an in-memory SQLite database, which exists only inside its engine.
    """
    if engine.dialect.name == "postgresql":
        await _upgrade_postgresql(engine, revision)
    else:
        await _upgrade_sqlite(engine, revision)


async def _upgrade_postgresql(engine: AsyncEngine, revision: str) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await conn.commit()
        await _run_in_transaction(conn, revision)
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await conn.commit()


async def _upgrade_sqlite(engine: AsyncEngine, revision: str) -> None:
    for attempt in range(1, _SQLITE_LOCK_RETRIES + 1):
        try:
            async with engine.connect() as conn:
                await conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
                await _run_in_transaction(conn, revision)
            return
        except OperationalError as exc:
            # Another process held the write lock for longer than the busy timeout (a long
            # migration); anything else is a real error.
            if "locked" not in str(exc.orig) or attempt == _SQLITE_LOCK_RETRIES:
                raise
            log.warning(
                "database is locked by another upgrade; retrying (%d/%d)", attempt, _SQLITE_LOCK_RETRIES
            )
            await asyncio.sleep(0.2 * attempt)


async def _run_in_transaction(conn: AsyncConnection, revision: str) -> None:
    # Alembic sees a connection already in a transaction and leaves commit to us, so reading the
    # current revision, the DDL and the version stamp all happen in this one transaction.
    async with conn.begin():
        await conn.run_sync(_alembic_upgrade, revision)


def _alembic_upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)
