"""Help and Connect in a real browser: every code block has a Copy button (reachable by
keyboard) that puts exactly the block's text on the clipboard; the model picker on Connect."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import Console
from tests.portal.support import PASSWORD, set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    config = {
        "models": [model("echo", ECHO), model("org/echo-2", ECHO), model("embed", ECHO, kind="embeddings")]
    }
    with running_lumen(tmp_path_factory.mktemp("lumen"), config) as running:
        set_admin_password(running)
        yield running


def log_in(page: Page, lumen: RunningLumen) -> None:
    page.goto(lumen.url + "/login")
    page.get_by_label("Email").fill("admin@localhost")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


def clipboard(page: Page) -> str:
    text: str = page.evaluate("() => navigator.clipboard.readText()")
    return text


@pytest.mark.parametrize("path", ["/help", "/connect"])
def test_every_code_block_copies_its_text(
    page: Page, context: BrowserContext, lumen: RunningLumen, console: Console, path: str
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lumen.url)
    log_in(page, lumen)
    page.goto(lumen.url + path)
    blocks = page.locator(".code-block")
    count = blocks.count()
    assert count >= 8
    buttons = page.locator(".code-block .copy-button")
    expect(buttons).to_have_count(count)
    for index in range(count):
        block = blocks.nth(index)
        block.get_by_role("button").click()
        assert clipboard(page) == block.locator("code").text_content()
    expect(page.locator("#copy-status")).to_have_text("The code is copied to the clipboard.")

    # By keyboard: Tab reaches a Copy button, Enter copies. Start from the first code block.
    page.evaluate("() => navigator.clipboard.writeText('')")
    blocks.first.locator("pre").focus()
    page.keyboard.press("Shift+Tab")  # the block's own Copy button comes just before its code
    focused = page.evaluate("() => document.activeElement.getAttribute('aria-label')")
    assert focused.startswith("Copy ")
    page.keyboard.press("Enter")
    expect(page.locator(".copy-button").first).to_have_text("Copied")
    assert clipboard(page) == blocks.first.locator("code").text_content()
    assert console.errors() == []


def test_connect_fills_in_the_chosen_model(page: Page, lumen: RunningLumen) -> None:
    log_in(page, lumen)
    page.goto(lumen.url + "/profile")
    page.get_by_role("link", name="Connect your tools").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect")
    python = page.locator(".code-block[data-lang='python'] code").first
    expect(python).to_contain_text('model="echo"')
    picker = page.get_by_label("Model in the examples")
    assert [o.strip() for o in picker.locator("option").all_text_contents()] == ["echo", "org/echo-2"]
    picker.select_option("org/echo-2")
    page.get_by_role("button", name="Show").click()
    expect(python).to_contain_text('model="org/echo-2"')
    expect(page.locator(".code-block[data-lang='yaml'] code")).to_contain_text(f'apiBase: "{lumen.v1}"')
    page.get_by_role("link", name="The full API reference →").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("API reference")
