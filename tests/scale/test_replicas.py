"""Three Lumen processes sharing PostgreSQL: what one changes, all enforce."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.cluster import lumen_cluster
from tests.support import ECHO, model

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
CONFIG = {"server": {"auth_cache_seconds": 0.5}, "models": [model("echo", ECHO)]}


def _status(url: str, key: str) -> int:
    response = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=CHAT)
    return response.status_code


def test_a_revocation_reaches_every_process_within_the_cache_time(tmp_path: Path, pg_url: str) -> None:
    with lumen_cluster(tmp_path, CONFIG, count=3, database_url=pg_url) as cluster:
        cluster.cli("users", "create", "ada@example.edu")
        key = cluster.cli("keys", "create", "--user", "ada@example.edu").stdout.strip().splitlines()[-1]
        assert [_status(url, key) for url in cluster.urls] == [200, 200, 200]
        listed = cluster.cli("keys", "list", "--user", "ada@example.edu").stdout
        key_id = next(word for word in listed.split() if word.startswith("key_"))
        cluster.cli("keys", "revoke", key_id)
        time.sleep(0.5 * 1.5)  # auth_cache_seconds, plus a margin
        assert [_status(url, key) for url in cluster.urls] == [401, 401, 401]


def test_usage_from_every_process_lands_in_the_shared_database(tmp_path: Path, pg_url: str) -> None:
    from tests.support import TEST_KEY

    with lumen_cluster(tmp_path, CONFIG, count=3, database_url=pg_url) as cluster:
        for round_ in range(5):
            for url in cluster.urls:
                assert _status(url, TEST_KEY) == 200, round_
    # The processes flushed their usage on shutdown; count it in the database.
    import asyncio

    from sqlalchemy import func, select

    from lumen.store.engine import create_engine
    from lumen.store.tables import usage_records

    async def count() -> int:
        engine = create_engine(pg_url)
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar_one())
        finally:
            await engine.dispose()

    assert asyncio.run(count()) == 15


def test_a_shared_budget_holds_across_three_processes(tmp_path: Path, pg_url: str) -> None:
    """200 concurrent requests, spread round robin over 3 processes sharing PostgreSQL and Redis,
    against a pool that affords exactly 10: exactly 10 succeed and the books balance."""
    import asyncio
    import os
    import uuid

    import redis as redis_sync

    from tests.api.test_coins import BODY, POOL_OF_TEN, PRICED
    from tests.support import TEST_KEY

    redis_url = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"lumen-test-{uuid.uuid4().hex[:8]}:"
    prefix_db = redis_sync.Redis.from_url(redis_url)
    config = {**POOL_OF_TEN, "server": {"redis_prefix": prefix}, "models": [PRICED]}

    async def burst(urls: list[str]) -> list[int]:
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            timeout=60,
            limits=httpx.Limits(max_connections=200),
        ) as client:
            answers = await asyncio.gather(
                *(client.post(urls[i % len(urls)] + "/v1/chat/completions", json=BODY) for i in range(200))
            )
        return [a.status_code for a in answers]

    try:
        with lumen_cluster(tmp_path, config, count=3, database_url=pg_url, redis_url=redis_url) as cluster:
            statuses = asyncio.run(burst(cluster.urls))
            audit = cluster.cli("audit")
    finally:
        for stale in prefix_db.scan_iter(prefix + "*"):
            prefix_db.delete(stale)
    assert statuses.count(200) == 10 and statuses.count(429) == 190
    assert "no discrepancies" in audit.stdout


def test_rate_limits_hold_across_three_processes(tmp_path: Path, pg_url: str) -> None:
    """With server.redis_url set, a limit of 6 requests per minute admits exactly 6 of 12 requests
    sent round robin to three processes."""
    import os
    import uuid

    import redis as redis_sync

    from tests.support import TEST_KEY

    redis_url = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"lumen-test-{uuid.uuid4().hex[:8]}:"
    config = {
        "server": {"redis_prefix": prefix},
        "rate_limits": {"default": {"principal": {"rpm": 6}}},
        "models": [model("echo", ECHO)],
    }
    try:
        with lumen_cluster(tmp_path, config, count=3, database_url=pg_url, redis_url=redis_url) as cluster:
            statuses = [_status(cluster.urls[i % 3], TEST_KEY) for i in range(12)]
    finally:
        client = redis_sync.Redis.from_url(redis_url)
        for stale in client.scan_iter(prefix + "*"):
            client.delete(stale)
    assert statuses.count(200) == 6 and statuses.count(429) == 6
    assert statuses[:6] == [200] * 6


def test_an_acknowledgement_made_in_one_process_is_honoured_by_the_others(
    tmp_path: Path, pg_url: str
) -> None:
    from tests.support import TEST_KEY

    careful = model("careful", ECHO, access={"acknowledge": True, "notice": "Read me."})
    config = {"server": {"auth_cache_seconds": 0.5}, "models": [careful]}
    body = {"model": "careful", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    with lumen_cluster(tmp_path, config, count=3, database_url=pg_url) as cluster:
        before = [
            httpx.post(u + "/v1/chat/completions", headers=headers, json=body).status_code
            for u in cluster.urls
        ]
        done = httpx.post(cluster.urls[0] + "/v1/models/careful/acknowledge", headers=headers)
        assert done.status_code == 200, done.text
        time.sleep(0.5 * 1.5)  # auth_cache_seconds, plus a margin
        after = [
            httpx.post(u + "/v1/chat/completions", headers=headers, json=body).status_code
            for u in cluster.urls
        ]
    assert before == [403, 403, 403]
    assert after == [200, 200, 200]
