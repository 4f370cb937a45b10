"""Throwaway PostgreSQL databases and Redis key prefixes for one benchmarked Lumen, and the PIDs
of the two servers so their CPU can be counted.

Every Lumen the bench starts gets an empty database `lumen_bench_<hex>` on the PostgreSQL server
(dropped afterwards, WITH (FORCE) in case a worker still holds a connection) and a key prefix
`lumen-bench-<hex>:` on Redis (its keys deleted afterwards). Runs never see each other's rows,
and nothing is left behind on servers other people use.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import psutil


def _admin(admin_url: str, statement: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


def _asyncpg_url(admin_url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=database)
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty database on the server at `admin_url` (a role that may create databases);
    yields its SQLAlchemy URL and drops it on the way out."""
    name = "lumen_bench_" + secrets.token_hex(6)
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield _asyncpg_url(admin_url, name)
    finally:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_keys(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for _ in client.scan_iter(match=prefix + "*", count=1000))
    finally:
        client.close()


@contextlib.contextmanager
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no one else uses; every key under it is deleted on the way out."""
    import redis

    prefix = "lumen-bench-" + secrets.token_hex(6) + ":"
    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()  # fail before Lumen starts, with Redis's own error
        yield prefix
    finally:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
        client.close()


@contextlib.contextmanager
def lumen_backing(postgres_url: str | None, redis_url: str | None) -> Iterator[dict[str, str]]:
    """The environment one Lumen needs for its own database and Redis prefix (empty for SQLite
    and no Redis)."""
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if postgres_url:
            env["LUMEN_DATABASE_URL"] = stack.enter_context(postgres_database(postgres_url))
        if redis_url:
            env["LUMEN_REDIS_URL"] = redis_url
            env["LUMEN_SERVER__REDIS_PREFIX"] = stack.enter_context(redis_prefix(redis_url))
        yield env


def server_pids(postgres: bool, redis: bool) -> dict[str, int]:
    """PIDs of the local PostgreSQL postmaster (its children are the backends) and redis-server,
    for CPU accounting. Their CPU covers every client of those servers, not only Lumen."""
    out: dict[str, int] = {}
    for p in psutil.process_iter(["pid", "name", "ppid"]):
        info: dict[str, Any] = p.info
        name = info.get("name") or ""
        if postgres and name == "postgres" and "postgres" not in out:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(info["ppid"]).name() != "postgres":
                    out["postgres"] = info["pid"]
        if redis and name == "redis-server" and "redis" not in out:
            out["redis"] = info["pid"]
    return out
