"""The Models pages: the list matches /v1/models for the same user, search and filters, live
health, the detail page (names with `/`), and acknowledging a notice through the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from lumen.access import store as access_store
from lumen.identity import store
from lumen.upstream.health import check_all
from tests.portal.support import add_user, client, csrf_token, login, parse, set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

NOTICE = "Outputs may be **wrong**. Read the [terms](https://example.edu/terms) first."
MODELS = [
    model(
        "echo",
        ECHO,
        description="Repeats you",
        price={"input": 0.15, "output": 0.6},
        capabilities={"context_window": 8192, "tools": True},
    ),
    model("org/careful", ECHO, access={"acknowledge": True, "notice": NOTICE}),
    model(
        "vision",
        ECHO,
        {"type": "openai", "url": "http://127.0.0.1:9/v1"},
        capabilities={"modalities": ["text", "image"]},
    ),
    model("embed", ECHO, kind="embeddings", price={"input": 0.00001}),
    model("closed", ECHO, access="blocked"),
    model("secret", ECHO),
]


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    config: dict[str, Any] = {"models": MODELS, "routing": {"health_interval": 0}}
    with running_lumen(tmp_path_factory.mktemp("models"), config) as running:
        set_admin_password(running)
        yield running


class Rows(HTMLParser):
    """The model table: one dict per row, with the row's data attributes, whether it is hidden
    and its cells' text by label."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "tr" and "data-model" in values:
            self.rows.append({**values, "hidden": "hidden" in values, "cells": {}})
        elif tag == "td" and self.rows:
            self._cell = values.get("data-label")
            self.rows[-1]["cells"][self._cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None and self.rows:
            self.rows[-1]["cells"][self._cell] += data


def rows(html: str) -> list[dict[str, Any]]:
    parser = Rows()
    parser.feed(html)
    for row in parser.rows:
        row["cells"] = {k: " ".join(v.split()) for k, v in row["cells"].items()}
    return parser.rows


def shown(html: str) -> list[str]:
    return [r["data-model"] for r in rows(html) if not r["hidden"]]


def user_with_key(lumen: RunningLumen, email: str) -> tuple[int, str]:
    user_id = add_user(lumen, email)

    async def make_key() -> str:
        secret: bytes = lumen.state.authenticator.secret
        _, plain = await store.create_key(
            engine=lumen.state.engine, secret=secret, owner_kind="user", owner_id=user_id
        )
        return plain

    return user_id, lumen.run(make_key())


def test_the_list_is_what_v1_models_lists_for_the_same_user(lumen: RunningLumen) -> None:
    user_id, key = user_with_key(lumen, "lia@example.edu")

    # The user's own rule hides `secret` from them (and only from them).
    async def hide() -> None:
        from lumen.access.config import EntityAccess

        await access_store.set_rule(
            engine=lumen.state.engine,
            principal=f"user:{user_id}",
            rule=EntityAccess(block=("secret",)),
            actor="user:1",
        )
        lumen.state.access.invalidate(f"user:{user_id}")

    lumen.run(hide())
    api = httpx.get(lumen.v1 + "/models", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    with client(lumen) as browser:
        login(browser, "lia@example.edu")
        page = browser.get("/models")
    assert page.status_code == 200
    listed = rows(page.text)
    assert (
        [r["data-model"] for r in listed]
        == [m["id"] for m in api]
        == ["echo", "org/careful", "vision", "embed"]
    )
    by_name = {r["data-model"]: r for r in listed}
    assert by_name["echo"]["cells"]["Price (in / out)"] == "0.15 / 0.6"
    assert by_name["embed"]["cells"]["Price (in / out)"] == "0.00001 / 0"
    assert by_name["org/careful"]["cells"]["Price (in / out)"] == "Free"
    assert by_name["echo"]["cells"]["Context"] == "8,192 tokens"
    assert by_name["echo"]["data-caps"] == "tools" and by_name["vision"]["data-caps"] == "image"
    assert by_name["org/careful"]["data-access"] == "needs_ack"
    assert by_name["org/careful"]["cells"]["Access"] == "Acknowledge to use"
    assert by_name["echo"]["cells"]["Access"] == "Ready"
    assert 'href="/models/org/careful"' in page.text
    # The refused and the hidden model have pages that answer like /v1/models/{id}.
    with client(lumen) as browser:
        login(browser, "lia@example.edu")
        assert browser.get("/models/closed").status_code == 403
        assert browser.get("/models/secret").status_code == 404
        assert browser.get("/models/no-such-model").status_code == 404
    assert (
        httpx.get(lumen.v1 + "/models/closed", headers={"Authorization": f"Bearer {key}"}).status_code == 403
    )
    assert (
        httpx.get(lumen.v1 + "/models/secret", headers={"Authorization": f"Bearer {key}"}).status_code == 404
    )


def test_search_and_filters_on_the_server(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        login(browser, "admin@localhost")
        assert shown(browser.get("/models", params={"q": "REPEATS"}).text) == ["echo"]
        assert shown(browser.get("/models", params={"q": "org/"}).text) == ["org/careful"]
        assert shown(browser.get("/models", params={"kind": "embeddings"}).text) == ["embed"]
        assert shown(browser.get("/models", params={"capability": "image"}).text) == ["vision"]
        assert shown(browser.get("/models", params={"capability": "tools"}).text) == ["echo"]
        assert shown(browser.get("/models", params={"access": "needs_ack"}).text) == ["org/careful"]
        ready = shown(browser.get("/models", params={"access": "usable"}).text)
        assert "org/careful" not in ready and "echo" in ready
        none = browser.get("/models", params={"q": "nothing like this"})
        assert shown(none.text) == [] and "0 of 5 models" in none.text
        assert 'id="model-none" class="notice">' in none.text  # the "no match" message is visible
        # Unknown filter values are ignored, not errors.
        assert len(shown(browser.get("/models", params={"kind": "<x>", "capability": "fly"}).text)) == 5


def test_status_counts_healthy_endpoints(lumen: RunningLumen) -> None:
    # `vision` has two endpoints; one points at a closed port. A real health check marks it down.
    lumen.run(check_all(lumen.state.registry, lumen.state.settings.routing))
    with client(lumen) as browser:
        login(browser, "admin@localhost")
        by_name = {r["data-model"]: r for r in rows(browser.get("/models").text)}
        assert by_name["vision"]["cells"]["Status"] == "Degraded 1 of 2 endpoints"
        assert by_name["echo"]["cells"]["Status"] == "Healthy 1 of 1 endpoint"
        detail = browser.get("/models/vision").text
        assert "1 of 2 endpoints serving" in detail and "127.0.0.1:9" not in detail  # no backend addresses


def test_acknowledging_through_the_page(lumen: RunningLumen) -> None:
    user_id, key = user_with_key(lumen, "max@example.edu")
    chat = {"model": "org/careful", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"Authorization": f"Bearer {key}"}
    refused = httpx.post(lumen.v1 + "/chat/completions", headers=auth, json=chat)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "acknowledgement_required"
    # The link in the API's message is the portal's page (the name's `/` encoded), which works.
    link = re.search(r"at (\S+)$", refused.json()["error"]["message"])
    assert link is not None and link.group(1).endswith("/models/org%2Fcareful")

    with client(lumen) as browser:
        login(browser, "max@example.edu", next="/models/org%2Fcareful")
        page = browser.get("/models/org%2Fcareful")
        assert page.status_code == 200
        assert "<strong>wrong</strong>" in page.text and 'href="https://example.edu/terms"' in page.text
        form = parse(page.text).fields
        assert form["notice_hash"] and form["csrf_token"]
        assert (
            browser.post(
                "/models/org/careful/acknowledge", data={"notice_hash": form["notice_hash"]}
            ).status_code
            == 403
        )
        stale = browser.post(
            "/models/org/careful/acknowledge",
            data={"csrf_token": form["csrf_token"], "notice_hash": "0" * 64},
        )
        assert stale.status_code == 409 and "has changed since it was shown" in stale.text
        assert httpx.post(lumen.v1 + "/chat/completions", headers=auth, json=chat).status_code == 403

        done = browser.post(
            "/models/org/careful/acknowledge",
            data={"csrf_token": form["csrf_token"], "notice_hash": form["notice_hash"]},
        )
        assert done.status_code == 303 and done.headers["location"] == "/models/org/careful?acknowledged"
        after = browser.get(done.headers["location"]).text
        assert "You have acknowledged the notice" in after and "You acknowledged this notice on" in after
        assert 'name="notice_hash"' not in after  # no second Acknowledge button
        careful = next(r for r in rows(browser.get("/models").text) if r["data-model"] == "org/careful")
        assert careful["cells"]["Access"] == "Ready" and careful["data-access"] == "usable"

        # A model without a notice has nothing to acknowledge.
        token = csrf_token(browser)
        nothing = browser.post("/models/echo/acknowledge", data={"csrf_token": token})
        assert nothing.status_code == 409 and "does not need an acknowledgement" in nothing.text

    assert httpx.post(lumen.v1 + "/chat/completions", headers=auth, json=chat).status_code == 200

    async def recorded() -> list[Any]:
        stored = await access_store.load_principal(engine=lumen.state.engine, principal=f"user:{user_id}")
        return list(stored.acknowledgements)

    [ack] = lumen.run(recorded())
    assert (ack.model, ack.acknowledged_by, ack.via) == ("org/careful", f"user:{user_id}", "web")


def test_pages_need_a_login(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        response = browser.get("/models/org/careful")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=%2Fmodels%2Forg%2Fcareful"
        assert browser.post("/models/org/careful/acknowledge").status_code == 403  # no session, no token


def test_without_models(tmp_path: Path) -> None:
    only = {"models": [model("closed", ECHO, access="blocked")]}
    with running_lumen(tmp_path, only) as lumen:
        set_admin_password(lumen)
        with client(lumen) as browser:
            login(browser, "admin@localhost")
            page = browser.get("/models").text
    assert "No models are available to you yet" in page and 'id="models-table"' not in page
