"""The browser tier: Playwright driving Debian's Chromium (/usr/bin/chromium).

One browser per test session (each test gets a fresh context: no shared cookies), one Lumen per
module. Playwright's own browser downloads are never used (`playwright install` is not run).
Without Chromium or axe-core (`npm ci` in tests/browser) these tests skip, except under CI=true,
where they fail. `LUMEN_SCREENSHOTS=1` saves a screenshot of each page into docs/screenshots/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, sync_playwright

from tests.browser.axe import AXE
from tests.portal.oidc_provider import oidc_provider
from tests.support import CI

__all__ = ["oidc_provider"]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _missing(problem: str) -> None:
    if CI:
        pytest.fail(f"{problem} (required under CI=true)")
    pytest.skip(problem)


class Chromium:
    """One Chromium for the whole session, started on first use.

    Playwright's sync API marks an event loop as running in this thread while it is alive, which
    breaks every asyncio test after it. So the browser is stopped whenever the next test is not a
    browser test (`pytest_runtest_teardown` below), and started again by the next browser test.
    """

    def __init__(self) -> None:
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def get(self) -> Browser:
        if self._browser is None:
            if not CHROMIUM.exists():
                _missing("Chromium is not installed: apt-get install chromium")
            if not AXE.exists():
                _missing("axe-core is not installed: run `npm ci` in tests/browser")
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(executable_path=str(CHROMIUM))
        return self._browser

    def stop(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None


_CHROMIUM = Chromium()
_HERE = Path(__file__).resolve().parent


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is None or _HERE not in Path(nextitem.path).resolve().parents:
        _CHROMIUM.stop()


@pytest.fixture
def browser() -> Browser:
    return _CHROMIUM.get()


class Console:
    """Everything the page logged or threw, to assert there were no errors (CSP violations are
    reported to the console)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def record(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.messages.append(f"{message.type}: {message.text}")

    def errors(self) -> list[str]:
        return [m for m in self.messages if m.startswith("error")]


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    yield ctx
    ctx.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(context: BrowserContext, console: Console) -> Page:
    new = context.new_page()
    new.on("console", console.record)
    new.on("pageerror", lambda error: console.messages.append(f"error: {error}"))
    return new


def screenshot(page: Page, name: str) -> None:
    """Saves docs/screenshots/<name>.png when LUMEN_SCREENSHOTS=1 (never in CI runs)."""
    if os.environ.get("LUMEN_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
