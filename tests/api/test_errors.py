"""Every refusal is the OpenAI error envelope with a fitting status, never a framework default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ECHO, RunningLumen, model, running_lumen


def _assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    assert response.headers.get("x-request-id")
    return error


def _chat(lumen: RunningLumen, **kwargs: Any) -> httpx.Response:
    return httpx.post(lumen.v1 + "/chat/completions", headers=kwargs.pop("headers", lumen.auth), **kwargs)


GOOD = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "echo"}, "messages"),
        ({"model": "echo", "messages": []}, "messages"),
        ({**GOOD, "stream": "yes"}, "stream"),
        ({**GOOD, "max_tokens": "ten"}, "max_tokens"),
        ({**GOOD, "max_tokens": 0}, "max_tokens"),
        ({**GOOD, "n": 0}, "n"),
        ({"model": 42, "messages": GOOD["messages"]}, "model"),
        ({"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "echo", "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        ({**GOOD, "stream_options": {"include_usage": "sure"}}, "stream_options.include_usage"),
    ],
)
def test_invalid_fields_are_400_naming_the_parameter(echo_lumen: RunningLumen, body: Any, param: str) -> None:
    error = _assert_envelope(_chat(echo_lumen, json=body), 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"text"'])
def test_malformed_json_is_400(echo_lumen: RunningLumen, raw: bytes) -> None:
    headers = {**echo_lumen.auth, "content-type": "application/json"}
    _assert_envelope(_chat(echo_lumen, content=raw, headers=headers), 400, "invalid_json")


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    config = {"server": {"max_body_bytes": 1000}, "models": [model("echo", ECHO)]}
    with running_lumen(tmp_path, config) as lumen:
        big = {**GOOD, "messages": [{"role": "user", "content": "x" * 2000}]}
        _assert_envelope(_chat(lumen, json=big), 413)

        def chunked() -> Any:
            yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
            yield b"y" * 2000
            yield b'"}]}'

        # No content-length: the limit holds while reading, too.
        _assert_envelope(_chat(lumen, content=chunked()), 413)
        assert _chat(lumen, json=GOOD).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk_wrong"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}],
)
def test_missing_or_bad_key_is_401(echo_lumen: RunningLumen, headers: dict[str, str]) -> None:
    _assert_envelope(_chat(echo_lumen, json=GOOD, headers=headers), 401, "invalid_api_key")
    response = httpx.get(echo_lumen.v1 + "/models", headers=headers)
    _assert_envelope(response, 401, "invalid_api_key")


def test_unknown_model_is_404(echo_lumen: RunningLumen) -> None:
    error = _assert_envelope(_chat(echo_lumen, json={**GOOD, "model": "gpt-9"}), 404, "model_not_found")
    assert error["param"] == "model" and "gpt-9" in error["message"]
    response = httpx.get(echo_lumen.v1 + "/models/gpt-9", headers=echo_lumen.auth)
    _assert_envelope(response, 404, "model_not_found")


def test_stream_refusals_are_real_statuses(echo_lumen: RunningLumen) -> None:
    """Checks run before the stream starts, so a streaming request is refused with a status."""
    response = _chat(echo_lumen, json={**GOOD, "model": "nope", "stream": True})
    _assert_envelope(response, 404, "model_not_found")
    _assert_envelope(_chat(echo_lumen, json={**GOOD, "stream": True}, headers={}), 401)


def test_wrong_kind_of_model_is_400(tmp_path: Path) -> None:
    config = {"models": [model("chat", ECHO), model("embed", ECHO, kind="embeddings")]}
    with running_lumen(tmp_path, config) as lumen:
        response = httpx.post(
            lumen.v1 + "/embeddings", headers=lumen.auth, json={"model": "chat", "input": "x"}
        )
        _assert_envelope(response, 400, "model_not_supported")
        _assert_envelope(_chat(lumen, json={**GOOD, "model": "embed"}), 400, "model_not_supported")


def test_unknown_route_and_method(echo_lumen: RunningLumen) -> None:
    _assert_envelope(httpx.get(echo_lumen.v1 + "/nothing-here", headers=echo_lumen.auth), 404)
    _assert_envelope(httpx.get(echo_lumen.v1 + "/chat/completions", headers=echo_lumen.auth), 405)


def test_request_id_is_returned_and_a_clients_own_is_kept(echo_lumen: RunningLumen) -> None:
    first = _chat(echo_lumen, json=GOOD)
    second = _chat(echo_lumen, json=GOOD)
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    mine = _chat(echo_lumen, json=GOOD, headers={**echo_lumen.auth, "X-Request-ID": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    hostile = _chat(echo_lumen, json=GOOD, headers={**echo_lumen.auth, "X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"].startswith("req_")


def test_refused_requests_leave_a_usage_record_but_401s_do_not(echo_lumen: RunningLumen) -> None:
    from lumen.usage.queries import recent_usage

    _chat(echo_lumen, json={**GOOD, "model": "gpt-9"})
    _chat(echo_lumen, json={**GOOD, "max_tokens": "ten"})
    _chat(echo_lumen, json=GOOD, headers={"Authorization": "Bearer sk_wrong"})
    _chat(echo_lumen, json=GOOD)
    echo_lumen.run(echo_lumen.state.recorder.flush())
    rows = echo_lumen.run(recent_usage(engine=echo_lumen.state.engine))
    by_status = sorted((r.status, r.error_code, r.model) for r in rows)
    assert by_status == [
        (200, None, "echo"),
        (400, "invalid_value", "echo"),
        (404, "model_not_found", "gpt-9"),
    ]
    assert all(r.principal.startswith("user:") and r.key_id for r in rows)
