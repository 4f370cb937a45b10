"""`lumen` commands against a running `lumen serve` on SQLite without Redis: what the command
changes, the running server uses at once, without a restart, and what it prints is what the
server then reports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from lumen.cli import main
from tests.support import ECHO, TEST_KEY, model, write_config

LUMEN = [sys.executable, "-m", "lumen"]
EMAIL = "cora@example.edu"
# About 0.015 coins a request: a pool of 0 coins refuses it.
CHAT = {"model": "priced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@dataclass
class Served:
    url: str
    args: list[str]
    """--config and --data-dir, for the commands."""

    def cli(self, *command: str) -> str:
        result = CliRunner().invoke(main, [*command, *self.args])
        assert result.exit_code == 0, result.output
        return result.output

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/admin", headers={"Authorization": f"Bearer {TEST_KEY}"})

    def chat(self, key: str) -> httpx.Response:
        return httpx.post(
            self.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=CHAT
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    config = write_config(
        tmp_path / "lumen.yaml",
        {
            "models": [model("priced", ECHO, price={"input": 1000, "output": 1000})],
            "billing": {"default_pool": {"max": 1, "refresh": 0, "starting": 0}},
        },
    )
    args = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")} | {
        "LUMEN_BOOTSTRAP_KEY": TEST_KEY
    }
    process = subprocess.Popen(
        [*LUMEN, "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            found = re.search(r"running at (http://\S+)", line)
            url = found.group(1).rstrip("/") if found else url
            if line.startswith("    -d ") or "Application startup complete" in line and url:
                break
        assert url is not None, "lumen serve did not start"
        yield Served(url, args)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _balance(output: str) -> str:
    found = re.search(r"balance (\S+) coins", output)
    assert found, output
    return found.group(1)


def _user_with_key(served: Served) -> tuple[int, str, str]:
    created = served.cli("users", "create", EMAIL)
    user_id = int(re.search(r"id (\d+)", created).group(1))  # type: ignore[union-attr]
    key_output = served.cli("keys", "create", "--user", EMAIL).strip().splitlines()
    key = key_output[-1]
    key_id = re.search(r"created key (key_\S+)", "\n".join(key_output)).group(1)  # type: ignore[union-attr]
    return user_id, key, key_id


def test_a_grant_reaches_the_running_server_and_prints_its_balance(served: Served) -> None:
    user_id, key, _ = _user_with_key(served)
    refused = served.chat(key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"

    printed = _balance(served.cli("coins", "grant", "5", "--user", EMAIL))

    with served.admin() as api:
        reported = api.get("/coins", params={"user_id": user_id}).json()
    assert printed == "5" and reported["balance"] == "5"  # no refill: `refresh: 0`
    assert served.chat(key).status_code == 200  # the server's own pool has the coins: no restart
    with served.admin() as api:
        after = api.get("/coins", params={"user_id": user_id}).json()
    assert 0 < float(after["balance"]) < 5
    # `show` reports the pool the server has in its memory, charge included.
    assert _balance(served.cli("coins", "show", "--user", EMAIL)) == after["balance"]


def test_a_revoked_key_is_refused_as_soon_as_the_command_returns(served: Served) -> None:
    _, key, key_id = _user_with_key(served)
    served.cli("coins", "grant", "5", "--user", EMAIL)
    assert served.chat(key).status_code == 200  # cached by the server from now on
    served.cli("keys", "revoke", key_id)
    assert served.chat(key).status_code == 401


def test_an_access_rule_applies_as_soon_as_the_command_returns(served: Served) -> None:
    _, key, _ = _user_with_key(served)
    served.cli("coins", "grant", "5", "--user", EMAIL)
    assert served.chat(key).status_code == 200
    served.cli("access", "set", "--user", EMAIL, "--block", "priced")
    blocked = served.chat(key)
    assert blocked.status_code in (403, 404), blocked.text
    served.cli("access", "set", "--user", EMAIL)  # no option: the rule is removed
    assert served.chat(key).status_code == 200
