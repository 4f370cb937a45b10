"""OIDC login end to end: Lumen and a real OpenID Connect provider process (oidc-provider-mock),
with the browser's redirects followed by hand."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from lumen.identity import store
from lumen.store.tables import portal_sessions, users
from tests.portal.oidc_provider import Provider
from tests.portal.support import client, csrf_token, oidc_login, parse
from tests.support import ECHO, RunningLumen, model, running_lumen

STAFF = "staff@example.edu"


def config(provider: Provider, **oidc: Any) -> dict[str, Any]:
    return {
        "models": [model("echo", ECHO), model("staff-only", ECHO, access="blocked")],
        "groups": [
            {
                "name": "staff",
                "rules": [{"claim": "affiliation", "equals": STAFF}],
                "access": {"allow": ["staff-only"]},
            }
        ],
        "portal": {"oidc": {"metadata_url": provider.metadata_url, "client_id": "lumen-test", **oidc}},
    }


@pytest.fixture
def lumen(tmp_path: Path, oidc_provider: Provider, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningLumen]:
    monkeypatch.setenv("LUMEN_OIDC_CLIENT_SECRET", "the-client-secret")
    with running_lumen(tmp_path, config(oidc_provider)) as running:
        yield running


def person(provider: Provider, **claims: Any) -> tuple[str, str]:
    """A new subject at the provider; returns (sub, email)."""
    sub = f"u{uuid.uuid4().hex[:10]}"
    email = f"{sub}@example.edu"
    provider.set_user(sub, **{"email": email, "email_verified": True, "name": "Alice Liddell", **claims})
    return sub, email


def user_row(lumen: RunningLumen, email: str) -> Any:
    async def work() -> Any:
        async with lumen.state.engine.connect() as conn:
            return (await conn.execute(select(users).where(users.c.email == email))).first()

    return lumen.run(work())


def chat(lumen: RunningLumen, key: str, model_name: str) -> int:
    body = {"model": model_name, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(
        lumen.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body
    )
    return response.status_code


def test_first_login_creates_the_user_and_stores_the_claims(
    lumen: RunningLumen, oidc_provider: Provider
) -> None:
    sub, email = person(oidc_provider, affiliation=STAFF)
    with client(lumen) as browser:
        done = oidc_login(browser, oidc_provider, sub)
        assert done.status_code == 303 and done.headers["location"] == "/"
        home = browser.get("/")
        assert home.status_code == 200 and email in home.text
        assert "staff" in home.text and "your identity provider" in home.text

    row = user_row(lumen, email)
    assert row.name == "Alice Liddell" and row.password_hash is None and row.last_login_at is not None
    assert row.claims["affiliation"] == STAFF and row.claims["sub"] == sub
    assert "nonce" not in row.claims


def test_claims_at_login_decide_groups_for_api_keys_too(lumen: RunningLumen, oidc_provider: Provider) -> None:
    sub, email = person(oidc_provider, affiliation="student@example.edu")
    with client(lumen) as browser:
        assert oidc_login(browser, oidc_provider, sub).status_code == 303

    async def new_key() -> str:
        user = await store.find_user(engine=lumen.state.engine, email=email)
        _, plain = await store.create_key(
            engine=lumen.state.engine,
            secret=lumen.state.authenticator.secret,
            owner_kind="user",
            owner_id=user.id,
        )
        return plain

    key = lumen.run(new_key())
    assert chat(lumen, key, "echo") == 200
    assert chat(lumen, key, "staff-only") == 403

    # The provider now says the person is staff: the next login stores that, and the key follows
    # at once (the cached key and access decisions are dropped).
    oidc_provider.set_user(sub, email=email, email_verified=True, affiliation=STAFF)
    with client(lumen) as browser:
        assert oidc_login(browser, oidc_provider, sub).status_code == 303
    assert chat(lumen, key, "staff-only") == 200


def test_an_unverified_email_is_refused(lumen: RunningLumen, oidc_provider: Provider) -> None:
    sub, email = person(oidc_provider, email_verified=False)
    with client(lumen) as browser:
        refused = oidc_login(browser, oidc_provider, sub)
        assert refused.status_code == 403
        assert "has not verified the email address" in refused.text and "Login failed" in refused.text
        assert not any(
            "lumen_session" in c for c in refused.headers.get_list("set-cookie") if "Max-Age=0" not in c
        )
        assert browser.get("/").status_code == 303
    assert user_row(lumen, email) is None


def test_logout_ends_the_session(lumen: RunningLumen, oidc_provider: Provider) -> None:
    sub, _ = person(oidc_provider)
    with client(lumen) as browser:
        oidc_login(browser, oidc_provider, sub)
        out = browser.post("/logout", data={"csrf_token": csrf_token(browser)})
        assert out.status_code == 303
        assert browser.get("/").status_code == 303

    async def sessions() -> list[Any]:
        async with lumen.state.engine.connect() as conn:
            return list(await conn.execute(select(portal_sessions)))

    assert lumen.run(sessions()) == []


def test_the_callback_only_works_in_the_browser_that_started(
    lumen: RunningLumen, oidc_provider: Provider
) -> None:
    sub, _ = person(oidc_provider)
    with client(lumen) as victim, client(lumen) as attacker:
        start = attacker.get("/auth/oidc/login")
        callback = oidc_provider.authorize(start.headers["location"], sub)
        # The attacker's code, replayed in another browser (login CSRF), is refused...
        refused = victim.get(callback)
        assert refused.status_code == 403 and "another browser" in refused.text
        assert victim.get("/").status_code == 303
        # ...and a made-up state in the right browser too.
        forged = attacker.get(callback.replace("state=", "state=x"))
        assert forged.status_code == 403
        assert attacker.get(callback).status_code == 303  # the real one still works, once
        assert attacker.get(callback).status_code == 403


def test_the_page_asked_for_is_shown_after_login(lumen: RunningLumen, oidc_provider: Provider) -> None:
    sub, _ = person(oidc_provider)
    with client(lumen) as browser:
        login_page = parse(browser.get("/login?next=/somewhere").text)
        assert "/auth/oidc/login?next=%2Fsomewhere" in login_page.links
        assert oidc_login(browser, oidc_provider, sub, next="/somewhere").headers["location"] == "/somewhere"


def test_disabled_users_and_denied_logins_get_a_clear_page(
    lumen: RunningLumen, oidc_provider: Provider
) -> None:
    sub, email = person(oidc_provider)

    async def disabled_user() -> None:
        user = await store.create_user(engine=lumen.state.engine, email=email)
        await store.set_user_flags(engine=lumen.state.engine, user_id=user.id, disabled=True)

    lumen.run(disabled_user())
    with client(lumen) as browser:
        refused = oidc_login(browser, oidc_provider, sub)
        assert refused.status_code == 403 and "Account disabled" in refused.text

        start = browser.get("/auth/oidc/login")
        denied = httpx.post(start.headers["location"], data={"action": "deny"})
        answer = browser.get(denied.headers["location"])
        assert answer.status_code == 403 and "did not log you in" in answer.text


def test_idphint_and_scopes_reach_the_provider(tmp_path: Path, oidc_provider: Provider) -> None:
    with running_lumen(tmp_path, config(oidc_provider, idphint="urn:mace:incommon:example.edu")) as lumen:
        with client(lumen) as browser:
            assert "Log in with your institution" in browser.get("/login").text
            location = browser.get("/auth/oidc/login").headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["idphint"] == ["urn:mace:incommon:example.edu"]
    assert query["scope"] == ["openid email profile org.cilogon.userinfo"]
    assert query["code_challenge_method"] == ["S256"] and query["nonce"]
    assert query["redirect_uri"] == [lumen.url + "/auth/oidc/callback"]
