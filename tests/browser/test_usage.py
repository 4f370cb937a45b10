"""The Usage page in a real browser: a request made with the API shows with the token counts the
API returned, the chart is drawn (and redrawn for another metric), light and dark, on a phone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.axe import assert_accessible
from tests.browser.conftest import DESKTOP, PHONE, Console, screenshot
from tests.portal.roles import Cast, running_cast
from tests.portal.support import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cast]:
    with running_cast(Path(tmp_path_factory.mktemp("usage"))) as running:
        yield running


def log_in(page: Page, cast: Cast, email: str) -> None:
    page.goto(cast.lumen.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


def chart_datasets(page: Page) -> list[dict[str, object]]:
    """The datasets Chart.js is drawing on the page's canvas."""
    result: list[dict[str, object]] = page.evaluate(
        """() => {
            const chart = Chart.getChart(document.getElementById('usage-chart'));
            return chart ? chart.data.datasets.map(d => ({label: d.label, data: d.data})) : [];
        }"""
    )
    return result


def test_a_request_just_made_shows_with_the_apis_token_counts(
    page: Page, cast: Cast, console: Console
) -> None:
    answer = cast.chat("ada@example.edu", max_tokens=5).json()
    log_in(page, cast, "ada@example.edu")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your usage")

    newest = page.locator("#recent-requests tbody tr").first
    expect(newest.locator("[data-field=prompt_tokens]")).to_have_text(str(answer["usage"]["prompt_tokens"]))
    expect(newest.locator("[data-field=completion_tokens]")).to_have_text(
        str(answer["usage"]["completion_tokens"])
    )
    expect(newest).to_contain_text("ada laptop")

    expect(page.locator("#chart-box")).to_be_visible()  # drawn: the script loaded its data
    requests = chart_datasets(page)
    assert [d["label"] for d in requests] == ["echo"] and sum(requests[0]["data"]) == 1  # type: ignore[arg-type]
    page.get_by_role("button", name="Tokens").click()
    expect(page.get_by_role("button", name="Tokens")).to_have_attribute("aria-pressed", "true")
    tokens = chart_datasets(page)
    assert sum(tokens[0]["data"]) == answer["usage"]["total_tokens"]  # type: ignore[arg-type]

    limits = page.locator("#limits-table")
    expect(limits.locator("tbody tr").first).to_contain_text("600")  # ada's group, physics
    assert_accessible(page)
    screenshot(page, "usage")
    assert console.errors() == []


def test_dark_mode_and_a_phone(browser: Browser, cast: Cast) -> None:
    cast.chat("bob@example.edu")
    for name, options in (
        ("usage-dark", {"viewport": DESKTOP, "color_scheme": "dark"}),
        ("usage-phone", {"viewport": PHONE, "is_mobile": True, "has_touch": True}),
    ):
        context = browser.new_context(**options)  # type: ignore[arg-type]
        try:
            page = context.new_page()
            log_in(page, cast, "bob@example.edu")
            page.goto(cast.lumen.url + "/usage?period=day&by=source")
            expect(page.locator("#chart-box")).to_be_visible()
            overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
            assert_accessible(page)
            screenshot(page, name)
        finally:
            context.close()
