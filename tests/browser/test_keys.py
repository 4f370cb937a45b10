"""Profile → API keys in a real browser: create a key, copy it with the page's Copy button, use
it with the official `openai` SDK, revoke it in the page's dialog, and see the SDK refused."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.axe import assert_accessible
from tests.browser.conftest import Console, screenshot
from tests.portal.support import PASSWORD, add_user
from tests.support import ECHO, RunningLumen, model, running_lumen

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    config = {"models": [model("echo", ECHO, price={"input": 1, "output": 2}), model("org/echo-2", ECHO)]}
    with running_lumen(tmp_path_factory.mktemp("lumen"), config) as running:
        add_user(running, "ada@example.edu")
        yield running


def log_in(page: Page, lumen: RunningLumen, email: str) -> None:
    page.goto(lumen.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


def test_create_copy_use_and_revoke_a_key(
    page: Page, context: BrowserContext, lumen: RunningLumen, console: Console
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lumen.url)
    log_in(page, lumen, "ada@example.edu")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API Keys").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("API keys")
    expect(page.get_by_text("You have no API keys yet.")).to_be_visible()

    page.get_by_label("Name").fill("notebook")
    page.get_by_label("Coin limit (optional)").fill("5")
    page.get_by_label("echo", exact=True).check()
    page.get_by_role("button", name="Create key").click()
    created = page.locator("#created")
    expect(created).to_be_focused()  # read out first
    expect(created.get_by_role("heading", level=2)).to_have_text("Your new key “notebook”")
    assert_accessible(page)
    screenshot(page, "keys-created")

    created.get_by_role("button", name="Copy key").click()
    expect(page.locator("#copy-status")).to_have_text("The key is copied to the clipboard.")
    key: str = page.evaluate("() => navigator.clipboard.readText()")
    assert key.startswith("sk_") and key == page.get_by_label("Your API key").input_value()

    client = openai.OpenAI(api_key=key, base_url=lumen.v1, max_retries=0)
    try:
        reply = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "Hello through the SDK"}]
        )
        assert reply.choices[0].message.content == "Hello through the SDK"
        with pytest.raises(openai.PermissionDeniedError):  # the key is limited to `echo`
            client.chat.completions.create(model="org/echo-2", messages=[{"role": "user", "content": "hi"}])

        # The list, after a reload: the key by its hint, never the key itself.
        page.goto(lumen.url + "/profile/keys")
        row = page.locator("tr", has_text="notebook")
        expect(row).to_contain_text(key[:6])
        expect(row).to_contain_text("only echo; at most 5.00 coins")
        assert key not in page.content()

        # Revoke: a dialog asks first; Cancel keeps the key.
        row.get_by_role("link", name="Revoke notebook").click()
        dialog = page.get_by_role("dialog", name="Revoke this key?")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        assert_accessible(page)
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        assert client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "still"}])

        row.get_by_role("link", name="Revoke notebook").click()
        dialog.get_by_role("button", name="Revoke key").click()
        expect(page.get_by_role("status").filter(has_text="is revoked")).to_be_visible()
        expect(page.locator("tr", has_text="notebook")).to_contain_text("Revoked")
        with pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 401
    finally:
        client.close()
    assert console.errors() == []


def test_revoke_without_javascript_uses_the_confirmation_page(
    browser_no_js: Page, lumen: RunningLumen
) -> None:
    page = browser_no_js
    log_in(page, lumen, "ada@example.edu")
    page.goto(lumen.url + "/profile/keys")
    page.get_by_label("Name").fill("no-js")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("Your API key").input_value()
    page.goto(lumen.url + "/profile/keys")
    page.locator("tr", has_text="no-js").get_by_role("link", name="Revoke no-js").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Revoke API key")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator("tr", has_text="no-js")).to_contain_text("Revoked")
    with openai.OpenAI(api_key=key, base_url=lumen.v1, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


@pytest.fixture
def browser_no_js(browser: object) -> Iterator[Page]:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    context = browser.new_context(java_script_enabled=False)
    try:
        yield context.new_page()
    finally:
        context.close()
