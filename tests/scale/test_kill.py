"""SIGKILL one of three Lumen processes (PostgreSQL + Redis) in the middle of the load.

With Redis, a call's usage record travels with its charge (`CoinBank.finish`): the Redis script
that charges the pool appends the movement and the record to the ledger outbox in one atomic step,
before the call's last byte is sent (src/lumen/gateway/pipeline.py), and the survivors drain the
dead process's entries. So every response a client saw complete, the victim's included, is both
charged and recorded: a kill loses neither. The test checks exactly that.

Coin movements are not write-behind in the process (src/lumen/billing/outbox.py): the Redis script
that charges a pool appends the movement to the ledger outbox in the same atomic step, and the
survivors drain the dead process's entries. So once the outbox is empty every live balance in Redis
equals its pool's balance in the database and the sum of its ledger (the check that failed when
the ledger rows waited in the victim's memory: Redis said 995.5 coins, the database 996.1).

Reservations and concurrency slots of the dead process are not settled by anyone; they must
expire (`billing.reservation_ttl`, `rate_limits.concurrency_ttl`, both short here) so that the
budget and the concurrency limit are whole again.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import func, select

from lumen.store.engine import create_engine
from lumen.store.tables import coin_ledger, coin_pools, usage_records
from tests.cluster import Cluster, lumen_cluster
from tests.fakes.upstream import FakeUpstream
from tests.support import TEST_KEY, model, upstream

REDIS_URL = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
METRICS_TOKEN = "test-metrics-token"
TTL = 5.0
"""Seconds of `billing.reservation_ttl` and `rate_limits.concurrency_ttl`."""
DEADLINE = 120.0
"""Longest any wait may take before the test fails; a guard against hanging, not a measurement."""
KILLED = 1
SURVIVORS = (0, 2)
ADA = "ada@example.edu"
MICRO = 1_000_000
# Output costs 10,000 micro-coins a token and input nothing: max_tokens 100 reserves exactly one
# coin, a complete answer (6 tokens from the fake) costs 60,000, and a stream cut before any text
# costs nothing.
PRICE = {"input": 0, "output": 10_000}
COST = 6 * 10_000
BODY = {"model": "priced", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**BODY, "stream": True}


class GatedUpstream(FakeUpstream):
    """The fake upstream, whose streams stop after their first chunk (the role, no text) while
    `gate` is closed: they are in flight, holding their reservations and slots, until it opens."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = threading.Event()
        self.gate.set()

    async def _stream(self, request: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
        await send(start)
        disconnected = asyncio.ensure_future(_disconnect(receive))
        try:
            chunks = self._chunks(request, path)
            for index, payload in enumerate(chunks):
                if disconnected.done():
                    self.events.append("cancelled")
                    return
                await send(
                    {"type": "http.response.body", "body": b"data: " + payload + b"\n\n", "more_body": True}
                )
                while index == 0 and not self.gate.is_set() and not disconnected.done():
                    await asyncio.wait({disconnected}, timeout=0.02)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            self.events.append("completed")
        finally:
            disconnected.cancel()


async def _disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class Sent:
    """One request as the client saw it."""

    request_id: str
    process: int
    stream: bool
    done: bool = False
    status: int | None = None
    complete: bool = False
    """The whole response arrived: a 200 body, or a stream ended by `[DONE]` with no error event."""
    first: asyncio.Event = field(default_factory=asyncio.Event)
    """A stream's status and first event arrived (or it ended)."""


class Client:
    """Requests to the cluster, each logged in `sent` with a request id of its own."""

    def __init__(self, http: httpx.AsyncClient, urls: list[str]) -> None:
        self.http = http
        self.urls = urls
        self.sent: list[Sent] = []

    def _new(self, process: int, key: str, stream: bool) -> tuple[Sent, dict[str, str]]:
        sent = Sent(f"req-{len(self.sent)}", process, stream)
        self.sent.append(sent)
        return sent, {"Authorization": f"Bearer {key}", "X-Request-ID": sent.request_id}

    async def unary(self, process: int, key: str = TEST_KEY) -> Sent:
        sent, headers = self._new(process, key, False)
        try:
            url = self.urls[process] + "/v1/chat/completions"
            response = await self.http.post(url, json=BODY, headers=headers)
            sent.status = response.status_code
            sent.complete = response.status_code == 200 and bool(response.json()["choices"])
        except httpx.TransportError:
            pass  # the process died under the request
        finally:
            sent.done = True
        return sent

    def stream(self, process: int, key: str = TEST_KEY) -> tuple[Sent, asyncio.Task[None]]:
        sent, headers = self._new(process, key, True)

        async def run() -> None:
            lines: list[str] = []
            try:
                url = self.urls[process] + "/v1/chat/completions"
                async with self.http.stream("POST", url, json=STREAM, headers=headers) as response:
                    sent.status = response.status_code
                    if response.status_code != 200:
                        await response.aread()
                        return
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            lines.append(line)
                            sent.first.set()
                sent.complete = lines[-1:] == ["data: [DONE]"] and not any('"error"' in x for x in lines)
            except httpx.TransportError:
                pass  # the process died under the stream
            finally:
                sent.done = True
                sent.first.set()

        return sent, asyncio.create_task(run())

    def completed_on(self, process: int) -> int:
        """Non-streaming requests completed by `process`."""
        return sum(1 for s in self.sent if s.process == process and s.complete and not s.stream)


async def until(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Polls `check` until it holds; fails after DEADLINE (a guard, not an assertion on time)."""
    end = time.monotonic() + DEADLINE
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the test Redis, whose keys are deleted afterwards."""
    client = redis_sync.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc!r} (required under CI=true)")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc!r}")
    prefix = f"lumen-test-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        for stale in client.scan_iter(prefix + "*"):
            client.delete(stale)
        client.close()


