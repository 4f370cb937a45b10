"""The Responses stream when things go wrong: a backend failing after the start, a silent backend,
a client that leaves. Nothing a call acquires outlives it, and nothing half-made is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from lumen.store.tables import stored_responses
from tests.gateway.scripted import Fault, Scripted
from tests.gateway.test_faults import CONFIG, _check_nothing_left
from tests.inprocess import InProcess, in_process

BODY = {"model": "m", "input": "count to three", "max_output_tokens": 50, "stream": True}


@pytest.fixture
async def lumen(tmp_path: Path) -> AsyncIterator[tuple[InProcess, Scripted]]:
    config = {**CONFIG, "routing": {"keepalive_interval": 0.05}}
    async with in_process(tmp_path, config) as lumen:
        scripted = Scripted()
        for endpoint in lumen.state.registry.endpoints():
            endpoint.backend = scripted
        yield lumen, scripted


def _events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event line, data) of each event; comments are left out."""
    events = []
    for block in body.decode().split("\n\n"):
        if block.startswith("event: "):
            name, data = block.split("\n", 1)
            events.append((name[len("event: ") :], orjson.loads(data[len("data: ") :])))
    return events


async def _stored(lumen: InProcess) -> int:
    async with lumen.state.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(stored_responses))
    assert isinstance(count, int)
    return count


async def test_a_backend_failing_after_the_start_ends_in_response_failed(
    lumen: tuple[InProcess, Scripted],
) -> None:
    app, scripted = lumen
    scripted.error_event = {"message": "The model crashed.", "type": "server_error", "code": "model_error"}
    exchange = await app.exchange("/v1/responses", BODY, request_id="resp-failed")
    assert exchange.status == 200
    events = _events(exchange.body)
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all("error" not in data for _, data in events), "a top-level error key makes the SDK raise"
    name, last = events[-1]
    assert name == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"]
    assert b"[DONE]" not in exchange.body
    assert await _stored(app) == 0
    await _check_nothing_left(app, "resp-failed")


async def test_keep_alive_comments_pass_through_a_silent_start(lumen: tuple[InProcess, Scripted]) -> None:
    app, scripted = lumen
    scripted.open_delay = 0.3
    exchange = await app.exchange("/v1/responses", BODY)
    assert b"\n: keep-alive\n\n" in exchange.body
    names = [name for name, _ in _events(exchange.body)]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"


async def test_a_client_leaving_mid_stream_leaves_nothing_behind(lumen: tuple[InProcess, Scripted]) -> None:
    app, scripted = lumen
    scripted.disconnect = asyncio.Event()
    scripted.fault = Fault("mid_stream", "disconnect")
    exchange = await app.exchange(
        "/v1/responses", BODY, request_id="resp-gone", disconnect=scripted.disconnect
    )
    scripted.fault = None
    assert exchange.status == 200
    names = [name for name, _ in _events(exchange.body)]
    assert "response.output_text.delta" in names and "response.completed" not in names
    assert scripted.cancelled == 1, "the backend's work was not cancelled when the client left"
    await _check_nothing_left(app, "resp-gone")
    assert await _stored(app) == 0


async def test_a_client_leaving_before_a_stored_answer_stores_nothing(
    lumen: tuple[InProcess, Scripted],
) -> None:
    app, scripted = lumen
    scripted.disconnect = asyncio.Event()
    scripted.fault = Fault("first_byte", "disconnect")
    exchange = await app.exchange(
        "/v1/responses",
        {**BODY, "stream": False},
        request_id="resp-unary-gone",
        disconnect=scripted.disconnect,
    )
    scripted.fault = None
    assert exchange.status in (None, 499)
    await _check_nothing_left(app, "resp-unary-gone")
    assert await _stored(app) == 0


async def test_a_response_that_cannot_be_stored_ends_in_response_failed(
    lumen: tuple[InProcess, Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lumen.api.responses import store

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database gone")

    app, _ = lumen
    monkeypatch.setattr(store, "save", broken)
    exchange = await app.exchange("/v1/responses", BODY, request_id="resp-unstored")
    name, last = _events(exchange.body)[-1]
    assert name == "response.failed"
    assert last["response"]["error"]["message"] == "The response could not be stored."
    await _check_nothing_left(app, "resp-unstored")


async def test_items_broken_off_by_a_failure_are_incomplete(lumen: tuple[InProcess, Scripted]) -> None:
    app, scripted = lumen
    scripted.error_event = {"message": "The model crashed.", "type": "server_error", "code": "model_error"}
    exchange = await app.exchange("/v1/responses", BODY)
    done = [data for name, data in _events(exchange.body) if name == "response.output_item.done"]
    assert [d["item"]["status"] for d in done] == ["incomplete"]
    assert done[0]["item"]["content"][0]["text"] == "one"
