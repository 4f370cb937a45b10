"""Who gets what from the usage, projects and admin pages: every route against every role.

Anonymous visitors are sent to the login page (303) from pages and refused by the CSRF check (403)
on posts; a user who may not know a project exists gets 404, the same as for a missing one; a
role that sees a thing but may not change it gets 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.portal.roles import Cast, running_cast

ANON, USER, MANAGER, OWNER, ADMIN = "anonymous", "user", "manager", "owner", "admin"
ROLES = {
    ANON: None,
    USER: "carol@example.edu",
    MANAGER: "bob@example.edu",
    OWNER: "ada@example.edu",
    ADMIN: "admin@localhost",
}
JSON = {"accept": "application/json"}


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cast]:
    with running_cast(Path(tmp_path_factory.mktemp("matrix"))) as running:
        yield running


@pytest.fixture(scope="module")
def browsers(cast: Cast) -> Iterator[dict[str, tuple[httpx.Client, str]]]:
    opened = {role: cast.browser(email) for role, email in ROLES.items()}
    tokens = {role: cast.csrf(b) if ROLES[role] else "" for role, b in opened.items()}
    yield {role: (b, tokens[role]) for role, b in opened.items()}
    for b in opened.values():
        b.close()


P = "{project}"
EVERYONE = {ANON: 303, USER: 200, MANAGER: 200, OWNER: 200, ADMIN: 200}
ADMINS = {ANON: 303, USER: 403, MANAGER: 403, OWNER: 403, ADMIN: 200}
PROJECT_PEOPLE = {ANON: 303, USER: 404, MANAGER: 200, OWNER: 200, ADMIN: 200}
# (method, path, form, {role: status}); every role must be listed.
PAGES: list[tuple[str, str, dict[str, str] | None, dict[str, int]]] = [
    ("GET", "/usage", None, EVERYONE),
    ("GET", "/usage?who=everyone", None, ADMINS),
    (
        "GET",
        "/usage?who=user&user=carol@example.edu",
        None,
        ADMINS,
    ),
    ("GET", "/usage?who=group&group=physics", None, ADMINS),
    (
        "GET",
        f"/usage?who=project&project={P}",
        None,
        PROJECT_PEOPLE,
    ),
    ("GET", "/usage/export.csv", None, EVERYONE),
    (
        "GET",
        f"/usage/export.csv?who=project&project={P}",
        None,
        PROJECT_PEOPLE,
    ),
    ("GET", "/projects", None, EVERYONE),
    ("GET", f"/projects/{P}", None, PROJECT_PEOPLE),
    ("GET", "/projects/999999", None, {ANON: 303, USER: 404, MANAGER: 404, OWNER: 404, ADMIN: 404}),
    ("POST", "/projects", {"name": "made"}, {ANON: 403, USER: 403, MANAGER: 403, OWNER: 403, ADMIN: 303}),
    (
        "POST",
        f"/projects/{P}/managers",
        {"email": "dave@example.edu"},
        {ANON: 403, USER: 404, MANAGER: 403, OWNER: 303, ADMIN: 303},
    ),
    (
        "POST",
        f"/projects/{P}/owner",
        {"email": "ada@example.edu"},
        {ANON: 403, USER: 404, MANAGER: 403, OWNER: 303, ADMIN: 303},
    ),
    (
        "POST",
        f"/projects/{P}/keys",
        {"name": "matrix key"},
        {ANON: 403, USER: 404, MANAGER: 201, OWNER: 201, ADMIN: 201},
    ),
    (
        "POST",
        f"/projects/{P}/acknowledge",
        {"model": "careful"},
        {ANON: 403, USER: 404, MANAGER: 303, OWNER: 303, ADMIN: 303},
    ),
    (
        "POST",
        f"/projects/{P}/status",
        {"disabled": "false"},
        {ANON: 403, USER: 404, MANAGER: 403, OWNER: 403, ADMIN: 303},
    ),
    ("GET", "/admin", None, ADMINS),
    ("GET", "/admin/users", None, {ANON: 303, USER: 403, MANAGER: 403, OWNER: 403, ADMIN: 308}),
    ("GET", "/admin/groups", None, ADMINS),
    ("GET", "/admin/models", None, ADMINS),
    ("GET", "/admin/config", None, ADMINS),
    ("GET", "/admin/audit", None, ADMINS),
]
# Fetch calls (JSON): anonymous gets 401 login_required instead of a redirect.
DATA: list[tuple[str, dict[str, int]]] = [
    ("/usage/data", {ANON: 401, USER: 200, MANAGER: 200, OWNER: 200, ADMIN: 200}),
    ("/usage/data?who=everyone", {ANON: 401, USER: 403, MANAGER: 403, OWNER: 403, ADMIN: 200}),
    (f"/usage/data?who=project&project={P}", {ANON: 401, USER: 404, MANAGER: 200, OWNER: 200, ADMIN: 200}),
]


def _case_id(case: tuple[str, str, object, object]) -> str:
    return f"{case[0]} {case[1]}"


@pytest.mark.parametrize("case", PAGES, ids=[_case_id(c) for c in PAGES])
def test_pages_and_forms(
    case: tuple[str, str, dict[str, str] | None, dict[str, int]],
    cast: Cast,
    browsers: dict[str, tuple[httpx.Client, str]],
) -> None:
    method, path, form, expected = case
    assert set(expected) == set(ROLES)
    path = path.replace(P, str(cast.project_id))
    got = {}
    for role, (browser, token) in browsers.items():
        data = {**form, "csrf_token": token} if form is not None else None
        got[role] = browser.request(method, path, data=data).status_code
    assert got == expected


@pytest.mark.parametrize("case", DATA, ids=[c[0] for c in DATA])
def test_data_calls(
    case: tuple[str, dict[str, int]], cast: Cast, browsers: dict[str, tuple[httpx.Client, str]]
) -> None:
    path, expected = case
    path = path.replace(P, str(cast.project_id))
    got = {role: browser.get(path, headers=JSON).status_code for role, (browser, _) in browsers.items()}
    assert got == expected


def test_admin_api_with_a_session(cast: Cast, browsers: dict[str, tuple[httpx.Client, str]]) -> None:
    """The admin pages' buttons call the admin API with the session: administrators only, and
    never without the CSRF token."""
    target = cast.ids["dave@example.edu"]
    got = {}
    for role, (browser, token) in browsers.items():
        response = browser.patch(
            f"/api/admin/users/{target}", json={"disabled": False}, headers={"x-csrf-token": token, **JSON}
        )
        got[role] = response.status_code
    assert got == {ANON: 401, USER: 403, MANAGER: 403, OWNER: 403, ADMIN: 200}
    admin, _ = browsers[ADMIN]
    no_token = admin.patch(f"/api/admin/users/{target}", json={"disabled": False}, headers=JSON)
    assert no_token.status_code == 403 and no_token.json()["error"]["code"] == "csrf_failed"
