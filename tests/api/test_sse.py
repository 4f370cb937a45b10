"""SSEResponse and the relay when the client leaves before the first chunk is sent (the pipeline's
own abandonment and settlement are tested in tests/gateway)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Message

from lumen.api.sse import SSEResponse
from lumen.gateway.relay import StreamOutcome, StreamRelay
from lumen.settings import EndpointSettings
from lumen.upstream.endpoint import Endpoint
from lumen.upstream.local.echo import EchoBackend


class Upstream:
    """A ChunkStream that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        yield b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}'

    async def aclose(self) -> None:
        self.closed += 1


async def leave_during_the_response_start(response: SSEResponse) -> None:
    """Runs `response` with a client that disconnects while the status line is being sent."""
    started = asyncio.Event()
    gone = asyncio.Event()

    async def receive() -> Message:
        await started.wait()
        gone.set()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.set()
            await asyncio.Event().wait()  # a slow socket: only the disconnect ends this

    await response({"type": "http"}, receive, send)
    assert gone.is_set()


def relay_over(upstream: Upstream, closed: list[StreamOutcome]) -> StreamRelay:
    endpoint = Endpoint(EndpointSettings(type="local", engine="echo"), EchoBackend(), upstream_model="m")
    endpoint.in_flight = 1

    async def no_reopen(error: object) -> None:
        return None

    async def settle(outcome: StreamOutcome) -> None:
        closed.append(outcome)

    return StreamRelay(
        endpoint=endpoint,
        stream=upstream,
        chunk_object="chat.completion.chunk",
        model_name="m",
        include_usage=False,
        prompt_estimate=3,
        max_completion=100,
        keepalive_interval=15.0,
        reopen=no_reopen,
        settle=settle,
    )


async def test_a_client_leaving_before_the_first_chunk_still_closes_the_upstream() -> None:
    upstream, closed = Upstream(), []
    relay = relay_over(upstream, closed)
    await leave_during_the_response_start(SSEResponse(relay.events(), on_abandon=relay.abandon))
    assert upstream.closed == 1
    assert relay.outcome.cancelled and closed == []  # the pipeline settles it (tests/gateway)


async def test_without_the_abandon_hook_an_unstarted_stream_releases_nothing() -> None:
    """Why the hook exists: closing a generator that never ran does not run its `finally`."""
    upstream, closed = Upstream(), []
    relay = relay_over(upstream, closed)
    await leave_during_the_response_start(SSEResponse(relay.events()))
    assert upstream.closed == 0


async def test_a_finished_stream_is_closed_once() -> None:
    upstream, closed = Upstream(), []
    relay = relay_over(upstream, closed)
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await SSEResponse(relay.events(), on_abandon=relay.abandon)({"type": "http"}, receive, send)
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert upstream.closed == 1 and len(closed) == 1 and not closed[0].cancelled
