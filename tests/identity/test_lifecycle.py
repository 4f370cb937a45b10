"""The key lifecycle through a live Lumen, with keys made and revoked by the real CLI (another
process sharing the instance's data directory), as an administrator would."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import ECHO, RunningLumen, model, running_lumen

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
# Changes written straight into the database (as `expire` below does) are seen when cached keys
# expire: `redis_cache_seconds` while changes reach the server (here by polling the change log).
CONFIG = {
    "server": {"auth_cache_seconds": 0.2, "redis_cache_seconds": 0.2},
    "models": [model("echo", ECHO), model("other", ECHO)],
}


def _cli(lumen: RunningLumen, *args: str) -> subprocess.CompletedProcess[str]:
    data_dir = Path(lumen.state.settings.server.data_dir)
    return subprocess.run(
        [sys.executable, "-m", "lumen", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _status(lumen: RunningLumen, key: str, body: dict[str, Any] = CHAT) -> httpx.Response:
    return httpx.post(lumen.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)


def _after_cache_expiry(lumen: RunningLumen) -> None:
    time.sleep(lumen.state.cache_seconds() * 1.5)


def test_create_use_revoke(tmp_path: Path) -> None:
    with running_lumen(tmp_path, CONFIG) as lumen:
        _cli(lumen, "users", "create", "ada@example.edu")
        created = _cli(lumen, "keys", "create", "--user", "ada@example.edu", "--name", "laptop")
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("sk_") and created.stdout.strip() == key  # alone on the last line
        assert _status(lumen, key).status_code == 200

        listed = _cli(lumen, "keys", "list", "--user", "ada@example.edu").stdout
        key_id = next(word for word in listed.split() if word.startswith("key_"))
        assert "laptop" in listed and key not in listed

        _cli(lumen, "keys", "revoke", key_id)
        _after_cache_expiry(lumen)
        refused = _status(lumen, key)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        # The revoked key stays listed, marked, so its usage history keeps its key.
        assert key_id in _cli(lumen, "keys", "list", "--user", "ada@example.edu").stdout

        lumen.run(lumen.state.recorder.flush())
        lumen.run(lumen.state.authenticator.flush_last_used())
        from lumen.usage.queries import recent_usage

        rows = lumen.run(recent_usage(engine=lumen.state.engine))
        assert any(r.key_id == key_id and r.principal.startswith("user:") for r in rows)
        report = _cli(lumen, "usage", "--user", "ada@example.edu").stdout
        assert key_id in report and "echo" in report
        assert report.strip().splitlines()[-1].startswith("1 requests")  # the 401 left no record


def test_disabled_user_is_403_and_enabled_again(tmp_path: Path) -> None:
    with running_lumen(tmp_path, CONFIG) as lumen:
        _cli(lumen, "users", "create", "bob@example.edu")
        key = _cli(lumen, "keys", "create", "--user", "bob@example.edu").stdout.strip().splitlines()[-1]
        assert _status(lumen, key).status_code == 200
        _cli(lumen, "users", "disable", "bob@example.edu")
        _after_cache_expiry(lumen)
        refused = _status(lumen, key)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "account_disabled"
        _cli(lumen, "users", "disable", "--enable", "bob@example.edu")
        _after_cache_expiry(lumen)
        assert _status(lumen, key).status_code == 200


def test_project_keys_belong_to_the_project(tmp_path: Path) -> None:
    with running_lumen(tmp_path, CONFIG) as lumen:
        _cli(lumen, "users", "create", "owner@example.edu")
        _cli(lumen, "projects", "create", "climate", "--owner", "owner@example.edu")
        key = _cli(lumen, "keys", "create", "--project", "climate").stdout.strip().splitlines()[-1]
        assert _status(lumen, key).status_code == 200
        lumen.run(lumen.state.recorder.flush())
        from lumen.usage.queries import recent_usage

        rows = lumen.run(recent_usage(engine=lumen.state.engine))
        assert rows[0].principal.startswith("project:")


def test_expired_and_malformed_keys_are_401(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from lumen.store.tables import api_keys

    with running_lumen(tmp_path, CONFIG) as lumen:
        _cli(lumen, "users", "create", "eve@example.edu")
        key = _cli(lumen, "keys", "create", "--user", "eve@example.edu", "--expires", "2099-01-01").stdout
        key = key.strip().splitlines()[-1]
        assert _status(lumen, key).status_code == 200

        async def expire() -> None:
            async with lumen.state.engine.begin() as conn:
                await conn.execute(
                    update(api_keys).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )

        lumen.run(expire())
        _after_cache_expiry(lumen)
        response = _status(lumen, key)
        assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
        for bad in ("sk_", "sk_" + "x" * 200, key[:-1] + ("A" if key[-1] != "A" else "B")):
            assert _status(lumen, bad).status_code == 401


def test_key_creation_refuses_bad_input(tmp_path: Path) -> None:
    with running_lumen(tmp_path, CONFIG) as lumen:
        data_dir = str(lumen.state.settings.server.data_dir)
        base = [sys.executable, "-m", "lumen", "keys", "create", "--data-dir", data_dir]
        for args in (["--user", "nobody@example.edu"], [], ["--user", "a@b.c", "--project", "x"]):
            result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
            assert result.returncode != 0
            assert "sk_" not in result.stdout
