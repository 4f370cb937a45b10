"""Numbers past what the database holds, in the portal's paths and queries, are 4xx answers (or
the last page), never a database overflow."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.portal.support import add_user, client, csrf_token, login
from tests.support import ECHO, model, running_lumen

HUGE = 2**70


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with running_lumen(tmp_path_factory.mktemp("portal-input"), {"models": [model("echo", ECHO)]}) as lumen:
        add_user(lumen, "ada@example.edu", admin=True)
        with client(lumen) as signed_in:
            login(signed_in, "ada@example.edu")
            signed_in.headers["x-csrf-token"] = csrf_token(signed_in)
            signed_in.headers["accept"] = "application/json"
            yield signed_in


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"/projects/{HUGE}", 400),
        ("POST", f"/projects/{HUGE}/status", 400),
        ("POST", f"/api/chat/conversations/none/messages/{HUGE}/regenerate", 400),
        ("GET", f"/admin/audit?before={HUGE}", 400),
        ("GET", f"/usage?before=2026-01-01T00:00:00_{HUGE}", 400),
        ("GET", f"/admin?offset={HUGE}", 200),
        ("GET", f"/projects?offset={HUGE}", 200),
    ],
)
def test_numbers_too_large_for_the_database(
    browser: httpx.Client, method: str, path: str, status: int
) -> None:
    response = browser.request(method, path)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_wrong_method_is_405_invalid_request(browser: httpx.Client) -> None:
    response = browser.request("PUT", "/")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_chat_api_reads_bodies_by_the_same_rules_as_v1(browser: httpx.Client) -> None:
    conversation = browser.post("/api/chat/conversations", json={}).json()
    path = f"/api/chat/conversations/{conversation['id']}"
    response = browser.patch(path, json={"title": "a\u0000b"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    deep = b'{"title": ' + b"[" * 100 + b"]" * 100 + b"}"
    response = browser.patch(path, content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "levels deep" in response.json()["error"]["message"]
    assert browser.patch(path, json={"title": "fine"}).json()["title"] == "fine"
