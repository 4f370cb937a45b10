"""A fake OpenAI-compatible upstream with fault modes, served for real on an ephemeral port.

Tests set `fake.mode` and read `fake.requests` / `fake.events`. It is a raw ASGI app so that it
can misbehave precisely (hang, reset the connection, send broken SSE) and notice a disconnect.

Modes:
    ok              normal answers (usage included when asked for)
    no_usage        answers and streams without any usage
    usage_inline    the usage arrives on the finish chunk instead of its own chunk
    slow            streams with `fake.chunk_delay` seconds between chunks
    slow_start      sends the stream's headers, waits `fake.first_delay` seconds, then streams
    hang            accepts the request and never answers
    hang_stream     sends the stream's headers, then nothing
    reset           streams two chunks, then drops the connection
    status          answers every request with `fake.status` and an OpenAI error body
    malformed_sse   streams one chunk, then a `data:` line that is not JSON
    models_down     /v1/models answers 500 (health checks fail), completions work
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any

import orjson
import uvicorn

Scope = dict[str, Any]

WORDS = ["Hello", " from", " the", " fake", " upstream", "."]


class FakeUpstream:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.mode = "ok"
        self.status = 500
        self.chunk_delay = 0.05
        self.first_delay = 0.5
        self.words = list(WORDS)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.events: list[str] = []
        self.probes = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self, log_level="warning", lifespan="off", http="h11", loop="asyncio")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_for_event(self, event: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if event in self.events:
                return True
            time.sleep(0.01)
        return False

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "GET" and path == "/v1/models":
            self.probes += 1
            if self.mode in ("models_down", "status"):
                await _json(send, 500, {"error": {"message": "models unavailable", "type": "server_error"}})
            elif self.mode == "hang":
                await asyncio.sleep(3600)
            else:
                await _json(
                    send,
                    200,
                    {
                        "object": "list",
                        "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "fake"}],
                    },
                )
            return
        body = await _read(receive)
        request = orjson.loads(body) if body else {}
        self.requests.append(request)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if self.mode == "hang":
            self.events.append("hung")
            await _wait_disconnect(receive)
            self.events.append("cancelled")
            return
        if self.mode == "status":
            await _json(
                send,
                self.status,
                {
                    "error": {
                        "message": f"fake failure {self.status}",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            return
        if path == "/v1/embeddings":
            await _json(send, 200, self._embedding(request))
        elif request.get("stream"):
            await self._stream(request, receive, send, path)
        else:
            await _json(send, 200, self._completion(request, path))

    def _usage(self, request: dict[str, Any]) -> dict[str, int]:
        return {"prompt_tokens": 7, "completion_tokens": len(self.words), "total_tokens": 7 + len(self.words)}

    def _completion(self, request: dict[str, Any], path: str) -> dict[str, Any]:
        text = "".join(self.words)
        if path == "/v1/completions":
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            obj = "text_completion"
        else:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
            obj = "chat.completion"
        answer: dict[str, Any] = {
            "id": "cmpl-fake",
            "object": obj,
            "created": 1,
            "model": request.get("model"),
            "choices": [choice],
        }
        if self.mode != "no_usage":
            answer["usage"] = self._usage(request)
        return answer

    def _embedding(self, request: dict[str, Any]) -> dict[str, Any]:
        inputs = request.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        answer: dict[str, Any] = {
            "object": "list",
            "model": request.get("model"),
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.5, -0.5]} for i in range(len(items))
            ],
        }
        if self.mode != "no_usage":
            answer["usage"] = {"prompt_tokens": 3, "total_tokens": 3}
        return answer

    async def _stream(self, request: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        if self.mode == "hang_stream":
            self.events.append("hung")
            await _wait_disconnect(receive)
            self.events.append("cancelled")
            return
        disconnected = asyncio.create_task(_wait_disconnect(receive))
        if self.mode == "slow_start":
            done, _ = await asyncio.wait({disconnected}, timeout=self.first_delay)
            if done:
                self.events.append("cancelled")
                return
        try:
            for index, payload in enumerate(self._chunks(request, path)):
                if disconnected.done():
                    self.events.append("cancelled")
                    return
                if self.mode == "reset" and index == 2:
                    # Mid-stream: after the first chunks have had time to reach the reader (a
                    # reader that sees the reset first loses what was buffered before it).
                    await asyncio.sleep(0.2)
                    self.events.append("reset")
                    raise ConnectionResetError("fake reset")
                if self.mode == "malformed_sse" and index == 1:
                    payload = b"{not json"
                await send(
                    {"type": "http.response.body", "body": b"data: " + payload + b"\n\n", "more_body": True}
                )
                if self.mode == "slow":
                    done, _ = await asyncio.wait({disconnected}, timeout=self.chunk_delay)
                    if done:
                        self.events.append("cancelled")
                        return
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            self.events.append("completed")
        finally:
            disconnected.cancel()

    def _chunks(self, request: dict[str, Any], path: str) -> list[bytes]:
        model = request.get("model")
        legacy = path == "/v1/completions"
        obj = "text_completion" if legacy else "chat.completion.chunk"
        base = {"id": "chunk-fake", "object": obj, "created": 1, "model": model}

        def choice(delta: dict[str, Any] | str, finish: str | None = None) -> dict[str, Any]:
            if legacy:
                return {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
            return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}

        chunks: list[dict[str, Any]] = []
        if not legacy:
            chunks.append({**base, "choices": [choice({"role": "assistant", "content": ""})]})
        for word in self.words:
            chunks.append({**base, "choices": [choice(word if legacy else {"content": word})]})
        wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        final = {**base, "choices": [choice("" if legacy else {}, "stop")]}
        if self.mode == "usage_inline" and wants_usage:
            final["usage"] = self._usage(request)
        chunks.append(final)
        if wants_usage and self.mode not in ("no_usage", "usage_inline"):
            chunks.append({**base, "choices": [], "usage": self._usage(request)})
        return [orjson.dumps(c) for c in chunks]


async def _read(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _json(send: Any, status: int, data: Any) -> None:
    with contextlib.suppress(OSError):
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(data)})
