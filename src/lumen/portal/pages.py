"""Rendering pages: the Jinja2 environment and the typed context every page gets.

A template receives `layout` (a `Layout`: what `base.html` needs — branding, navigation, the
user, the CSRF token, the balance) and `page` (one dataclass per page). Autoescaping is on and
undefined names are errors, so a typo in a template fails its test instead of rendering blank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

from lumen.portal.assets import Assets
from lumen.portal.config import FooterLink
from lumen.portal.nav import NavItem

TEMPLATE_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True, slots=True)
class NavLink:
    label: str
    href: str
    current: bool


@dataclass(frozen=True, slots=True)
class Balance:
    """The coins a user can spend now, as the header and the home page show them; below zero, the
    coins the pool owes (requests that cost more than they had reserved), which refills pay first."""

    state: str
    """`limited`, `unlimited` or `blocked`."""
    available_micro: int
    max_micro: int
    refresh_micro: int
    """Coins credited per hour, in micro-coins."""

    @property
    def text(self) -> str:
        if self.state == "unlimited":
            return "Unlimited coins"
        if self.state == "blocked":
            return "No coins (blocked)"
        if self.available_micro < 0:
            return f"−{owed_coins(-self.available_micro)} coins (owed; refills pay it first)"
        return f"{coins(self.available_micro)} coins"


@dataclass(frozen=True, slots=True)
class Viewer:
    """The logged-in person, as the layout shows them."""

    email: str
    name: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class Layout:
    title: str
    instance_name: str
    logo_url: str
    branding_css: str
    announcement: str
    footer_links: list[FooterLink]
    nav: list[NavLink] = field(default_factory=list)
    viewer: Viewer | None = None
    csrf_token: str = ""
    balance: Balance | None = None


def nav_links(items: tuple[NavItem, ...], path: str, *, is_admin: bool) -> list[NavLink]:
    return [
        NavLink(item.label, item.href, item.is_current(path))
        for item in items
        if is_admin or not item.admin_only
    ]


def coins(micro: int) -> str:
    """Micro-coins as coins with two decimals, rounded down (never show more than there is)."""
    value = (Decimal(micro) / 1_000_000).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    return f"{value:,}"


def owed_coins(micro: int) -> str:
    """A debt in coins with two decimals, rounded up (never show less than is owed)."""
    value = (Decimal(micro) / 1_000_000).quantize(Decimal("0.01"), rounding=ROUND_UP)
    return f"{value:,}"


class Templates:
    def __init__(self, assets: Assets, directory: Path = TEMPLATE_DIR) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["static"] = assets.url

    def render(
        self,
        template: str,
        *,
        layout: Layout,
        page: Any = None,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(layout=layout, page=page)
        return HTMLResponse(html, status_code=status_code, headers=headers)
