"""Helpers for the portal's HTTP tests: parsing pages, logging in like a browser would."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import httpx

from lumen.identity import store
from lumen.identity.passwords import set_password
from tests.portal.oidc_provider import Provider
from tests.support import RunningLumen

HTML = {"accept": "text/html,application/xhtml+xml"}
PASSWORD = "correct horse battery staple"


class Page(HTMLParser):
    """What the tests look at in a page: forms' fields, the CSRF meta tag, scripts, inline code."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.meta: dict[str, str] = {}
        self.scripts: list[dict[str, str | None]] = []
        self.inline_code: list[str] = []
        self.links: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.append(values["id"] or "")
        if tag == "input" and values.get("name"):
            self.fields[values["name"] or ""] = values.get("value") or ""
        elif tag == "meta" and values.get("name"):
            self.meta[values["name"] or ""] = values.get("content") or ""
        elif tag == "script":
            self.scripts.append(values)
            if not values.get("src"):
                self.inline_code.append("<script> without src")
        elif tag == "style":
            self.inline_code.append("<style>")
        elif tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        if "style" in values:
            self.inline_code.append(f"style attribute on <{tag}>")
        if any(name.startswith("on") for name in values):
            self.inline_code.append(f"event handler attribute on <{tag}>")


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def client(lumen: RunningLumen, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=lumen.url, headers=HTML, **kwargs)


def add_user(lumen: RunningLumen, email: str, *, password: str | None = PASSWORD, admin: bool = False) -> int:
    async def work() -> int:
        user = await store.create_user(engine=lumen.state.engine, email=email, is_admin=admin)
        if password is not None:
            await set_password(engine=lumen.state.engine, user_id=user.id, password=password)
        return user.id

    user_id: int = lumen.run(work())
    return user_id


def set_admin_password(lumen: RunningLumen, password: str = PASSWORD) -> None:
    async def work() -> None:
        admin = await store.find_user(engine=lumen.state.engine, email="admin@localhost")
        await set_password(engine=lumen.state.engine, user_id=admin.id, password=password)

    lumen.run(work())


def login(browser: httpx.Client, email: str, password: str = PASSWORD, next: str = "/") -> httpx.Response:
    form = parse(browser.get("/login").text).fields
    return browser.post(
        "/login", data={"csrf_token": form["csrf_token"], "email": email, "password": password, "next": next}
    )


def csrf_token(browser: httpx.Client) -> str:
    token = parse(browser.get("/").text).meta.get("csrf-token")
    assert token, "no csrf-token meta tag: not logged in?"
    return token


def oidc_login(browser: httpx.Client, provider: Provider, sub: str, next: str = "/") -> httpx.Response:
    """The whole redirect dance: Lumen → provider (the user picks `sub`) → Lumen's callback."""
    start = browser.get("/auth/oidc/login", params={"next": next} if next != "/" else None)
    assert start.status_code == 302, start.text
    callback = provider.authorize(start.headers["location"], sub)
    return browser.get(callback)
