"""Coins through a live Lumen: hard budgets hold under concurrency, costs are recorded exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.support import ECHO, RunningLumen, model, running_lumen

# One micro-coin per output token; five echoed words with max_tokens 5 cost exactly what they
# reserve, so a pool of 50 micro-coins affords exactly ten requests.
PRICED = model("priced", ECHO, price={"input": 0, "output": 1})
BODY = {
    "model": "priced",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "one two three four five"}],
}
POOL_OF_TEN = {"billing": {"default_pool": {"max": "0.00005", "starting": "0.00005", "refresh": 0}}}


async def _burst(lumen: RunningLumen, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(headers=lumen.auth, limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(client.post(lumen.v1 + "/chat/completions", json=BODY) for _ in range(count))
        )


def _ledger_and_balance(lumen: RunningLumen) -> tuple[int, Any, list[Any]]:
    from lumen.billing.audit import audit
    from lumen.usage.queries import recent_usage

    lumen.run(lumen.state.recorder.flush())
    lumen.run(lumen.state.bank.flush())
    rows = lumen.run(recent_usage(engine=lumen.state.engine, limit=1000))
    principal = rows[0].principal
    params = lumen.state.gate.pool_params(())
    view = lumen.run(lumen.state.bank.balance(principal, params=params))
    return sum(r.cost_micro for r in rows), view, lumen.run(audit(lumen.state.engine))


def test_200_concurrent_requests_against_a_pool_that_affords_10(tmp_path: Path) -> None:
    with running_lumen(tmp_path, {**POOL_OF_TEN, "models": [PRICED]}) as lumen:
        answers = asyncio.run(_burst(lumen, 200))
        charged, view, discrepancies = _ledger_and_balance(lumen)
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 10 and statuses.count(429) == 190
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["x-should-retry"] == "false"
    assert charged == 50
    assert view.balance_micro == 0 and view.reserved_micro == 0
    assert discrepancies == []


def test_the_usage_record_carries_the_exact_cost(tmp_path: Path) -> None:
    config = {"models": [model("priced", ECHO, price={"input": 2, "output": 3})]}
    with running_lumen(tmp_path, config) as lumen:
        answer = httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=BODY).json()
        from lumen.usage.queries import recent_usage

        lumen.run(lumen.state.recorder.flush())
        row = lumen.run(recent_usage(engine=lumen.state.engine))[0]
    usage = answer["usage"]
    assert row.cost_micro == 2 * usage["prompt_tokens"] + 3 * usage["completion_tokens"]


def test_a_stream_cut_by_the_client_is_billed_for_what_was_generated(tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    body = {
        "model": "priced",
        "stream": True,
        "max_tokens": 40,
        "messages": [{"role": "user", "content": f"[[echo:slow:50]] {words}"}],
    }
    with running_lumen(tmp_path, {"models": [PRICED]}) as lumen:
        received = 0
        with httpx.stream(
            "POST", lumen.v1 + "/chat/completions", headers=lumen.auth, json=body, timeout=30
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                    received += 1
                    if received == 5:
                        break
        from lumen.usage.queries import recent_usage

        row = None
        for _ in range(100):  # the server notices the disconnect and settles on its own
            lumen.run(lumen.state.recorder.flush())
            rows = lumen.run(recent_usage(engine=lumen.state.engine))
            if rows:
                row = rows[0]
                break
            import time

            time.sleep(0.05)
        assert row is not None
        lumen.run(lumen.state.bank.flush())
        view = lumen.run(lumen.state.bank.balance(row.principal, params=lumen.state.gate.pool_params(())))
        from lumen.billing.audit import audit

        discrepancies = lumen.run(audit(lumen.state.engine))
    assert row.status == 499
    # One micro-coin per generated token: at least what the client saw, far less than the 40 asked.
    assert 5 <= row.completion_tokens < 40
    assert row.cost_micro == row.completion_tokens
    assert view.reserved_micro == 0  # the reservation was settled, not left hanging
    assert discrepancies == []


def test_a_keys_coin_cap_holds_on_top_of_its_owners_pool(tmp_path: Path) -> None:
    with running_lumen(tmp_path, {"models": [PRICED]}) as lumen:
        api = httpx.Client(base_url=lumen.url + "/api/admin", headers=lumen.auth)
        user = api.post("/users", json={"email": "capped@example.edu"}).json()
        created = api.post("/keys", json={"user_id": user["id"], "coin_cap": "0.00001"}).json()  # 10 micro
        assert created["coin_cap"] == "0.00001"
        headers = {"Authorization": f"Bearer {created['key']}"}
        statuses = [
            httpx.post(lumen.v1 + "/chat/completions", headers=headers, json=BODY).status_code
            for _ in range(3)
        ]
        uncapped = api.post("/keys", json={"user_id": user["id"]}).json()["key"]
        other = httpx.post(
            lumen.v1 + "/chat/completions", headers={"Authorization": f"Bearer {uncapped}"}, json=BODY
        )
        api.close()
    assert statuses == [200, 200, 429]  # 5 micro-coins each: the cap of 10 affords two
    assert other.status_code == 200  # the owner's pool still has coins; only the key is capped