@pytest.fixture
def gated() -> Iterator[GatedUpstream]:
    server = GatedUpstream()
    server.start()
    yield server
    server.gate.set()
    server.stop()


def _config(prefix: str, fake: FakeUpstream) -> dict[str, Any]:
    return {
        "server": {"redis_prefix": prefix, "metrics_token": METRICS_TOKEN},
        "billing": {"reservation_ttl": TTL, "default_pool": {"max": 1000, "refresh": 0}},
        "rate_limits": {"concurrency_ttl": TTL, "default": {"principal": {"concurrent": 50}}},
        "groups": [
            {
                "name": "capped",
                "members": [ADA],
                "pool": {"max": 3, "refresh": 0},
                "rate_limits": {"principal": {"concurrent": 3}},
            }
        ],
        "models": [model("priced", upstream(fake.url), price=PRICE)],
    }


@dataclass
class Scene:
    """The running cluster and what the phases of the test share."""

    cluster: Cluster
    gated: GatedUpstream
    prefix: str
    http: httpx.AsyncClient
    redis: aioredis.Redis
    client: Client
    admin_id: int = 0
    ada_id: int = 0
    ada_key: str = ""
    flushed_before: set[str] = field(default_factory=set)
    """Request ids the victim had settled and flushed (its write queue was empty)."""
    in_flight_at_kill: set[str] = field(default_factory=set)

    @property
    def urls(self) -> list[str]:
        return self.cluster.urls

    @property
    def ada(self) -> str:
        return f"user:{self.ada_id}"

    async def admin_get(self, process: int, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        response = await self.http.get(self.urls[process] + path, headers=headers, params=params)
        response.raise_for_status()
        return response.json()

    async def pool(self, user_id: int) -> dict[str, Decimal]:
        """A user's pool as a survivor sees it (viewing a pool also releases its expired holds)."""
        view = await self.admin_get(SURVIVORS[0], "/api/admin/coins", user_id=user_id)
        return {name: Decimal(view[name]) for name in ("balance", "reserved", "available")}

    async def gauge(self, process: int, name: str) -> float:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        response = await self.http.get(self.urls[process] + "/metrics", headers=headers)
        response.raise_for_status()
        found = re.search(rf"^{name} (\S+)$", response.text, re.MULTILINE)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))


async def _meet_ada(scene: Scene) -> None:
    """Ada: a user whose whole pool (3 coins) and concurrency (3) the victim will hold."""
    admin = {"Authorization": f"Bearer {TEST_KEY}"}
    made = await scene.http.post(scene.urls[0] + "/api/admin/users", headers=admin, json={"email": ADA})
    scene.ada_id = made.json()["id"]
    key = await scene.http.post(
        scene.urls[0] + "/api/admin/keys", headers=admin, json={"user_id": scene.ada_id}
    )
    scene.ada_key = key.json()["key"]
    users = await scene.admin_get(0, "/api/admin/users")
    scene.admin_id = next(u["id"] for u in users if u["is_admin"])
    # Opened by a survivor, so the pool's starting balance is in its ledger, not the victim's.
    assert (await scene.pool(scene.ada_id))["balance"] == 3


async def _settle_and_flush(scene: Scene) -> None:
    """One request after the other, round robin, streams and not; then the victim's write queue
    runs empty: all it settled so far is committed."""
    client = scene.client
    for i in range(24):
        if i % 2:
            sent = await client.unary(i % 3)
        else:
            sent, task = client.stream(i % 3)
            await task
        assert sent.complete, sent

    async def drained() -> bool:
        return await scene.gauge(KILLED, "lumen_usage_queue") == 0

    await until(drained, "the victim's usage queue to empty")
    assert await scene.gauge(KILLED, "lumen_usage_dropped") == 0
    scene.flushed_before = {s.request_id for s in client.sent if s.process == KILLED}


