"""Build the async engine for SQLite (the embedded default) or PostgreSQL (production).

SQLite connections get WAL (readers never block the writer), ``synchronous=NORMAL`` (a process
crash loses nothing; a power cut may lose the last commits), foreign keys and a busy timeout, so
concurrent writers wait for the lock instead of failing at once.

SQLite transactions are taken over from the driver: Python's ``sqlite3`` module (and so aiosqlite)
only sends ``BEGIN`` before DML and commits before DDL, which makes DDL non-transactional and a
read-then-write transaction racy. We disable that and send ``BEGIN`` ourselves when SQLAlchemy
starts a transaction (the recipe from the SQLAlchemy SQLite dialect docs). A connection can ask for
``BEGIN IMMEDIATE`` (take the write lock up front) with the execution option
``SQLITE_BEGIN_OPTION`` (see `lumen.store.migrate`).

The data directory and the database files hold every key hash, session and conversation: the
directory is made 0700 (`prepare_data_dir`) and the SQLite files 0600, including the `-wal` and
`-shm` files, which SQLite creates with the database file's own mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

# Execution option naming the SQLite BEGIN mode: "DEFERRED" (default), "IMMEDIATE" or "EXCLUSIVE".
SQLITE_BEGIN_OPTION = "lumen_sqlite_begin"
_SQLITE_BEGIN_MODES = {"DEFERRED", "IMMEDIATE", "EXCLUSIVE"}

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def prepare_data_dir(data_dir: Path) -> None:
    """Creates Lumen's data directory, or takes an existing one back, readable by its owner only."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    _narrow(data_dir, PRIVATE_DIR)


def _narrow(path: Path, mode: int) -> None:
    """`path` gets `mode` unless it has it; one that belongs to another user (a volume mounted
    into a container, say) is left as it is, with a warning, rather than stopping the start."""
    if path.stat().st_mode & 0o777 == mode:
        return
    try:
        path.chmod(mode)
    except PermissionError:
        log.warning("cannot make %s mode %o: it belongs to another user", path, mode)


def _private_sqlite_files(database: Path) -> None:
    """The database file exists (empty) with mode 0600 before SQLite opens it, so its journal files
    get the same mode; files of an existing database are narrowed to 0600."""
    database.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")):
        with contextlib.suppress(FileNotFoundError):
            _narrow(path, PRIVATE_FILE)


def default_sqlite_url(data_dir: Path) -> str:
    """The embedded default database: ``<data_dir>/lumen.db``, as an absolute path."""
    path = data_dir.expanduser().absolute() / "lumen.db"
    return URL.create("sqlite+aiosqlite", database=str(path)).render_as_string()


def normalize_database_url(database_url: str) -> URL:
    """Parse a URL and pick Lumen's async driver for it.

    ``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db``; ``postgresql://`` and ``postgres://``
    become ``postgresql+asyncpg://``. Any other dialect or driver is refused: only these two are
    tested.
    """
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend not in _DRIVERS:
        raise ValueError(
            f"unsupported database {backend!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    wanted = _DRIVERS[backend]
    if url.drivername == backend:
        url = url.set(drivername=wanted)
    if url.drivername != wanted:
        raise ValueError(f"unsupported driver {url.drivername!r}: use {wanted}://")
    return url


def create_engine(
    database_url: str,
    *,
    echo: bool = False,
    pool_size: int = 10,
    max_overflow: int = 10,
    busy_timeout_ms: int = 10_000,
) -> AsyncEngine:
    """Create the process's engine; call once at startup and ``await engine.dispose()`` at shutdown.

    `pool_size`/`max_overflow` apply to PostgreSQL only; `busy_timeout_ms` to SQLite only (how long a
    writer waits for another writer's lock before "database is locked").
    """
    url = normalize_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, echo=echo, busy_timeout_ms=busy_timeout_ms)
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # A connection that died while idle in the pool (server restart, failover, idle timeout in
        # a proxy) is replaced at checkout instead of failing a flush; writes are batched, so one
        # round trip per checkout is cheap.
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=30,
        connect_args={"server_settings": {"application_name": "lumen"}},
    )


def _create_sqlite_engine(url: URL, *, echo: bool, busy_timeout_ms: int) -> AsyncEngine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if not in_memory and not database.startswith("file:"):
        # A newcomer's first start must not fail because the data directory does not exist yet.
        _private_sqlite_files(Path(database).expanduser())
    engine = create_async_engine(url, echo=echo)
    _install_sqlite_events(engine, busy_timeout_ms=busy_timeout_ms)
    return engine


def _install_sqlite_events(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Autocommit at the driver level: SQLAlchemy's "begin" event below sends BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching a fresh file to WAL needs the lock another process
            # starting at the same moment may hold.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = str(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")).upper()
        if mode not in _SQLITE_BEGIN_MODES:
            raise ValueError(
                f"{SQLITE_BEGIN_OPTION} must be one of {sorted(_SQLITE_BEGIN_MODES)}, not {mode!r}"
            )
        conn.exec_driver_sql(f"BEGIN {mode}")
