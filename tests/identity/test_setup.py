"""The first start, when several replicas make it at the same moment."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from lumen.identity.setup import prepare_identity
from lumen.settings import load_settings
from lumen.store.engine import create_engine
from lumen.store.migrate import upgrade_database
from lumen.store.tables import api_keys, users
from tests.support import TEST_KEY

SECRET = b"setup-race-secret"


async def test_replicas_starting_together_make_one_admin_and_one_bootstrap_key(pg_url: str) -> None:
    await upgrade_database(pg_url)
    settings = load_settings(None, environ={}, overrides={"server.bootstrap_key": TEST_KEY})
    engines = [create_engine(pg_url) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(prepare_identity(settings, engine=e, secret=SECRET) for e in engines), return_exceptions=True
        )
        async with engines[0].connect() as conn:
            admins = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
            keys = (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
    finally:
        for engine in engines:
            await engine.dispose()
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert admins == 1 and keys == 1
    # At most one of them reports the first start (the one whose insert won).
    assert sum(r is not None for r in results) <= 1
