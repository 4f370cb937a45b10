"""Cancelling work when the client goes away before the response has started.

Starlette notices a disconnect only when it writes, and a non-streaming handler writes nothing
until its upstream answers. `until_disconnect` runs the handler's work as a task and watches the
connection meanwhile (the request body has been read, so the next ASGI message can only be
`http.disconnect`); a client that leaves cancels the work at once, which runs its cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before its response started."""


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected()
    return task.result()
