"""Bad input on the Anthropic and Responses surfaces: numbers out of range are a 400 in the
surface's own envelope before anything is admitted (as on chat completions, tests/api/test_input.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.inprocess import InProcess, in_process

CONFIG = {"models": [{"name": "m", "endpoints": [{"type": "local", "engine": "echo"}]}]}
HUGE = 2**63


@pytest.fixture
async def lumen(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(tmp_path, CONFIG) as running:
        yield running


async def test_messages_refuse_max_tokens_beyond_what_a_backend_can_hold(lumen: InProcess) -> None:
    messages = [{"role": "user", "content": "hi"}]
    for field, value in (("max_tokens", HUGE), ("top_k", HUGE)):
        body = {"model": "m", "max_tokens": 10, "messages": messages, field: value}
        response = await lumen.exchange("/v1/messages", body)
        assert response.status == 400, response.body
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert field in error["error"]["message"]
    assert lumen.state.pipeline.admitted == 0


async def test_responses_refuse_max_output_tokens_beyond_what_a_backend_can_hold(lumen: InProcess) -> None:
    response = await lumen.exchange("/v1/responses", {"model": "m", "input": "hi", "max_output_tokens": HUGE})
    assert response.status == 400, response.body
    assert response.json()["error"]["param"] == "max_output_tokens"
    assert lumen.state.pipeline.admitted == 0


async def test_a_wrong_method_on_messages_is_a_405_in_anthropics_envelope(lumen: InProcess) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = await lumen.client.get(path, headers=lumen.auth)
        assert response.status_code == 405
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.json()["type"] == "error"
