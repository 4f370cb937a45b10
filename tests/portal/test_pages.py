"""Security headers, static files, branding, and the API's routes living beside the portal."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from lumen.portal.config import PortalSettings
from lumen.portal.nav import NavItem
from lumen.portal.pages import nav_links
from tests.portal.support import HTML, client, login, parse
from tests.support import ECHO, RunningLumen, model, running_lumen

PAGES = ["/login", "/", "/logout", "/no-such-page"]


def _csp(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return {part.split()[0]: part.partition(" ")[2] for part in policy.split("; ")}


def test_every_portal_response_has_the_security_headers(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        anonymous = [browser.get(p) for p in ("/login", "/no-such-page", "/static/css/portal.css")]
        login(browser, "admin@localhost")
        responses = anonymous + [browser.get(p) for p in PAGES] + [browser.post("/logout")]  # last: a 403
    for response in responses:
        csp = _csp(response)
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'", response.url
        assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-frame-options"] == "DENY"


def test_pages_have_no_inline_code_and_every_asset_is_local(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        pages = [browser.get("/login")]
        login(browser, "admin@localhost")
        pages += [browser.get(p) for p in PAGES[1:]]
        for response in pages:
            page = parse(response.text)
            assert page.inline_code == [], (response.url, page.inline_code)
            assert page.ids.count("main") == 1, "the skip link's target"
            for script in page.scripts:
                src = script["src"] or ""
                assert src.startswith("/static/") and "?v=" in src
                asset = browser.get(src)
                assert asset.status_code == 200 and asset.headers["content-type"].startswith(
                    "text/javascript"
                )


def test_static_files_are_versioned_by_content(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        href = next(
            line.split('href="')[1].split('"')[0]
            for line in browser.get("/login").text.splitlines()
            if "portal.css" in line
        )
        versioned = browser.get(href)
        assert versioned.status_code == 200
        assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert versioned.headers["content-type"] == "text/css; charset=utf-8"
        stale = browser.get("/static/css/portal.css?v=000000000000")
        assert stale.headers["cache-control"] == "no-cache"  # an old page gets today's file, unpinned
        etag = versioned.headers["etag"]
        assert browser.get(href, headers={"if-none-match": etag}).status_code == 304
        for path in ("/static/nope.css", "/static/../config.py", "/static/%2e%2e/app.py", "/static/"):
            assert browser.get(path).status_code == 404, path


def test_the_api_keeps_its_own_answers(lumen: RunningLumen) -> None:
    unknown = httpx.get(lumen.v1 + "/nothing", headers=HTML)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
    assert "content-security-policy" not in unknown.headers
    wrong_method = httpx.get(lumen.v1 + "/chat/completions", headers=HTML)
    assert wrong_method.status_code == 405
    assert httpx.get(lumen.v1 + "/models", headers=lumen.auth).json()["data"][0]["id"] == "echo"
    assert httpx.get(lumen.url + "/healthz").status_code == 200
    assert httpx.get(lumen.url + "/api/admin/nothing", headers=lumen.auth).status_code == 404
    chat = httpx.post(
        lumen.v1 + "/chat/completions",
        headers=lumen.auth,
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 200  # no CSRF for bearer-key API calls


def test_branding(tmp_path: Path) -> None:
    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>')
    portal = {
        "instance_name": "Research AI",
        "logo": str(logo),
        "accent_color": "#AA3300",
        "accent_color_dark": "#ffbb99",
        "footer_links": [
            {"text": "Support", "url": "mailto:help@example.edu"},
            {"text": "Source", "url": "https://example.edu/src"},
        ],
        "announcement": "Maintenance on <Friday>",
    }
    with running_lumen(tmp_path, {"models": [model("echo", ECHO)], "portal": portal}) as lumen:
        with client(lumen) as browser:
            page = browser.get("/login")
            text = page.text
            assert "Log in to Research AI" in text and "Research AI</span>" in text
            assert "Maintenance on &lt;Friday&gt;" in text  # plain text, escaped
            parsed = parse(text)
            assert "mailto:help@example.edu" in parsed.links and "https://example.edu/src" in parsed.links
            assert 'src="/branding/logo"' in text
            served = browser.get("/branding/logo")
            assert served.status_code == 200 and served.headers["content-type"] == "image/svg+xml"
            css_url = text.split('href="/branding.css')[1].split('"')[0]
            css = browser.get("/branding.css" + css_url)
            assert "--accent-light: #aa3300" in css.text and "--accent-dark: #ffbb99" in css.text
            assert css.headers["cache-control"].startswith("public")


def test_an_external_logo_is_allowed_by_the_policy(tmp_path: Path) -> None:
    portal = {"logo": "https://cdn.example.edu/logo.png"}
    with running_lumen(tmp_path, {"models": [model("echo", ECHO)], "portal": portal}) as lumen:
        response = httpx.get(lumen.url + "/login", headers=HTML)
        assert _csp(response)["img-src"] == "'self' data: https://cdn.example.edu"
        assert 'src="https://cdn.example.edu/logo.png"' in response.text


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("footer_links", [{"text": "x", "url": "javascript:alert(1)"}], "must start with"),
        ("accent_color", "red", "colour"),
        ("logo", "data:image/png;base64,AAAA", "http"),
    ],
)
def test_unsafe_branding_is_refused(key: str, value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PortalSettings.model_validate({key: value})


def test_nav_shows_admin_entries_to_admins_only() -> None:
    items = (NavItem("Chat", "/chat"), NavItem("Admin", "/admin", admin_only=True))
    assert [link.label for link in nav_links(items, "/chat/abc", is_admin=False)] == ["Chat"]
    links = nav_links(items, "/admin", is_admin=True)
    assert [(link.label, link.current) for link in links] == [("Chat", False), ("Admin", True)]
