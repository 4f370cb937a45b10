"""Every change made through the admin API leaves one entry in the audit log, and no secret."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from lumen.admin.audit_log import redact
from tests.support import ECHO, RunningLumen, model, running_lumen

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    config = {"server": {"auth_cache_seconds": 0}, "models": [model("echo", ECHO)]}
    with running_lumen(tmp_path_factory.mktemp("audit"), config) as running:
        yield running


def _admin(lumen: RunningLumen) -> httpx.Client:
    return httpx.Client(base_url=lumen.url + "/api/admin", headers=lumen.auth)


def _changing_routes(lumen: RunningLumen) -> set[tuple[str, str]]:
    admin_api = next(r for r in lumen.app.routes if getattr(r, "path", "") == "/api/admin").app
    return {
        (method, route.path)
        for route in admin_api.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) & UNSAFE
    }


def test_every_changing_route_writes_one_entry(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        user = api.post("/users", json={"email": "audited@example.edu", "name": "Audie"}).json()
        other = api.post("/users", json={"email": "other@example.edu"}).json()
        project = api.post("/projects", json={"name": "audited", "owner_email": "audited@example.edu"}).json()
        key = api.post("/keys", json={"user_id": user["id"], "name": "k"}).json()
        uid, pid = user["id"], project["id"]
        # (method, route path) -> (the call, the action and target it must log)
        calls: dict[tuple[str, str], tuple[tuple[str, str, Any], str, str]] = {
            ("POST", "/users"): (("post", "/users", {"email": "third@example.edu"}), "user.create", ""),
            ("PATCH", "/users/{user_id}"): (
                ("patch", f"/users/{uid}", {"disabled": True}),
                "user.update",
                f"user:{uid}",
            ),
            ("POST", "/projects"): (
                ("post", "/projects", {"name": "second", "owner_email": "other@example.edu"}),
                "project.create",
                "",
            ),
            ("PATCH", "/projects/{project_id}"): (
                ("patch", f"/projects/{pid}", {"disabled": True}),
                "project.update",
                f"project:{pid}",
            ),
            ("PUT", "/projects/{project_id}/managers/{user_id}"): (
                ("put", f"/projects/{pid}/managers/{other['id']}", None),
                "project.add_manager",
                f"project:{pid}",
            ),
            ("DELETE", "/projects/{project_id}/managers/{user_id}"): (
                ("delete", f"/projects/{pid}/managers/{other['id']}", None),
                "project.remove_manager",
                f"project:{pid}",
            ),
            ("POST", "/keys"): (("post", "/keys", {"project_id": pid, "name": "ci"}), "key.create", ""),
            ("DELETE", "/keys/{key_id}"): (("delete", f"/keys/{key['id']}", None), "key.revoke", ""),
            ("POST", "/coins/{action}"): (
                ("post", "/coins/grant", {"user_id": uid, "amount": "2.5", "note": "thanks"}),
                "coins.grant",
                f"user:{uid}",
            ),
            ("PUT", "/coins/settings"): (
                ("put", f"/coins/settings?user_id={uid}", {"max": "50"}),
                "coins.settings",
                f"user:{uid}",
            ),
            ("PUT", "/access"): (
                ("put", f"/access?project_id={pid}", {"default": "blocked"}),
                "access.set",
                f"project:{pid}",
            ),
            ("PUT", "/rate-limits"): (
                ("put", f"/rate-limits?user_id={uid}", {"principal": {"rpm": 5}}),
                "limits.set",
                f"user:{uid}",
            ),
        }
        assert set(calls) == _changing_routes(lumen), "a changing admin route without an audit test"
        for (method, path, body), action, target in calls.values():
            before = api.get("/audit-log", params={"limit": 1}).json()[0]["id"]
            response = api.request(method, path, json=body)
            assert response.status_code < 300, (path, response.text)
            logged = api.get("/audit-log", params={"limit": 5}).json()
            new = [e for e in logged if e["id"] > before]
            assert [e["action"] for e in new] == [action], (path, logged)
            assert new[0]["actor"].startswith("user:") and new[0]["actor_name"] == "admin@localhost"
            if target:
                assert new[0]["target"] == target
        # The values of the request are kept: who was disabled, how many coins, why.
        grant = api.get("/audit-log", params={"action": "coins.grant"}).json()[0]
        assert grant["details"] == {"amount": "2.5", "note": "thanks"}
        created = api.get("/audit-log", params={"action": "key.create"}).json()[0]
        assert created["details"]["owner"] == f"project:{pid}" and "key" not in created["details"]


def test_the_log_pages_and_filters(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        made = [api.post("/users", json={"email": f"page{i}@example.edu"}).json()["id"] for i in range(5)]
        first = api.get("/audit-log", params={"limit": 2, "action": "user.create"}).json()
        rest = api.get(
            "/audit-log", params={"limit": 10, "action": "user.create", "before": first[-1]["id"]}
        ).json()
        targets = [e["target"] for e in first + rest]
        assert targets[:5] == [f"user:{i}" for i in reversed(made)]
        one = api.get("/audit-log", params={"target": f"user:{made[0]}"}).json()
        assert [e["target"] for e in one] == [f"user:{made[0]}"]


def test_a_refused_change_and_a_read_log_nothing(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        plain = api.post("/users", json={"email": "plain@example.edu"}).json()
        plain_key = api.post("/keys", json={"user_id": plain["id"]}).json()["key"]
        before = api.get("/audit-log", params={"limit": 1}).json()
        assert api.patch("/users/999999", json={"disabled": True}).status_code == 404
        api.get("/users")
        not_admin = httpx.patch(
            f"{lumen.url}/api/admin/users/{plain['id']}",
            headers={"Authorization": f"Bearer {plain_key}"},
            json={"is_admin": True},
        )
        assert not_admin.status_code == 403
        assert api.get("/audit-log", params={"limit": 1}).json() == before


def test_redact_drops_secret_fields() -> None:
    assert redact({"name": "k", "api_key": "sk_x", "nested": {"client_secret": "s", "ok": 1}}) == {
        "name": "k",
        "nested": {"ok": 1},
    }
