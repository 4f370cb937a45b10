"""Local login, sessions and logout through a live Lumen, as a browser would use them."""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path

import httpx
from sqlalchemy import select, update

from lumen.store.tables import portal_sessions, users
from tests.portal.support import HTML, PASSWORD, add_user, client, csrf_token, login, parse
from tests.support import ECHO, RunningLumen, model, running_lumen


def _cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        found.update({name: cookie for name in cookie})
    return found


def _session_ids(lumen: RunningLumen) -> list[str]:
    async def work() -> list[str]:
        async with lumen.state.engine.connect() as conn:
            return [row[0] for row in await conn.execute(select(portal_sessions.c.id))]

    ids: list[str] = lumen.run(work())
    return ids


def _session_rows(lumen: RunningLumen) -> int:
    return len(_session_ids(lumen))


def test_pages_need_a_login(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        page = browser.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        deep = browser.get("/somewhere?x=1")
        assert deep.status_code == 404  # unknown pages are not found, logged in or not
    api_style = httpx.get(lumen.url + "/", headers={"accept": "application/json"})
    assert api_style.status_code == 401 and api_style.json()["error"]["code"] == "login_required"


def test_login_home_logout(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        form = browser.get("/login")
        assert form.status_code == 200 and "Log in to Lumen" in form.text
        answer = login(browser, "Admin@Localhost", next="/")
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        session = _cookies(answer)["lumen_session"]["lumen_session"]
        assert session["httponly"] and session["samesite"].lower() == "lax" and session["path"] == "/"
        assert not session["secure"]  # server.public_url is http://localhost: development
        [stored] = _session_ids(lumen)
        assert session.value not in stored  # the database has a keyed hash, not the token

        home = browser.get("/")
        assert home.status_code == 200
        assert "admin@localhost" in home.text and "100.00 coins" in home.text
        assert home.headers["cache-control"] == "no-store"
        token = parse(home.text).meta["csrf-token"]

        out = browser.post("/logout", data={"csrf_token": token})
        assert out.status_code == 303 and out.headers["location"] == "/login?logged_out=1"
        assert _session_rows(lumen) == 0
        assert "You have logged out." in browser.get("/login?logged_out=1").text
        assert browser.get("/").status_code == 303
    # The old cookie is worthless after logout, even replayed.
    replayed = httpx.get(lumen.url + "/", headers=HTML, cookies={"lumen_session": session.value})
    assert replayed.status_code == 303


def test_wrong_password_and_unknown_user_look_the_same(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        wrong = login(browser, "admin@localhost", "not the password")
        unknown = login(browser, "nobody@example.edu", PASSWORD)
        for answer in (wrong, unknown):
            assert answer.status_code == 401
            assert "Wrong email or password." in answer.text
            assert "lumen_session" not in _cookies(answer)
        assert parse(wrong.text).fields["email"] == "admin@localhost"  # kept for the next try
    assert _session_rows(lumen) == 0


def test_failed_logins_are_throttled_per_account_and_address(tmp_path: Path) -> None:
    config = {"models": [model("echo", ECHO)], "portal": {"login_attempts_per_minute": 2}}
    with running_lumen(tmp_path, config) as lumen:
        add_user(lumen, "ann@example.edu")
        with client(lumen) as browser:
            assert login(browser, "ann@example.edu", "guess one!").status_code == 401
            assert login(browser, "ann@example.edu", "guess two!").status_code == 401
            blocked = login(browser, "ann@example.edu", PASSWORD)  # even the right password
            assert blocked.status_code == 429 and "Too many failed logins" in blocked.text
            assert int(blocked.headers["retry-after"]) >= 1
            assert login(browser, "admin@localhost", "wrong password").status_code == 401  # other account
        elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")
        with client(lumen, transport=elsewhere) as other_browser:
            assert login(other_browser, "ann@example.edu", PASSWORD).status_code == 303


def _behind(lumen: RunningLumen, proxy: str, forwarded_for: str) -> httpx.Client:
    """A browser whose requests reach Lumen through a proxy at `proxy` (a local address) that
    names the client in X-Forwarded-For."""
    browser = client(lumen, transport=httpx.HTTPTransport(local_address=proxy))
    browser.headers["x-forwarded-for"] = forwarded_for
    return browser


def test_behind_a_trusted_proxy_an_attacker_slows_only_their_own_address(tmp_path: Path) -> None:
    config = {
        "server": {"trusted_proxies": ["127.0.0.2"]},
        "models": [model("echo", ECHO)],
        "portal": {"login_attempts_per_minute": 2},
    }
    with running_lumen(tmp_path, config) as lumen:
        add_user(lumen, "ann@example.edu")
        for n in range(3):
            # What the attacker writes into the header left of the proxy's entry changes nothing.
            with _behind(lumen, "127.0.0.2", f"10.9.9.{n}, 203.0.113.9") as attacker:
                last = login(attacker, "ann@example.edu", f"guess {n} wrong")
        assert last.status_code == 429
        with _behind(lumen, "127.0.0.2", "198.51.100.7") as victim:
            assert login(victim, "ann@example.edu").status_code == 303


def test_forwarded_for_from_an_unlisted_address_is_ignored(tmp_path: Path) -> None:
    config = {"models": [model("echo", ECHO)], "portal": {"login_attempts_per_minute": 2}}
    with running_lumen(tmp_path, config) as lumen:
        add_user(lumen, "ann@example.edu")
        answers = []
        for n in range(3):
            # No trusted proxies: a made-up client address per attempt does not escape the throttle.
            with _behind(lumen, "127.0.0.1", f"203.0.113.{n}") as attacker:
                answers.append(login(attacker, "ann@example.edu", f"guess {n} wrong").status_code)
    assert answers == [401, 401, 429]


def test_only_local_paths_are_followed_after_login(lumen: RunningLumen) -> None:
    for target, expected in [("/x?y=1", "/x?y=1"), ("https://evil.example/", "/"), ("//evil.example", "/")]:
        with client(lumen) as browser:
            assert login(browser, "admin@localhost", next=target).headers["location"] == expected
    with client(lumen) as browser:
        sent = browser.get("/?from=mail")
        assert sent.headers["location"] == "/login?next=%2F%3Ffrom%3Dmail"


def test_login_makes_a_new_session_each_time(lumen: RunningLumen) -> None:
    with client(lumen) as first_browser:
        planted = _cookies(login(first_browser, "admin@localhost"))["lumen_session"]["lumen_session"].value
    # Another browser comes with that session (planted, say) and logs in: it gets a new one.
    with client(lumen, cookies={"lumen_session": planted}) as browser:
        answer = browser.post(
            "/login",
            data={"csrf_token": csrf_token(browser), "email": "admin@localhost", "password": PASSWORD},
        )
        assert answer.status_code == 303
        fresh = _cookies(answer)["lumen_session"]["lumen_session"].value
        assert fresh != planted
    assert _session_rows(lumen) == 1  # the session the browser came with was ended


def test_disabled_users_are_refused_and_their_sessions_end(lumen: RunningLumen) -> None:
    ann = add_user(lumen, "ann@example.edu")
    with client(lumen) as browser:
        assert login(browser, "ann@example.edu").status_code == 303

        async def disable() -> None:
            async with lumen.state.engine.begin() as conn:
                await conn.execute(update(users).where(users.c.id == ann).values(disabled=True))

        lumen.run(disable())
        refused = browser.get("/")
        assert refused.status_code == 403 and "Account disabled" in refused.text
        assert _session_rows(lumen) == 0
        # The right password and a wrong one are answered alike: a guess is never confirmed.
        right, wrong = login(browser, "ann@example.edu"), login(browser, "ann@example.edu", "wrong guess!")
        for again in (right, wrong):
            assert again.status_code == 401 and "Wrong email or password." in again.text
            assert "disabled" not in again.text
            assert "lumen_session" not in _cookies(again)


def test_secure_cookies_when_configured(tmp_path: Path) -> None:
    config = {"models": [model("echo", ECHO)], "portal": {"secure_cookies": "always"}}
    with running_lumen(tmp_path, config) as lumen:
        add_user(lumen, "ann@example.edu")
        with client(lumen) as browser:
            form = browser.get("/login")
            csrf = _cookies(form)["__Host-lumen_login_csrf"]["__Host-lumen_login_csrf"]
            assert csrf["secure"] and csrf["httponly"]
            # httpx, like a browser, keeps a Secure cookie away from http://: send it by hand.
            answer = httpx.post(
                lumen.url + "/login",
                data={"csrf_token": csrf.value, "email": "ann@example.edu", "password": PASSWORD},
                headers={**HTML, "cookie": f"__Host-lumen_login_csrf={csrf.value}"},
            )
            assert answer.status_code == 303
            session = _cookies(answer)["__Host-lumen_session"]["__Host-lumen_session"]
            assert session["secure"] and session["httponly"] and session["path"] == "/"


def test_a_logged_in_visit_to_the_login_page_goes_home(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        login(browser, "admin@localhost")
        assert browser.get("/login").headers["location"] == "/"
        assert browser.get("/login?next=/x").headers["location"] == "/x"
        assert csrf_token(browser)
        assert browser.get("/logout").status_code == 200  # a confirmation page, not a logout
        assert browser.get("/").status_code == 200
