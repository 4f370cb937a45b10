"""The Admin pages through a live Lumen: users (search, sort, pages, actions through the admin API),
groups and their resolved policies, models and endpoint health, the configuration with every
secret masked, and the audit log."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lumen.portal.routes.admin import MASK, mask
from tests.portal.roles import Cast, running_cast
from tests.portal.support import add_user, client, login, parse, set_admin_password
from tests.portal.test_usage import tables
from tests.support import ECHO, TEST_KEY, model, running_lumen, upstream

JSON = {"accept": "application/json"}


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cast]:
    with running_cast(Path(tmp_path_factory.mktemp("admin"))) as running:
        yield running


def _api(cast: Cast, browser: httpx.Client, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """What admin.js sends: JSON to the admin API with the session's CSRF token."""
    return browser.request(
        method, "/api/admin" + path, json=body, headers={"x-csrf-token": cast.csrf(browser), **JSON}
    )


def _user_row(admin: httpx.Client, email: str) -> list[str]:
    rows = tables(admin.get("/admin", params={"q": email}).text)["users-table"]
    return next(r for r in rows[1:] if r[0].split()[0] == email)


def test_users_search_sort_and_pages(cast: Cast) -> None:
    for i in range(30):
        add_user(cast.lumen, f"student{i:02d}@example.edu", password=None)
    with cast.session("admin@localhost") as admin:
        first = admin.get("/admin")
        assert first.status_code == 200 and parse(first.text).inline_code == []
        users = tables(first.text)["users-table"]
        assert len(users) == 1 + 25  # a page
        emails = [row[0].split()[0] for row in users[1:]]
        assert emails == sorted(emails) and emails[0] == "ada@example.edu"
        assert 'aria-sort="ascending"' in first.text
        second = admin.get("/admin", params={"offset": 25})
        more = [row[0].split()[0] for row in tables(second.text)["users-table"][1:]]
        assert len(more) == 35 - 25 and not set(more) & set(emails)  # 30 students, 4 people, admin
        found = admin.get("/admin", params={"q": "STUDENT1", "sort": "email", "dir": "desc"})
        listed = [row[0] for row in tables(found.text)["users-table"][1:]]
        assert listed == [f"student{i}@example.edu" for i in range(19, 9, -1)]
        assert 'aria-sort="descending"' in found.text and "Users 1–10 of 10" in found.text


def test_disabling_a_user_refuses_their_key_and_is_logged(cast: Cast) -> None:
    carol = cast.ids["carol@example.edu"]
    assert cast.chat("carol@example.edu").status_code == 200
    with cast.session("admin@localhost") as admin:
        row = next(
            r for r in tables(admin.get("/admin").text)["users-table"][1:] if r[0] == "carol@example.edu"
        )
        assert "Disable" in row[-1]
        assert _api(cast, admin, "PATCH", f"/users/{carol}", {"disabled": True}).status_code == 200
        refused = cast.chat("carol@example.edu")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_disabled"
        row = next(
            r
            for r in tables(admin.get("/admin").text)["users-table"][1:]
            if r[0].startswith("carol@example.edu")
        )
        assert "disabled" in row[0] and "Enable" in row[-1]
        log = tables(admin.get("/admin/audit").text)["audit-table"]
        newest = log[1]
        assert newest[1:4] == ["admin@localhost", "user.update", "carol@example.edu"]
        assert '"disabled": true' in newest[4]
        assert _api(cast, admin, "PATCH", f"/users/{carol}", {"disabled": False}).status_code == 200
    assert cast.chat("carol@example.edu").status_code == 200
    # A disabled user's portal session ends too.
    with cast.session("dave@example.edu") as dave, cast.session("admin@localhost") as admin:
        _api(cast, admin, "PATCH", f"/users/{cast.ids['dave@example.edu']}", {"disabled": True})
        assert dave.get("/usage").status_code == 403


def test_granting_and_resetting_coins(cast: Cast) -> None:
    bob = cast.ids["bob@example.edu"]
    with cast.session("admin@localhost") as admin:

        def balance() -> str:
            rows = tables(admin.get("/admin", params={"q": "bob@"}).text)["users-table"]
            return rows[1][rows[0].index("Coins")]

        assert balance() == "100.00 coins"  # the default pool
        assert (
            _api(cast, admin, "POST", "/coins/grant", {"user_id": bob, "amount": "12.5"}).status_code == 200
        )
        assert balance() == "112.50 coins"
        bad = _api(cast, admin, "POST", "/coins/grant", {"user_id": bob, "amount": "-3"})
        assert bad.status_code == 400 and bad.json()["error"]["message"]
        assert _api(cast, admin, "POST", "/coins/reset", {"user_id": bob}).status_code == 200
        assert balance() == "100.00 coins"
        actions = [row[2] for row in tables(admin.get("/admin/audit").text)["audit-table"][1:3]]
        assert actions == ["coins.reset", "coins.grant"]
        only = tables(admin.get("/admin/audit", params={"action": "coins.grant"}).text)["audit-table"]
        assert {row[2] for row in only[1:]} == {"coins.grant"}


