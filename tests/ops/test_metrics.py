from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream
from tests.support import ECHO, RunningLumen, model, running_lumen, upstream

TOKEN = "metrics-secret-token"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in the metrics")


def test_metrics_count_what_was_served_and_need_the_token(tmp_path: Path) -> None:
    config = {"server": {"metrics_token": TOKEN}, "models": [model("echo", ECHO, price={"output": 1})]}
    with running_lumen(tmp_path, config) as lumen:
        for _ in range(3):
            assert (
                httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=CHAT).status_code == 200
            )
        httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json={**CHAT, "model": "nope"})
        refused = httpx.get(lumen.url + "/metrics", headers={"Authorization": "Bearer wrong"})
        scraped = httpx.get(lumen.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 401
    assert scraped.status_code == 200
    text = scraped.text
    assert _sample(text, "lumen_requests_total", model="echo", status="200", source="api") == 3
    assert _sample(text, "lumen_requests_total", model="nope", status="404") == 1
    assert _sample(text, "lumen_refusals_total", code="model_not_found") == 1
    assert _sample(text, "lumen_tokens_total", model="echo", kind="completion") == 9
    assert _sample(text, "lumen_coins_micro_total", model="echo") == 9
    assert _sample(text, "lumen_request_latency_seconds_count", model="echo") == 3
    assert _sample(text, "lumen_endpoint_up", model="echo", endpoint="local:echo") == 1
    assert TOKEN not in text and "sk_" not in text


def test_metrics_are_off_without_a_token(echo_lumen: RunningLumen) -> None:
    response = httpx.get(echo_lumen.url + "/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_gauges_show_requests_holding_reservations_and_the_coin_backlog(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    import threading

    fake.mode = "slow_start"
    fake.first_delay = 1.5
    config = {
        "server": {"metrics_token": TOKEN},
        "models": [model("slow", upstream(fake.url), price={"output": 1})],
    }
    scrape = {"Authorization": f"Bearer {TOKEN}"}
    with running_lumen(tmp_path, config) as lumen:
        body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        streaming = threading.Thread(
            target=lambda: httpx.post(
                lumen.v1 + "/chat/completions", headers=lumen.auth, json=body, timeout=30
            )
        )
        streaming.start()
        deadline = time.monotonic() + 20
        during = 0.0
        while time.monotonic() < deadline and during == 0:
            during = _sample(httpx.get(lumen.url + "/metrics", headers=scrape).text, "lumen_requests_holding")
            time.sleep(0.02)
        streaming.join()
        after = httpx.get(lumen.url + "/metrics", headers=scrape).text
    assert during == 1
    assert _sample(after, "lumen_requests_holding") == 0
    assert _sample(after, "lumen_settlements_pending") >= 0
    assert _sample(after, "lumen_coin_movements_pending") >= 0
