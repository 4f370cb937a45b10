"""No API key, endpoint key or URL credential ever appears in a log line."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support import TEST_KEY, running_lumen, upstream

UPSTREAM_KEY = "upstream-key-0123456789abcdef"
URL_PASSWORD = "url-password-9876543210"


def test_keys_and_credentials_stay_out_of_the_logs(
    tmp_path: Path, fake: FakeUpstream, fake2: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for server in (fake, fake2):
        server.mode, server.status = "status", 500  # failures are logged: the interesting case
    with_credentials = fake.url.replace("http://", f"http://user:{URL_PASSWORD}@")
    config = {
        "routing": {"health_interval": 0},
        "models": [
            {
                "name": "m",
                "endpoints": [upstream(with_credentials), upstream(fake2.url, api_key=UPSTREAM_KEY)],
            }
        ],
    }
    with running_lumen(tmp_path, config, reload=True) as lumen:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for headers in (lumen.auth, {"Authorization": "Bearer sk_" + "x" * 43}, {}):
            httpx.post(lumen.v1 + "/chat/completions", headers=headers, json=body)
        lumen.config_path.write_text("models: [{name: broken}]")  # type: ignore[union-attr]
        import time

        time.sleep(0.3)  # the rejected reload gets logged
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "failed" in logged and "***@" in logged  # the failures were logged, URLs masked ...
    assert fake.headers and fake.headers[0]["authorization"].startswith("Basic ")  # URL credentials used
    for secret in (TEST_KEY, "sk_" + "x" * 43, UPSTREAM_KEY, URL_PASSWORD):
        assert secret not in logged  # ... without a secret


def test_an_unreachable_backend_is_named_without_its_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection errors name the backend, in the log and in the client's 502, without the URL's
    user info or query string."""
    import socket

    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://user:{URL_PASSWORD}@127.0.0.1:{port}/v1?api_key={UPSTREAM_KEY}"
    config = {"routing": {"health_interval": 0.05}, "models": [{"name": "m", "endpoints": [upstream(url)]}]}
    with running_lumen(tmp_path, config) as lumen:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=body)
        import time

        time.sleep(0.3)  # a few health checks fail and are logged
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert answer.status_code in (502, 503), answer.text
    assert f"127.0.0.1:{port}" in logged  # the backend is named ...
    for text in (answer.text, logged):
        assert URL_PASSWORD not in text and UPSTREAM_KEY not in text  # ... without its secrets
