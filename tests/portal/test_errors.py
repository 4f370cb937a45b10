"""A malformed call to a portal API gets Lumen's 400 with the error envelope, not FastAPI's 422."""

from __future__ import annotations

from pathlib import Path

from tests.portal.support import add_user, client, csrf_token, login
from tests.support import ECHO, model, running_lumen


def test_a_malformed_body_is_a_400_that_names_the_field(tmp_path: Path) -> None:
    with running_lumen(tmp_path, {"models": [model("echo", ECHO)]}) as lumen:
        add_user(lumen, "ada@example.edu")
        with client(lumen) as browser:
            assert login(browser, "ada@example.edu").status_code in (200, 303)
            headers = {"x-csrf-token": csrf_token(browser), "accept": "application/json"}
            answer = browser.post("/api/chat/conversations", json={"temperature": "hot"}, headers=headers)
            listed = browser.get("/api/chat/conversations", headers=headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "temperature"
    assert listed.status_code == 200 and listed.json()["items"] == []  # nothing was stored
