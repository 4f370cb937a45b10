"""The Responses example of docs/api.md, run as written against a real Lumen (placeholders
substituted as in tests/e2e/test_seed_examples.py: instance URL, key, model `gpt-4o` -> `echo`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ECHO, model, running_lumen

API_DOC = Path(__file__).parents[2] / "docs" / "api.md"


def documented_example() -> str:
    section = API_DOC.read_text(encoding="utf-8").split("## Responses API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_example_runs(tmp_path: Path) -> None:
    with running_lumen(tmp_path, {"models": [model("echo", ECHO)]}) as lumen:
        script = tmp_path / "responses_example.py"
        script.write_text(
            documented_example()
            .replace("https://your-lumen-instance", lumen.url)
            .replace("sk_your_api_key_here", lumen.key)
            .replace('"gpt-4o"', '"echo"'),
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env, check=False
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello!\n"
