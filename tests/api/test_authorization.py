"""Who may call each /v1 route: anonymous, a user's key, a project manager's key, a project's
key and an administrator's key."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support import ECHO, model, running_lumen

NOTICE = "Be careful."
CONFIG = {
    "models": [
        model("echo", ECHO),
        model("embed", ECHO, kind="embeddings"),
        model("careful", ECHO, access={"acknowledge": True, "notice": NOTICE}),
    ],
}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/echo", None),
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/completions", {"model": "echo", "prompt": "hi"}),
    ("POST", "/v1/embeddings", {"model": "embed", "input": "hi"}),
]


def test_v1_authorization_matrix(tmp_path: Path) -> None:
    with running_lumen(tmp_path, CONFIG) as lumen:
        admin = httpx.Client(base_url=lumen.url + "/api/admin", headers=lumen.auth)
        owner = admin.post("/users", json={"email": "owner@example.edu"}).json()
        manager = admin.post("/users", json={"email": "manager@example.edu"}).json()
        project = admin.post("/projects", json={"name": "lab", "owner_email": "owner@example.edu"}).json()
        admin.put(f"/projects/{project['id']}/managers/{manager['id']}")
        keys = {
            "user": admin.post("/keys", json={"user_id": owner["id"]}).json()["key"],
            "manager": admin.post("/keys", json={"user_id": manager["id"]}).json()["key"],
            "project": admin.post("/keys", json={"project_id": project["id"]}).json()["key"],
            "admin": lumen.key,
        }
        admin.close()

        def call(key: str | None, method: str, path: str, body: object) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.request(method, lumen.url + path, headers=headers, json=body)

        for method, path, body in ROUTES:
            assert call(None, method, path, body).status_code == 401, path
            for role, key in keys.items():
                assert call(key, method, path, body).status_code == 200, (role, path)

        # Acknowledging: a person for themselves, a manager for their project, never a project key.
        ack = "/v1/models/careful/acknowledge"
        assert call(None, "POST", ack, {}).status_code == 401
        assert call(keys["project"], "POST", ack, {}).status_code == 403
        assert call(keys["user"], "POST", ack, {"project": "lab"}).status_code == 200  # the owner manages
        outsider = call(keys["admin"], "POST", ack, {}).status_code
        assert outsider == 200  # the admin acknowledges for themselves
        careful = {**CHAT, "model": "careful"}
        assert call(keys["project"], "POST", "/v1/chat/completions", careful).status_code == 200
        assert call(keys["manager"], "POST", "/v1/chat/completions", careful).status_code == 403
        assert call(keys["manager"], "POST", ack, {}).status_code == 200
        assert call(keys["manager"], "POST", "/v1/chat/completions", careful).status_code == 200
