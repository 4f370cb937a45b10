from __future__ import annotations

from pathlib import Path

import httpx

from tests.support import ECHO, model, running_lumen

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def test_configured_origins_may_call_and_read_the_headers(tmp_path: Path) -> None:
    config = {
        "server": {"cors_origins": ["https://chat.example.edu"]},
        "rate_limits": {"default": {"principal": {"rpm": 100}}},
        "models": [model("echo", ECHO)],
    }
    with running_lumen(tmp_path, config) as lumen:
        preflight = httpx.options(
            lumen.v1 + "/chat/completions",
            headers={
                "Origin": "https://chat.example.edu",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-stainless-lang",
            },
        )
        allowed = httpx.post(
            lumen.v1 + "/chat/completions",
            json=CHAT,
            headers={**lumen.auth, "Origin": "https://chat.example.edu"},
        )
        other = httpx.post(
            lumen.v1 + "/chat/completions",
            json=CHAT,
            headers={**lumen.auth, "Origin": "https://evil.example.com"},
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://chat.example.edu"
    assert "x-stainless-lang" in preflight.headers["access-control-allow-headers"].lower()
    assert allowed.headers["access-control-allow-origin"] == "https://chat.example.edu"
    exposed = allowed.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "x-ratelimit-remaining-requests" in exposed
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_unless_configured(echo_lumen: object) -> None:
    lumen = echo_lumen
    response = httpx.post(
        lumen.v1 + "/chat/completions",
        json=CHAT,  # type: ignore[attr-defined]
        headers={**lumen.auth, "Origin": "https://chat.example.edu"},
    )  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
