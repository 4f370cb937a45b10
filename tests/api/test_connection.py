"""The connection itself, through a real `lumen serve` server and raw sockets: slow headers and
stalled bodies time out, a dropped upload is one info line, and a 500 closes its connection
properly instead of leaving a dead keep-alive connection behind."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.support import ECHO, RunningLumen, model, running_lumen

CHAT = b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}'
WAIT = 10.0
"""How long a socket waits for the server; every timeout under test is a fraction of it."""


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    config = {
        "server": {"request_header_timeout": 0.5, "request_body_timeout": 0.5},
        "models": [model("echo", ECHO)],
    }
    with running_lumen(tmp_path_factory.mktemp("connection"), config, as_cli=True) as running:
        yield running


def _connect(lumen: RunningLumen) -> socket.socket:
    host, port = lumen.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a content-length (what Lumen's error answers have)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(status_line.split()[1]), headers, body


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _post_head(lumen: RunningLumen, length: int) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: lumen\r\nAuthorization: Bearer {lumen.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _wait_for(records: list[logging.LogRecord], predicate: Any) -> list[logging.LogRecord]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = [r for r in records if predicate(r)]
        if found:
            return found
        time.sleep(0.02)
    return []


def test_a_connection_that_sends_no_complete_headers_is_closed(lumen: RunningLumen) -> None:
    with _connect(lumen) as idle:
        assert _closed_by_server(idle)
    with _connect(lumen) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: lumen\r\n")  # and never the blank line
        assert _closed_by_server(slow)


def test_headers_in_time_are_served_on_a_kept_alive_connection(lumen: RunningLumen) -> None:
    with _connect(lumen) as sock:
        for _ in range(2):
            sock.sendall(_post_head(lumen, len(CHAT)) + CHAT)
            status, headers, _ = _read_response(sock)
            assert status == 200 and headers.get("connection") != "close"


def test_a_stalled_body_is_answered_408_and_the_connection_closed(
    lumen: RunningLumen, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with _connect(lumen) as sock:
        sock.sendall(_post_head(lumen, len(CHAT)) + CHAT[:10])
        status, headers, body = _read_response(sock)
        assert status == 408
        assert orjson.loads(body)["error"]["code"] == "request_timeout"
        assert headers["connection"] == "close" and headers["x-request-id"]
        assert _closed_by_server(sock)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert lumen.state.pipeline.holding == 0


def test_a_client_dropping_mid_upload_is_one_info_line(
    lumen: RunningLumen, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with _connect(lumen) as sock:
        sock.sendall(_post_head(lumen, 1000) + CHAT[:10])
        time.sleep(0.1)  # let the server start reading the body
    dropped = _wait_for(caplog.records, lambda r: "before sending its whole body" in r.getMessage())
    assert [r.levelno for r in dropped] == [logging.INFO]
    time.sleep(0.2)  # anything logged after the info line would be logged by now
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("path", ["/v1/models", "/api/admin/users/1"])
def test_a_500_closes_its_connection_and_is_logged_once(
    lumen: RunningLumen, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(lumen.state.access, "resolve", broken)
    monkeypatch.setattr("lumen.identity.store.get_user", broken)
    caplog.set_level(logging.INFO)
    with _connect(lumen) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: lumen\r\nAuthorization: Bearer {lumen.key}\r\n\r\n".encode()
        )
        status, headers, body = _read_response(sock)
        assert status == 500
        assert orjson.loads(body)["error"]["type"] == "server_error"
        assert headers["connection"] == "close"
        assert _closed_by_server(sock)
    errors = _wait_for(caplog.records, lambda r: r.levelno >= logging.ERROR)
    time.sleep(0.2)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
