"""Messages streams over the pipeline's fault cases: a client that leaves mid-stream, a backend that
fails mid-stream, and refusals with their headers, in Anthropic's envelope."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest

from tests.gateway.scripted import KINDS, STAGES, Fault, Scripted
from tests.gateway.test_faults import CONFIG, _check_nothing_left
from tests.inprocess import InProcess, in_process
from tests.messages.test_sdk import sdk
from tests.support import ECHO, model

BODY: dict[str, Any] = {
    "model": "m",
    "max_tokens": 50,
    "stream": True,
    "messages": [{"role": "user", "content": "count to three"}],
}


@pytest.fixture(params=["memory", "redis"])
async def lumen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[InProcess, Scripted]]:
    async with in_process(tmp_path, CONFIG, redis=request.param == "redis") as lumen:
        scripted = Scripted()
        for endpoint in lumen.state.registry.endpoints():
            endpoint.backend = scripted
        yield lumen, scripted


def _events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for raw in body.split(b"\n\n"):
        if raw.strip():
            name, data = raw.split(b"\n", 1)
            assert name.startswith(b"event: ") and data.startswith(b"data: ")
            events.append((name[7:].decode(), orjson.loads(data[6:])))
    return events


async def test_a_client_leaving_mid_stream_leaves_nothing_behind(lumen: tuple[InProcess, Scripted]) -> None:
    app, scripted = lumen
    scripted.disconnect = asyncio.Event()
    scripted.fault = Fault("mid_stream", "disconnect")
    exchange = await app.exchange("/v1/messages", BODY, request_id="msg-gone", disconnect=scripted.disconnect)
    scripted.fault = None
    assert exchange.status == 200
    names = [name for name, _ in _events(exchange.body)]
    assert names[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert "message_stop" not in names
    await _check_nothing_left(app, "msg-gone")
    assert scripted.cancelled == 1, "the backend's work was not cancelled when the client left"


async def test_a_backend_failing_mid_stream_is_an_error_event(lumen: tuple[InProcess, Scripted]) -> None:
    app, scripted = lumen
    scripted.error_event = {
        "message": "The model backend failed.",
        "type": "server_error",
        "code": "upstream_error",
    }
    exchange = await app.exchange("/v1/messages", BODY, request_id="msg-broken")
    events = _events(exchange.body)
    assert exchange.status == 200
    assert events[-1] == (
        "error",
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "The model backend failed while answering: The model backend failed.",
            },
        },
    )
    assert [name for name, _ in events][:2] == ["message_start", "content_block_start"]
    await _check_nothing_left(app, "msg-broken")


async def test_the_stream_is_the_sdk_fixture_sequence(lumen: tuple[InProcess, Scripted]) -> None:
    app, _ = lumen
    exchange = await app.exchange("/v1/messages", BODY, headers={"anthropic-version": "2023-06-01"})
    assert exchange.headers["content-type"].startswith("text/event-stream")
    events = _events(exchange.body)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert events[5][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 12, "output_tokens": 5},
    }


async def test_refusals_keep_their_status_and_headers(tmp_path: Path) -> None:
    config = {
        "models": [model("priced", ECHO, price={"input": 1000, "output": 1000}), model("free", ECHO)],
        "billing": {"default_pool": {"max": 0, "starting": 0, "refresh": 0}},
        "rate_limits": {"default": {"principal": {"rpm": 1}}},
    }
    hello: Any = [{"role": "user", "content": "hi"}]
    async with in_process(tmp_path, config) as lumen:
        client = sdk(lumen)
        with pytest.raises(anthropic.RateLimitError) as broke:
            await client.messages.create(model="priced", max_tokens=5, messages=hello)
        assert isinstance(broke.value.body, dict) and broke.value.body["error"]["type"] == "rate_limit_error"
        assert broke.value.response.headers["x-should-retry"] == "false"
        # count_tokens spends nothing: neither coins (the pool is empty) nor the one request a minute.
        counted = await client.messages.count_tokens(model="priced", messages=hello)
        assert counted.input_tokens > 0
        await client.messages.create(model="free", max_tokens=5, messages=hello)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model="free", max_tokens=5, messages=hello)
        headers = limited.value.response.headers
        assert "retry-after" in headers and headers["x-ratelimit-limit-requests"] == "1"


CASES = [
    (stage, kind, stream)
    for stage in STAGES
    for kind in KINDS
    for stream in (False, True)
    if stream or stage != "mid_stream"
]


@pytest.mark.parametrize(
    ("stage", "kind", "stream"), CASES, ids=[f"{s}-{k}-{'stream' if st else 'unary'}" for s, k, st in CASES]
)
async def test_a_backend_fault_leaves_nothing_behind(
    lumen: tuple[InProcess, Scripted], stage: str, kind: str, stream: bool
) -> None:
    """The pipeline's fault matrix (tests/gateway/test_faults.py) through the Messages surface:
    the translation holds nothing of its own, and its errors are Anthropic's."""
    app, scripted = lumen
    scripted.disconnect = asyncio.Event()
    scripted.fault = Fault(stage, kind)
    request_id = f"msg-{stage}-{kind}-{stream}"
    exchange = await app.exchange(
        "/v1/messages", {**BODY, "stream": stream}, request_id=request_id, disconnect=scripted.disconnect
    )
    scripted.fault = None
    await _check_nothing_left(app, request_id)
    if kind == "disconnect":
        assert scripted.cancelled == 1, "the backend's work was not cancelled when the client left"
    elif exchange.status is not None and exchange.status != 200:
        assert exchange.json()["type"] == "error", exchange.body
        assert exchange.json()["error"]["type"] in ("api_error", "overloaded_error")
