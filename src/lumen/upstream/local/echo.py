"""The deterministic echo backend: a model that repeats the last user message.

Used by tests, CI and load tests of the proxy path. The echoed text is the last user message
(the text parts of a part list joined by newlines). Everything is exact and reproducible:

- Pseudo-tokens are the matches of `\\s*\\S+`, so streamed deltas concatenate to exactly the
  non-streamed content (trailing whitespace of the message is not echoed).
- `max_completion_tokens` / `max_tokens` truncate the echo (finish_reason "length").
- Usage: completion tokens are the echoed pseudo-tokens times `n`; prompt tokens are the
  pseudo-tokens of every message plus 4 per message (legacy completions: of the prompt).
- The id is `chatcmpl-echo-` (`cmpl-echo-` for legacy completions) plus the first 24 hex digits
  of the sha256 of the request as canonical JSON, and `created` comes from the injectable
  `clock`, so identical requests give byte-identical answers.
- Embeddings are a signed hashing bag of lower-cased `\\w+` words (blake2b, 8-byte digest),
  L2-normalised, 384 dimensions unless the request sets `dimensions`. Token-id inputs count
  each id as the word `str(id)`.

Test hook: if the echoed text (last user message, or the legacy prompt) starts with
`[[echo:slow:N]]`, a stream waits N milliseconds (asyncio.sleep) before every chunk after the
first, and a non-streamed answer waits N milliseconds once, so tests can cancel mid-answer or
hit timeouts. The marker is echoed like any other text.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from lumen.errors import InvalidRequest
from lumen.upstream.base import JSON, CallOptions, ChunkStream, Operation, TokenCounter
from lumen.upstream.local import encoding as wire

PSEUDO_TOKEN = re.compile(r"\s*\S+")
WORD = re.compile(r"\w+")
SLOW_HOOK = re.compile(r"\[\[echo:slow:(\d+)\]\]")
PER_MESSAGE_TOKENS = 4
DEFAULT_DIMENSIONS = 384


def pseudo_tokens(text: str) -> list[str]:
    return PSEUDO_TOKEN.findall(text)


@dataclass(frozen=True, slots=True)
class _Answer:
    """One echo answer, shared by the streamed and the non-streamed form."""

    head: JSON
    tokens: list[str]
    finish_reason: str
    n: int
    prompt_tokens: int
    delay: float

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def usage(self) -> JSON:
        return wire.usage(self.prompt_tokens, len(self.tokens) * self.n)


class EchoBackend:
    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        # Its usage counts pseudo-tokens plus 4 per message, and nothing once per chat.
        self.token_counter = TokenCounter(self.count_tokens, per_message=PER_MESSAGE_TOKENS, per_chat=0)

    def count_tokens(self, text: str) -> int:
        """The pseudo-tokens of `text`, as the echo's usage counts them."""
        return len(pseudo_tokens(text))

    async def request(self, op: Operation, body: JSON, call: CallOptions) -> JSON:
        if op == "embeddings":
            return _embeddings(body)
        answer = self._answer(op, body)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if op == "chat.completions":
            return _chat_response(answer)
        return _text_response(answer)

    async def open_stream(self, op: Operation, body: JSON, call: CallOptions) -> ChunkStream:
        if op == "embeddings":
            raise InvalidRequest("embeddings cannot be streamed", param="stream")
        answer = self._answer(op, body)
        chunks = _chat_chunks(answer) if op == "chat.completions" else _text_chunks(answer)
        if wire.include_usage(body):
            chunks.append(_usage_chunk(op, answer))
        return wire.GeneratorStream(_paced(chunks, answer.delay))

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _answer(self, op: Operation, body: JSON) -> _Answer:
        if op == "chat.completions":
            messages = wire.chat_messages(body)
            text = _last_user_text(messages)
            prompt_tokens = sum(
                self.count_tokens(wire.content_text(m.get("content"))) + PER_MESSAGE_TOKENS for m in messages
            )
            prefix = "chatcmpl-echo-"
        elif op == "completions":
            prompt = wire.completion_prompt(body)
            text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
            prompt_tokens = self.count_tokens(text)
            prefix = "cmpl-echo-"
        else:
            raise InvalidRequest(f"the echo backend does not support '{op}'")
        tokens = pseudo_tokens(text)
        limit = wire.max_tokens(body)
        truncated = limit is not None and len(tokens) > limit
        return _Answer(
            head={"id": prefix + _digest(body), "created": int(self._clock()), "model": body.get("model")},
            tokens=tokens[:limit] if truncated else tokens,
            finish_reason="length" if truncated else "stop",
            n=wire.choice_count(body),
            prompt_tokens=prompt_tokens,
            delay=_slow_delay(text),
        )


