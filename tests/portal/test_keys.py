"""Profile → API keys: create (shown once, with a Python example that runs), the restrictions a
key carries, the list with usage, and revocation — in this process at once, and in every other
process through the change channel."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from lumen.admin import audit_log
from lumen.identity import store
from lumen.portal.pages import coins
from lumen.usage.queries import recent_usage
from tests.portal.support import add_user, client, csrf_token, login, parse, set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

REDIS_URL = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MODELS = [model("echo", ECHO, price={"input": 100, "output": 100}), model("org/other", ECHO)]
SECRET = re.compile(r"sk_[A-Za-z0-9_-]{40,}")


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    with running_lumen(tmp_path_factory.mktemp("keys"), {"models": MODELS}) as running:
        set_admin_password(running)
        yield running


def chat(lumen: RunningLumen, key: str, model_name: str = "echo", content: str = "hi") -> httpx.Response:
    return httpx.post(
        lumen.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model_name, "messages": [{"role": "user", "content": content}]},
    )


def create(browser: httpx.Client, **fields: Any) -> httpx.Response:
    return browser.post("/profile/keys", data={"csrf_token": csrf_token(browser), **fields})


def new_secret(response: httpx.Response) -> str:
    found = re.search(r'id="new-key"[^>]*value="(sk_[^"]+)"', response.text)
    assert found, "the new key is not on the page"
    return found.group(1)


def python_snippet(html: str) -> str:
    found = re.search(r'<code class="language-python">(.*?)</code>', html, re.S)
    assert found, "no Python example on the page"
    return unescape(found.group(1))


def key_rows(html: str) -> dict[str, str]:
    """Each key's row as text, by key id."""
    found = re.findall(r'<tr data-key-id="([^"]+)"[^>]*>(.*?)</tr>', html, re.S)
    return {key_id: " ".join(unescape(re.sub(r"<[^>]+>", " ", row)).split()) for key_id, row in found}


def test_create_a_key_shown_once_that_works_with_its_limits(lumen: RunningLumen, tmp_path: Path) -> None:
    user_id = add_user(lumen, "kim@example.edu")
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with client(lumen) as browser:
        login(browser, "kim@example.edu")
        created = create(
            browser, name="thesis", expires=tomorrow.isoformat(), models=["echo"], coin_cap="0.5"
        )
        assert created.status_code == 201
        secret = new_secret(created)
        assert created.headers["cache-control"] == "no-store"
        # The ready Python example carries the key and this instance's URL, and it runs.
        snippet = python_snippet(created.text)
        assert f'api_key="{secret}"' in snippet and f'base_url="{lumen.v1}"' in snippet
        script = tmp_path / "example.py"
        script.write_text(snippet, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        ran = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "Hello!\n"

        listing = browser.get("/profile/keys").text
        assert SECRET.search(listing) is None  # never shown again

    [key] = lumen.run(store.list_keys(engine=lumen.state.engine, owner_kind="user", owner_id=user_id))
    assert key.name == "thesis" and key.models == ["echo"] and key.coin_cap_micro == 500_000
    # The key works through the chosen day (UTC) and no longer.
    assert key.expires_at == datetime.combine(tomorrow + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    assert secret.startswith(key.hint[:6]) and secret.endswith(key.hint[-4:])

    other = chat(lumen, secret, "org/other")
    assert other.status_code == 403 and other.json()["error"]["code"] == "model_not_allowed"
    # 100 coins per million tokens: a short request fits the key's 0.5-coin cap; a prompt whose
    # cost alone is beyond it does not (a shorter answer would fit: the output cap is lowered).
    capped = chat(lumen, secret, content="word " * 6000)
    assert capped.status_code == 429 and capped.json()["error"]["code"] == "insufficient_quota"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "Give the key a name"),
        ({"name": "x" * 101}, "at most 100 characters"),
        ({"name": "a", "expires": "2020-01-01"}, "The expiry date is in the past."),
        ({"name": "a", "expires": "tomorrow"}, "Give the expiry date as YYYY-MM-DD."),
        ({"name": "a", "expires": (date.today() + timedelta(days=4000)).isoformat()}, "within ten years"),
        ({"name": "a", "coin_cap": "lots"}, "The coin limit must be a number"),
        ({"name": "a", "coin_cap": "0.0000001"}, "The coin limit must be a number"),
        ({"name": "a", "coin_cap": "-1"}, "between 0 and 1,000,000,000"),
        ({"name": "a", "coin_cap": "NaN"}, "between 0 and 1,000,000,000"),
        ({"name": "a", "models": ["not-a-model"]}, "a model you may not use: not-a-model"),
    ],
)
def test_a_refused_form_says_why_and_creates_nothing(
    lumen: RunningLumen, fields: dict[str, Any], message: str
) -> None:
    email = f"f{uuid.uuid4().hex[:8]}@example.edu"
    user_id = add_user(lumen, email)
    with client(lumen) as browser:
        login(browser, email)
        refused = create(browser, **fields)
    assert refused.status_code == 400
    text = unescape(refused.text)
    assert message in text and 'role="alert"' in text
    assert parse(refused.text).fields["name"] == fields["name"]  # what was typed is kept
    assert lumen.run(store.list_keys(engine=lumen.state.engine, owner_kind="user", owner_id=user_id)) == []


