"""Bad input on the admin API is a 4xx in the error envelope, and its schema says so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import ECHO, RunningLumen, model, running_lumen

HUGE = 2**70


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    with running_lumen(tmp_path_factory.mktemp("admin-input"), {"models": [model("echo", ECHO)]}) as running:
        yield running


def _call(lumen: RunningLumen, method: str, path: str, **kwargs: Any) -> httpx.Response:
    # A new connection for each call: one call's failure must not hide the next one's status.
    headers = {**lumen.auth, **kwargs.pop("headers", {})}
    return httpx.request(method, lumen.url + "/api/admin" + path, headers=headers, **kwargs)


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "param"),
    [
        ("GET", f"/users/{HUGE}", {}, "user_id"),
        ("GET", f"/users/{2**63}", {}, "user_id"),
        ("PATCH", f"/users/{2**63}", {"json": {"disabled": True}}, "user_id"),
        ("PUT", f"/projects/1/managers/{2**64}", {}, "user_id"),
        ("GET", "/users", {"params": {"offset": 2**63}}, "offset"),
        ("GET", "/users", {"params": {"offset": -1}}, "offset"),
        ("GET", "/audit-log", {"params": {"before": HUGE}}, "before"),
        ("GET", "/keys", {"params": {"user_id": HUGE}}, "user_id"),
        ("GET", "/coins", {"params": {"project_id": 2**64}}, "project_id"),
        ("POST", "/keys", {"json": {"user_id": 2**63}}, "user_id"),
        ("POST", "/coins/grant", {"json": {"user_id": HUGE, "amount": 1}}, "user_id"),
        ("POST", "/keys", {"json": {"user_id": 1, "expires_at": "9999-12-31T23:00:00-05:00"}}, "expires_at"),
    ],
)
def test_numbers_beyond_what_the_database_holds_are_400(
    lumen: RunningLumen, method: str, path: str, kwargs: dict[str, Any], param: str
) -> None:
    error = _error(_call(lumen, method, path, **kwargs), 400)
    assert error["param"] == param


@pytest.mark.parametrize(
    ("path", "fields"), [("/users/1", "'disabled', 'is_admin'"), ("/projects/1", "'disabled', 'owner_email'")]
)
def test_an_empty_patch_says_what_can_be_patched(lumen: RunningLumen, path: str, fields: str) -> None:
    for body in ({}, {"disabled": None}):
        error = _error(_call(lumen, "PATCH", path, json=body), 400)
        assert fields in error["message"]


def test_bodies_are_read_within_the_size_and_depth_limits(lumen: RunningLumen) -> None:
    deep = b'{"email": "deep@example.edu", "name": ' + b"[" * 100 + b"]" * 100 + b"}"
    error = _error(
        _call(
            lumen, "POST", "/users", content=deep, headers={**lumen.auth, "content-type": "application/json"}
        ),
        400,
    )
    assert error["code"] == "invalid_json" and "levels deep" in error["message"]
    too_big = {"email": "big@example.edu", "name": "x" * (lumen.state.settings.server.max_body_bytes + 1)}
    assert _error(_call(lumen, "POST", "/users", json=too_big), 413)["code"] == "request_too_large"


def test_the_schema_documents_the_statuses_given(lumen: RunningLumen) -> None:
    document = httpx.get(lumen.url + "/api/admin/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    operations = [op for item in document["paths"].values() for op in item.values()]
    for operation in operations:
        responses = operation["responses"]
        assert "422" not in responses
        assert {"400", "401", "403"} <= set(responses)
        assert responses["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    get_user = document["paths"]["/users/{user_id}"]["get"]
    assert "404" in get_user["responses"]
    user_id = next(p for p in get_user["parameters"] if p["name"] == "user_id")
    assert user_id["schema"]["maximum"] == 2**63 - 1


def test_a_nul_character_is_refused_before_it_reaches_the_database(lumen: RunningLumen) -> None:
    # PostgreSQL cannot store NUL: a user named with one was a 500, a ledger note with one
    # blocked every later ledger write.
    _error(_call(lumen, "POST", "/users", json={"email": "nul@example.edu", "name": "a\u0000"}), 400)
    assert _call(lumen, "GET", "/users", params={"search": "nul@"}).json() == []
    _error(_call(lumen, "GET", "/users", params={"search": "\u0000"}), 400)
    _error(_call(lumen, "POST", "/coins/grant", json={"user_id": 1, "amount": 1, "note": "\u0000"}), 400)
