"""CSRF: every state-changing portal request carries its session's token; the admin API accepts
an administrator's session, with the token on every change."""

from __future__ import annotations

import httpx

from tests.portal.support import HTML, PASSWORD, add_user, client, csrf_token, login, parse
from tests.support import RunningLumen


def test_a_post_without_the_token_is_refused(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        login(browser, "admin@localhost")
        token = csrf_token(browser)
        for data, headers in [({}, {}), ({"csrf_token": "forged"}, {}), ({}, {"x-csrf-token": "forged"})]:
            refused = browser.post("/logout", data=data, headers=headers)
            assert refused.status_code == 403 and "Please reload the page" in refused.text
        assert browser.get("/").status_code == 200  # still logged in

        as_json = browser.post("/logout", headers={"accept": "application/json"})
        assert as_json.status_code == 403 and as_json.json()["error"]["code"] == "csrf_failed"

        # The token works as the form field and as the header (fetch calls).
        assert browser.post("/logout", headers={"x-csrf-token": token}).status_code == 303
        assert browser.get("/").status_code == 303


def test_the_login_form_needs_its_cookie_and_field_to_match(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        field = parse(browser.get("/login").text).fields["csrf_token"]
        for token in ("", "forged"):
            refused = browser.post(
                "/login", data={"csrf_token": token, "email": "admin@localhost", "password": PASSWORD}
            )
            assert refused.status_code == 403
        # A site that posts the form from elsewhere has no cookie: refused even with a token.
        elsewhere = httpx.post(
            lumen.url + "/login",
            data={"csrf_token": field, "email": "admin@localhost", "password": PASSWORD},
            headers=HTML,
        )
        assert elsewhere.status_code == 403
        assert login(browser, "admin@localhost").status_code == 303


def test_a_planted_login_token_cannot_stand_for_a_session_token(lumen: RunningLumen) -> None:
    """The login form's double-submit token is only good for the login form: a cookie planted
    by a sibling site cannot be used to forge a logout (or any other change) of a session."""
    with client(lumen) as browser:
        browser.cookies.set("lumen_login_csrf", "planted", domain="127.0.0.1")
        assert parse(browser.get("/login").text).fields["csrf_token"] == "planted"  # the cookie is sent
        assert login(browser, "admin@localhost").status_code == 303
        browser.cookies.set("lumen_login_csrf", "planted", domain="127.0.0.1")
        assert browser.post("/logout", data={"csrf_token": "planted"}).status_code == 403
        assert browser.get("/").status_code == 200


def test_admin_api_with_an_admin_session(lumen: RunningLumen) -> None:
    add_user(lumen, "ann@example.edu")
    with client(lumen) as admin:
        login(admin, "admin@localhost")
        token = csrf_token(admin)
        listed = admin.get("/api/admin/users", headers={"accept": "application/json"})
        assert listed.status_code == 200
        assert {u["email"] for u in listed.json()} == {"admin@localhost", "ann@example.edu"}

        body = {"email": "ben@example.edu"}
        refused = admin.post("/api/admin/users", json=body)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        created = admin.post("/api/admin/users", json=body, headers={"x-csrf-token": token})
        assert created.status_code == 201 and created.json()["email"] == "ben@example.edu"

    with client(lumen) as user:
        login(user, "ann@example.edu")
        denied = user.get("/api/admin/users")
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_required"

    # Keys work as before, and a bearer header is never mixed with a session.
    assert httpx.get(lumen.url + "/api/admin/users", headers=lumen.auth).status_code == 200
    anonymous = httpx.get(lumen.url + "/api/admin/users")
    assert anonymous.status_code == 401
