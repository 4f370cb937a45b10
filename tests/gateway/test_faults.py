"""Fault injection over the whole call pipeline: nothing a call acquires outlives it.

For every stage of a call (body parse, admission, lease, upstream connect, first byte, mid-stream,
settlement), streaming and not, each kind of fault (an exception, a cancellation, a client
disconnect, an upstream failure) is injected once. After quiescence: no endpoint lease or in-flight
count, no coin hold and no concurrency slot remains; the request has exactly one usage record and,
when it cost anything, exactly one charge per pool; the ledger audit is clean. On the memory store
and on Redis.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from lumen.api import v1
from lumen.billing.audit import audit_all
from lumen.gateway.lease import Attempts, Lease
from lumen.store.tables import coin_ledger, usage_records
from lumen.upstream.registry import Model
from tests.gateway.scripted import KINDS, STAGES, Fault, Scripted
from tests.inprocess import REDIS_URL, InProcess, in_process

PIPELINE_STAGES = ("body_parse", "admission", "lease", "settlement")
CONFIG: dict[str, Any] = {
    "models": [
        {
            "name": "m",
            "endpoints": [{"type": "local", "engine": "echo"}],
            "price": {"input": 1000, "output": 2000},
        }
    ],
    "billing": {"default_pool": {"max": 1000, "refresh": 0}},
    # One request in flight per user: a slot that leaked would refuse the next call.
    "rate_limits": {"default": {"principal": {"concurrent": 1}}},
}
BODY = {"model": "m", "messages": [{"role": "user", "content": "count to three"}], "max_tokens": 50}
_ids = itertools.count()


@pytest.fixture(params=["memory", "redis"])
async def lumen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[InProcess, Scripted]]:
    async with in_process(tmp_path, CONFIG, redis=request.param == "redis") as lumen:
        scripted = Scripted()
        for endpoint in lumen.state.registry.endpoints():
            endpoint.backend = scripted
        yield lumen, scripted


def _inject(lumen: InProcess, scripted: Scripted, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """Routes the pipeline's own stages through `scripted.stage` (the backend's stages are its own)."""
    state = lumen.state
    if stage == "body_parse":
        original_read = v1.read_json_object

        async def read(*args: Any) -> dict[str, Any]:
            body = await original_read(*args)
            await scripted.stage("body_parse", blocks=False)
            return body

        monkeypatch.setattr(v1, "read_json_object", read)
    elif stage == "admission":
        limiter = state.gate._limiter
        original_acquire = limiter.check_and_acquire

        async def acquire(*args: Any, **kwargs: Any) -> Any:
            await scripted.stage("admission", blocks=False)  # the coins are held by now
            return await original_acquire(*args, **kwargs)

        monkeypatch.setattr(limiter, "check_and_acquire", acquire)
    elif stage == "lease":
        router = state.pipeline.router
        original_lease = router.lease

        def lease(model: Model, attempts: Attempts) -> Lease:
            scripted.stage_now("lease")
            return original_lease(model, attempts)

        monkeypatch.setattr(router, "lease", lease)
    elif stage == "settlement":
        bank = state.bank
        original_finish = bank.finish
        once = [True]

        async def finish(*args: Any, **kwargs: Any) -> Any:
            if once[0]:
                once[0] = False
                await scripted.stage("settlement", blocks=False)
            return await original_finish(*args, **kwargs)

        monkeypatch.setattr(bank, "finish", finish)


async def _quiescent(lumen: InProcess) -> None:
    state = lumen.state
    for _ in range(500):
        busy = state.pipeline.holding or state.pipeline.settling
        if not busy and all(e.in_flight == 0 for e in state.registry.endpoints()):
            break
        await asyncio.sleep(0.01)
    assert state.pipeline.holding == 0 and state.pipeline.settling == 0
    assert [e.in_flight for e in state.registry.endpoints()] == [0]


async def _check_nothing_left(lumen: InProcess, request_id: str) -> None:
    await _quiescent(lumen)
    state = lumen.state
    principal = await state.authenticate(f"Bearer {lumen.key}")
    view = await state.bank.balance(principal.id, params=state.gate.pool_params(principal.groups))
    assert view.reserved_micro == 0, "a coin hold outlived its request"
    await state.recorder.flush()
    await state.bank.flush()
    async with state.engine.connect() as conn:
        records = (
            await conn.execute(select(usage_records).where(usage_records.c.request_id == request_id))
        ).all()
        charges = await conn.scalar(
            select(func.count()).where(coin_ledger.c.request_id == request_id, coin_ledger.c.kind == "charge")
        )
    assert len(records) == 1, f"{len(records)} usage records for one request"
    assert charges == (1 if records[0].cost_micro > 0 else 0)
    redis_url = REDIS_URL if state.settings.server.redis_url is not None else None
    found = await audit_all(
        state.engine, redis_url=redis_url, redis_prefix=state.settings.server.redis_prefix
    )
    assert found.discrepancies == []
    # The concurrency slot (limit 1) is free again, and the endpoint serves: a plain call answers.
    lumen_scripted = state.registry.endpoints()[0].backend
    assert isinstance(lumen_scripted, Scripted)
    fault, lumen_scripted.fault = lumen_scripted.fault, None
    state.registry.endpoints()[0].record_success()  # an injected upstream failure marked it down
    try:
        again = await lumen.exchange("/v1/chat/completions", BODY)
        assert again.status == 200, again.body
    finally:
        lumen_scripted.fault = fault
    await _quiescent(lumen)


async def _run(lumen: InProcess, scripted: Scripted, stream: bool) -> tuple[str, Any]:
    request_id = f"fault-{next(_ids)}"
    scripted.disconnect = asyncio.Event()
    exchange = await lumen.exchange(
        "/v1/chat/completions",
        {**BODY, "stream": stream},
        request_id=request_id,
        disconnect=scripted.disconnect,
    )
    return request_id, exchange


# A non-streaming answer has no middle: that stage exists for streams only.
CASES = [
    (stage, kind, stream)
    for stage in (*STAGES, *PIPELINE_STAGES)
    for kind in KINDS
    for stream in (False, True)
    if stream or stage != "mid_stream"
]


@pytest.mark.parametrize(
    ("stage", "kind", "stream"),
    CASES,
    ids=[f"{s}-{k}-{'stream' if st else 'unary'}" for s, k, st in CASES],
)
async def test_a_fault_at_any_stage_leaves_nothing_behind(
    lumen: tuple[InProcess, Scripted], monkeypatch: pytest.MonkeyPatch, stage: str, kind: str, stream: bool
) -> None:
    app, scripted = lumen
    _inject(app, scripted, monkeypatch, stage)
    scripted.fault = Fault(stage, kind)
    request_id, exchange = await _run(app, scripted, stream)
    scripted.fault = None
    await _check_nothing_left(app, request_id)
    if kind == "disconnect" and stage in STAGES:
        assert scripted.cancelled == 1, "the backend's work was not cancelled when the client left"
    if kind == "exception" and exchange.status is not None:
        assert exchange.status in (200, 500)  # 200: the stream had started; the error is in-band
