"""Model, endpoint and price changes apply without a restart; a bad edit keeps the last good config."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.upstream import FakeUpstream
from tests.support import ECHO, model, running_lumen, upstream, write_config


def _wait_for(predicate: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _models(lumen: Any) -> dict[str, Any]:
    listed = httpx.get(lumen.v1 + "/models", headers=lumen.auth).json()
    return {card["id"]: card for card in listed["data"]}


def test_edits_apply_live_and_bad_edits_are_rejected(tmp_path: Path, fake: FakeUpstream, caplog: Any) -> None:
    first = {"models": [model("echo", ECHO, price={"input": 1, "output": 2})]}
    with running_lumen(tmp_path, first, reload=True) as lumen:
        assert set(_models(lumen)) == {"echo"}
        echo_backend = lumen.state.registry.get("echo").endpoints[0].backend  # type: ignore[union-attr]

        second = {
            "server": {"reload_interval": 0.05},
            "models": [
                model("echo", ECHO, price={"input": 3, "output": 4}),
                model("remote", upstream(fake.url)),
            ],
        }
        write_config(lumen.config_path, second)  # type: ignore[arg-type]
        assert _wait_for(lambda: "remote" in _models(lumen))
        assert _models(lumen)["echo"]["pricing"]["input"] == 3
        # An unchanged endpoint keeps its backend (and with it a loaded model, in-flight counts, health).
        assert lumen.state.registry.get("echo").endpoints[0].backend is echo_backend  # type: ignore[union-attr]
        chat = {"model": "remote", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=chat).status_code == 200

        lumen.config_path.write_text("models: [ {name: broken, endpoints: [{type: local}]} ]")  # type: ignore[union-attr]
        assert _wait_for(lambda: "config reload rejected" in caplog.text)
        assert set(_models(lumen)) == {"echo", "remote"}

        write_config(
            lumen.config_path,
            {
                "server": {"reload_interval": 0.05},  # type: ignore[arg-type]
                "models": [model("remote", upstream(fake.url))],
            },
        )
        assert _wait_for(lambda: set(_models(lumen)) == {"remote"})
        response = httpx.post(
            lumen.v1 + "/chat/completions", headers=lumen.auth, json={**chat, "model": "echo"}
        )
        assert response.status_code == 404