def test_an_administrator_makes_an_admin_key_on_the_keys_page(lumen: RunningLumen) -> None:
    """Only an admin key opens the admin API; only administrators are offered one."""
    email = f"a{uuid.uuid4().hex[:8]}@example.edu"
    add_user(lumen, email, admin=True)
    plain_email = f"p{uuid.uuid4().hex[:8]}@example.edu"
    add_user(lumen, plain_email)
    with client(lumen) as browser:
        login(browser, email)
        assert 'name="admin"' in browser.get("/profile/keys").text
        ordinary = new_secret(create(browser, name="script"))
        admin_page = create(browser, name="ops", admin="on")
        admin = new_secret(admin_page)
        limited = create(browser, name="ops", admin="on", models=["echo"])
    assert limited.status_code == 400 and "cannot be limited to some models" in unescape(limited.text)
    assert "admin key;" in admin_page.text
    users = lumen.url + "/api/admin/users"
    assert httpx.get(users, headers={"Authorization": f"Bearer {ordinary}"}).status_code == 403
    assert httpx.get(users, headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    with client(lumen) as browser:
        login(browser, plain_email)
        assert 'name="admin"' not in browser.get("/profile/keys").text
        refused = create(browser, name="sneaky", admin="on")
    assert refused.status_code == 400 and "Only an administrator" in unescape(refused.text)


def test_the_list_shows_usage_and_last_use_per_key(lumen: RunningLumen) -> None:
    user_id = add_user(lumen, "lou@example.edu")
    with client(lumen) as browser:
        login(browser, "lou@example.edu")
        first = new_secret(create(browser, name="first"))
        second = new_secret(create(browser, name="second"))
        for _ in range(2):
            assert chat(lumen, first, content="a few words to pay for").status_code == 200
        lumen.run(lumen.state.recorder.flush())
        lumen.run(lumen.state.authenticator.flush_last_used())
        page = browser.get("/profile/keys").text
    records = lumen.run(recent_usage(engine=lumen.state.engine, principal=f"user:{user_id}"))
    assert len(records) == 2 and all(r.cost_micro > 0 for r in records)
    spent = coins(sum(r.cost_micro for r in records))
    by_name = {row.split()[0]: row for row in key_rows(page).values()}
    assert f"2 requests, {spent} coins" in by_name["first"]
    assert "0 requests, 0.00 coins" in by_name["second"]
    assert by_name["first"].count("never") == 1  # used; does not expire
    assert by_name["second"].count("never") == 2  # never used; does not expire
    assert second not in page and first not in page


def test_revoke_with_confirmation_refuses_the_key_at_once(lumen: RunningLumen) -> None:
    owner_id = add_user(lumen, "rae@example.edu")
    add_user(lumen, "sam@example.edu")
    with client(lumen) as browser:
        login(browser, "rae@example.edu")
        secret = new_secret(create(browser, name="laptop"))
        assert chat(lumen, secret).status_code == 200  # cached as valid now
        lumen.run(lumen.state.recorder.flush())
        [key] = lumen.run(store.list_keys(engine=lumen.state.engine, owner_kind="user", owner_id=owner_id))
        confirm = browser.get(f"/profile/keys/{key.id}/revoke")
        assert confirm.status_code == 200 and "Revoke the key “laptop”" in confirm.text
        assert browser.post(f"/profile/keys/{key.id}/revoke").status_code == 403  # no CSRF token
        token = parse(confirm.text).fields["csrf_token"]

        with client(lumen) as stranger:
            login(stranger, "sam@example.edu")
            other_token = csrf_token(stranger)
            for path in (f"/profile/keys/{key.id}/revoke", "/profile/keys/key_0000000000000000/revoke"):
                assert stranger.get(path).status_code == 404
                assert stranger.post(path, data={"csrf_token": other_token}).status_code == 404
        assert chat(lumen, secret).status_code == 200
        lumen.run(lumen.state.recorder.flush())

        done = browser.post(f"/profile/keys/{key.id}/revoke", data={"csrf_token": token})
        assert done.status_code == 303 and done.headers["location"] == f"/profile/keys?revoked={key.id}"
        refused = chat(lumen, secret)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"

        page = browser.get(done.headers["location"]).text
        assert f"The key {key.id} is revoked" in page
        row = key_rows(page)[key.id]
        assert "Revoked" in row and "2 requests," in row  # kept, with its usage
        assert f'href="/profile/keys/{key.id}/revoke"' not in page  # nothing more to revoke
        for forged in ("key_0000000000000000", "<b>anything</b>"):
            assert "is revoked" not in browser.get("/profile/keys", params={"revoked": forged}).text
        again = browser.get(f"/profile/keys/{key.id}/revoke")
        assert "already revoked" in again.text
    [stored] = lumen.run(store.list_keys(engine=lumen.state.engine, owner_kind="user", owner_id=owner_id))
    assert stored.revoked_at is not None
    # Audited like every revocation: by the owner, from the portal.
    [entry] = lumen.run(
        audit_log.entries(engine=lumen.state.engine, target=f"key:{key.id}", action="key.revoke")
    )
    assert (entry.actor, entry.actor_name, entry.face) == (f"user:{owner_id}", "rae@example.edu", "portal")
    assert entry.details == {"owner": f"user:{owner_id}", "name": "laptop"}


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis_sync.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis_sync.RedisError, OSError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc} (required under CI=true)")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    yield REDIS_URL


