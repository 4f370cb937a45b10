"""The in-process tier: the whole ASGI app, lifespan included, driven without a server.

`in_process()` starts Lumen's app in the test's own event loop (database, bank, limiter, recorder,
background tasks: everything `lumen serve` starts, but no socket) and gives an httpx client over
`ASGITransport` plus `exchange()`, a raw ASGI driver for what httpx cannot do in process: reading a
stream event by event and disconnecting at a chosen moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.types import Message

from lumen.app import create_app
from lumen.settings import load_settings
from lumen.state import AppState
from tests.support import TEST_KEY, write_config

REDIS_URL = os.environ.get("LUMEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Exchange:
    """What the app sent for one request."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class InProcess:
    app: Any
    client: httpx.AsyncClient
    key: str = TEST_KEY

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.lumen
        return state

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def exchange(
        self,
        path: str,
        body: Any,
        *,
        request_id: str | None = None,
        disconnect: asyncio.Event | None = None,
        on_chunk: Callable[[bytes], Awaitable[None]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Exchange:
        """POSTs `body` through the ASGI app. The client disconnects when `disconnect` is set (the
        app sees `http.disconnect` on its next receive); `on_chunk` runs as each body part is
        sent. Exceptions the app lets out are kept in `Exchange.error`."""
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        sent_body = False
        gone = disconnect or asyncio.Event()
        result = Exchange()
        all_headers = {**self.auth, "content-type": "application/json", **(headers or {})}
        if request_id is not None:
            all_headers["x-request-id"] = request_id
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in all_headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("lumen", 80),
            "state": {},
        }

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if gone.is_set():
                return  # as uvicorn does: what is sent after a disconnect goes nowhere
            if message["type"] == "http.response.start":
                result.status = message["status"]
                result.headers = {k.decode(): v.decode() for k, v in message.get("headers", ())}
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    result.chunks.append(chunk)
                    if on_chunk is not None:
                        await on_chunk(chunk)

        # A task of its own, as a server runs each request: a cancellation stays inside it.
        task = asyncio.ensure_future(self.app(scope, receive, send))
        try:
            await asyncio.wait({task})
            task.result()
        except BaseException as exc:
            result.error = exc
        return result


@contextlib.asynccontextmanager
async def in_process(
    tmp_path: Path, config: dict[str, Any], *, redis: bool = False
) -> AsyncIterator[InProcess]:
    """Lumen serving `config` in this event loop; with `redis`, on the test Redis under a prefix of
    its own (its keys are deleted afterwards)."""
    prefix = f"lumen-test-{uuid.uuid4().hex[:8]}:"
    server = {**config.get("server", {}), "reload_interval": 0}
    if redis:
        server.update({"redis_url": REDIS_URL, "redis_prefix": prefix})
    path = write_config(tmp_path / "lumen.yaml", {**config, "server": server})
    overrides = {"server.data_dir": str(tmp_path / "data"), "server.bootstrap_key": TEST_KEY}
    settings = load_settings(path, environ={}, overrides=overrides)
    app = create_app(settings, overrides=overrides)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://lumen") as client:
                yield InProcess(app, client)
    finally:
        if redis:
            from redis.asyncio import Redis

            connection = Redis.from_url(REDIS_URL)
            try:
                keys = [key async for key in connection.scan_iter(match=prefix + "*")]
                if keys:
                    await connection.delete(*keys)
            finally:
                await connection.aclose()
