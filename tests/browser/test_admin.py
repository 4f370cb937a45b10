"""The Admin pages in a real browser: disabling a user refuses their API key at once and the audit
log shows who did it; every admin page passes axe in light and dark mode and fits a phone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.axe import assert_accessible
from tests.browser.conftest import DESKTOP, PHONE, Console, screenshot
from tests.browser.test_usage import log_in
from tests.portal.roles import Cast, running_cast

pytestmark = pytest.mark.browser

PAGES = [("Users", "admin-users"), ("Groups", "admin-groups"), ("Models", "admin-models")]
PAGES += [("Configuration", "admin-config"), ("Audit log", "admin-audit")]


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cast]:
    with running_cast(Path(tmp_path_factory.mktemp("admin"))) as running:
        yield running


def test_disabling_a_user_refuses_their_key_and_is_in_the_audit_log(
    page: Page, cast: Cast, console: Console
) -> None:
    client = openai.OpenAI(api_key=cast.keys["carol@example.edu"], base_url=cast.lumen.v1, max_retries=0)
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "before"}])

    log_in(page, cast, "admin@localhost")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    page.get_by_label("Search").fill("carol")
    page.get_by_role("button", name="Search").click()
    row = page.locator("#users-table tbody tr", has_text="carol@example.edu")
    expect(row).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.accept())  # "Disable carol@…?"
    row.get_by_role("button", name="Disable carol@example.edu").click()
    expect(page.get_by_role("status")).to_have_text("carol@example.edu is disabled.")
    expect(row.locator("th")).to_contain_text("disabled")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "after"}])
    assert refused.value.code == "account_disabled"

    page.get_by_role("navigation", name="Administration").get_by_role("link", name="Audit log").click()
    newest = page.locator("#audit-table tbody tr").first
    expect(newest).to_contain_text("admin@localhost")
    expect(newest).to_contain_text("user.update")
    expect(newest.get_by_role("link", name="carol@example.edu")).to_be_visible()
    expect(newest).to_contain_text('"disabled": true')
    assert console.errors() == []


def test_every_admin_page_light_dark_and_phone(browser: Browser, cast: Cast) -> None:
    looks = (("light", DESKTOP, ""), ("dark", DESKTOP, "-dark"), ("light", PHONE, "-phone"))
    for scheme, viewport, suffix in looks:
        context = browser.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
        try:
            page = context.new_page()
            log_in(page, cast, "admin@localhost")
            page.goto(cast.lumen.url + "/admin")
            for tab, name in PAGES:
                link = page.get_by_role("navigation", name="Administration").get_by_role("link", name=tab)
                link.click()
                expect(link).to_have_attribute("aria-current", "page")
                overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{tab} ({scheme}, {viewport}) scrolls sideways by {overflow}px"
                assert_accessible(page)
                if suffix != "-phone" or tab == "Users":
                    screenshot(page, name + suffix)
        finally:
            context.close()
