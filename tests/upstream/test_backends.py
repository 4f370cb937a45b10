"""Backend behaviour through a real Lumen and fake upstreams: failover, health, timeouts,
mid-stream failures and cancellation."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support import running_lumen, upstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
FAST_TIMEOUTS = {"connect": 2, "first_token": 0.5, "between_chunks": 0.5, "request": 0.5}


def _config(*endpoints: dict[str, Any], **model_extra: Any) -> dict[str, Any]:
    return {
        "routing": {"health_interval": 0, "failure_backoff": 30, "max_backoff": 30, "keepalive_interval": 30},
        "models": [{"name": "m", "endpoints": list(endpoints), **model_extra}],
    }


def _dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}/v1"


def _events(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.split("\n"):
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def _post(lumen: Any, body: dict[str, Any], timeout: float = 20) -> httpx.Response:
    return httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=body, timeout=timeout)


def test_5xx_fails_over_to_another_endpoint(tmp_path: Path, fake: FakeUpstream, fake2: FakeUpstream) -> None:
    fake.mode, fake.status = "status", 500
    with running_lumen(tmp_path, _config(upstream(fake.url), upstream(fake2.url))) as lumen:
        for _ in range(3):
            response = _post(lumen, CHAT)
            assert response.status_code == 200, response.text
        # The failing endpoint is now down: the next requests do not even try it.
    assert len(fake.requests) == 1
    assert len(fake2.requests) == 3


def test_connection_refused_fails_over(tmp_path: Path, fake: FakeUpstream) -> None:
    with running_lumen(tmp_path, _config(upstream(_dead_url()), upstream(fake.url))) as lumen:
        for _ in range(2):
            assert _post(lumen, {**CHAT, "stream": True}).status_code == 200
        assert len(fake.requests) == 2


def test_no_answer_names_the_address_of_an_unreachable_backend(tmp_path: Path) -> None:
    dead = _dead_url()
    port = dead.split(":")[2].split("/")[0]
    with running_lumen(tmp_path, _config(upstream(dead))) as lumen:
        answers = [_post(lumen, CHAT), _post(lumen, {**CHAT, "stream": True})]
    for answer in answers:
        assert answer.status_code in (502, 503), answer.text
        assert "127.0.0.1" not in answer.text and port not in answer.text and "http" not in answer.text


def test_every_endpoint_failing_gives_502_with_a_summary_of_the_upstream_message(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.mode, fake.status = "status", 503
    with running_lumen(tmp_path, _config(upstream(fake.url))) as lumen:
        response = _post(lumen, CHAT)
        assert response.status_code == 502
        assert response.json()["error"]["message"] == "The model backend failed (HTTP 503): fake failure 503"
        # Now the only endpoint is down: Lumen says so without calling it, naming the model.
        again = _post(lumen, CHAT)
    assert again.status_code == 503
    error = again.json()["error"]
    assert "'m'" in error["message"] and error["code"] == "model_unavailable"
    assert int(again.headers["retry-after"]) >= 1
    assert len(fake.requests) == 1


def test_upstream_4xx_passes_through_and_does_not_fail_over(
    tmp_path: Path, fake: FakeUpstream, fake2: FakeUpstream
) -> None:
    fake.mode, fake.status = "status", 400
    fake2.mode, fake2.status = "status", 400
    with running_lumen(tmp_path, _config(upstream(fake.url), upstream(fake2.url))) as lumen:
        response = _post(lumen, CHAT)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "fake failure 400"
    assert len(fake.requests) + len(fake2.requests) == 1


def test_hung_upstream_times_out_with_504(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.mode = "hang"
    with running_lumen(tmp_path, _config(upstream(fake.url), timeouts=FAST_TIMEOUTS)) as lumen:
        response = _post(lumen, CHAT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert fake.wait_for_event("cancelled"), "the hung upstream request was not closed"


def test_first_token_timeout_fails_over_before_the_first_byte(
    tmp_path: Path, fake: FakeUpstream, fake2: FakeUpstream
) -> None:
    fake.mode = "hang_stream"
    fake2.words = ["rescued"]
    config = _config(upstream(fake.url), upstream(fake2.url), timeouts=FAST_TIMEOUTS)
    with running_lumen(tmp_path, config) as lumen:
        # The first request goes to whichever endpoint the balancer picks; make sure `fake`
        # (the hanging one) is hit by sending two concurrent-free requests.
        bodies = [_post(lumen, {**CHAT, "stream": True}).text for _ in range(2)]
    texts = [
        "".join(c["choices"][0]["delta"].get("content", "") for c in _events(b)[:-1] if c["choices"])
        for b in bodies
    ]
    assert texts == ["rescued", "rescued"]
    assert fake.wait_for_event("cancelled")


def test_reset_mid_stream_ends_with_an_error_event(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.mode = "reset"
    with running_lumen(tmp_path, _config(upstream(fake.url))) as lumen:
        response = _post(lumen, {**CHAT, "stream": True})
        endpoint = lumen.state.registry.endpoints()[0]
        assert endpoint.consecutive_failures == 1  # a broken connection counts against the endpoint
        assert endpoint.in_flight == 0
    assert response.status_code == 200  # the stream had started: the error is in-band
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    assert "error" in events[-2] and events[-2]["error"]["message"]
    assert sum(1 for e in events if isinstance(e, dict) and "error" in e) == 1
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"


def test_malformed_sse_ends_with_an_error_event(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.mode = "malformed_sse"
    with running_lumen(tmp_path, _config(upstream(fake.url))) as lumen:
        response = _post(lumen, {**CHAT, "stream": True})
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "upstream_protocol_error"


def test_gap_between_chunks_times_out(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.mode, fake.chunk_delay = "slow", 5
    timeouts = {**FAST_TIMEOUTS, "first_token": 5}
    with running_lumen(tmp_path, _config(upstream(fake.url), timeouts=timeouts)) as lumen:
        response = _post(lumen, {**CHAT, "stream": True})
    events = _events(response.text)
    assert events[-2]["error"]["code"] == "upstream_timeout"
    assert fake.wait_for_event("cancelled")


def test_keepalive_comments_while_waiting_for_the_first_token(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.mode, fake.first_delay = "slow_start", 1.0
    config = _config(upstream(fake.url))
    config["routing"]["keepalive_interval"] = 0.05
    with running_lumen(tmp_path, config) as lumen:
        response = _post(lumen, {**CHAT, "stream": True})
    lines = [line for line in response.text.split("\n") if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data > 0
    assert all(line == ": keep-alive" for line in lines[:first_data])
    assert lines[-1] == "data: [DONE]"


def test_client_disconnect_cancels_the_upstream_and_bills_what_was_generated(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.mode, fake.chunk_delay = "slow", 0.2
    fake.words = [f" w{i}" for i in range(50)]
    with running_lumen(tmp_path, _config(upstream(fake.url))) as lumen:
        received = 0
        with httpx.stream(
            "POST",
            lumen.v1 + "/chat/completions",
            headers=lumen.auth,
            json={**CHAT, "stream": True},
            timeout=20,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"content":" w' in line:
                    received += 1
                    if received == 3:
                        break
        assert fake.wait_for_event("cancelled"), "the upstream never saw the cancellation"
        records = _usage_rows(lumen)
    assert "completed" not in fake.events
    assert len(records) == 1
    record = records[0]
    assert record.status == 499
    assert record.estimated  # the upstream's usage chunk never came
    assert 3 <= record.completion_tokens < 50


def test_active_health_check_marks_down_and_brings_back(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.mode = "models_down"
    config = _config(upstream(fake.url))
    config["routing"].update(health_interval=0.05, failure_backoff=0.05, max_backoff=0.05)
    with running_lumen(tmp_path, config) as lumen:
        endpoint = lumen.state.registry.endpoints()[0]
        assert _wait(lambda: endpoint.consecutive_failures > 0)
        assert endpoint.last_error
        fake.mode = "ok"
        assert _wait(lambda: endpoint.consecutive_failures == 0 and endpoint.is_up())
        assert _post(lumen, CHAT).status_code == 200
    assert fake.probes >= 2
    assert all("messages" not in r for r in fake.requests[:-1])  # probes never ask for a completion


def test_passively_failed_endpoint_returns_after_backoff(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.mode, fake.status = "status", 500
    config = _config(upstream(fake.url))
    config["routing"].update(failure_backoff=0.2, max_backoff=0.2)
    with running_lumen(tmp_path, config) as lumen:
        assert _post(lumen, CHAT).status_code == 502
        assert _post(lumen, CHAT).status_code == 503  # within the backoff: not tried
        fake.mode = "ok"
        endpoint = lumen.state.registry.endpoints()[0]
        assert _wait(endpoint.is_up)
        assert _post(lumen, CHAT).status_code == 200


def _usage_rows(lumen: Any) -> list[Any]:
    from lumen.usage.queries import recent_usage

    lumen.run(lumen.state.recorder.flush())
    return list(lumen.run(recent_usage(engine=lumen.state.engine, limit=10)))


def _wait(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("mode", ["no_usage", "usage_inline", "ok"])
def test_usage_always_asked_upstream_and_given_only_when_requested(
    tmp_path: Path, fake: FakeUpstream, mode: str
) -> None:
    fake.mode = mode
    with running_lumen(tmp_path, _config(upstream(fake.url, upstream_model="up"))) as lumen:
        plain = _events(_post(lumen, {**CHAT, "stream": True}).text)
        asked = _events(
            _post(lumen, {**CHAT, "stream": True, "stream_options": {"include_usage": True}}).text
        )
        unary = _post(lumen, CHAT).json()
    assert all(r["stream_options"]["include_usage"] is True for r in fake.requests[:2])
    assert "stream_options" not in fake.requests[2]
    assert all(not e.get("usage") for e in plain[:-1])
    assert asked[-1] == "[DONE]" and asked[-2]["choices"] == []
    usage = asked[-2]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert bool(usage.get("estimated")) == (mode == "no_usage")
    assert all(not e.get("usage") for e in asked[:-2])
    assert unary["usage"]["completion_tokens"] > 0
    assert bool(unary["usage"].get("estimated")) == (mode == "no_usage")
    for event in [*plain[:-1], *asked[:-1]]:
        assert event["model"] == "m" and event["object"] == "chat.completion.chunk"
    assert unary["model"] == "m"


def test_a_local_engine_without_its_model_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    config = {
        "routing": {"health_interval": 30},
        "models": [
            {
                "name": "local",
                "endpoints": [{"type": "local", "engine": "llama_cpp", "model_path": str(missing)}],
            }
        ],
    }
    with running_lumen(tmp_path, config) as lumen:
        for body in (CHAT, {**CHAT, "stream": True}):
            response = _post(lumen, {**body, "model": "local"})
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "model_unavailable"
            assert "model file not found" in error["message"] and str(missing) in error["message"]
