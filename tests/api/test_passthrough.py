"""Lumen forwards what it does not need untouched, and adds only what it must."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.fakes.upstream import FakeUpstream
from tests.support import RunningLumen, running_lumen, upstream


def _lumen(tmp_path: Path, fake: FakeUpstream, **endpoint: Any) -> Any:
    config = {
        "models": [
            {"name": "org/model-a", "endpoints": [upstream(fake.url, upstream_model="up-a", **endpoint)]}
        ]
    }
    return running_lumen(tmp_path, config)


RICH_BODY: dict[str, Any] = {
    "model": "org/model-a",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": [{"type": "text", "text": "You help."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "n": 2,
    "temperature": 0.3,
    "top_k": 5,
    "min_p": 0.1,
    "chat_template_kwargs": {"enable_thinking": False},
    "seed": 7,
    "logit_bias": {"50256": -100},
    "user": "someone",
    "max_completion_tokens": 99,
}


def test_every_field_reaches_the_upstream_unchanged(tmp_path: Path, fake: FakeUpstream) -> None:
    with _lumen(tmp_path, fake) as lumen:
        response = httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=RICH_BODY)
    assert response.status_code == 200
    sent = fake.requests[-1]
    assert sent == {**RICH_BODY, "model": "up-a"}
    assert response.json()["model"] == "org/model-a"


def test_streaming_adds_only_the_usage_request(tmp_path: Path, fake: FakeUpstream) -> None:
    body = {**RICH_BODY, "stream": True, "stream_options": {"include_obfuscation": False}}
    with _lumen(tmp_path, fake) as lumen:
        httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=body)
    expected = {
        **body,
        "model": "up-a",
        "stream_options": {"include_obfuscation": False, "include_usage": True},
    }
    assert fake.requests[-1] == expected


def test_usage_injection_can_be_turned_off_per_endpoint(tmp_path: Path, fake: FakeUpstream) -> None:
    body = {**RICH_BODY, "stream": True}
    with _lumen(tmp_path, fake, stream_usage=False) as lumen:
        httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=body)
    assert "stream_options" not in fake.requests[-1]


def test_client_headers_stay_home_and_the_endpoint_key_and_request_id_go_up(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    with _lumen(tmp_path, fake, api_key="upstream-secret") as lumen:
        headers = {
            **lumen.auth,
            "X-Stainless-Lang": "python",
            "OpenAI-Organization": "org-1",
            "Cookie": "a=b",
        }
        response = httpx.post(lumen.v1 + "/chat/completions", headers=headers, json=RICH_BODY)
    sent = fake.headers[-1]
    assert sent["authorization"] == "Bearer upstream-secret"
    assert sent["x-request-id"] == response.headers["x-request-id"]
    assert not {"x-stainless-lang", "openai-organization", "cookie"} & set(sent)


def test_api_key_from_the_environment(tmp_path: Path, fake: FakeUpstream, monkeypatch: Any) -> None:
    monkeypatch.setenv("LUMEN_TEST_UPSTREAM_KEY", "from-env")
    with _lumen(tmp_path, fake, api_key_env="LUMEN_TEST_UPSTREAM_KEY") as lumen:
        httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=RICH_BODY)
    assert fake.headers[-1]["authorization"] == "Bearer from-env"


def test_model_ids_with_slashes(echo_lumen: RunningLumen) -> None:
    for path in ("org/echo-2", "org%2Fecho-2"):
        response = httpx.get(f"{echo_lumen.v1}/models/{path}", headers=echo_lumen.auth)
        assert response.status_code == 200, path
        assert response.json()["id"] == "org/echo-2"
    listed = httpx.get(echo_lumen.v1 + "/models", headers=echo_lumen.auth).json()
    assert listed["object"] == "list"
    assert {m["id"] for m in listed["data"]} == {"echo", "org/echo-2"}
    for card in listed["data"]:
        assert card["object"] == "model" and isinstance(card["created"], int) and card["owned_by"]


def test_legacy_completions_through_an_upstream(tmp_path: Path, fake: FakeUpstream) -> None:
    with _lumen(tmp_path, fake) as lumen:
        legacy = httpx.post(
            lumen.v1 + "/completions",
            headers=lumen.auth,
            json={"model": "org/model-a", "prompt": "Once", "suffix": "end", "echo": False},
        )
        streamed = httpx.post(
            lumen.v1 + "/completions",
            headers=lumen.auth,
            json={"model": "org/model-a", "prompt": "Once", "stream": True},
        )
    assert legacy.status_code == 200 and legacy.json()["object"] == "text_completion"
    assert legacy.json()["model"] == "org/model-a"
    assert fake.requests[0]["suffix"] == "end"
    assert '"object":"text_completion"' in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
