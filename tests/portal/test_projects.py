"""The Projects pages through a live Lumen: people, keys that work and stop working, acknowledgements
on the project's behalf, ownership, creation, and the audit log of it all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lumen.admin.audit_log import entries
from tests.portal.roles import Cast, running_cast
from tests.portal.support import parse
from tests.portal.test_usage import tables


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cast]:
    with running_cast(Path(tmp_path_factory.mktemp("projects"))) as running:
        yield running


def _chat(lumen_v1: str, key: str, model: str = "echo") -> httpx.Response:
    return httpx.post(
        lumen_v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
    )


def _new_key(page: str) -> str:
    value = parse(page).fields.get("")  # the key field has no name: it is not sent anywhere
    assert value is None
    start = page.index('id="new-key"')
    return page[start:].split('value="', 1)[1].split('"', 1)[0]


def _audit(cast: Cast, action: str) -> list[dict[str, object]]:
    found = cast.lumen.run(entries(engine=cast.lumen.state.engine, action=action))
    return [{"target": e.target, "actor": e.actor_name, **e.details} for e in found]


def test_the_list_shows_what_each_person_runs(cast: Cast) -> None:
    for email, expected in (
        ("ada@example.edu", ["genomics"]),
        ("bob@example.edu", ["genomics"]),
        ("carol@example.edu", []),
    ):
        with cast.session(email) as browser:
            page = browser.get("/projects").text
        listed = [row[0].replace(" disabled", "") for row in tables(page).get("projects-table", [[]])[1:]]
        assert listed == expected, email
        assert ("Create a project" in page) is False  # users_create_projects is off
    with cast.session("admin@localhost") as admin:
        page = admin.get("/projects").text
    assert "All projects (1)" in page and "Create a project" in page


def test_managers_are_added_and_removed_by_the_owner(cast: Cast) -> None:
    with cast.session("ada@example.edu") as ada:
        base = f"/projects/{cast.project_id}"
        added = cast.post(ada, base + "/managers", email="Dave@Example.edu")
        assert added.status_code == 303 and added.headers["location"] == base + "?done=manager_added"
        people = tables(ada.get(base).text)["people-table"]
        assert [row[:3] for row in people[1:]] == [
            ["ada@example.edu", "", "owner"],
            ["bob@example.edu", "", "manager"],
            ["dave@example.edu", "", "manager"],
        ]
        unknown = cast.post(ada, base + "/managers", email="ghost@example.edu")
        assert unknown.status_code == 404 and "must log in to Lumen once" in unknown.text
        owner = cast.post(ada, f"{base}/managers/{cast.ids['ada@example.edu']}/remove")
        assert owner.status_code == 400 and "transfer the ownership first" in owner.text
        removed = cast.post(ada, f"{base}/managers/{cast.ids['dave@example.edu']}/remove")
        assert removed.status_code == 303
        assert "dave@example.edu" not in ada.get(base).text
    logged = _audit(cast, "project.add_manager")
    assert logged[0]["target"] == f"project:{cast.project_id}" and logged[0]["actor"] == "ada@example.edu"
    assert _audit(cast, "project.remove_manager")[0]["user_id"] == cast.ids["dave@example.edu"]


def test_a_manager_creates_a_key_that_works_and_revokes_it(cast: Cast) -> None:
    base = f"/projects/{cast.project_id}"
    with cast.session("bob@example.edu") as bob:
        created = cast.post(bob, base + "/keys", name="nightly job", models="echo")
        assert created.status_code == 201
        assert created.headers["cache-control"] == "no-store"
        key = _new_key(created.text)
        assert key.startswith("sk_")
        answer = _chat(cast.lumen.v1, key)
        assert answer.status_code == 200
        assert _chat(cast.lumen.v1, key, "careful").status_code == 403  # not in the key's list
        page = bob.get(base).text
        assert key not in page  # shown once
        row = next(r for r in tables(page)["project-keys"][1:] if r[0] == "nightly job")
        # Two requests: the refused one is recorded too (status 403, no tokens, no coins).
        assert row[2] == "active" and row[6] == "echo" and row[7] == "2"
        key_id = page.split("/keys/")[1].split("/revoke")[0]
        revoked = cast.post(bob, f"{base}/keys/{key_id}/revoke")
        assert revoked.status_code == 303
        assert _chat(cast.lumen.v1, key).status_code == 401
        foreign = cast.post(bob, f"{base}/keys/key_doesnotexist/revoke")
        assert foreign.status_code == 404
        bad = cast.post(bob, base + "/keys", name="", expires="2001-01-01")
        assert bad.status_code == 400 and "name" in bad.text
    created_log = _audit(cast, "key.create")[0]
    assert created_log["owner"] == f"project:{cast.project_id}" and key not in str(created_log)


def test_a_manager_acknowledges_a_notice_for_the_project(cast: Cast) -> None:
    project_key = httpx.post(
        cast.lumen.url + "/api/admin/keys", headers=cast.lumen.auth, json={"project_id": cast.project_id}
    ).json()["key"]
    refused = _chat(cast.lumen.v1, project_key, "careful")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "acknowledgement_required"
    base = f"/projects/{cast.project_id}"
    with cast.session("bob@example.edu") as bob:
        page = bob.get(base).text
        assert "Answers from this model are stored for research" in page
        notice_hash = page.split('name="notice_hash" value="')[1].split('"')[0]
        done = bob.post(
            base + "/acknowledge",
            data={"csrf_token": cast.csrf(bob), "model": "careful", "notice_hash": notice_hash},
        )
        assert done.status_code == 303
        page = bob.get(base).text
    assert "Acknowledged for the project on" in page and "by bob@example.edu" in page
    assert _chat(cast.lumen.v1, project_key, "careful").status_code == 200
    # The acknowledgement is the project's: bob's own key still needs his own.
    assert cast.chat("bob@example.edu", model="careful").status_code == 403


def test_ownership_moves_and_the_old_owner_stays_a_manager(cast: Cast) -> None:
    with cast.session("admin@localhost") as admin:
        made = cast.post(admin, "/projects", name="astro", owner="carol@example.edu")
        assert made.status_code == 303
        base = made.headers["location"].split("?")[0]
        twice = cast.post(admin, "/projects", name="astro", owner="carol@example.edu")
        assert twice.status_code == 400 and "exists already" in twice.text
    with cast.session("carol@example.edu") as carol:
        moved = cast.post(carol, base + "/owner", email="dave@example.edu")
        assert moved.status_code == 303
        people = tables(carol.get(base).text)["people-table"]
        assert {row[0]: row[2] for row in people[1:]} == {
            "dave@example.edu": "owner",
            "carol@example.edu": "manager",
        }
        # Carol is a manager now: people are the owner's to change.
        again = cast.post(carol, base + "/owner", email="carol@example.edu")
        assert again.status_code == 403
    assert _audit(cast, "project.transfer")[0]["to"] == cast.ids["dave@example.edu"]


def test_disabling_a_project_refuses_its_keys(cast: Cast) -> None:
    key = httpx.post(
        cast.lumen.url + "/api/admin/keys", headers=cast.lumen.auth, json={"project_id": cast.project_id}
    ).json()["key"]
    assert _chat(cast.lumen.v1, key).status_code == 200
    base = f"/projects/{cast.project_id}"
    with cast.session("admin@localhost") as admin:
        assert cast.post(admin, base + "/status", disabled="true").status_code == 303
        refused = _chat(cast.lumen.v1, key)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_disabled"
        assert ">disabled</span>" in admin.get(base).text
        assert cast.post(admin, base + "/status", disabled="false").status_code == 303
    assert _chat(cast.lumen.v1, key).status_code == 200


def test_users_create_projects_where_the_config_allows(tmp_path: Path) -> None:
    allowed = running_cast(tmp_path, users_create_projects=True)
    with allowed as cast, cast.session("carol@example.edu") as carol:
        page = carol.get("/projects").text
        assert "Create a project" in page and 'name="owner"' not in page  # they own what they make
        made = carol.post(
            "/projects", data={"csrf_token": cast.csrf(carol), "name": "thesis", "owner": "ada@example.edu"}
        )
        assert made.status_code == 303
        people = tables(carol.get(made.headers["location"]).text)["people-table"]
        assert [row[0] for row in people[1:]] == ["carol@example.edu"] and people[1][2] == "owner"
