"""The portal's foundation in a real browser: logging in (locally and through a real OIDC
provider), logging out, CSRF, the Content-Security-Policy, themes, phone width, keyboard use and
axe-core on every page."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from lumen.identity import store
from lumen.identity.passwords import set_password
from tests.browser.axe import assert_accessible
from tests.browser.conftest import DESKTOP, PHONE, Console, screenshot
from tests.portal.oidc_provider import Provider
from tests.portal.support import PASSWORD, set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lumen(
    tmp_path_factory: pytest.TempPathFactory, oidc_provider: Provider, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[RunningLumen]:
    monkeypatch_module.setenv("LUMEN_OIDC_CLIENT_SECRET", "browser-test-secret")
    config: dict[str, Any] = {
        "models": [model("echo", ECHO)],
        "portal": {
            "instance_name": "Lumen",
            "announcement": "Scheduled maintenance on Saturday, 08:00-10:00 UTC.",
            "footer_links": [
                {"text": "Support", "url": "mailto:support@example.edu"},
                {"text": "Source code", "url": "https://example.edu/lumen"},
            ],
            "oidc": {"metadata_url": oidc_provider.metadata_url, "client_id": "lumen-browser"},
        },
    }
    with running_lumen(tmp_path_factory.mktemp("lumen"), config) as running:
        set_admin_password(running)
        yield running


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def log_in(page: Page, lumen: RunningLumen, email: str = "admin@localhost") -> None:
    page.goto(lumen.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


def test_local_login_home_and_logout(page: Page, lumen: RunningLumen, console: Console) -> None:
    response = page.goto(lumen.url + "/")
    assert response is not None and page.url == lumen.url + "/login"
    assert "script-src 'self'" in (response.headers.get("content-security-policy") or "")
    assert_accessible(page)
    screenshot(page, "login")

    log_in(page, lumen)
    assert page.url == lumen.url + "/"
    expect(page.locator("#balance")).to_have_text("100.00 coins")
    expect(page.get_by_role("region", name="Announcement")).to_contain_text("Scheduled maintenance")
    assert_accessible(page)
    screenshot(page, "home")

    page.locator(".user-menu summary").click()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_have_text("You have logged out.")
    page.goto(lumen.url + "/")
    assert page.url == lumen.url + "/login"
    assert console.errors() == []


def test_oidc_login_through_the_provider(page: Page, lumen: RunningLumen, oidc_provider: Provider) -> None:
    sub = f"b{uuid.uuid4().hex[:8]}"
    oidc_provider.set_user(sub, email=f"{sub}@example.edu", email_verified=True, name="Bea Browser")
    page.goto(lumen.url + "/login")
    page.get_by_role("link", name="Log in with your institution").click()
    assert page.url.startswith(oidc_provider.url)  # at the provider's own login form
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Bea Browser")
    assert page.url == lumen.url + "/"
    expect(page.locator("#main").get_by_text(f"{sub}@example.edu")).to_be_visible()


def test_csrf_refuses_posts_without_the_token(page: Page, lumen: RunningLumen) -> None:
    log_in(page, lumen)
    plain: int = page.evaluate("async () => (await fetch('/logout', {method: 'POST'})).status")
    assert plain == 403
    # A form on another site posting to Lumen: the SameSite cookie stays home, and the post fails.
    page.set_content(
        f'<form method="post" action="{lumen.url}/logout"><button>go</button></form>', wait_until="load"
    )
    page.get_by_role("button", name="go").click()
    page.wait_for_load_state()
    page.goto(lumen.url + "/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")  # still logged in
    # The portal's own helper sends the token.
    ok: int = page.evaluate("async () => (await lumen.fetch('/logout', {method: 'POST'})).status")
    assert ok == 200  # followed the redirect to the login page
    page.goto(lumen.url + "/")
    assert page.url == lumen.url + "/login"


def test_the_policy_blocks_injected_script(page: Page, lumen: RunningLumen, console: Console) -> None:
    page.goto(lumen.url + "/login")
    assert console.messages == []  # the portal itself triggers no CSP report
    page.evaluate(
        """() => {
            const script = document.createElement('script');
            script.textContent = 'window.pwned = true';
            document.body.appendChild(script);
            document.body.insertAdjacentHTML('beforeend', '<img src="x:" onerror="window.pwned = true">');
        }"""
    )
    page.wait_for_timeout(200)  # lets the violation reports arrive; nothing is timed
    assert page.evaluate("() => window.pwned") is None
    assert any("Content Security Policy" in m for m in console.messages), console.messages


def test_dark_mode_by_system_and_by_toggle(browser: Browser, lumen: RunningLumen) -> None:
    dark = browser.new_context(viewport=DESKTOP, color_scheme="dark")  # type: ignore[arg-type]
    try:
        page = dark.new_page()
        page.goto(lumen.url + "/login")
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 19, 24)"
        assert_accessible(page)
        screenshot(page, "login-dark")
        log_in(page, lumen)
        assert_accessible(page)
        screenshot(page, "home-dark")

        toggle = page.locator("#theme-toggle")
        toggle.click()
        assert page.evaluate("() => document.documentElement.dataset.theme") == "light"
        assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
        assert_accessible(page)
        toggle.click()
        page.reload()
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"  # kept
        expect(toggle).to_have_attribute("aria-label", "Colour theme: dark. Switch to system")
    finally:
        dark.close()


def test_phone_width_and_keyboard(browser: Browser, lumen: RunningLumen) -> None:
    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)  # type: ignore[arg-type]
    try:
        page = phone.new_page()
        log_in(page, lumen)
        overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        assert_accessible(page)
        screenshot(page, "home-phone")

        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("() => document.activeElement.id") == "main"
        # The account menu opens and closes from the keyboard.
        page.locator(".user-menu summary").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.get_by_role("button", name="Log out")).to_be_hidden()
    finally:
        phone.close()


def test_a_long_email_does_not_widen_a_phone_page(browser: Browser, lumen: RunningLumen) -> None:
    email = "a.very.long.name.of.a.visiting.researcher@department-of-examples.example.edu"

    async def create() -> None:
        user = await store.create_user(engine=lumen.state.engine, email=email, name="")
        await set_password(engine=lumen.state.engine, user_id=user.id, password=PASSWORD)

    lumen.run(create())
    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)  # type: ignore[arg-type]
    try:
        page = phone.new_page()
        log_in(page, lumen, email)
        overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
    finally:
        phone.close()
