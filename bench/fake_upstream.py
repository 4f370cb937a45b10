"""A very fast OpenAI-compatible fake upstream for the Lumen benchmark.

It must cost far less CPU than the gateway it feeds, or it would disturb the measurement,
so it is a raw asyncio protocol on uvloop with the httptools parser: no framework, no
routing table, responses pre-serialised and cached per (model, chunks, usage) shape.

    python bench/fake_upstream.py --port 8001 [--chunks 16] [--chunk-interval-ms 1]

Endpoints:
  GET  /v1/models             one model, "fake"
  GET  /healthz               200 "ok"
  POST /v1/chat/completions   non-streaming: a fixed small answer with usage;
                              streaming: N content chunks (role only in the first delta), a
                              finish chunk, a usage-only chunk (`choices: []`) when
                              `stream_options.include_usage` is true, then `data: [DONE]`.

Per-request overrides (headers): `x-fake-chunks: N`, `x-fake-chunk-interval-ms: F`; the pause
between events can also be set by a path prefix: `/interval/0/v1/chat/completions`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
from typing import Any

import httptools
import orjson

from common import raise_nofile, run

CREATED = 1736000000
COMPLETION_ID = "chatcmpl-fake"
PROMPT_TOKENS = 12
WORDS = ("Hello", " from", " the", " fake", " upstream", ",", " one", " token", " at", " a", " time", ".")

_JSON_HEADERS = b"Content-Type: application/json\r\n"
_SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
)


def _http_response(status: bytes, body: bytes, keep_alive: bool, extra: bytes = _JSON_HEADERS) -> bytes:
    conn = b"" if keep_alive else b"Connection: close\r\n"
    return b"HTTP/1.1 %s\r\n%sContent-Length: %d\r\n%s\r\n%s" % (status, extra, len(body), conn, body)


def _http_chunk(payload: bytes) -> bytes:
    # One SSE event per HTTP chunk, as real servers flush them.
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _word(i: int) -> str:
    return WORDS[i % len(WORDS)]


def completion_body(model: str, completion_tokens: int) -> bytes:
    text = "".join(_word(i) for i in range(completion_tokens))
    return orjson.dumps(
        {
            "id": COMPLETION_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": completion_tokens,
                "total_tokens": PROMPT_TOKENS + completion_tokens,
            },
        }
    )


def stream_events(model: str, chunks: int, include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed answer, each already framed as an HTTP chunk."""
    base: dict[str, Any] = {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
    }
    # OpenAI puts `usage: null` on every chunk only when usage was asked for.
    tail = {"usage": None} if include_usage else {}
    events = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": _word(i)} if i == 0 else {"content": _word(i)}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        events.append({**base, "choices": [choice], **tail})
    finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    events.append({**base, "choices": [finish], **tail})
    if include_usage:
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": chunks,
            "total_tokens": PROMPT_TOKENS + chunks,
        }
        events.append({**base, "choices": [], "usage": usage})
    framed = [_http_chunk(b"data: " + orjson.dumps(e) + b"\n\n") for e in events]
    framed.append(_http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return framed


class Responses:
    """Pre-serialised responses, built once per shape and reused for every request."""

    def __init__(self, chunks: int, interval_ms: float, completion_tokens: int) -> None:
        self.chunks = chunks
        self.interval = interval_ms / 1000.0
        self.completion_tokens = completion_tokens
        self._json: dict[tuple[str, bool], bytes] = {}
        self._sse: dict[tuple[str, int, bool], list[bytes]] = {}
        models = {
            "object": "list",
            "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "bench"}],
        }
        self.models_body = orjson.dumps(models)

    def completion(self, model: str, keep_alive: bool) -> bytes:
        key = (model, keep_alive)
        resp = self._json.get(key)
        if resp is None:
            resp = _http_response(b"200 OK", completion_body(model, self.completion_tokens), keep_alive)
            if len(self._json) < 1024:  # bounded: a model-name fuzzer must not grow memory
                self._json[key] = resp
        return resp

    def stream(self, model: str, chunks: int, include_usage: bool) -> list[bytes]:
        key = (model, chunks, include_usage)
        events = self._sse.get(key)
        if events is None:
            events = stream_events(model, chunks, include_usage)
            if len(self._sse) < 1024:
                self._sse[key] = events
        return events


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "url")

    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.keep_alive = True


