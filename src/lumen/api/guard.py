"""The outermost layer of every HTTP request: what happens on the connection itself.

- A client that stops sending its body for `server.request_body_timeout` seconds gets a 408 in
  the error envelope (if nothing was answered yet) and the connection is closed.
- A URL holding a NUL character is refused with a 400 before any route sees it.
- A client that disconnects in the middle of its upload is one info line, not a traceback.
- Any other exception is logged once, with its traceback, and answered with the 500 envelope and
  `connection: close`, so a keep-alive client is never left with a connection that dies under
  its next request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lumen.api.errors import error_response, server_error_response
from lumen.errors import InvalidRequest, RequestTimeout

log = logging.getLogger(__name__)


class BodyReadTimedOut(Exception):
    """Raised from `receive()` into the app when the client stalled its upload."""


class ConnectionGuard:
    def __init__(self, app: ASGIApp, *, body_timeout: Callable[[], float]) -> None:
        self.app = app
        self._body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            # Nothing could use it, and PostgreSQL cannot store or even compare it: a search for
            # it would fail as a 500, a name holding it would poison the write it is part of.
            error = InvalidRequest("The URL holds a NUL character (%00), which Lumen does not accept.")
            await error_response(error)(scope, receive, send)
            return
        exchange = _Exchange(receive, send, self._body_timeout())
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception as exc:
            if exchange.timed_out or exchange.dropped:
                await self._after_upload_failed(scope, exchange)
                return
            log.exception("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
            if not exchange.started:
                await server_error_response(_request_id(scope))(scope, receive, send)
            elif not exchange.complete:
                raise  # a response cut short: the server closes the connection
            # else a mounted app answered its own 500 (with `connection: close`)
            return
        if exchange.timed_out or exchange.dropped:
            await self._after_upload_failed(scope, exchange)

    async def _after_upload_failed(self, scope: Scope, exchange: _Exchange) -> None:
        where = f"{scope['method']} {scope['path']}"
        if exchange.dropped:
            log.info("%s: the client closed the connection before sending its whole body", where)
            return
        log.info("%s: the client sent no more of its body for %.0f s; answered 408", where, exchange.timeout)
        if exchange.started:
            return
        headers = {"connection": "close"}
        if (request_id := _request_id(scope)) is not None:
            headers["x-request-id"] = request_id
        error = RequestTimeout(
            f"The request body did not arrive in time (nothing for {exchange.timeout:.0f} s).",
            headers=headers,
        )
        await error_response(error)(scope, _nothing_to_receive, exchange.downstream)


class _Exchange:
    """One request's receive and send, watched."""

    def __init__(self, receive: Receive, send: Send, timeout: float) -> None:
        self._receive = receive
        self.downstream = send
        self.timeout = timeout
        self.body_complete = False
        self.timed_out = False
        self.dropped = False
        self.started = False
        self.complete = False

    async def receive(self) -> Message:
        if self.body_complete:
            return await self._receive()  # waiting for a disconnect: no time limit
        try:
            async with asyncio.timeout(self.timeout):  # no task of its own, unlike wait_for
                message = await self._receive()
        except TimeoutError:
            self.timed_out = True
            raise BodyReadTimedOut from None
        if message["type"] == "http.disconnect":
            self.dropped = True
        elif not message.get("more_body", False):
            self.body_complete = True
        return message

    async def send(self, message: Message) -> None:
        if self.timed_out:
            return  # the guard answers 408 instead of whatever the app made of the timeout
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self.downstream(message)


async def _nothing_to_receive() -> Message:
    return {"type": "http.disconnect"}


def _request_id(scope: Scope) -> str | None:
    request_id = scope.get("state", {}).get("request_id")
    return request_id if isinstance(request_id, str) else None