def test_a_revocation_in_the_page_reaches_another_process(tmp_path: Path, redis_url: str) -> None:
    """Two Lumen processes' worth of state (one database, one Redis) that trust their key caches
    for an hour: only the change the page publishes can make the other one refuse the key."""
    prefix = f"lumen-test-{uuid.uuid4().hex[:8]}:"
    server = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "secret_key": "shared-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "auth_cache_seconds": 60,
        "redis_cache_seconds": 3600,
    }
    config = {"server": server, "models": [model("echo", ECHO)]}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        with (
            running_lumen(tmp_path / "a", config) as first,
            running_lumen(tmp_path / "b", config) as second,
        ):
            add_user(first, "una@example.edu")
            for running in (first, second):
                running.run(running.state.changes.wait_live())
            with client(first) as browser:
                login(browser, "una@example.edu")
                secret = new_secret(create(browser, name="shared"))
                assert chat(second, secret).status_code == 200  # the other process caches it
                [key_id] = key_rows(browser.get("/profile/keys").text)
                token = csrf_token(browser)
                revoked = browser.post(f"/profile/keys/{key_id}/revoke", data={"csrf_token": token})
                assert revoked.status_code == 303
            deadline = datetime.now(UTC) + timedelta(seconds=30)  # far below the hour of the caches
            while chat(second, secret).status_code != 401:
                assert datetime.now(UTC) < deadline, "the revocation did not reach the other process"
                time.sleep(0.05)
    finally:
        cleanup = redis_sync.Redis.from_url(REDIS_URL)
        for stale in cleanup.scan_iter(prefix + "*"):
            cleanup.delete(stale)
        cleanup.close()


def test_a_nul_character_in_a_form_is_a_400_and_creates_nothing(lumen: RunningLumen) -> None:
    """PostgreSQL cannot store a NUL: a form field holding one was a 500 there."""
    email = f"n{uuid.uuid4().hex[:8]}@example.edu"
    user_id = add_user(lumen, email)
    with client(lumen) as browser:
        login(browser, email)
        refused = create(browser, name="laptop\x00")
    assert refused.status_code == 400 and "NUL" in unescape(refused.text)
    assert lumen.run(store.list_keys(engine=lumen.state.engine, owner_kind="user", owner_id=user_id)) == []
