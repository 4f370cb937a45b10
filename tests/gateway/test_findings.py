"""The issue's findings, each a test through the HTTP surface (in process): money that cannot be
drained, output caps that are sent as reserved, refusals that cost no request rate, keep-alives
before the upstream answers, settlement before the last byte, and 503 for unreachable backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from lumen.billing.pools import MICRO
from lumen.store.tables import coin_ledger, usage_records
from tests.gateway.scripted import Scripted
from tests.inprocess import InProcess, in_process

PRICE = {"input": 1000, "output": 2000}  # coins per million tokens: 1 and 2 thousandths a token
MESSAGES = [{"role": "user", "content": "hello"}]


def _config(pool: float = 1000, **extra: Any) -> dict[str, Any]:
    return {
        "models": [{"name": "m", "endpoints": [{"type": "local", "engine": "echo"}], "price": PRICE}],
        "billing": {"default_pool": {"max": pool, "refresh": 0}},
        **extra,
    }


@pytest.fixture
async def scripted() -> Scripted:
    return Scripted()


async def _start(tmp_path: Path, scripted: Scripted, config: dict[str, Any]) -> AsyncIterator[InProcess]:
    async with in_process(tmp_path, config) as lumen:
        for endpoint in lumen.state.registry.endpoints():
            endpoint.backend = scripted
        yield lumen


@pytest.fixture
async def lumen(tmp_path: Path, scripted: Scripted) -> AsyncIterator[InProcess]:
    async for running in _start(tmp_path, scripted, _config()):
        yield running


async def _balance(lumen: InProcess) -> Any:
    state = lumen.state
    principal = await state.authenticate(f"Bearer {lumen.key}")
    return await state.bank.balance(principal.id, params=state.gate.pool_params(principal.groups))


def _events(body: bytes) -> list[Any]:
    return [
        "[DONE]" if block == b"data: [DONE]" else orjson.loads(block[6:])
        for block in body.split(b"\n\n")
        if block.startswith(b"data: ")
    ]


async def test_a_stream_without_max_tokens_sends_the_cap_it_reserved(
    lumen: InProcess, scripted: Scripted
) -> None:
    """The finding: 4.1 coins reserved for the default cap, no cap sent, 60 MB relayed."""
    default = lumen.state.settings.billing.default_output_tokens
    response = await lumen.exchange(
        "/v1/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True}
    )
    assert response.status == 200
    assert scripted.bodies[-1]["max_tokens"] == default


async def test_a_client_cap_is_sent_in_the_field_the_client_used(
    lumen: InProcess, scripted: Scripted
) -> None:
    body = {"model": "m", "messages": MESSAGES, "max_completion_tokens": 77}
    assert (await lumen.exchange("/v1/chat/completions", body)).status == 200
    assert scripted.bodies[-1]["max_completion_tokens"] == 77 and "max_tokens" not in scripted.bodies[-1]


async def test_a_backend_that_ignores_the_cap_is_cut_off_at_it(lumen: InProcess, scripted: Scripted) -> None:
    scripted.ignore_cap = True
    before = await _balance(lumen)
    body = {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 20}
    response = await asyncio.wait_for(lumen.exchange("/v1/chat/completions", body), 30)
    events = _events(response.body)
    assert events[-1] == "[DONE]"
    finish = [c["finish_reason"] for e in events if isinstance(e, dict) for c in e.get("choices", ())]
    assert finish[-1] == "length"
    assert scripted.closed_streams == 1
    await lumen.state.recorder.flush()
    async with lumen.state.engine.connect() as conn:
        record = (await conn.execute(select(usage_records).order_by(usage_records.c.id.desc()))).first()
    assert record is not None and record.completion_tokens <= 20
    after = await _balance(lumen)
    assert before.balance_micro - after.balance_micro == record.cost_micro


async def test_hard_mode_lowers_the_cap_to_what_the_pool_can_pay(tmp_path: Path, scripted: Scripted) -> None:
    # 0.5 coins: the prompt (~10 tokens) plus at most ~245 output tokens at 2,000 coins a million.
    async for lumen in _start(tmp_path, scripted, _config(pool=0.5)):
        body = {"model": "m", "messages": MESSAGES, "max_tokens": 4000}
        response = await lumen.exchange("/v1/chat/completions", body)
        assert response.status == 200, response.body
        sent = scripted.bodies[-1]["max_tokens"]
        assert lumen.state.settings.billing.min_output_tokens <= sent < 250
        assert (await _balance(lumen)).reserved_micro == 0


async def test_below_the_minimum_output_the_pool_refuses(tmp_path: Path, scripted: Scripted) -> None:
    # 0.00002 coins pay for the prompt and not for 32 output tokens.
    async for lumen in _start(tmp_path, scripted, _config(pool=0.00002)):
        response = await lumen.exchange("/v1/chat/completions", {"model": "m", "messages": MESSAGES})
        assert response.status == 429 and response.json()["error"]["code"] == "insufficient_quota"
        assert scripted.bodies == []


async def test_a_refusal_for_coins_spends_no_request_rate(tmp_path: Path, scripted: Scripted) -> None:
    config = _config(pool=0, rate_limits={"default": {"principal": {"rpm": 2}}})
    async for lumen in _start(tmp_path, scripted, config):
        body = {"model": "m", "messages": MESSAGES}
        for _ in range(3):
            refused = await lumen.exchange("/v1/chat/completions", body)
            assert refused.json()["error"]["code"] == "insufficient_quota"
        state = lumen.state
        principal = await state.authenticate(f"Bearer {lumen.key}")
        params = state.gate.pool_params(principal.groups)
        await state.bank.grant(principal.id, 10 * MICRO, params=params, actor="test")
        served = await lumen.exchange("/v1/chat/completions", body)
        assert served.status == 200, served.body


async def test_a_stream_gets_keepalives_while_the_upstream_has_not_answered(
    tmp_path: Path, scripted: Scripted
) -> None:
    scripted.open_delay = 1.0
    async for lumen in _start(tmp_path, scripted, _config(routing={"keepalive_interval": 0.1})):
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        response = await lumen.exchange("/v1/chat/completions", body)
        assert response.status == 200
        assert response.chunks[0] == b": keep-alive\n\n"
        assert _events(response.body)[-1] == "[DONE]"


async def test_a_stream_is_settled_before_its_last_bytes(lumen: InProcess) -> None:
    seen: list[tuple[int, int]] = []

    async def on_chunk(chunk: bytes) -> None:
        if b"[DONE]" in chunk:
            view = await _balance(lumen)
            seen.append((view.reserved_micro, view.balance_micro))

    start = (await _balance(lumen)).balance_micro
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    response = await lumen.exchange("/v1/chat/completions", body, on_chunk=on_chunk)
    assert response.status == 200
    assert len(seen) == 1
    reserved, balance = seen[0]
    assert reserved == 0 and balance < start  # charged, hold released, before [DONE] was sent


async def test_every_endpoint_refusing_connections_answers_503(tmp_path: Path) -> None:
    config = _config()
    config["models"][0]["endpoints"] = [
        {"type": "openai", "url": "http://127.0.0.1:9/v1"},
        {"type": "openai", "url": "http://127.0.0.1:7/v1"},
    ]
    async with in_process(tmp_path, config) as lumen:
        body = {"model": "m", "messages": MESSAGES}
        for stream in (False, True):
            response = await lumen.exchange("/v1/chat/completions", {**body, "stream": stream})
            assert response.status == 503, response.body
            assert response.json()["error"]["code"] == "model_unavailable"
            assert "127.0.0.1" not in response.body.decode()


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": "Looks up a record in the institution's catalogue by its identifier. " * 3,
            "parameters": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "fields": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["id"],
            },
        },
    }
    for i in range(20)
]


async def test_tools_cannot_drain_a_pool_past_one_requests_overrun(
    tmp_path: Path, scripted: Scripted
) -> None:
    """The finding: ten requests with 20 tool definitions each used 130.75 coins of a 1-coin pool
    and 129.75 were forgiven, again after every refill. Now the tools are in the estimate (about
    three coins here, so a 1-coin pool would refuse them at once), and what a backend reports
    beyond the hold is a debt that refuses the next requests."""
    scripted.prompt_tokens = 6000  # the backend counts more than Lumen estimated
    async for lumen in _start(tmp_path, scripted, _config(pool=5)):
        statuses = []
        for _ in range(10):
            body = {"model": "m", "messages": MESSAGES, "tools": TOOLS, "max_tokens": 10}
            statuses.append((await lumen.exchange("/v1/chat/completions", body)).status)
        assert statuses[0] == 200 and statuses.count(200) <= 2, statuses
        assert set(statuses[statuses.index(429) :]) == {429}
        view = await _balance(lumen)
        one_request = 6000 * 1000 + 10 * 2000  # micro-coins at PRICE
        assert -one_request <= view.balance_micro  # at most one overrun owed, never forgiven
        await lumen.state.bank.flush()
        async with lumen.state.engine.connect() as conn:
            notes = [n for (n,) in await conn.execute(select(coin_ledger.c.note)) if n]
        assert not any("forgiven" in note for note in notes)


async def test_a_backends_error_event_reaches_the_client_without_its_addresses(
    lumen: InProcess, scripted: Scripted
) -> None:
    scripted.error_event = {"message": "upstream http://10.3.0.7:8000/v1 failed (gpu-7.cluster.internal)"}
    response = await lumen.exchange(
        "/v1/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True}
    )
    text = response.body.decode()
    assert '"error"' in text and "10.3.0.7" not in text and "gpu-7" not in text
