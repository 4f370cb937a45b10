"""Alembic's entry point: run the migrations on the connection `lumen.store.migrate` hands over.

`upgrade_database` opens the connection, takes the cross-process lock and the transaction, and puts
the connection in ``config.attributes["connection"]``; this file only runs the scripts on it. When
Alembic is driven without a connection (e.g. ``command.revision(..., autogenerate=True)`` on an
`alembic_config(url)`), a throwaway engine is made from ``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from lumen.store.engine import create_engine
from lumen.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; autogenerate must emit batch (copy-and-swap) operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: use lumen.store.migrate.alembic_config(url)")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_with_own_engine(url))


_main()
