"""Local passwords: Argon2id hashes, the rules, and checking a login against the database."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import InvalidRequest, NotFound
from lumen.identity import store
from lumen.identity.passwords import (
    MAX_LENGTH,
    check_login,
    check_password_rules,
    generate_password,
    hash_password,
    needs_rehash,
    set_password,
    verify_password,
)
from lumen.store.tables import users

GOOD = "correct horse battery staple"


async def test_hash_is_argon2id_and_verifies_only_the_password() -> None:
    digest = await hash_password(GOOD)
    assert digest.startswith("$argon2id$") and GOOD not in digest
    assert await verify_password(digest, GOOD)
    assert not await verify_password(digest, GOOD + "!")
    assert not await verify_password(None, GOOD)
    assert not await verify_password("not a hash", GOOD)
    assert await hash_password(GOOD) != digest  # salted


@pytest.mark.parametrize(
    ("password", "problem"),
    [("short", "at least 10"), ("x" * (MAX_LENGTH + 1), "at most"), (" padded password ", "space")],
)
def test_rules_refuse_unusable_passwords(password: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        check_password_rules(password)


def test_generated_passwords_are_long_and_different() -> None:
    first, second = generate_password(), generate_password()
    check_password_rules(first)
    assert first != second and len(first) >= 20


async def test_check_login(engine: AsyncEngine) -> None:
    ann = await store.create_user(engine=engine, email="Ann@Example.edu")
    await store.create_user(engine=engine, email="ben@example.edu")  # no password: no local login
    await set_password(engine=engine, user_id=ann.id, password=GOOD)

    found = await check_login(engine=engine, email=" ANN@example.edu ", password=GOOD)
    assert found is not None and found.id == ann.id
    assert await check_login(engine=engine, email="ann@example.edu", password="wrong password") is None
    assert await check_login(engine=engine, email="nobody@example.edu", password=GOOD) is None
    assert await check_login(engine=engine, email="not an email", password=GOOD) is None
    assert await check_login(engine=engine, email="ben@example.edu", password=GOOD) is None
    async with engine.connect() as conn:
        stored = (await conn.execute(select(users.c.password_hash).where(users.c.id == ann.id))).scalar_one()
    assert stored.startswith("$argon2id$")


async def test_a_weaker_hash_is_upgraded_at_login(engine: AsyncEngine) -> None:
    ann = await store.create_user(engine=engine, email="ann@example.edu")
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("old-but-valid")
    async with engine.begin() as conn:
        await conn.execute(update(users).where(users.c.id == ann.id).values(password_hash=weak))
    assert needs_rehash(weak)

    # "old-but-valid" is 13 characters: still fine; the point is the stored parameters.
    assert await check_login(engine=engine, email="ann@example.edu", password="old-but-valid") is not None
    async with engine.connect() as conn:
        stored = (await conn.execute(select(users.c.password_hash).where(users.c.id == ann.id))).scalar_one()
    assert stored != weak and not needs_rehash(stored)
    assert await check_login(engine=engine, email="ann@example.edu", password="old-but-valid") is not None


async def test_set_password_of_a_missing_user(engine: AsyncEngine) -> None:
    with pytest.raises(NotFound):
        await set_password(engine=engine, user_id=999, password=GOOD)
