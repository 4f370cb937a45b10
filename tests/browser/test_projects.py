"""Projects in a real browser: an administrator creates a project, its owner adds a manager, the
manager creates a project key, and the key works with the official `openai` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.axe import assert_accessible
from tests.browser.conftest import DESKTOP, Console, screenshot
from tests.browser.test_usage import log_in
from tests.portal.roles import Cast, running_cast

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cast]:
    with running_cast(Path(tmp_path_factory.mktemp("projects"))) as running:
        yield running


def test_create_a_project_add_a_manager_and_make_a_key(
    browser: Browser, page: Page, cast: Cast, console: Console
) -> None:
    log_in(page, cast, "admin@localhost")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Projects").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Projects")
    assert_accessible(page)
    screenshot(page, "projects")
    page.get_by_label("Name").fill("climate")
    page.get_by_label("Description (optional)").fill("Climate model runs")
    page.get_by_label("Owner's email").fill("carol@example.edu")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("climate")
    expect(page.get_by_role("status")).to_contain_text("The project is created")
    assert_accessible(page)

    # The owner adds a manager; the manager makes a key for the project.
    owner = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    manager = browser.new_context(viewport=DESKTOP, color_scheme="dark")  # type: ignore[arg-type]
    try:
        carol = owner.new_page()
        log_in(carol, cast, "carol@example.edu")
        carol.goto(cast.lumen.url + "/projects")
        carol.get_by_role("link", name="climate").click()
        carol.get_by_label("Add a manager").fill("dave@example.edu")
        carol.get_by_role("button", name="Add manager").click()
        expect(carol.get_by_role("status")).to_have_text("The manager is added.")
        expect(carol.locator("#people-table")).to_contain_text("dave@example.edu")

        dave = manager.new_page()
        log_in(dave, cast, "dave@example.edu")
        dave.goto(cast.lumen.url + "/projects")
        assert_accessible(dave)  # the list, dark
        dave.get_by_role("link", name="climate").click()
        expect(dave.get_by_role("button", name="Add manager")).to_have_count(0)  # the owner's to do
        dave.get_by_label("Name", exact=True).fill("batch runs")
        dave.get_by_label("echo", exact=True).check()
        dave.get_by_role("button", name="Create key").click()
        created = dave.get_by_role("heading", level=2, name="The project's new key “batch runs”")
        expect(created).to_be_visible()
        key = dave.get_by_label("The new API key").input_value()
        assert key.startswith("sk_")
        assert_accessible(dave)  # dark mode
        screenshot(dave, "project-dark")

        client = openai.OpenAI(api_key=key, base_url=cast.lumen.v1, max_retries=0)
        question = [{"role": "user", "content": "for climate"}]
        reply = client.chat.completions.create(model="echo", messages=question)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "for climate"

        dave.goto(dave.url.rsplit("/keys", 1)[0])  # the page of the project, not the form post
        row = dave.locator("#project-keys tbody tr", has_text="batch runs")
        expect(row).to_contain_text("active")
        expect(row.locator("td").nth(6)).to_have_text("1")  # its one request, paid by the project
        assert key not in dave.content()
    finally:
        owner.close()
        manager.close()
    page.reload()
    screenshot(page, "project")
    assert console.errors() == []