class FakeUpstream(asyncio.Protocol):
    """One connection. Requests are answered strictly in order (pipelining is queued)."""

    def __init__(self, responses: Responses) -> None:
        self.r = responses
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.req = _Request()
        self.queue: collections.deque[_Request] = collections.deque()
        self.busy = False  # a stream with an interval is being written

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_http_response(b"400 Bad Request", b'{"error":"bad request"}', False))
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.req = _Request()

    def on_url(self, url: bytes) -> None:
        self.req.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.req.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.req.body += body

    def on_message_complete(self) -> None:
        self.req.method = self.parser.get_method()
        self.req.keep_alive = self.parser.should_keep_alive()
        self.queue.append(self.req)
        if not self.busy:
            self._drain()

    # answering
    def _drain(self) -> None:
        while self.queue and not self.busy and self.transport is not None:
            self._answer(self.queue.popleft())

    def _answer(self, req: _Request) -> None:
        t = self.transport
        assert t is not None
        path = req.url.split(b"?", 1)[0]
        delay = self.r.interval
        if path.startswith(b"/interval/"):
            # `/interval/<ms>/v1/...`: pacing chosen by the base URL, so one fake upstream can
            # serve a paced and a burst model through a gateway that drops unknown headers.
            _, _, ms, path = path.split(b"/", 3)
            path = b"/" + path
            delay = float(ms) / 1000.0
        if path.endswith(b"/chat/completions") and req.method == b"POST":
            try:
                body = orjson.loads(req.body)
                model = str(body.get("model") or "fake")
            except (orjson.JSONDecodeError, AttributeError):
                t.write(
                    _http_response(b"400 Bad Request", b'{"error":{"message":"bad json"}}', req.keep_alive)
                )
                return
            if body.get("stream"):
                opts = body.get("stream_options") or {}
                chunks = int(req.headers.get(b"x-fake-chunks", self.r.chunks))
                interval = req.headers.get(b"x-fake-chunk-interval-ms")
                if interval is not None:
                    delay = float(interval) / 1000.0
                events = self.r.stream(model, chunks, bool(opts.get("include_usage")))
                t.write(_SSE_HEADERS + (b"\r\n" if req.keep_alive else b"Connection: close\r\n\r\n"))
                if delay <= 0:
                    # Still one write per event so each leaves as its own segment when it can.
                    for ev in events:
                        t.write(ev)
                    self._finish(req)
                else:
                    self.busy = True
                    self._write_events(events, 0, delay, req)
            else:
                t.write(self.r.completion(model, req.keep_alive))
                self._finish(req)
        elif path.endswith(b"/models") and req.method == b"GET":
            t.write(_http_response(b"200 OK", self.r.models_body, req.keep_alive))
            self._finish(req)
        elif path == b"/healthz":
            t.write(_http_response(b"200 OK", b'"ok"', req.keep_alive))
            self._finish(req)
        else:
            t.write(_http_response(b"404 Not Found", b'{"error":{"message":"not found"}}', req.keep_alive))
            self._finish(req)

    def _write_events(self, events: list[bytes], i: int, delay: float, req: _Request) -> None:
        # call_later instead of a coroutine per stream: no task, no sleep future, less CPU.
        if self.transport is None:
            self.busy = False
            return
        self.transport.write(events[i])
        if i + 1 < len(events):
            asyncio.get_running_loop().call_later(delay, self._write_events, events, i + 1, delay, req)
        else:
            self.busy = False
            self._finish(req)
            self._drain()

    def _finish(self, req: _Request) -> None:
        if not req.keep_alive and self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int, responses: Responses, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FakeUpstream(responses), host, port, backlog=1024, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    print(f"fake upstream listening on http://{host}:{port}/v1", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="loopback only (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--chunks", type=int, default=16, help="content chunks per streamed answer")
    ap.add_argument(
        "--chunk-interval-ms",
        type=float,
        default=1.0,
        help="pause between streamed events (default 1 ms, so each event reaches the gateway on its own, "
        "as tokens do from a real model); 0 writes them back to back",
    )
    ap.add_argument(
        "--completion-tokens", type=int, default=16, help="usage.completion_tokens, non-streaming"
    )
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("the fake upstream listens on loopback only")
    raise_nofile()  # one socket per open stream: 1,000 of them exceed the usual 1,024 soft limit
    responses = Responses(args.chunks, args.chunk_interval_ms, args.completion_tokens)
    run(serve(args.host, args.port, responses))


if __name__ == "__main__":
    main()