def test_groups_show_their_resolved_policies(cast: Cast) -> None:
    with cast.session("admin@localhost") as admin:
        page = admin.get("/admin/groups").text
    physics = page[page.index(">physics</h2>") : page.index("Everyone (no group)")]
    assert "1 user: ada@example.edu" in physics
    assert "Up to 500.00 coins, refilled 5.00 an hour" in physics
    limits = tables(physics)
    member = next(iter(limits.values()))
    assert member[1][:2] == ["All of a member's requests", "600"]
    assert "Allowed after acknowledging the notice:</strong> careful" in physics
    default = page[page.index("Everyone (no group)") :]
    assert "Up to 100.00 coins" in default
    assert next(iter(tables(default).values()))[1][1] == "100"


def test_models_show_each_endpoints_health(cast: Cast) -> None:
    cast.chat("ada@example.edu")
    with cast.session("admin@localhost") as admin:
        page = admin.get("/admin/models").text
    echo = page[page.index(">echo") : page.index(">careful")]
    assert "Endpoints: 1 of 1 healthy" in echo
    endpoint = next(iter(tables(echo).values()))[1]
    assert endpoint[0].startswith("local:echo") and endpoint[1] == "healthy"
    assert "1000 in / 2000 out" in echo


def test_the_configuration_never_shows_a_secret(tmp_path: Path) -> None:
    secrets = [
        "UPSTREAMKEY-7f3a9",
        "URLPASSWORD-2b8c1",
        "METRICS-9d0e2",
        "OTLPHEADER-55aa",
        "SERVERSECRET-c4d2e8f1",
    ]
    config = {
        "server": {"metrics_token": secrets[2], "secret_key": secrets[4]},
        "models": [
            model("echo", ECHO),
            model("remote", upstream("http://127.0.0.1:9/v1", api_key=secrets[0])),
            model("proxied", upstream(f"http://lumen:{secrets[1]}@127.0.0.1:9/v1?api_key={secrets[0]}")),
        ],
        "tracing": {"headers": {"authorization": f"Bearer {secrets[3]}"}},
        "portal": {
            "instance_name": "Illinois AI",
            "announcement": "Maintenance on Saturday.",
            "footer_links": [{"text": "Support", "url": "mailto:help@example.edu"}],
        },
    }
    with running_lumen(tmp_path, config) as lumen:
        set_admin_password(lumen)
        with client(lumen) as browser:
            login(browser, "admin@localhost")
            page = browser.get("/admin/config")
    assert page.status_code == 200
    for secret in [*secrets, TEST_KEY]:
        assert secret not in page.text, secret
    dump = html.unescape(page.text.split('<pre class="config-dump"')[1].split("</pre>")[0])
    assert f"metrics_token: '{MASK}'" in dump and f"secret_key: '{MASK}'" in dump
    assert f"api_key: '{MASK}'" in dump  # the endpoint's own key
    assert f"url: http://***@127.0.0.1:9/v1?api_key={MASK}" in dump
    assert f"authorization: '{MASK}'" in dump
    assert "instance_name: Illinois AI" in dump
    branding = html.unescape(page.text.split('id="branding"')[1].split("</dl>")[0])
    assert "Illinois AI" in branding and "Maintenance on Saturday." in branding
    assert "mailto:help@example.edu" in branding


def test_mask_keeps_what_is_not_a_secret() -> None:
    masked = mask(
        {
            "api_key_env": "OPENAI_KEY",
            "key_prefix": "lumen:rl:",
            "key": {"rpm": 5},
            "client_secret_env": "LUMEN_OIDC_CLIENT_SECRET",
            "password": "",
            "url": "https://a:b@host/x?token=abc&model=m",
        }
    )
    assert masked == {
        "api_key_env": "OPENAI_KEY",
        "key_prefix": "lumen:rl:",
        "key": {"rpm": 5},
        "client_secret_env": "LUMEN_OIDC_CLIENT_SECRET",
        "password": "",
        "url": f"https://***@host/x?token={MASK}&model=m",
    }
