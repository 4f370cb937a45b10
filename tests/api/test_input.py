"""Bad input on /v1 is refused with a 4xx in the OpenAI envelope before anything is admitted:
deep JSON, numbers the backends or the database cannot hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lumen.api.body import MAX_JSON_DEPTH
from lumen.usage.queries import recent_usage
from tests.support import ECHO, RunningLumen, model, running_lumen

GOOD = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def echo_lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    config = {"models": [model("echo", ECHO)]}
    with running_lumen(tmp_path_factory.mktemp("input"), config) as lumen:
        yield lumen


def _nested(levels: int) -> Any:
    """`levels` arrays inside each other: `[[[]]]` is 3."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


def _nothing_held(lumen: RunningLumen) -> None:
    state = lumen.state
    assert state.pipeline.holding == 0
    assert all(endpoint.in_flight == 0 for endpoint in state.registry.endpoints())


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_nested_300_levels_is_a_400_before_admission(echo_lumen: RunningLumen, stream: bool) -> None:
    body = {**GOOD, "stream": stream, "response_format": {"schema": _nested(300)}}
    response = httpx.post(echo_lumen.v1 + "/chat/completions", headers=echo_lumen.auth, json=body)
    error = _error(response, 400)
    assert error["code"] == "invalid_json"
    assert f"more than {MAX_JSON_DEPTH} levels" in error["message"]
    _nothing_held(echo_lumen)
    echo_lumen.run(echo_lumen.state.recorder.flush())
    rows = echo_lumen.run(recent_usage(engine=echo_lumen.state.engine))
    assert [(r.status, r.error_code) for r in rows][:1] == [(400, "invalid_json")]


def test_the_deepest_allowed_body_is_served(echo_lumen: RunningLumen) -> None:
    # The body object is level 1, so the extra field may hold MAX_JSON_DEPTH - 1 levels.
    body = {**GOOD, "metadata_tree": _nested(MAX_JSON_DEPTH - 1)}
    response = httpx.post(echo_lumen.v1 + "/chat/completions", headers=echo_lumen.auth, json=body)
    assert response.status_code == 200, response.text
    deeper = {**GOOD, "metadata_tree": _nested(MAX_JSON_DEPTH)}
    response = httpx.post(echo_lumen.v1 + "/chat/completions", headers=echo_lumen.auth, json=deeper)
    assert _error(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", {**GOOD, "max_tokens": 2**63}, "max_tokens"),
        ("/chat/completions", {**GOOD, "max_tokens": 2**31}, "max_tokens"),
        ("/chat/completions", {**GOOD, "max_completion_tokens": 2**63 - 1}, "max_completion_tokens"),
        ("/completions", {"model": "echo", "prompt": "hi", "max_tokens": 2**63}, "max_tokens"),
        ("/completions", {"model": "echo", "prompt": [2**63], "max_tokens": 1}, "prompt"),
        ("/embeddings", {"model": "echo", "input": [[2**40]]}, "input"),
        ("/completions", {"model": "echo", "prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ],
)
def test_numbers_out_of_range_are_400_naming_the_parameter(
    echo_lumen: RunningLumen, path: str, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(echo_lumen.v1 + path, headers=echo_lumen.auth, json=body)
    error = _error(response, 400)
    assert error["code"] == "invalid_value"
    assert error["param"] == param
    _nothing_held(echo_lumen)


def test_the_v1_schema_is_served_with_the_bounds_that_are_enforced(echo_lumen: RunningLumen) -> None:
    document = httpx.get(echo_lumen.v1 + "/openapi.json").json()
    chat = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    bounded = next(s for s in chat["max_tokens"]["anyOf"] if s.get("type") == "integer")
    assert bounded["maximum"] == 2**31 - 1
    operations = {path: set(item) for path, item in document["paths"].items()}
    assert operations == {
        "/v1/chat/completions": {"post"},
        "/v1/completions": {"post"},
        "/v1/embeddings": {"post"},
        "/v1/models": {"get"},
        "/v1/models/{model_id}": {"get"},
        "/v1/models/{model_id}/acknowledge": {"post"},
    }
    assert "400" in document["paths"]["/v1/chat/completions"]["post"]["responses"]


def test_a_nul_character_is_refused_in_bodies_and_urls(echo_lumen: RunningLumen) -> None:
    # PostgreSQL stores no NUL: one in a stored name would fail the write of its whole batch.
    nul_model = {**GOOD, "model": "echo\u0000"}
    response = httpx.post(echo_lumen.v1 + "/chat/completions", headers=echo_lumen.auth, json=nul_model)
    assert _error(response, 400)["code"] == "invalid_json"
    nul_text = {**GOOD, "messages": [{"role": "user", "content": "a\u0000b"}]}
    response = httpx.post(echo_lumen.v1 + "/chat/completions", headers=echo_lumen.auth, json=nul_text)
    assert _error(response, 400)["code"] == "invalid_json"
    _error(httpx.get(echo_lumen.v1 + "/models/echo%00", headers=echo_lumen.auth), 400)
    # The six characters `\u0000` written as text are text, not a NUL.
    text = {**GOOD, "messages": [{"role": "user", "content": "\\u0000"}]}
    response = httpx.post(echo_lumen.v1 + "/chat/completions", headers=echo_lumen.auth, json=text)
    assert response.status_code == 200, response.text
