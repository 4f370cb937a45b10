"""Endpoint health converges across three Lumen processes: one upstream of two goes down, every
process stops routing to it and says so in /readyz and /metrics; it comes back, and every process
routes to it again. Each process learns an endpoint's health by its own active checks
(`routing.health_interval`), so the test polls until the three agree, with a generous deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from tests.cluster import Cluster, lumen_cluster
from tests.fakes.upstream import FakeUpstream
from tests.support import TEST_KEY, model, upstream

METRICS_TOKEN = "test-metrics-token"
DEADLINE = 120.0
"""Longest any wait may take before the test fails; a guard against hanging, not a measurement."""
UP_METRIC = re.compile(r"^lumen_endpoint_up\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)


def _config(a: FakeUpstream, b: FakeUpstream) -> dict[str, Any]:
    return {
        "server": {"metrics_token": METRICS_TOKEN},
        # Checked often; a failed endpoint stays down for at least a second, longer than the
        # interval, so while its checks keep failing no request half-opens it.
        "routing": {"health_interval": 0.2, "failure_backoff": 1.0, "max_backoff": 5.0},
        "models": [model("duo", upstream(a.url), upstream(b.url))],
    }


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def _view(http: httpx.AsyncClient, url: str) -> tuple[int, str, dict[str, float]]:
    """What one process says: /readyz's status and backends line, and `lumen_endpoint_up` by URL."""
    ready = await http.get(url + "/readyz")
    metrics = await http.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    metrics.raise_for_status()
    up = {}
    for found in UP_METRIC.finditer(metrics.text):
        endpoint = re.search(r'endpoint="([^"]*)"', found.group("labels"))
        assert endpoint is not None, found.group(0)
        up[endpoint.group(1)] = float(found.group("value"))
    return ready.status_code, ready.json()["checks"]["backends"], up


def _agreement(
    http: httpx.AsyncClient, cluster: Cluster, a: FakeUpstream, b: FakeUpstream, a_up: bool, b_up: bool
) -> Callable[[], Awaitable[bool]]:
    """True once every process reports exactly this health, in /readyz and in /metrics."""
    count = a_up + b_up
    expected = (
        200 if count else 503,
        f"{count} of 2 up" if count else "none up",
        {a.url: float(a_up), b.url: float(b_up)},
    )

    async def check() -> bool:
        views = await asyncio.gather(*(_view(http, url) for url in cluster.urls))
        return all(view == expected for view in views)

    return check


async def _spread(
    http: httpx.AsyncClient, cluster: Cluster, tag: str, upstreams: list[FakeUpstream]
) -> list[set[int]]:
    """Six requests to each process, one after the other, streams and not; every one must be
    answered in full. Returns, per upstream, the processes that sent it one of these requests."""
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    body = {"model": "duo", "messages": [{"role": "user", "content": "hi"}]}
    for process, url in enumerate(cluster.urls):
        for i in range(6):
            request = {**headers, "X-Request-ID": f"{tag}-{process}-{i}"}
            response = await http.post(
                url + "/v1/chat/completions", headers=request, json={**body, "stream": i % 2 == 1}
            )
            assert response.status_code == 200, response.text
            assert ("data: [DONE]" in response.text) if i % 2 else response.json()["choices"]
    return [
        {
            int(h["x-request-id"].split("-")[-2])
            for h in fake.headers
            if h.get("x-request-id", "").startswith(tag + "-")
        }
        for fake in upstreams
    ]


async def _scenario(cluster: Cluster, a: FakeUpstream, b: FakeUpstream) -> None:
    everyone = {0, 1, 2}
    async with httpx.AsyncClient(timeout=60) as http:
        await until(_agreement(http, cluster, a, b, True, True), "every process to see both endpoints up")
        assert await _spread(http, cluster, "both", [a, b]) == [everyone, everyone]

        b.mode = "status"  # every request, health checks included, answers 500
        await until(_agreement(http, cluster, a, b, True, False), "every process to mark b down")
        asked = len(b.requests)
        assert await _spread(http, cluster, "b-down", [a, b]) == [everyone, set()]
        assert len(b.requests) == asked  # not even tried first: no process routes to it

        a.mode = "status"
        await until(_agreement(http, cluster, a, b, False, False), "every process to be not ready")

        a.mode = b.mode = "ok"
        await until(_agreement(http, cluster, a, b, True, True), "every process to see both back")
        assert await _spread(http, cluster, "back", [a, b]) == [everyone, everyone]


def test_endpoint_health_converges_across_three_processes(
    tmp_path: Path, pg_url: str, fake: FakeUpstream, fake2: FakeUpstream
) -> None:
    with lumen_cluster(tmp_path, _config(fake, fake2), count=3, database_url=pg_url) as cluster:
        asyncio.run(_scenario(cluster, fake, fake2))
