"""With Redis, what one process (or the CLI) changes reaches every process by push.

The processes here trust their caches for 60 seconds (`auth_cache_seconds` and
`redis_cache_seconds`), so a change seen by every process well before then can only have
arrived through the change channel."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from tests.cluster import Cluster, lumen_cluster
from tests.support import ECHO, TEST_KEY, model

REDIS_URL = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
CAREFUL = {"model": "careful", "messages": [{"role": "user", "content": "hi"}]}
ADMIN = {"Authorization": f"Bearer {TEST_KEY}"}
# Far longer than the polling below: only a pushed change can be seen in time.
CACHE_SECONDS = 60


def statuses(cluster: Cluster, key: str, body: dict[str, object] = CHAT) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}
    urls = cluster.urls
    return [httpx.post(u + "/v1/chat/completions", headers=headers, json=body).status_code for u in urls]


def eventually(check: Callable[[], bool], *, deadline: float = CACHE_SECONDS / 4) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, "the change did not reach every process by push"
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    prefix = f"lumen-test-{uuid.uuid4().hex[:8]}:"
    careful = model("careful", ECHO, access={"acknowledge": True, "notice": "Read me."})
    config = {
        "server": {
            "redis_prefix": prefix,
            "auth_cache_seconds": CACHE_SECONDS,
            "redis_cache_seconds": CACHE_SECONDS,
        },
        "models": [model("echo", ECHO), careful],
    }
    try:
        with lumen_cluster(tmp_path, config, count=3, database_url=pg_url, redis_url=REDIS_URL) as running:
            yield running
    finally:
        client = redis_sync.Redis.from_url(REDIS_URL)
        for stale in client.scan_iter(prefix + "*"):
            client.delete(stale)


def new_key(cluster: Cluster, email: str) -> str:
    cluster.cli("users", "create", email)
    return cluster.cli("keys", "create", "--user", email).stdout.strip().splitlines()[-1]


def test_revoking_and_disabling_from_the_cli_reach_every_process(cluster: Cluster) -> None:
    revoked, disabled = new_key(cluster, "ada@example.edu"), new_key(cluster, "bob@example.edu")
    assert statuses(cluster, revoked) == [200, 200, 200]  # now cached in every process
    assert statuses(cluster, disabled) == [200, 200, 200]

    listed = cluster.cli("keys", "list", "--user", "ada@example.edu").stdout
    cluster.cli("keys", "revoke", next(w for w in listed.split() if w.startswith("key_")))
    eventually(lambda: statuses(cluster, revoked) == [401, 401, 401])

    cluster.cli("users", "disable", "bob@example.edu")
    eventually(lambda: statuses(cluster, disabled) == [403, 403, 403])


def test_policy_changes_through_one_process_reach_the_others(cluster: Cluster) -> None:
    key = new_key(cluster, "cy@example.edu")
    assert statuses(cluster, key) == [200, 200, 200]
    assert statuses(cluster, key, CAREFUL) == [403, 403, 403]
    users = httpx.get(cluster.urls[0] + "/api/admin/users", headers=ADMIN).json()
    user_id = next(u["id"] for u in users if u["email"] == "cy@example.edu")

    blocked = httpx.put(
        cluster.urls[0] + "/api/admin/access",
        params={"user_id": user_id},
        headers=ADMIN,
        json={"block": ["echo"]},
    )
    assert blocked.status_code == 204, blocked.text
    # A model blocked for the caller is hidden from it: 404, as if it did not exist.
    eventually(lambda: statuses(cluster, key) == [404, 404, 404])

    cyk = {"Authorization": f"Bearer {key}"}
    acknowledged = httpx.post(cluster.urls[1] + "/v1/models/careful/acknowledge", headers=cyk)
    assert acknowledged.status_code == 200, acknowledged.text
    eventually(lambda: statuses(cluster, key, CAREFUL) == [200, 200, 200])

    limited = httpx.put(
        cluster.urls[2] + "/api/admin/rate-limits",
        params={"user_id": user_id},
        headers=ADMIN,
        json={"principal": {"concurrent": 1, "rpm": 1000}},
    )
    assert limited.status_code == 204, limited.text

    def limit_everywhere() -> bool:
        heads = [
            httpx.post(u + "/v1/chat/completions", headers=cyk, json=CAREFUL).headers for u in cluster.urls
        ]
        return all(h.get("x-ratelimit-limit-requests") == "1000" for h in heads)

    eventually(limit_everywhere)


def test_the_cli_policy_commands_reach_every_process(cluster: Cluster) -> None:
    key = new_key(cluster, "di@example.edu")
    assert statuses(cluster, key) == [200, 200, 200]
    cluster.cli("access", "set", "--user", "di@example.edu", "--block", "echo")
    eventually(lambda: statuses(cluster, key) == [404, 404, 404])
    cluster.cli("access", "set", "--user", "di@example.edu")
    eventually(lambda: statuses(cluster, key) == [200, 200, 200])

    cluster.cli("limits", "set", "--user", "di@example.edu", "--rpm", "777")
    headers = {"Authorization": f"Bearer {key}"}
    eventually(
        lambda: all(
            httpx.post(u + "/v1/chat/completions", headers=headers, json=CHAT).headers.get(
                "x-ratelimit-limit-requests"
            )
            == "777"
            for u in cluster.urls
        )
    )


def test_the_admin_audit_checks_the_live_balances_in_redis(cluster: Cluster) -> None:
    for url in cluster.urls:
        assert httpx.post(url + "/v1/chat/completions", headers=ADMIN, json=CHAT).status_code == 200
    audit = httpx.get(cluster.urls[1] + "/api/admin/audit", headers=ADMIN, timeout=30).json()
    assert audit["ok"] is True and audit["discrepancies"] == []
    assert isinstance(audit["outbox"], int)  # read from Redis: only the Redis audit reports it
