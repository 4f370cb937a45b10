"""axe-core (pinned in tests/browser/package.json) run inside a page.

The script is evaluated through the DevTools protocol, which the page's Content-Security-Policy
does not apply to: the portal's policy allows no inline script, and stays on while axe runs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = ("serious", "critical")


@functools.cache
def axe_source() -> str:
    return AXE.read_text(encoding="utf-8")


def violations(page: Page) -> list[dict[str, Any]]:
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    result: dict[str, Any] = page.evaluate(
        "async () => await window.axe.run(document, {resultTypes: ['violations']})"
    )
    return list(result["violations"])


def assert_accessible(page: Page) -> None:
    """Fails on every serious or critical axe violation, naming the rule and the elements."""
    found = [v for v in violations(page) if v.get("impact") in FAILING_IMPACTS]
    report = "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']}\n    "
        + "\n    ".join(str(node["target"]) for node in v["nodes"][:5])
        for v in found
    )
    assert not found, f"accessibility violations on {page.url}:\n{report}"
