"""Server-side portal sessions: expiry, logout, what a session says about its user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.identity import store
from lumen.identity.groups import GroupSettings
from lumen.identity.sessions import PortalSession, SessionStore, delete_user_sessions
from lumen.store.tables import portal_sessions, users

SECRET = b"s" * 32
IDLE = timedelta(minutes=30)
MAX_AGE = timedelta(hours=8)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


def sessions(engine: AsyncEngine, clock: Clock, secret: bytes = SECRET) -> SessionStore:
    return SessionStore(engine=engine, secret=secret, idle=lambda: IDLE, max_age=lambda: MAX_AGE, clock=clock)


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(portal_sessions))).scalar_one())


async def test_a_session_knows_its_user_and_stores_no_token(engine: AsyncEngine, clock: Clock) -> None:
    ann = await store.create_user(engine=engine, email="ann@example.edu", name="Ann")
    token, created = await sessions(engine, clock).create(
        user_id=ann.id, method="password", ip="10.0.0.1", user_agent="test"
    )
    found = await sessions(engine, clock).get(token)
    assert found == created
    assert (found.email, found.name, found.method, found.disabled) == (
        "ann@example.edu",
        "Ann",
        "password",
        False,
    )
    assert found.expires_at == clock.now + MAX_AGE
    assert len(found.csrf_token) >= 40 and found.csrf_token != token
    async with engine.connect() as conn:
        ids = [r[0] for r in await conn.execute(select(portal_sessions.c.id))]
    assert ids == [found.id] and token not in found.id
    # Another secret (another instance) cannot use the token.
    assert await sessions(engine, clock, secret=b"t" * 32).get(token) is None
    assert await sessions(engine, clock).get("made-up") is None
    assert await sessions(engine, clock).get(None) is None


async def test_idle_sessions_end_and_used_ones_last_until_max_age(engine: AsyncEngine, clock: Clock) -> None:
    ann = await store.create_user(engine=engine, email="ann@example.edu")
    store_ = sessions(engine, clock)
    idle_token, _ = await store_.create(user_id=ann.id, method="password")
    busy_token, _ = await store_.create(user_id=ann.id, method="oidc")

    # The busy session is used every 20 minutes; the idle one not at all.
    for _ in range(3):
        clock.advance(timedelta(minutes=20))
        assert await store_.get(busy_token) is not None
    assert await store_.get(idle_token) is None
    assert await count(engine) == 1  # the expired row is gone

    while clock.now < datetime(2026, 11, 1, 9, 0, tzinfo=UTC) + MAX_AGE - timedelta(minutes=20):
        clock.advance(timedelta(minutes=20))
        assert await store_.get(busy_token) is not None
    clock.advance(timedelta(minutes=20))
    assert await store_.get(busy_token) is None


async def test_logout_and_sweep(engine: AsyncEngine, clock: Clock) -> None:
    ann = await store.create_user(engine=engine, email="ann@example.edu")
    store_ = sessions(engine, clock)
    first, _ = await store_.create(user_id=ann.id, method="password")
    second, _ = await store_.create(user_id=ann.id, method="password")
    await store_.delete(first)
    assert await store_.get(first) is None
    assert await store_.get(second) is not None

    clock.advance(IDLE + timedelta(seconds=1))
    await store_.create(user_id=ann.id, method="password")  # each login sweeps expired sessions
    assert await count(engine) == 1
    assert await delete_user_sessions(engine=engine, user_id=ann.id) == 1
    assert await count(engine) == 0


async def test_the_session_reads_the_user_as_it_is_now(engine: AsyncEngine, clock: Clock) -> None:
    ann = await store.create_user(engine=engine, email="ann@example.edu")
    token, _ = await sessions(engine, clock).create(user_id=ann.id, method="oidc")
    async with engine.begin() as conn:
        await conn.execute(
            update(users).where(users.c.id == ann.id).values(disabled=True, claims={"affiliation": "staff"})
        )
    found = await sessions(engine, clock).get(token)
    assert found is not None and found.disabled and found.claims == {"affiliation": "staff"}

    groups = [
        GroupSettings(name="staff", rules=[{"claim": "affiliation", "equals": "staff"}]),  # type: ignore[list-item]
        GroupSettings(name="students", rules=[{"claim": "affiliation", "equals": "student"}]),  # type: ignore[list-item]
        GroupSettings(name="listed", members=["ANN@example.edu"]),
    ]
    principal = found.principal(groups, admins=[])
    assert (principal.id, principal.kind, principal.key_id) == (f"user:{ann.id}", "user", None)
    assert principal.groups == ("staff", "listed") and not principal.is_admin
    assert found.principal([], admins=["Ann@Example.edu"]).is_admin


def test_csrf_tokens_compare_exactly() -> None:
    assert PortalSession.tokens_match("abc", "abc")
    assert not PortalSession.tokens_match("abc", "abd")
    assert not PortalSession.tokens_match("abc", None)
    assert not PortalSession.tokens_match("", "")
