"""The Models pages in a real browser: live filtering, the list → detail → Acknowledge flow, and
every page of Models, Profile, API keys, Help and Connect in light and dark mode and at phone
width, checked with axe-core (and screenshotted when LUMEN_SCREENSHOTS=1)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.axe import assert_accessible
from tests.browser.conftest import DESKTOP, PHONE, Console, screenshot
from tests.portal.support import PASSWORD, set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

pytestmark = pytest.mark.browser

NOTICE = "This model is for **research use**. Read the [terms](https://example.edu/terms) first."
CONFIG: dict[str, Any] = {
    "models": [
        model(
            "echo",
            ECHO,
            description="Repeats your last message. For testing clients.",
            price={"input": 0.15, "output": 0.6},
            capabilities={"context_window": 8192, "max_output_tokens": 4096, "tools": True},
        ),
        model(
            "org/careful",
            ECHO,
            description="A model with terms of use",
            price={"input": 2.5, "output": 10},
            capabilities={"context_window": 128000, "modalities": ["text", "image"], "reasoning": True},
            access={"acknowledge": True, "notice": NOTICE},
        ),
        model(
            "all-minilm", ECHO, kind="embeddings", description="Sentence embeddings", price={"input": 0.01}
        ),
    ],
    "portal": {"announcement": "Certain models need to be acknowledged once before use."},
}


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    with running_lumen(tmp_path_factory.mktemp("lumen"), CONFIG) as running:
        set_admin_password(running)
        yield running


def log_in(page: Page, lumen: RunningLumen, email: str = "admin@localhost") -> None:
    page.goto(lumen.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


PAGES = [
    ("models", "/models"),
    ("model", "/models/echo"),
    ("profile", "/profile"),
    ("keys", "/profile/keys"),
    ("help", "/help"),
    ("connect", "/connect"),
]


@pytest.fixture
def session(browser: Browser, lumen: RunningLumen) -> Any:
    """The logged-in browser state, reused by the contexts of the page checks below."""
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    log_in(page, lumen)
    state = context.storage_state()
    context.close()
    return state


@pytest.mark.parametrize(("name", "path"), PAGES, ids=[p for _, p in PAGES])
def test_page_in_light_dark_and_at_phone_width(
    browser: Browser, lumen: RunningLumen, session: Any, name: str, path: str
) -> None:
    views = [
        ("", {"viewport": DESKTOP, "color_scheme": "light"}),
        ("-dark", {"viewport": DESKTOP, "color_scheme": "dark"}),
        ("-phone", {"viewport": PHONE, "color_scheme": "light", "is_mobile": True, "has_touch": True}),
    ]
    if os.environ.get("LUMEN_SCREENSHOTS") == "1":
        views.append(
            ("-phone-dark", {"viewport": PHONE, "color_scheme": "dark", "is_mobile": True, "has_touch": True})
        )
    for suffix, options in views:
        context = browser.new_context(storage_state=session, **options)
        try:
            page = context.new_page()
            console = Console()
            page.on("console", console.record)
            response = page.goto(lumen.url + path)
            assert response is not None and response.status == 200
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            dark = page.evaluate("() => matchMedia('(prefers-color-scheme: dark)').matches")
            assert dark == ("dark" in suffix)
            if "phone" in suffix:
                overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{path} is wider than a phone by {overflow}px"
            if suffix != "-phone-dark":  # light and dark on the desktop, and the phone layout
                assert_accessible(page)
            screenshot(page, name + suffix)
            assert console.errors() == [], console.messages
        finally:
            context.close()


def test_filter_then_acknowledge_from_the_detail_page(
    page: Page, lumen: RunningLumen, console: Console
) -> None:
    chat = {"model": "org/careful", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=chat).status_code == 403

    log_in(page, lumen)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Models")
    rows = page.locator("#models-table tbody tr")
    expect(rows.filter(visible=True)).to_have_count(3)

    # Typing filters at once (no reload), and the address keeps the filter.
    page.get_by_label("Search").fill("terms")
    expect(rows.filter(visible=True)).to_have_count(1)
    expect(page.locator("#model-count")).to_have_text("1 of 3 models")
    assert page.url.endswith("/models?q=terms")
    page.get_by_label("Search").fill("")
    page.get_by_label("Kind").select_option("embeddings")
    expect(rows.filter(visible=True)).to_have_count(1)
    expect(rows.filter(visible=True)).to_contain_text("all-minilm")
    page.get_by_label("Kind").select_option("")
    page.get_by_label("Access").select_option("needs_ack")
    visible = rows.filter(visible=True)
    expect(visible).to_have_count(1)
    expect(visible).to_contain_text("Acknowledge to use")

    visible.get_by_role("link", name="org/careful").click()
    assert page.url == lumen.url + "/models/org/careful"
    expect(page.get_by_role("heading", level=1)).to_have_text("org/careful")
    expect(page.locator(".notice-text strong")).to_have_text("research use")
    assert_accessible(page)
    screenshot(page, "model-acknowledge")

    page.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status").filter(has_text="You have acknowledged")).to_be_visible()
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    assert httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=chat).status_code == 200
    assert console.errors() == []


def test_the_model_list_by_keyboard(page: Page, lumen: RunningLumen) -> None:
    log_in(page, lumen)
    page.goto(lumen.url + "/models")
    page.get_by_label("Search").focus()
    page.keyboard.type("echo")
    expect(page.locator("#models-table tbody tr").filter(visible=True)).to_have_count(1)
    # Tab through the filters and the button to the one visible model's link, and open it.
    for _ in range(5):
        page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "echo"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("echo")
