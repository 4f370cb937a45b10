"""What the portal's route adds around its pages: HEAD, and security headers on every answer."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from lumen.portal.app import PortalRoute
from tests.support import ECHO, RunningLumen, model, running_lumen

SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options")


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    with running_lumen(tmp_path_factory.mktemp("route"), {"models": [model("echo", ECHO)]}) as running:
        yield running


def test_head_is_get_without_the_body(lumen: RunningLumen) -> None:
    got = httpx.get(lumen.url + "/login")
    head = httpx.head(lumen.url + "/login")
    assert got.status_code == head.status_code == 200
    assert got.content and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]
    for name in SECURITY_HEADERS:
        assert head.headers[name] == got.headers[name]
    # The API keeps its own answer to HEAD.
    assert httpx.head(lumen.v1 + "/models").status_code == httpx.get(lumen.v1 + "/models").status_code


def test_an_unexpected_failure_in_a_page_still_carries_the_security_headers(lumen: RunningLumen) -> None:
    route = next(r for r in lumen.app.router.routes if isinstance(r, PortalRoute))

    async def boom() -> None:
        raise RuntimeError("a bug in a page")

    route.app.add_api_route("/test-boom", boom)
    answer = httpx.get(lumen.url + "/test-boom")
    assert answer.status_code == 500
    assert "a bug in a page" not in answer.text
    for name in SECURITY_HEADERS:
        assert name in answer.headers, name
