"""The user documentation's examples, run for real against Lumen.

The example texts live in tests/e2e/examples/ exactly as the documentation shows them (with the
streaming example corrected: openai-python has no `stream.text_stream`). Each test substitutes
the placeholders (instance URL, key, model `gpt-4o` -> `echo`) and runs the text unchanged
otherwise: curl examples with the real `curl`, Python examples as scripts with this venv's python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import CI, RunningLumen

EXAMPLES = Path(__file__).parent / "examples"


def substituted(name: str, lumen: RunningLumen) -> str:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    placeholders = ["https://your-lumen-instance", "sk_your_api_key_here", '"gpt-4o"']
    assert any(p in text for p in placeholders), f"{name} has none of the documented placeholders"
    return (
        text.replace("https://your-lumen-instance", lumen.url)
        .replace("sk_your_api_key_here", lumen.key)
        .replace("sk_your_lumen_key", lumen.key)
        .replace('"gpt-4o"', '"echo"')
    )


def run_example(name: str, lumen: RunningLumen, tmp_path: Path) -> str:
    script = tmp_path / name
    script.write_text(substituted(name, lumen), encoding="utf-8")
    if name.endswith(".sh"):
        if shutil.which("curl") is None:
            if CI:
                pytest.fail("curl is required under CI=true")
            pytest.skip("curl is not installed")
        command = ["bash", str(script)]
    else:
        command = [sys.executable, str(script)]
    # No OPENAI_* variables from the environment: the examples must work as written.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_curl_list_models(lumen: RunningLumen, tmp_path: Path) -> None:
    listing: dict[str, Any] = json.loads(run_example("list_models.sh", lumen, tmp_path))
    assert listing["object"] == "list"
    ids = [entry["id"] for entry in listing["data"]]
    assert "echo" in ids and "org/echo-2" in ids
    assert all(entry["object"] == "model" for entry in listing["data"])


def test_curl_chat_completion(lumen: RunningLumen, tmp_path: Path) -> None:
    answer: dict[str, Any] = json.loads(run_example("chat_completion.sh", lumen, tmp_path))
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "echo"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Explain quantum entanglement in plain English",
        "refusal": None,
    }
    # "Every response includes a usage field with exact token counts".
    assert answer["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}


def test_python_basic(lumen: RunningLumen, tmp_path: Path) -> None:
    assert run_example("basic.py", lumen, tmp_path) == "Explain quantum entanglement in plain English\n"


def test_python_multi_turn(lumen: RunningLumen, tmp_path: Path) -> None:
    out = run_example("multi_turn.py", lumen, tmp_path)
    assert out == "What is a transformer model?\nHow does the attention mechanism work?\n"


def test_python_multi_turn_history(lumen: RunningLumen, capsys: pytest.CaptureFixture[str]) -> None:
    # The same example executed in this process, to look at the history it builds.
    namespace: dict[str, Any] = {"__name__": "__example__"}
    exec(compile(substituted("multi_turn.py", lumen), "multi_turn.py", "exec"), namespace)
    try:
        assert namespace["history"] == [
            {"role": "user", "content": "What is a transformer model?"},
            {"role": "assistant", "content": "What is a transformer model?"},
            {"role": "user", "content": "How does the attention mechanism work?"},
            {"role": "assistant", "content": "How does the attention mechanism work?"},
        ]
        assert namespace["chat"]("And a third question?") == "And a third question?"
        assert len(namespace["history"]) == 6
    finally:
        namespace["client"].close()
    assert capsys.readouterr().out.splitlines()[:2] == [
        "What is a transformer model?",
        "How does the attention mechanism work?",
    ]


def test_python_streaming_corrected(lumen: RunningLumen, tmp_path: Path) -> None:
    assert run_example("streaming.py", lumen, tmp_path) == "Write a short poem about data science\n"


def test_streaming_example_no_longer_uses_text_stream() -> None:
    source = (EXAMPLES / "streaming.py").read_text(encoding="utf-8")
    assert "text_stream" not in source
    assert 'event.type == "content.delta"' in source


def test_python_system_prompt(lumen: RunningLumen, tmp_path: Path) -> None:
    assert (
        run_example("system_prompt.py", lumen, tmp_path) == "Summarize recent advances in protein folding\n"
    )


def test_drop_in_replacement(lumen: RunningLumen, tmp_path: Path) -> None:
    # The snippet only builds the client; then "everything else works identically".
    script = substituted("drop_in_replacement.py", lumen) + (
        "\n"
        "print(sorted(m.id for m in client.models.list()))\n"
        "response = client.chat.completions.create(\n"
        '    model="echo", messages=[{"role": "user", "content": "drop-in works"}], stream=True\n'
        ")\n"
        'print("".join(chunk.choices[0].delta.content or "" for chunk in response))\n'
    )
    path = tmp_path / "drop_in_check.py"
    path.write_text(script, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    models, text = done.stdout.splitlines()
    assert "'echo'" in models and "'org/echo-2'" in models
    assert text == "drop-in works"
