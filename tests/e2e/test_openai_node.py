"""Lumen through the official openai Node SDK (tests/e2e/node, version pinned in package.json).

The scripts are the documentation's Node examples, parameterised by LUMEN_BASE_URL,
LUMEN_API_KEY and LUMEN_MODEL; each prints one JSON object that the tests check. Without
`node` or `npm ci` in tests/e2e/node these tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import CI, RunningLumen

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    problem = None
    if executable is None:
        problem = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        problem = f"the openai npm package is not installed: run `npm ci` in {NODE_DIR}"
    if problem is not None:
        if CI:
            pytest.fail(f"{problem} (required under CI=true)")
        pytest.skip(problem)
    assert executable is not None
    return executable


def run_node(node: str, script: str, lumen: RunningLumen, model: str, **extra: str) -> Any:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
        "LUMEN_BASE_URL": lumen.v1,
        "LUMEN_API_KEY": lumen.key,
        "LUMEN_MODEL": model,
        **extra,
    }
    done = subprocess.run([node, script], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_installed_sdk_is_the_pinned_version(node: str) -> None:
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["openai"]
    installed = json.loads((NODE_DIR / "node_modules" / "openai" / "package.json").read_text())["version"]
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    assert pinned[0].isdigit(), "pin an exact version"
    assert installed == pinned == lock["packages"]["node_modules/openai"]["version"]


@pytest.mark.parametrize("model", ["echo", "org/echo-2"])
def test_basic(node: str, lumen: RunningLumen, model: str) -> None:
    result = run_node(node, "basic.mjs", lumen, model)
    assert result["content"] == "Explain quantum entanglement in plain English"
    assert result["role"] == "assistant"
    assert result["finish_reason"] == "stop"
    assert result["object"] == "chat.completion"
    assert result["model"] == model
    assert result["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}


def test_stream(node: str, lumen: RunningLumen) -> None:
    result = run_node(node, "stream.mjs", lumen, "echo")
    prompt = "Write a haiku about machine learning"
    assert result["text"] == prompt
    chunks = result["chunks"]
    assert all(chunk["choices"] == 1 and chunk["usage"] is None for chunk in chunks)
    assert [chunk["finish_reason"] for chunk in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    final = result["final"]
    assert final["content"] == prompt
    assert final["role"] == "assistant"
    assert final["finish_reason"] == "stop"
    assert final["model"] == "echo"
    assert final["usage"] is None


def test_stream_with_usage(node: str, lumen: RunningLumen) -> None:
    result = run_node(
        node,
        "stream.mjs",
        lumen,
        "echo",
        LUMEN_INCLUDE_USAGE="1",
        LUMEN_PROMPT="[[echo:slow:1]] three more words",
    )
    assert result["text"] == "[[echo:slow:1]] three more words"
    chunks = result["chunks"]
    usage = {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}
    assert chunks[-1] == {"choices": 0, "finish_reason": None, "usage": usage}
    assert chunks[-2]["finish_reason"] == "stop"
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert result["final"]["content"] == "[[echo:slow:1]] three more words"
    assert result["final"]["usage"] == usage


def test_embeddings_base64_decoded_like_float(node: str, lumen: RunningLumen) -> None:
    result = run_node(node, "embeddings.mjs", lumen, "echo-embed")
    decoded, floats = result["default"], result["float"]
    assert decoded["model"] == floats["model"] == "echo-embed"
    assert decoded["usage"] == floats["usage"]
    assert [d["index"] for d in decoded["data"]] == [0, 1]
    for item_decoded, item_float in zip(decoded["data"], floats["data"], strict=True):
        assert item_decoded["is_array"] and item_float["is_array"]
        vector = item_float["embedding"]
        assert len(vector) == len(item_decoded["embedding"]) == 384
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-6)
        # base64 carries float32: node's decoding must give exactly the float32 of each value.
        as_float32 = list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))
        assert item_decoded["embedding"] == as_float32
    assert decoded["data"][0]["embedding"] != decoded["data"][1]["embedding"]


def test_error_mapping(node: str, lumen: RunningLumen) -> None:
    result = run_node(node, "errors.mjs", lumen, "echo")

    wrong_key = result["wrong_key"]
    assert wrong_key["name"] == "AuthenticationError"
    assert (wrong_key["status"], wrong_key["code"]) == (401, "invalid_api_key")

    unknown = result["unknown_model"]
    assert unknown["name"] == "NotFoundError"
    assert (unknown["status"], unknown["code"]) == (404, "model_not_found")
    assert "no-such-model" in unknown["message"]

    bad = result["bad_parameter"]
    assert bad["name"] == "BadRequestError"
    assert bad["status"] == 400
    assert bad["type"] == "invalid_request_error"

    for case in (wrong_key, unknown, bad):
        assert case["raised"] and case["is_api_error"]
        # Node shows "(no body)" when the error is not in the OpenAI envelope.
        assert "(no body)" not in case["message"]
        assert case["request_id"]
