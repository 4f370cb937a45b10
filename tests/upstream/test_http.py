"""The HTTP backend against a real (in-process) server: what callers see of a failing backend,
and the size caps on its answers."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web

from lumen.errors import (
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnexpectedContent,
    UpstreamUnreachable,
)
from lumen.upstream.base import CallOptions
from lumen.upstream.http import OpenAIBackend, new_session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ADDRESS = re.compile(r"127\.0\.0\.1|localhost|:\d{2,5}\b|https?://|<")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    client = new_session()
    yield client
    await client.close()


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1"


async def _fail(
    session: aiohttp.ClientSession, handler: Handler, *, stream: bool = False, call: CallOptions | None = None
) -> UpstreamError:
    runner, url = await _serve(handler)
    backend = OpenAIBackend(session, url, None)
    try:
        with pytest.raises(UpstreamError) as caught:
            if stream:
                chunks = await backend.open_stream(
                    "chat.completions", {**CHAT, "stream": True}, call or CallOptions()
                )
                async for _ in chunks:
                    pass
            else:
                await backend.request("chat.completions", CHAT, call or CallOptions())
        return caught.value
    finally:
        await runner.cleanup()


def _shows_no_address(error: UpstreamError) -> None:
    assert not ADDRESS.search(error.message), error.message
    assert not ADDRESS.search(str(error.envelope())), error.envelope()


async def test_connection_refused_is_unreachable_and_names_no_address(session: aiohttp.ClientSession) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connections are refused
    backend = OpenAIBackend(session, f"http://127.0.0.1:{port}/v1", None)
    with pytest.raises(UpstreamUnreachable) as caught:
        await backend.request("chat.completions", CHAT, CallOptions())
    error = caught.value
    assert error.unreachable and error.retryable
    _shows_no_address(error)
    assert f"127.0.0.1:{port}" in error.detail  # the logs and the admin pages say which endpoint


async def test_a_4xx_keeps_a_cleaned_summary_of_the_backends_message(session: aiohttp.ClientSession) -> None:
    said = (
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens. "
        "Served by http://10.1.2.3:8000/v1 on gpu-7.cluster.internal (fd00::17), see vllm-0:8000. "
        + "x"
        * 600
    )

    async def handler(request: web.Request) -> web.Response:
        body = {"error": {"message": said, "type": "BadRequestError", "code": 400, "param": "<b>"}}
        return web.json_response(body, status=400)

    error = await _fail(session, handler)
    assert isinstance(error, UpstreamStatusError)
    assert (error.status, error.retryable, error.type, error.param) == (400, False, "BadRequestError", None)
    assert error.message.startswith("This model's maximum context length is 4096 tokens.")
    assert len(error.message) <= 300
    _shows_no_address(error)
    for secret in ("10.1.2.3", "gpu-7", "fd00", "vllm-0"):
        assert secret not in error.message
    assert "10.1.2.3" in error.detail


async def test_an_html_error_page_is_not_relayed(session: aiohttp.ClientSession) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1><hr>nginx/1.25.3 at proxy.corp.example</body></html>"

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=page, status=502, content_type="text/html")

    error = await _fail(session, handler)
    assert isinstance(error, UpstreamStatusError) and error.retryable
    assert error.message == "The model backend failed (HTTP 502)."
    _shows_no_address(error)
    assert "nginx" in error.detail


async def test_a_5xx_json_message_is_summarised(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "engine dead at 10.0.0.9"}}, status=500)

    error = await _fail(session, handler)
    assert error.message == "The model backend failed (HTTP 500): engine dead at [address]"


async def test_an_html_page_with_status_200_is_retryable(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text="<html>Please log in at https://sso.corp.example</html>", content_type="text/html"
        )

    error = await _fail(session, handler)
    assert isinstance(error, UpstreamUnexpectedContent)
    assert error.retryable and error.code == "upstream_protocol_error"
    _shows_no_address(error)
    assert "sso.corp.example" in error.detail


async def test_a_stream_that_is_not_sse_is_retryable(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    error = await _fail(session, handler, stream=True)
    assert isinstance(error, UpstreamUnexpectedContent) and error.retryable
    _shows_no_address(error)


async def test_an_answer_over_the_cap_is_refused(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)  # chunked: no content-length to judge by
        for _ in range(64):
            await response.write(b" " * 1024)
        await response.write(b"{}")
        return response

    error = await _fail(session, handler, call=CallOptions(max_response_bytes=16 * 1024))
    assert isinstance(error, UpstreamTooLarge) and not error.retryable
    _shows_no_address(error)


async def test_an_announced_length_over_the_cap_is_refused_unread(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"data": "x" * 40_000})

    error = await _fail(session, handler, call=CallOptions(max_response_bytes=16 * 1024))
    assert isinstance(error, UpstreamTooLarge)


async def test_a_stream_event_over_the_cap_ends_the_stream(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": []}\n\n')
        await response.write(b'data: {"choices": [], "junk": "' + b"x" * 8192)
        for _ in range(16):
            await response.write(b"x" * 1024)
        return response

    error = await _fail(session, handler, stream=True, call=CallOptions(max_event_bytes=4096))
    assert isinstance(error, UpstreamTooLarge)


async def test_a_timeout_names_no_address(session: aiohttp.ClientSession) -> None:
    import asyncio

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    error = await _fail(session, handler, call=CallOptions(request_timeout=0.2))
    assert isinstance(error, UpstreamTimeout)
    _shows_no_address(error)
    assert "127.0.0.1" in error.detail


async def test_a_probe_answered_with_html_fails(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html>it works!</html>", content_type="text/html")

    runner, url = await _serve(handler)
    try:
        with pytest.raises(UpstreamUnexpectedContent):
            await OpenAIBackend(session, url, None).probe()
    finally:
        await runner.cleanup()


async def test_a_good_answer_still_passes(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"id": "x", "choices": []}), content_type="application/json")

    runner, url = await _serve(handler)
    try:
        answer = await OpenAIBackend(session, url, None).request("chat.completions", CHAT, CallOptions())
    finally:
        await runner.cleanup()
    assert answer == {"id": "x", "choices": []}
