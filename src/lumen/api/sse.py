"""An SSE response that notices a client disconnect at once and cancels the stream.

Starlette's StreamingResponse notices a disconnect only when the next write fails, which never
happens while an upstream is silent. Here a watcher waits for `http.disconnect` and cancels the
task that pulls from the stream, so the stream's `finally` closes the upstream request and
settles the bill straight away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class SSEResponse(Response):
    def __init__(
        self,
        stream: AsyncGenerator[bytes, None],
        headers: dict[str, str] | None = None,
        *,
        on_abandon: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`on_abandon` runs after the stream is closed, whether or not it ever started: what
        must be released even when the client leaves before the first chunk (it must be
        idempotent, as the stream's own `finally` may already have released it)."""
        self.stream = stream
        self.on_abandon = on_abandon
        self.status_code = 200
        self.sse_headers = [*SSE_HEADERS, *((k.encode(), v.encode()) for k, v in (headers or {}).items())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.current_task()
        assert pump is not None
        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    pump.cancel()
                    return

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.sse_headers})
            async for chunk in self.stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise
            # Our own cancellation, because the client left: the response simply ends here.
            _uncancel(pump)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            try:
                await self.stream.aclose()
            finally:
                if self.on_abandon is not None:
                    await self.on_abandon()


def _uncancel(task: asyncio.Task[object]) -> None:
    while task.cancelling():
        task.uncancel()
