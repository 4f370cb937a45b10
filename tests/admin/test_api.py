"""The admin API through a live Lumen: operations, the error envelope, and who may call it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import ECHO, RunningLumen, model, running_lumen

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    config = {
        "server": {"auth_cache_seconds": 0},
        "models": [model("echo", ECHO), model("priced", ECHO, price={"input": 1, "output": 1})],
    }
    with running_lumen(tmp_path_factory.mktemp("admin"), config) as running:
        yield running


def _admin(lumen: RunningLumen) -> httpx.Client:
    return httpx.Client(base_url=lumen.url + "/api/admin", headers=lumen.auth)


def test_user_project_key_lifecycle(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        user = api.post("/users", json={"email": "Grace@Example.edu", "name": "Grace"})
        assert user.status_code == 201, user.text
        assert user.json()["email"] == "grace@example.edu"
        user_id = user.json()["id"]
        assert api.get("/users", params={"search": "grace"}).json()[0]["id"] == user_id

        created = api.post("/keys", json={"user_id": user_id, "name": "notebook", "models": ["echo"]})
        assert created.status_code == 201
        key, key_id = created.json()["key"], created.json()["id"]
        assert key.startswith("sk_") and created.json()["hint"] in (key[:6] + "…" + key[-4:],)
        listed = api.get("/keys", params={"user_id": user_id}).json()
        assert [k["id"] for k in listed] == [key_id] and "key" not in listed[0]

        chat = httpx.post(
            lumen.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=CHAT
        )
        assert chat.status_code == 200

        assert api.delete(f"/keys/{key_id}").json()["revoked_at"] is not None
        refused = httpx.post(
            lumen.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=CHAT
        )
        assert refused.status_code == 401

        project = api.post("/projects", json={"name": "genomics", "owner_email": "grace@example.edu"})
        assert project.status_code == 201 and project.json()["managers"] == [user_id]
        other = api.post("/users", json={"email": "alan@example.edu"}).json()
        moved = api.patch(f"/projects/{project.json()['id']}", json={"owner_email": "alan@example.edu"})
        assert moved.json()["owner_id"] == other["id"]
        assert set(moved.json()["managers"]) == {user_id, other["id"]}
        assert api.delete(f"/projects/{project.json()['id']}/managers/{other['id']}").status_code == 400

        disabled = api.patch(f"/users/{user_id}", json={"disabled": True})
        assert disabled.json()["disabled"] is True


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("post", "/users", {"email": "not-an-email"}, 400, "invalid_value"),
        ("post", "/users", {"email": "x@example.edu", "surprise": 1}, 400, "invalid_value"),
        ("get", "/users/999999", None, 404, "user_not_found"),
        ("post", "/keys", {"name": "orphan"}, 400, "invalid_value"),
        ("post", "/keys", {"user_id": 999999}, 404, "user_not_found"),
        ("delete", "/keys/key_missing", None, 404, "key_not_found"),
        ("get", "/nothing", None, 404, "unknown_url"),
    ],
)
def test_errors_use_the_envelope(
    lumen: RunningLumen, method: str, path: str, body: Any, status: int, code: str
) -> None:
    with _admin(lumen) as api:
        response = api.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] == code


def test_duplicate_user_is_refused_and_nothing_changes(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        api.post("/users", json={"email": "dup@example.edu", "name": "First"})
        again = api.post("/users", json={"email": "DUP@example.edu", "name": "Second"})
        assert again.status_code == 400
        found = api.get("/users", params={"search": "dup@"}).json()
    assert [u["name"] for u in found] == ["First"]


ROUTES = [
    ("get", "/users"),
    ("post", "/users"),
    ("get", "/users/1"),
    ("patch", "/users/1"),
    ("get", "/projects"),
    ("post", "/projects"),
    ("patch", "/projects/1"),
    ("put", "/projects/1/managers/1"),
    ("delete", "/projects/1/managers/1"),
    ("get", "/keys?user_id=1"),
    ("post", "/keys"),
    ("delete", "/keys/key_x"),
    ("get", "/usage"),
]


def test_authorization_matrix(lumen: RunningLumen) -> None:
    """Every admin route refuses anonymous callers (401), non-admin user and project keys and an
    administrator's keys not made for administration (403 admin_required); an admin key gets past
    authorization."""
    with _admin(lumen) as api:
        user = api.post("/users", json={"email": "plain@example.edu"}).json()
        user_key = api.post("/keys", json={"user_id": user["id"]}).json()["key"]
        project = api.post("/projects", json={"name": "matrix", "owner_email": "plain@example.edu"}).json()
        project_key = api.post("/keys", json={"project_id": project["id"]}).json()["key"]
        me = next(u for u in api.get("/users").json() if u["is_admin"])
        ordinary = api.post("/keys", json={"user_id": me["id"]}).json()["key"]
        limited = api.post("/keys", json={"user_id": me["id"], "models": ["echo"]}).json()["key"]
        second_admin_key = api.post("/keys", json={"user_id": me["id"], "admin": True}).json()["key"]
    roles = {
        "anonymous": None,
        "user": user_key,
        "project": project_key,
        "administrator's ordinary key": ordinary,
        "administrator's model-limited key": limited,
        "admin": lumen.key,
        "another admin key": second_admin_key,
    }
    expected = {"anonymous": 401}
    for role, key in roles.items():
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for method, path in ROUTES:
            response = httpx.request(
                method.upper(), lumen.url + "/api/admin" + path, headers=headers, json={}
            )
            if "admin" in role.split():
                assert response.status_code not in (401, 403), (role, method, path, response.text)
            else:
                assert response.status_code == expected.get(role, 403), (role, method, path, response.text)
                if role != "anonymous":
                    assert response.json()["error"]["code"] == "admin_required"


def test_admin_keys_are_for_administrators_only_and_never_model_limited(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        me = next(u for u in api.get("/users").json() if u["is_admin"])
        plain = api.post("/users", json={"email": "not-an-admin@example.edu"}).json()
        for body, param in [
            ({"user_id": me["id"], "admin": True, "models": ["echo"]}, "models"),
            ({"user_id": plain["id"], "admin": True}, "admin"),
        ]:
            refused = api.post("/keys", json=body)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["param"] == param
        created = api.post("/keys", json={"user_id": me["id"], "admin": True, "name": "ops"}).json()
        assert created["admin"] is True
        listed = {k["id"]: k["admin"] for k in api.get("/keys", params={"user_id": me["id"]}).json()}
    assert listed[created["id"]] is True


def test_openapi_schema_lists_every_route(lumen: RunningLumen) -> None:
    schema = httpx.get(lumen.url + "/api/admin/openapi.json").json()
    assert schema["info"]["title"] == "Lumen admin API"
    paths = set(schema["paths"])
    for _, path in ROUTES:
        template = path.split("?")[0].replace("/1", "/{user_id}" if "users" in path else "/{project_id}")
        template = template.replace("/managers/{project_id}", "/managers/{user_id}").replace(
            "/key_x", "/{key_id}"
        )
        assert template in paths, template


def test_coins_grant_set_reset_and_audit(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        user = api.post("/users", json={"email": "coins@example.edu"}).json()
        before = api.get("/coins", params={"user_id": user["id"]}).json()
        granted = api.post("/coins/grant", json={"user_id": user["id"], "amount": "2.5", "note": "workshop"})
        assert granted.status_code == 200, granted.text
        assert float(granted.json()["balance"]) == pytest.approx(float(before["balance"]) + 2.5, abs=0.01)
        assert float(
            api.post("/coins/set", json={"user_id": user["id"], "amount": "3"}).json()["balance"]
        ) == (pytest.approx(3, abs=0.01))
        missing = api.post("/coins/grant", json={"user_id": user["id"]})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "amount"
        negative = api.post("/coins/grant", json={"user_id": user["id"], "amount": "-1"})
        assert negative.status_code == 400
        assert api.post("/coins/reset", json={"user_id": user["id"]}).status_code == 200
        audit = api.get("/audit").json()
    assert audit == {"ok": True, "discrepancies": [], "outbox": None}  # no Redis here


def test_per_user_access_rule_and_pool_settings(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        user = api.post("/users", json={"email": "ruled@example.edu"}).json()
        key = api.post("/keys", json={"user_id": user["id"]}).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}

        def chat(name: str) -> httpx.Response:
            body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
            return httpx.post(lumen.v1 + "/chat/completions", headers=headers, json=body)

        assert chat("echo").status_code == 200
        assert api.put("/access", params={"user_id": user["id"]}, json={"block": ["echo"]}).status_code == 204
        assert chat("echo").status_code == 404  # blocked by the user's own rule: hidden
        assert api.put("/access", params={"user_id": user["id"]}, json={}).status_code == 204
        assert chat("echo").status_code == 200

        blocked = api.put("/coins/settings", params={"user_id": user["id"]}, json={"state": "blocked"})
        assert blocked.status_code == 200, blocked.text
        refused = chat("priced")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
        bad = api.put("/coins/settings", params={"user_id": user["id"]}, json={"state": "generous"})
        assert bad.status_code == 400


def test_a_users_own_rate_limits_beat_the_default(lumen: RunningLumen) -> None:
    with _admin(lumen) as api:
        user = api.post("/users", json={"email": "limited@example.edu"}).json()
        key = api.post("/keys", json={"user_id": user["id"]}).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}

        def statuses(count: int) -> list[int]:
            return [
                httpx.post(lumen.v1 + "/chat/completions", headers=headers, json=body).status_code
                for _ in range(count)
            ]

        assert statuses(3) == [200, 200, 200]  # the default: unlimited
        assert (
            api.put(
                "/rate-limits", params={"user_id": user["id"]}, json={"principal": {"rpm": 4}}
            ).status_code
            == 204
        )
        assert statuses(5) == [200, 200, 200, 200, 429]
        assert api.put("/rate-limits", params={"user_id": user["id"]}, json={}).status_code == 204
        assert statuses(2) == [200, 200]
        bad = api.put("/rate-limits", params={"user_id": user["id"]}, json={"principal": {"rpm": 0}})
        assert bad.status_code == 400
