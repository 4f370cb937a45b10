"""The rules applied to an identity provider's claims, and the user they log in.

The whole flow against a real provider process is in tests/portal/test_oidc.py."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import LoginFailed
from lumen.identity import store
from lumen.identity.oidc import Identity, MemoryStateCache, identity_from_claims, login_user
from lumen.portal.config import CILOGON_SCOPES, OidcSettings
from lumen.store.tables import users


def settings(**extra: Any) -> OidcSettings:
    return OidcSettings(client_id="lumen", **extra)


def test_cilogon_is_the_default_provider() -> None:
    oidc = settings()
    assert oidc.metadata_url == "https://cilogon.org/.well-known/openid-configuration"
    assert oidc.scopes == CILOGON_SCOPES == ("openid", "email", "profile", "org.cilogon.userinfo")
    assert oidc.email_verification is None  # decided by the provider: see below
    with pytest.raises(ValueError, match="openid"):
        settings(scopes=["email"])


@pytest.mark.parametrize(
    ("rule", "verified", "accepted"),
    [
        ("required", True, True),
        ("required", "true", True),
        ("required", False, False),
        ("required", None, False),
        ("unless_false", None, True),
        ("unless_false", "false", False),
        ("off", False, True),
    ],
)
def test_email_verification(rule: str, verified: object, accepted: bool) -> None:
    claims: dict[str, Any] = {"sub": "1", "email": "Ann@Example.edu"}
    if verified is not None:
        claims["email_verified"] = verified
    if accepted:
        assert identity_from_claims(claims, settings(email_verification=rule)).email == "ann@example.edu"
    else:
        with pytest.raises(LoginFailed, match="not verified"):
            identity_from_claims(claims, settings(email_verification=rule))


@pytest.mark.parametrize(
    ("metadata_url", "verified", "accepted"),
    [
        # CILogon sends no email_verified: the email is the one the home institution asserted.
        ("https://cilogon.org/.well-known/openid-configuration", None, True),
        ("https://cilogon.org/.well-known/openid-configuration", False, False),
        # Any other provider must say the email is verified.
        ("https://idp.example.edu/.well-known/openid-configuration", None, False),
        ("https://idp.example.edu/.well-known/openid-configuration", True, True),
    ],
)
def test_the_default_email_rule_depends_on_the_provider(
    metadata_url: str, verified: object, accepted: bool
) -> None:
    claims: dict[str, Any] = {"sub": "1", "email": "ann@example.edu"}
    if verified is not None:
        claims["email_verified"] = verified
    oidc = settings(metadata_url=metadata_url)
    if accepted:
        assert identity_from_claims(claims, oidc).email == "ann@example.edu"
    else:
        with pytest.raises(LoginFailed, match="not verified"):
            identity_from_claims(claims, oidc)


def test_names_and_unusable_emails() -> None:
    base = {"sub": "1", "email_verified": True}
    given = identity_from_claims(
        {**base, "email": "a@x.org", "given_name": "Ann", "family_name": "Lee"}, settings()
    )
    assert given.name == "Ann Lee"
    assert identity_from_claims({**base, "email": "a@x.org", "name": " Ann L "}, settings()).name == "Ann L"
    with pytest.raises(LoginFailed, match="did not tell Lumen your email"):
        identity_from_claims(base, settings())
    with pytest.raises(LoginFailed, match="cannot use"):
        identity_from_claims({**base, "email": "not-an-email"}, settings())


async def test_first_login_creates_the_user_and_every_login_stores_the_claims(engine: AsyncEngine) -> None:
    first = Identity("ann@example.edu", "Ann", {"sub": "a1", "affiliation": "staff@example.edu"})
    user, changed = await login_user(engine=engine, identity=first)
    assert (user.email, user.name, user.is_admin, user.disabled) == ("ann@example.edu", "Ann", False, False)
    assert not changed  # a new user has no cached keys

    again, changed = await login_user(engine=engine, identity=first)
    assert again.id == user.id and not changed
    moved = Identity("ann@example.edu", "", {"sub": "a1", "affiliation": "faculty@example.edu"})
    again, changed = await login_user(engine=engine, identity=moved)
    assert again.id == user.id and again.name == "Ann" and changed  # an empty name keeps the old one
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.id == user.id))).one()
        total = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
    assert row.claims == {"sub": "a1", "affiliation": "faculty@example.edu"}
    assert row.last_login_at is not None and total == 1


async def test_an_existing_user_keeps_their_account(engine: AsyncEngine) -> None:
    admin = await store.create_user(engine=engine, email="boss@example.edu", is_admin=True)
    user, _ = await login_user(engine=engine, identity=Identity("boss@example.edu", "Boss", {"sub": "b"}))
    assert user.id == admin.id and user.is_admin


async def test_pending_logins_expire_and_stay_bounded() -> None:
    now = [100.0]
    cache = MemoryStateCache(limit=2, clock=lambda: now[0])
    await cache.set("a", "1", 60)
    assert await cache.get("a") == "1"
    now[0] += 61
    assert await cache.get("a") is None
    for key in ("b", "c", "d"):
        await cache.set(key, key, 600)
    assert await cache.get("d") == "d" and await cache.get("b") is None
    await cache.delete("d")
    assert await cache.get("d") is None
