"""Codex CLI itself (tests/responses/codex, version pinned in package.json) completing a turn
against Lumen's echo model over the Responses API, with every other host made unreachable.

Codex offers tools that have no chat equivalent (`web_search`, a `namespace` group): this is the
test that they are left out rather than refused. Without `node` or `npm ci` in
tests/responses/codex the test skips, except under CI=true where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import CI, ECHO, model, running_lumen

CODEX = (
    Path(__file__).parent
    / "codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
)
PROMPT = "hello from codex"


@pytest.fixture
def codex() -> Path:
    if not CODEX.is_file():
        problem = f"Codex CLI is not installed: run `npm ci` in {CODEX.parents[5]}"
        if CI:
            pytest.fail(f"{problem} (required under CI=true)")
        pytest.skip(problem)
    return CODEX


def test_codex_exec_completes_a_turn_against_lumen(codex: Path, tmp_path: Path) -> None:
    with running_lumen(tmp_path, {"models": [model("echo", ECHO)]}) as lumen:
        home = tmp_path / "codex-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f"""model = "echo"
model_provider = "lumen"

[model_providers.lumen]
name = "Lumen"
base_url = "{lumen.v1}"
env_key = "LUMEN_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
""",
            encoding="utf-8",
        )
        work = tmp_path / "work"
        work.mkdir()
        dead = "http://127.0.0.1:9"  # nothing listens: any host but Lumen is unreachable
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "CODEX_HOME": str(home),
            "LUMEN_API_KEY": lumen.key,
            "HTTPS_PROXY": dead,
            "HTTP_PROXY": dead,
            "NO_PROXY": "127.0.0.1",
        }
        done = subprocess.run(
            [str(codex), "exec", "--json", "--skip-git-repo-check", "--ephemeral", "-C", str(work), PROMPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, done.stdout + done.stderr
    messages = [
        e["item"]["text"]
        for e in events
        if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
    ]
    assert messages == [PROMPT]
    [turn] = [e for e in events if e["type"] == "turn.completed"]
    assert turn["usage"]["output_tokens"] == 3
