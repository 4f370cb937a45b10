"""Admin rights through an API key need an administrator's key made for administration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import JSON, column, select, table, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.cli import main
from lumen.errors import InvalidRequest
from lumen.identity import store
from lumen.identity.auth import KeyAuthenticator
from lumen.identity.setup import prepare_identity
from lumen.settings import load_settings
from lumen.store.engine import create_engine
from lumen.store.migrate import upgrade_database
from lumen.store.tables import api_keys, users

SECRET = b"admin-keys-secret"


def _authenticator(engine: AsyncEngine, admins: tuple[str, ...] = ()) -> KeyAuthenticator:
    return KeyAuthenticator(engine=engine, secret=SECRET, groups=lambda: (), admins=lambda: admins)


async def _is_admin(engine: AsyncEngine, plain: str, admins: tuple[str, ...] = ()) -> bool:
    return (await _authenticator(engine, admins).authenticate(f"Bearer {plain}")).is_admin


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncEngine:
    await upgrade_database(sqlite_url)
    return create_engine(sqlite_url)


async def test_an_administrators_ordinary_key_is_not_an_admin_credential(sqlite_engine: AsyncEngine) -> None:
    boss = await store.create_user(engine=sqlite_engine, email="boss@example.edu", is_admin=True)
    _, ordinary = await store.create_key(
        engine=sqlite_engine, secret=SECRET, owner_kind="user", owner_id=boss.id
    )
    _, for_scripts = await store.create_key(
        engine=sqlite_engine, secret=SECRET, owner_kind="user", owner_id=boss.id, models=["echo"]
    )
    key, admin = await store.create_key(
        engine=sqlite_engine, secret=SECRET, owner_kind="user", owner_id=boss.id, admin=True
    )
    try:
        assert key.admin
        assert not await _is_admin(sqlite_engine, ordinary)
        assert not await _is_admin(sqlite_engine, for_scripts)
        assert await _is_admin(sqlite_engine, admin)
    finally:
        await sqlite_engine.dispose()


async def test_an_admin_key_is_worth_nothing_once_its_owner_is_no_administrator(
    sqlite_engine: AsyncEngine,
) -> None:
    listed = await store.create_user(engine=sqlite_engine, email="listed@example.edu")
    _, plain = await store.create_key(
        engine=sqlite_engine, secret=SECRET, owner_kind="user", owner_id=listed.id, admin=True
    )
    try:
        # Administrator through the config's `admins` list, then no longer.
        assert await _is_admin(sqlite_engine, plain, admins=("Listed@example.edu",))
        assert not await _is_admin(sqlite_engine, plain)
    finally:
        await sqlite_engine.dispose()


async def test_a_model_limited_key_is_never_an_admin_key(sqlite_engine: AsyncEngine) -> None:
    boss = await store.create_user(engine=sqlite_engine, email="boss@example.edu", is_admin=True)
    project = await store.create_project(engine=sqlite_engine, name="lab", owner_id=boss.id)
    try:
        with pytest.raises(InvalidRequest) as refused:
            await store.create_key(
                engine=sqlite_engine,
                secret=SECRET,
                owner_kind="user",
                owner_id=boss.id,
                models=["m"],
                admin=True,
            )
        assert refused.value.param == "models"
        with pytest.raises(InvalidRequest):
            await store.create_key(
                engine=sqlite_engine, secret=SECRET, owner_kind="project", owner_id=project.id, admin=True
            )
        # Even a row changed behind Lumen's back: a model list wins over the flag.
        key, plain = await store.create_key(
            engine=sqlite_engine, secret=SECRET, owner_kind="user", owner_id=boss.id, admin=True
        )
        async with sqlite_engine.begin() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.id == key.id).values(models=["m"]))
        assert not await _is_admin(sqlite_engine, plain)
    finally:
        await sqlite_engine.dispose()


async def test_the_key_of_the_first_start_is_an_admin_key(sqlite_url: str) -> None:
    await upgrade_database(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        first = await prepare_identity(load_settings(None, environ={}), engine=engine, secret=SECRET)
        assert first is not None and first.key is not None
        assert await _is_admin(engine, first.key)
    finally:
        await engine.dispose()


async def test_the_migration_keeps_the_first_key_an_admin_key(sqlite_url: str) -> None:
    """A database from before admin keys: the first administrator's "first key" stays an admin
    key, their other keys become ordinary ones."""
    await upgrade_database(sqlite_url, revision="0009")
    engine = create_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                users.insert().values(
                    id=1, email="admin@localhost", is_admin=True, created_at=datetime.now(UTC)
                )
            )
            await conn.execute(
                users.insert().values(id=2, email="ada@x.edu", is_admin=False, created_at=datetime.now(UTC))
            )
            # The table as it was at 0009, without the `admin` column.
            old_keys = table(
                "api_keys",
                *(
                    column(c)
                    for c in ("id", "owner_kind", "owner_id", "name", "secret_hash", "hint", "created_at")
                ),
                column("models", JSON),
            )
            for key_id, owner, name, models in [
                ("key_first", 1, "first key", None),
                ("key_other", 1, "laptop", None),
                ("key_ada", 2, "first key", None),
            ]:
                await conn.execute(
                    old_keys.insert().values(
                        id=key_id,
                        owner_kind="user",
                        owner_id=owner,
                        name=name,
                        secret_hash=key_id,
                        hint="sk_…",
                        created_at=datetime.now(UTC),
                        models=models,
                    )
                )
        await engine.dispose()
        await upgrade_database(sqlite_url)
        async with engine.connect() as conn:
            rows = dict((await conn.execute(select(api_keys.c.id, api_keys.c.admin))).all())
    finally:
        await engine.dispose()
    assert rows == {"key_first": True, "key_other": False, "key_ada": False}


def test_the_cli_makes_admin_keys_for_administrators_only(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    assert runner.invoke(main, ["users", "create", "--admin", "boss@example.edu", *data]).exit_code == 0
    assert runner.invoke(main, ["users", "create", "ada@example.edu", *data]).exit_code == 0
    made = runner.invoke(main, ["keys", "create", "--user", "boss@example.edu", "--admin", *data])
    assert made.exit_code == 0, made.output
    assert "created admin key" in made.output
    listed = runner.invoke(main, ["keys", "list", "--user", "boss@example.edu", *data]).output
    assert "admin" in listed.splitlines()[0] and "yes" in listed
    for refused in (
        ["--user", "ada@example.edu", "--admin"],
        ["--user", "boss@example.edu", "--admin", "--models", "echo"],
    ):
        result = runner.invoke(main, ["keys", "create", *refused, *data])
        assert result.exit_code != 0 and "admin key" in result.output, result.output
