"""Claude Code itself (`claude -p`, pinned in tests/messages/claude_code/package.json) completing a
turn against the echo model over a real socket, with every non-essential request turned off.

Needs Node.js and `npm ci` in tests/messages/claude_code (the package's install script places the
~240 MB native binary; run `node node_modules/@anthropic-ai/claude-code/install.cjs` if npm skipped
it). Without them these tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from lumen.store.tables import usage_records
from tests.support import CI, ECHO, model, running_lumen

pytestmark = pytest.mark.node

CLAUDE_DIR = Path(__file__).parent / "claude_code"
CLAUDE = CLAUDE_DIR / "node_modules" / ".bin" / "claude"


@pytest.fixture(scope="module")
def claude() -> Path:
    problem = None
    if shutil.which("node") is None:
        problem = "node is not installed"
    elif not CLAUDE.exists():
        problem = f"Claude Code is not installed: run `npm ci` in {CLAUDE_DIR}"
    if problem is not None:
        if CI:
            pytest.fail(f"{problem} (required under CI=true)")
        pytest.skip(problem)
    return CLAUDE


def test_claude_code_completes_a_turn(claude: Path, tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with running_lumen(tmp_path, {"models": [model("echo", ECHO)]}) as lumen:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "ANTHROPIC_BASE_URL": lumen.url,
            "ANTHROPIC_AUTH_TOKEN": lumen.key,
            # Claude Code's own model names do not exist in Lumen: every tier is the echo model.
            **{
                name: "echo"
                for name in (
                    "ANTHROPIC_MODEL",
                    "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                    "ANTHROPIC_DEFAULT_SONNET_MODEL",
                    "ANTHROPIC_DEFAULT_OPUS_MODEL",
                )
            },
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        done = subprocess.run(
            [str(claude), "-p", "hello from claude code", "--output-format", "json", "--max-turns", "1"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"claude failed:\n{done.stdout}\n{done.stderr}"
        result = json.loads(done.stdout)
        assert result["subtype"] == "success" and result["is_error"] is False
        # The echo model repeats the last user message, which ends with the prompt.
        assert result["result"].endswith("hello from claude code")

        async def recorded() -> list[str]:
            await lumen.state.recorder.flush()
            async with lumen.state.engine.connect() as conn:
                rows = (await conn.execute(select(usage_records.c.model, usage_records.c.status))).all()
            return [f"{row.model}:{row.status}" for row in rows]

        assert "echo:200" in lumen.run(recorded())