def _digest(body: JSON) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:24]


def _last_user_text(messages: list[JSON]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return wire.content_text(message.get("content"))
    return ""


def _slow_delay(text: str) -> float:
    match = SLOW_HOOK.match(text)
    return int(match.group(1)) / 1000 if match else 0.0


def _chat_response(answer: _Answer) -> JSON:
    message = {"role": "assistant", "content": answer.text, "refusal": None}
    return wire.chat_response(
        answer.head, [dict(message) for _ in range(answer.n)], answer.finish_reason, answer.usage()
    )


def _text_response(answer: _Answer) -> JSON:
    return wire.text_response(answer.head, [answer.text] * answer.n, answer.finish_reason, answer.usage())


def _chat_chunks(answer: _Answer) -> list[JSON]:
    chunks: list[JSON] = []
    for i in range(answer.n):
        role = wire.delta_choice(i, {"role": "assistant", "content": ""})
        chunks.append(wire.chat_chunk(answer.head, [role]))
        chunks.extend(
            wire.chat_chunk(answer.head, [wire.delta_choice(i, {"content": tok})]) for tok in answer.tokens
        )
        finish = wire.delta_choice(i, {}, answer.finish_reason)
        chunks.append(wire.chat_chunk(answer.head, [finish]))
    return chunks


def _text_chunks(answer: _Answer) -> list[JSON]:
    chunks: list[JSON] = []
    for i in range(answer.n):
        chunks.extend(wire.text_chunk(answer.head, [wire.text_choice(i, tok)]) for tok in answer.tokens)
        chunks.append(wire.text_chunk(answer.head, [wire.text_choice(i, "", answer.finish_reason)]))
    return chunks


def _usage_chunk(op: Operation, answer: _Answer) -> JSON:
    build = wire.chat_chunk if op == "chat.completions" else wire.text_chunk
    return build(answer.head, [], answer.usage())


async def _paced(chunks: list[JSON], delay: float) -> AsyncIterator[bytes]:
    for position, chunk in enumerate(chunks):
        if delay and position:
            await asyncio.sleep(delay)
        yield orjson.dumps(chunk)


# --- embeddings -------------------------------------------------------------------------------


def _embeddings(body: JSON) -> JSON:
    items = wire.embedding_inputs(body)
    fmt = wire.encoding_format(body)
    dimensions = _dimensions(body)
    vectors = [wire.encode_vector(_hash_vector(_words(item), dimensions), fmt) for item in items]
    tokens = sum(len(item) if isinstance(item, list) else len(pseudo_tokens(item)) for item in items)
    return wire.embedding_response(body.get("model"), vectors, tokens)


def _dimensions(body: JSON) -> int:
    value = body.get("dimensions")
    if value is None:
        return DEFAULT_DIMENSIONS
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise InvalidRequest("'dimensions' must be an integer between 1 and 4096", param="dimensions")
    return value


def _words(item: wire.EmbeddingInput) -> list[str]:
    if isinstance(item, list):
        return [str(token) for token in item]
    return WORD.findall(item.lower())


def _hash_vector(words: list[str], dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    for word in words:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dimensions
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    # A text without words keeps the zero vector: there is no direction to normalise.
    return [v / norm for v in vector] if norm else vector
