"""A client that leaves a non-streaming request, over real sockets: the backend's request is
cancelled at once (it no longer runs into the 600 s timeout), and the usage record says 499."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from sqlalchemy import select

from lumen.store.tables import usage_records
from tests.fakes.upstream import FakeUpstream
from tests.support import model, running_lumen, upstream

DEADLINE = 30.0
"""Longest a wait may take before the test fails: a guard against hanging, not a measurement."""


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_leaving_a_non_streaming_request_cancels_the_backend_and_records_499(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.mode = "hang"
    config = {"models": [model("m", upstream(fake.url))]}
    with running_lumen(tmp_path, config) as lumen:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        try:
            httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=body, timeout=0.5)
        except httpx.TimeoutException:
            pass  # the client gives up and closes its connection
        _wait_for(lambda: "cancelled" in fake.events, "the backend to see the request cancelled")
        endpoint = lumen.state.registry.endpoints()[0]
        _wait_for(lambda: endpoint.in_flight == 0, "the lease to be released")

        async def statuses() -> list[int]:
            await lumen.state.recorder.flush()
            async with lumen.state.engine.connect() as conn:
                return [row.status for row in await conn.execute(select(usage_records))]

        assert lumen.run(statuses()) == [499]