async def _kill_mid_flight(scene: Scene) -> None:
    """Streams held in flight on every process (Ada's three on the victim), requests one after the
    other round robin, and SIGKILL in the middle of it."""
    client, prefix, ada = scene.client, scene.prefix, scene.ada
    scene.gated.gate.clear()
    ada_held = [client.stream(KILLED, scene.ada_key) for _ in range(3)]
    for sent, _ in ada_held:
        await asyncio.wait_for(sent.first.wait(), DEADLINE)
    # Read at once: the slots expire in real time (the holds only when the pool is next used).
    assert await scene.redis.zcard(f"{prefix}rl:{{{ada}}}p:c") == 3  # all her slots, on the victim
    holds = await scene.redis.hvals(f"{prefix}coins:{{{ada}}}:holds")
    assert sorted(int(v) for v in holds) == [MICRO] * 3  # and her whole pool
    held = [client.stream(i % 3) for i in range(6)]
    for sent, _ in ada_held + held:
        await asyncio.wait_for(sent.first.wait(), DEADLINE)
        assert sent.status == 200 and not sent.done, sent

    stop = asyncio.Event()

    async def load() -> None:
        i = 0
        while not stop.is_set():
            await client.unary(i % 3)
            i += 1

    loader = asyncio.create_task(load())
    before = client.completed_on(KILLED)
    await until(lambda: client.completed_on(KILLED) >= before + 6, "load on the victim")
    victim = scene.cluster.processes[KILLED]
    # No await between these two lines: the set is exactly what was in flight at the kill.
    scene.in_flight_at_kill = {s.request_id for s in client.sent if s.process == KILLED and not s.done}
    victim.kill()  # SIGKILL
    await asyncio.to_thread(victim.wait, 30)

    after = {p: client.completed_on(p) for p in SURVIVORS}
    scene.gated.gate.set()
    await asyncio.gather(*(task for _, task in held + ada_held))
    await until(lambda: all(client.completed_on(p) >= after[p] + 6 for p in SURVIVORS), "survivors' load")
    stop.set()
    await loader
    for sent, _ in held:
        assert sent.complete == (sent.process != KILLED), sent
    assert not any(sent.complete for sent, _ in ada_held)


async def _holds_expire(scene: Scene) -> None:
    """The victim's reservations and slots expire: Ada's pool and concurrency are whole again."""

    async def free(user_id: int) -> bool:
        pool = await scene.pool(user_id)
        return pool["reserved"] == 0 and pool["available"] == pool["balance"]

    await until(lambda: free(scene.ada_id), "Ada's reservations to expire")
    assert (await scene.pool(scene.ada_id))["balance"] == 3  # the victim charged her nothing
    await until(lambda: free(scene.admin_id), "the admin's reservations to expire")

    # Three streams at once on the survivors, each holding a third of her pool and one of her
    # slots. Should a slot still be held, some are refused: those admitted are cut before any text
    # (free) and the three are tried again.
    scene.gated.gate.clear()
    attempt: list[tuple[Sent, asyncio.Task[None]]] = []

    async def three_at_once() -> bool:
        nonlocal attempt
        attempt = [scene.client.stream(SURVIVORS[i % 2], scene.ada_key) for i in range(3)]
        for sent, _ in attempt:
            await asyncio.wait_for(sent.first.wait(), DEADLINE)
        if all(sent.status == 200 and not sent.done for sent, _ in attempt):
            return True
        for _, task in attempt:
            task.cancel()
        await asyncio.gather(*(task for _, task in attempt), return_exceptions=True)
        return False

    await until(three_at_once, "three of Ada's streams admitted at once")
    fourth = await scene.client.unary(SURVIVORS[0], scene.ada_key)
    assert fourth.status == 429  # her pool and her slots are all in use again
    scene.gated.gate.set()
    await asyncio.gather(*(task for _, task in attempt))
    assert all(sent.complete for sent, _ in attempt)

    async def settled() -> bool:
        pool = await scene.pool(scene.ada_id)
        return pool["balance"] == Decimal(3 * MICRO - 3 * COST) / MICRO and pool["reserved"] == 0

    await until(settled, "Ada's three requests to settle")
    # No slot stays held: each concurrency key empties, then expires.
    for principal in (scene.ada, f"user:{scene.admin_id}"):
        key = f"{scene.prefix}rl:{{{principal}}}p:c"

        async def gone(key: str = key) -> bool:
            return await scene.redis.exists(key) == 0

        await until(gone, f"{key} to expire")


