"""`lumen serve --workers 2`: two processes on one port, supervised, sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import redis as redis_sync
from sqlalchemy import func, select

from lumen.store.engine import create_engine
from lumen.store.tables import usage_records
from tests.cluster import lumen_cluster
from tests.store.conftest import pg_server, pg_url
from tests.support import ECHO, TEST_KEY, model

__all__ = ["pg_server", "pg_url"]

REDIS_URL = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"Authorization": f"Bearer {TEST_KEY}"}


def workers_of(parent: int) -> set[int]:
    return {child.pid for child in psutil.Process(parent).children()}


def _established(pid: int, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def eventually(check: object, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, "never happened"
        time.sleep(0.1)


async def _count(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar_one())
    finally:
        await engine.dispose()


def test_two_workers_share_the_port_replace_a_dead_one_and_stop_cleanly(tmp_path: Path, pg_url: str) -> None:
    prefix = f"lumen-test-{uuid.uuid4().hex[:8]}:"
    config = {
        "server": {"redis_prefix": prefix, "workers": 2},
        # Few, so the limit refills (one per 12 s) far slower than the requests are sent.
        "rate_limits": {"default": {"principal": {"rpm": 5}}},
        "models": [model("echo", ECHO)],
    }
    try:
        with lumen_cluster(tmp_path, config, count=1, database_url=pg_url, redis_url=REDIS_URL) as cluster:
            parent = cluster.processes[0]
            eventually(lambda: len(workers_of(parent.pid)) == 2)
            first = workers_of(parent.pid)
            url = cluster.urls[0]
            # New connections every time: the kernel spreads them over both workers, and the
            # limit of 5 a minute holds across them because it lives in Redis.
            statuses = [
                httpx.post(url + "/v1/chat/completions", headers=HEADERS, json=CHAT).status_code
                for _ in range(10)
            ]
            assert statuses == [200] * 5 + [429] * 5

            # Each worker listens on its own SO_REUSEPORT socket, so kept-alive connections are
            # spread over both instead of piling onto whichever worker wakes first.
            port = int(url.rsplit(":", 1)[1])
            clients = [httpx.Client(base_url=url) for _ in range(24)]
            try:
                for client in clients:
                    assert client.get("/healthz").status_code == 200
                held = {pid: _established(pid, port) for pid in first}
            finally:
                for client in clients:
                    client.close()
            assert sum(held.values()) == 24 and all(held.values()), held

            victim = sorted(first)[0]
            os.kill(victim, signal.SIGKILL)
            eventually(lambda: len(workers_of(parent.pid)) == 2 and victim not in workers_of(parent.pid))
            eventually(lambda: httpx.get(url + "/readyz").status_code == 200)
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(timeout=60) == 0
    finally:
        client = redis_sync.Redis.from_url(REDIS_URL)
        for stale in client.scan_iter(prefix + "*"):
            client.delete(stale)
    # Refused requests are recorded too; the killed worker may have held some unflushed records.
    recorded = asyncio.run(_count(pg_url))
    assert 0 < recorded <= 10


def test_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lumen",
            "serve",
            "--workers",
            "2",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")},
    )
    assert result.returncode != 0
    assert "need server.redis_url" in result.stderr


@pytest.mark.parametrize("workers", ["0", "65", "two"])
def test_a_bad_worker_count_is_refused(tmp_path: Path, workers: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lumen", "serve", "--workers", workers, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--workers" in result.stderr
