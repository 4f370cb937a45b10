"""A real OpenID Connect provider for the login tests: `oidc-provider-mock` (pinned in
requirements/constraints.txt), run as a subprocess on an ephemeral port, once per test session.

It accepts any client id and secret, signs real ID tokens, and logs in whichever subject the
authorization form (or a test's POST) names; a test sets that subject's claims first with
`set_user`. Tests import the `oidc_provider` fixture from here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

STARTUP_SECONDS = 30


class Provider:
    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def metadata_url(self) -> str:
        return self.url + "/.well-known/openid-configuration"

    def set_user(self, sub: str, **claims: Any) -> None:
        response = httpx.put(f"{self.url}/users/{quote(sub, safe='')}", json=claims)
        assert response.status_code == 204, response.text

    def authorize(self, authorize_url: str, sub: str) -> str:
        """Logs `sub` in at the provider, as its form would; returns the callback URL."""
        response = httpx.post(authorize_url, data={"sub": sub})
        assert response.status_code == 302, response.text
        return response.headers["location"]


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[Provider]:
    process = subprocess.Popen(
        [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    found = threading.Event()
    url: list[str] = []
    lines: list[str] = []

    def read(stream: Any) -> None:
        # Keeps draining the log, so the provider never blocks on a full pipe.
        for line in stream:
            lines.append(line)
            match = re.search(r"Uvicorn running on (http://\S+)", line)
            if match and not found.is_set():
                url.append(match.group(1))
                found.set()

    threading.Thread(target=read, args=(process.stderr,), daemon=True).start()
    try:
        if not found.wait(STARTUP_SECONDS):
            pytest.fail("the OIDC provider did not start:\n" + "".join(lines))
        provider = Provider(url[0])
        assert httpx.get(provider.metadata_url).status_code == 200
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
