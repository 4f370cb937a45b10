"""What the gate refuses before a backend is asked: the key's model list and rate limits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from tests.support import ECHO, model, running_lumen

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def _post(lumen: Any, body: dict[str, Any] = CHAT, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or lumen.key}"}
    return httpx.post(lumen.v1 + "/chat/completions", headers=headers, json=body, timeout=30)


def test_a_keys_model_list_is_enforced(tmp_path: Path) -> None:
    from lumen.identity import store

    config = {"models": [model("echo", ECHO), model("other", ECHO)]}
    with running_lumen(tmp_path, config) as lumen:
        secret = lumen.state.authenticator.secret

        async def make_key() -> str:
            user = await store.create_user(engine=lumen.state.engine, email="narrow@example.edu")
            _, plain = await store.create_key(
                engine=lumen.state.engine, secret=secret, owner_kind="user", owner_id=user.id, models=["echo"]
            )
            return plain

        key = lumen.run(make_key())
        assert _post(lumen, key=key).status_code == 200
        refused = _post(lumen, {**CHAT, "model": "other"}, key=key)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert "API key" in refused.json()["error"]["message"]


def test_requests_per_minute_with_headers_on_every_response(tmp_path: Path) -> None:
    config = {"rate_limits": {"default": {"principal": {"rpm": 3}}}, "models": [model("echo", ECHO)]}
    with running_lumen(tmp_path, config) as lumen:
        answers = [_post(lumen) for _ in range(4)]
        from lumen.usage.queries import recent_usage

        lumen.run(lumen.state.recorder.flush())
        rows = lumen.run(recent_usage(engine=lumen.state.engine))
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert float(refused.headers["retry-after"]) > 0
    assert refused.headers["x-ratelimit-reset-requests"].endswith(("s", "ms"))
    assert sorted(r.status for r in rows) == [200, 200, 200, 429]


def test_a_concurrency_slot_is_released_when_the_stream_ends(tmp_path: Path) -> None:
    config = {"rate_limits": {"default": {"principal": {"concurrent": 1}}}, "models": [model("echo", ECHO)]}
    slow = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "[[echo:slow:100]] a b c d e"}]}
    with running_lumen(tmp_path, config) as lumen:
        started = threading.Event()
        results: list[int] = []

        def long_stream() -> None:
            with httpx.stream(
                "POST",
                lumen.v1 + "/chat/completions",
                json=slow,
                timeout=30,
                headers={"Authorization": f"Bearer {lumen.key}"},
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and not started.is_set():
                        started.set()
                results.append(response.status_code)

        thread = threading.Thread(target=long_stream)
        thread.start()
        assert started.wait(10)
        during = _post(lumen)
        thread.join(30)
        after = _post(lumen)
    assert results == [200]
    assert during.status_code == 429 and during.json()["error"]["code"] == "rate_limit_exceeded"
    assert after.status_code == 200


def test_group_limits_apply_to_members(tmp_path: Path) -> None:
    config = {
        "rate_limits": {"default": {"principal": {"rpm": 1}}},
        "groups": [
            {"name": "heavy", "members": ["admin@localhost"], "rate_limits": {"principal": {"rpm": 5}}}
        ],
        "models": [model("echo", ECHO)],
    }
    with running_lumen(tmp_path, config) as lumen:
        statuses = [_post(lumen).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


def test_rate_limit_headers_on_the_model_list_and_on_refusals(tmp_path: Path) -> None:
    config = {
        "rate_limits": {"default": {"principal": {"rpm": 5, "tpm": 10_000}}},
        "models": [model("echo", ECHO)],
    }
    with running_lumen(tmp_path, config) as lumen:
        _post(lumen)
        listed = httpx.get(lumen.v1 + "/models", headers=lumen.auth)
        detail = httpx.get(lumen.v1 + "/models/echo", headers=lumen.auth)
        unknown = _post(lumen, {**CHAT, "model": "nope"})
        after = _post(lumen)
    for response in (listed, detail, unknown):
        assert response.headers["x-ratelimit-limit-requests"] == "5", response.text
        assert response.headers["x-ratelimit-limit-tokens"] == "10000"
    # Looking spends nothing: one request before and one after the three that only looked.
    assert listed.headers["x-ratelimit-remaining-requests"] == "4"
    assert after.headers["x-ratelimit-remaining-requests"] == "3"
