"""A cast for the usage, projects and admin tests: a Lumen with people in every role.

- `admin@localhost`: the administrator;
- `ada@example.edu`: owns the project `genomics` and is in the group `physics`;
- `bob@example.edu`: manages `genomics`;
- `carol@example.edu`: a user with no project;
- `dave@example.edu`: a user the tests add to and remove from projects.

Each has the password `PASSWORD` and an API key of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.portal.support import add_user as _add_user
from tests.portal.support import client, csrf_token, login, set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

NOTICE = "Answers from this model are stored for research; do not send personal data."
PEOPLE = ("ada@example.edu", "bob@example.edu", "carol@example.edu", "dave@example.edu")
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "count these four words"}]}


def config(**portal: Any) -> dict[str, Any]:
    return {
        "server": {"auth_cache_seconds": 0},
        "models": [
            model("echo", ECHO, price={"input": 1000, "output": 2000}),
            model("careful", ECHO, access={"acknowledge": True, "notice": NOTICE}),
        ],
        "groups": [
            {
                "name": "physics",
                "description": "The physics department",
                "members": ["ada@example.edu"],
                "pool": {"max": 500, "refresh": 5},
                "rate_limits": {"principal": {"rpm": 600}},
            }
        ],
        "rate_limits": {"default": {"principal": {"rpm": 100, "tpm": 50000}}},
        "portal": portal,
    }


@dataclass
class Cast:
    lumen: RunningLumen
    ids: dict[str, int]
    keys: dict[str, str]
    project_id: int

    def browser(self, email: str | None) -> httpx.Client:
        """A client logged in as `email` (None: anonymous); redirects are not followed."""
        browser = client(self.lumen, follow_redirects=False)
        if email is not None:
            response = login(browser, email)
            assert response.status_code == 303, response.text
        return browser

    @contextmanager
    def session(self, email: str | None) -> Iterator[httpx.Client]:
        """`browser(email)`, closed at the end of the block."""
        browser = self.browser(email)
        try:
            yield browser
        finally:
            browser.close()

    def csrf(self, browser: httpx.Client) -> str:
        return csrf_token(browser)

    def post(self, browser: httpx.Client, path: str, **form: str) -> httpx.Response:
        """A form post with the session's CSRF token, like the page's own forms send."""
        return browser.post(path, data={"csrf_token": self.csrf(browser), **form})

    def chat(self, email: str, **extra: Any) -> httpx.Response:
        return httpx.post(
            self.lumen.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {self.keys[email]}"},
            json={**CHAT, **extra},
        )


def cast_of(lumen: RunningLumen) -> Cast:
    ids = {"admin@localhost": 1}
    for email in PEOPLE:
        ids[email] = _add_user(lumen, email)
    admin = httpx.Client(base_url=lumen.url + "/api/admin", headers=lumen.auth)
    with admin:
        keys = {"admin@localhost": lumen.key}
        for email in PEOPLE:
            name = email.split("@")[0] + " laptop"
            created = admin.post("/keys", json={"user_id": ids[email], "name": name})
            keys[email] = created.json()["key"]
        project = admin.post("/projects", json={"name": "genomics", "owner_email": "ada@example.edu"}).json()
        assert admin.put(f"/projects/{project['id']}/managers/{ids['bob@example.edu']}").status_code == 204
    return Cast(lumen, ids, keys, project["id"])


@contextmanager
def running_cast(tmp_path: Path, **portal: Any) -> Iterator[Cast]:
    with running_lumen(tmp_path, config(**portal)) as lumen:
        set_admin_password(lumen)
        yield cast_of(lumen)
