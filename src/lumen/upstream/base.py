"""The contract every backend implements, in-process local models and HTTP upstreams alike.

A backend receives the request body already prepared for it (the upstream model name set,
`stream` set, `stream_options.include_usage` added where the endpoint supports it) and answers
in the OpenAI wire format. The gateway never needs to know which kind of backend it talks to.

Failure contract, which failover depends on:
- `request()` and `open_stream()` raise `lumen.errors.UpstreamError` subclasses for anything
  that goes wrong before the first byte of the answer; `retryable` ones fail over.
- Iterating a `ChunkStream` raises `UpstreamError` for failures after the first chunk
  (reset, malformed SSE, gap timeout). The gateway turns those into an SSE error event.
- `ChunkStream.aclose()` must stop the work upstream (close the connection, stop generating).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

JSON = dict[str, Any]

Operation = Literal["chat.completions", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Per-call limits, taken from the model's configuration."""

    connect_timeout: float = 5.0
    first_token_timeout: float = 120.0
    between_chunks_timeout: float = 60.0
    request_timeout: float = 600.0
    max_response_bytes: int = 64 * 1024 * 1024
    """`routing.max_response_bytes`: the largest non-streaming answer accepted."""
    max_event_bytes: int = 1024 * 1024
    """`routing.max_event_bytes`: the largest single event of a stream."""
    request_id: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """More headers for the upstream (the trace context when tracing is on)."""


@dataclass(frozen=True, slots=True)
class TokenCounter:
    """How one backend counts a prompt, for the estimate made before the call
    (`lumen.billing.estimate`). The defaults are the generic chat-template framing."""

    count: Callable[[str], int]
    """Tokens of a text as the backend counts them (its own tokenizer), no special tokens added."""
    per_message: int = 4
    """Tokens the chat template wraps around each message: role and separators."""
    per_chat: int = 3
    """Tokens the chat template adds once per conversation: the reply's priming, a BOS token."""
    default_system: int = 0
    """Tokens of the system prompt the chat template inserts when the chat does not open with a
    system (or developer) message."""
    per_text: int = 0
    """Tokens added to each legacy-completions prompt or embedding input (BOS, CLS/SEP)."""
    max_per_text: int | None = None
    """The most tokens one such prompt or input is billed (an embedding model truncates)."""
    exact_chars: int | None = None
    """How many characters of one request `count` may be asked to count; texts beyond that
    are counted by the character rule. Tokenizers run on the event loop at a few MB/s, so this
    keeps one huge request from stalling every other. None: no limit (a cheap `count`)."""


def token_counter(backend: object) -> TokenCounter | None:
    """The backend's own counter, if it has one: backends may define a `token_counter` attribute
    (a property may answer None until the model is loaded). HTTP backends have none; their
    prompts are estimated with the character rule."""
    counter = getattr(backend, "token_counter", None)
    return counter if isinstance(counter, TokenCounter) else None


class ChunkStream(Protocol):
    """An open streaming answer. Iterating yields the JSON payload of each SSE `data:` event,
    as bytes, in order; the upstream's `[DONE]` terminator is not yielded."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


async def batches_of(stream: ChunkStream) -> AsyncGenerator[list[bytes], None]:
    """The stream's payloads grouped by arrival: a stream that can tell which events came in one
    network read (`batches()`) lets the relay write them to the client in one write."""
    batches = getattr(stream, "batches", None)
    if batches is not None:
        async for batch in batches():
            yield batch
        return
    async for payload in stream:
        yield [payload]


class Backend(Protocol):
    """One place a model runs: an OpenAI-compatible server or an in-process engine."""

    async def request(self, op: Operation, body: JSON, call: CallOptions) -> JSON:
        """A non-streaming call; returns the parsed response body."""
        ...

    async def open_stream(self, op: Operation, body: JSON, call: CallOptions) -> ChunkStream:
        """Starts a streaming call. Returns once the backend has accepted it."""
        ...

    async def probe(self) -> None:
        """A health check that costs nothing (never a billed completion). Raises on failure."""
        ...

    async def aclose(self) -> None: ...