async def _scenario(cluster: Cluster, gated: GatedUpstream, prefix: str) -> Scene:
    rds = aioredis.Redis.from_url(REDIS_URL)
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as http:
            scene = Scene(cluster, gated, prefix, http, rds, Client(http, cluster.urls))
            await _meet_ada(scene)
            await _settle_and_flush(scene)
            await _kill_mid_flight(scene)
            await _holds_expire(scene)
            return scene
    finally:
        await rds.aclose()


async def _read_database(url: str) -> tuple[list[Any], list[Any], dict[str, int], dict[str, int]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            usage = list(await conn.execute(select(usage_records)))
            charges = list(await conn.execute(select(coin_ledger).where(coin_ledger.c.kind == "charge")))
            pools = {r.principal: r.balance_micro for r in await conn.execute(select(coin_pools))}
            sums = select(coin_ledger.c.principal, func.sum(coin_ledger.c.amount_micro)).group_by(
                coin_ledger.c.principal
            )
            ledger = {p: int(total) for p, total in await conn.execute(sums)}
    finally:
        await engine.dispose()
    return usage, charges, pools, ledger


def _live_balances(prefix: str, principals: list[str]) -> tuple[int, dict[str, int]]:
    """The ledger outbox's length and each pool's balance in Redis (`billing/redis_store.py`)."""
    client = redis_sync.Redis.from_url(REDIS_URL)
    try:
        outbox = int(client.llen(f"{prefix}coins:outbox"))
        balances = {p: int(client.hget(f"{prefix}coins:{{{p}}}:pool", "bal")) for p in principals}  # type: ignore[arg-type]
    finally:
        client.close()
    return outbox, balances


def test_sigkill_loses_no_flushed_usage_and_leaves_no_reservation_stuck(
    tmp_path: Path, pg_url: str, redis_prefix: str, gated: GatedUpstream
) -> None:
    config = _config(redis_prefix, gated)
    with lumen_cluster(tmp_path, config, count=3, database_url=pg_url, redis_url=REDIS_URL) as cluster:
        scene = asyncio.run(_scenario(cluster, gated, redis_prefix))
    # The survivors stopped gracefully: everything they settled is written, and they drained the
    # ledger outbox, the victim's movements included.
    audit = cluster.cli("audit")
    usage, charges, pools, ledger = asyncio.run(_read_database(pg_url))
    admin = f"user:{scene.admin_id}"
    outbox, live = _live_balances(redis_prefix, [admin, scene.ada])
    sent = {s.request_id: s for s in scene.client.sent}
    recorded = {r.request_id: r for r in usage}

    assert len(recorded) == len(usage), "a usage record was written twice"
    assert set(recorded) <= set(sent)
    # Whatever the victim had committed survived its death.
    assert scene.flushed_before <= set(recorded)
    # Every response a survivor completed is recorded, with its cost, and charged exactly once.
    served = [s for s in sent.values() if s.process in SURVIVORS and s.complete]
    assert [s for s in served if s.request_id not in recorded] == []
    assert all(recorded[s.request_id].status == 200 for s in served)
    assert all(recorded[s.request_id].cost_micro == COST for s in served)
    charged = [(c.principal, c.request_id) for c in charges]
    assert len(set(charged)) == len(charged), "a request was charged twice"
    by_request = {c.request_id: c.amount_micro for c in charges}
    assert [s for s in served if by_request.get(s.request_id) != -COST] == []
    # Every response the victim completed is recorded and charged, though it died before its
    # recorder could flush: the record travelled with the charge, in the outbox.
    completed = [s for s in scene.client.sent if s.process == KILLED and s.complete]
    assert [s.request_id for s in completed if s.request_id not in recorded] == []
    assert [s.request_id for s in completed if by_request.get(s.request_id) != -COST] == []
    victim = [s for s in scene.client.sent if s.process == KILLED]
    # What the victim had not answered in full it had not recorded (the streams held at the gate),
    # except perhaps the one request it was answering at the kill.
    unfinished = [s for s in victim if not s.complete and s.request_id in recorded]
    assert [s for s in unfinished if s.stream or s.request_id not in scene.in_flight_at_kill] == []
    # Ada: her starting 3 coins and three completed requests; the victim's holds cost her nothing.
    assert pools[scene.ada] == 3 * MICRO - 3 * COST
    # No coin movement died with the victim: the ledger explains every live balance.
    assert outbox == 0
    assert live[admin] == pools[admin] == ledger[admin], (live[admin], pools[admin], ledger[admin])
    assert live[scene.ada] == pools[scene.ada] == ledger[scene.ada]
    assert "0 movements in the ledger outbox" in audit.stdout, audit.stdout + audit.stderr
    assert "no discrepancies" in audit.stdout, audit.stdout + audit.stderr
