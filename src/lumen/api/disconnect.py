"""Cancelling work when the client goes away before the response has started.

Starlette notices a disconnect only when it writes, and a non-streaming handler writes nothing
until its upstream answers. `until_disconnect` watches the connection while the handler's task
awaits its work (the request body has been read, so the next ASGI message can only be
`http.disconnect`); a client that leaves cancels that task at once, which runs the work's cleanup,
and the handler gets `ClientDisconnected`. One watcher task, not a task for the work as well: a
task is a large part of a fast request's cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before its response started."""


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        while current.cancelling():
            current.uncancel()  # our own cancellation, because the client left
        raise ClientDisconnected() from None
    finally:
        watcher.cancel()
