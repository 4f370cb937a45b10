from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import struct
from typing import Any

import orjson
import pytest

from lumen.billing.estimate import estimate_prompt
from lumen.errors import InvalidRequest
from lumen.upstream.base import CallOptions, token_counter
from lumen.upstream.local.echo import EchoBackend

CALL = CallOptions()
NOW = 1_700_000_000


@pytest.fixture
def echo() -> EchoBackend:
    return EchoBackend(clock=lambda: NOW)


def chat(text: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": "echo-model",
        "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": text}],
        **extra,
    }


async def collect(echo: EchoBackend, op: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    stream = await echo.open_stream(op, body, CALL)
    return [orjson.loads(chunk) async for chunk in stream]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- chat ---------------------------------------------------------------------------------


async def test_chat_echoes_last_user_message_with_exact_usage(echo: EchoBackend) -> None:
    body = chat("Hello  there world")
    body["messages"].append({"role": "assistant", "content": "ignored reply"})
    response = await echo.request("chat.completions", body, CALL)

    assert response["object"] == "chat.completion"
    assert response["model"] == "echo-model"
    assert response["created"] == NOW
    [choice] = response["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello  there world", "refusal": None}
    assert choice["finish_reason"] == "stop"
    # 2 + 3 + 2 pseudo-tokens, plus 4 per message
    assert response["usage"] == {"prompt_tokens": 19, "completion_tokens": 3, "total_tokens": 22}


async def test_id_is_sha256_of_canonical_request_and_answers_are_byte_identical(echo: EchoBackend) -> None:
    body = chat("same question")
    first = await echo.request("chat.completions", body, CALL)
    second = await echo.request("chat.completions", dict(reversed(list(body.items()))), CALL)

    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    assert first["id"] == "chatcmpl-echo-" + hashlib.sha256(canonical).hexdigest()[:24]
    assert orjson.dumps(first) == orjson.dumps(second)
    other = await echo.request("chat.completions", chat("another question"), CALL)
    assert other["id"] != first["id"]


async def test_text_parts_are_joined_and_images_ignored(echo: EchoBackend) -> None:
    parts = [
        {"type": "text", "text": "first part"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "second"},
    ]
    response = await echo.request("chat.completions", chat(parts), CALL)
    assert response["choices"][0]["message"]["content"] == "first part\nsecond"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_truncates_with_length(echo: EchoBackend, field: str) -> None:
    response = await echo.request("chat.completions", chat("one two three four", **{field: 2}), CALL)
    assert response["choices"][0]["message"]["content"] == "one two"
    assert response["choices"][0]["finish_reason"] == "length"
    assert response["usage"]["completion_tokens"] == 2


async def test_limit_equal_to_length_is_a_normal_stop(echo: EchoBackend) -> None:
    response = await echo.request("chat.completions", chat("one two", max_tokens=2), CALL)
    assert response["choices"][0]["finish_reason"] == "stop"


async def test_max_completion_tokens_wins_over_max_tokens(echo: EchoBackend) -> None:
    body = chat("a b c d", max_tokens=1, max_completion_tokens=3)
    response = await echo.request("chat.completions", body, CALL)
    assert response["choices"][0]["message"]["content"] == "a b c"


async def test_n_gives_identical_choices_and_bills_each(echo: EchoBackend) -> None:
    response = await echo.request("chat.completions", chat("x y", n=3), CALL)
    assert [c["index"] for c in response["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in response["choices"]} == {"x y"}
    assert response["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"model": "m", "messages": []},
        chat("x", max_tokens=0),
        chat("x", max_tokens="3"),
        chat("x", max_tokens=True),
        chat("x", n=0),
    ],
)
async def test_invalid_chat_requests(echo: EchoBackend, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        await echo.request("chat.completions", body, CALL)


# --- streaming ----------------------------------------------------------------------------


async def test_stream_follows_openai_chunk_rules(echo: EchoBackend) -> None:
    text = "  Hello,  streaming world! \n done"
    plain = await echo.request("chat.completions", chat(text), CALL)
    body = chat(text, stream=True, stream_options={"include_usage": True})
    chunks = await collect(echo, "chat.completions", body)

    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert sum("role" in d for d in deltas) == 1
    assert "".join(d.get("content", "") for d in deltas) == plain["choices"][0]["message"]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == plain["usage"]


async def test_stream_has_one_chunk_per_pseudo_token(echo: EchoBackend) -> None:
    chunks = await collect(echo, "chat.completions", chat("a bb  ccc", stream=True))
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert contents == ["", "a", " bb", "  ccc", None]


async def test_stream_without_include_usage_has_no_usage_chunk(echo: EchoBackend) -> None:
    chunks = await collect(echo, "chat.completions", chat("a b", stream=True))
    assert all(c["choices"] for c in chunks)
    assert all(c["usage"] is None for c in chunks)


async def test_stream_truncation_and_n(echo: EchoBackend) -> None:
    body = chat("a b c", stream=True, max_tokens=2, n=2, stream_options={"include_usage": True})
    chunks = await collect(echo, "chat.completions", body)
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert "".join(c["delta"].get("content", "") for c in mine) == "a b"
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["length"]
    first_seen = [c["choices"][0]["index"] for c in chunks if c["choices"]]
    assert first_seen.index(0) < first_seen.index(1)
    assert chunks[-1]["usage"]["completion_tokens"] == 4


async def test_slow_hook_waits_between_chunks_and_can_be_cancelled(echo: EchoBackend) -> None:
    stream = await echo.open_stream("chat.completions", chat("[[echo:slow:5000]] a b c", stream=True), CALL)
    chunks = aiter(stream)
    await anext(chunks)  # the first chunk is not delayed
    pending = asyncio.ensure_future(anext(chunks))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not pending.done()
    await stream.aclose()  # while another task waits inside the stream: must not raise
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)


async def test_fast_stream_needs_no_waiting(echo: EchoBackend) -> None:
    stream = await echo.open_stream("chat.completions", chat("a b c", stream=True), CALL)
    chunks = aiter(stream)
    await anext(chunks)
    pending = asyncio.ensure_future(anext(chunks))
    for _ in range(5):
        await asyncio.sleep(0)
    assert pending.done()
    await stream.aclose()


# --- legacy completions -------------------------------------------------------------------


async def test_completions_echo_the_prompt(echo: EchoBackend) -> None:
    body = {"model": "echo-model", "prompt": ["def f(x):"], "max_tokens": 5}
    response = await echo.request("completions", body, CALL)
    assert response["object"] == "text_completion"
    assert response["id"].startswith("cmpl-echo-")
    assert response["choices"] == [
        {"index": 0, "text": "def f(x):", "logprobs": None, "finish_reason": "stop"}
    ]
    assert response["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


async def test_a_batch_of_prompts_is_refused_not_answered_in_part(echo: EchoBackend) -> None:
    body = {"model": "m", "prompt": ["first", "second"]}
    with pytest.raises(InvalidRequest) as info:
        await echo.request("completions", body, CALL)
    assert info.value.param == "prompt"


async def test_completions_stream(echo: EchoBackend) -> None:
    body = {
        "model": "m",
        "prompt": "one two three",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = await collect(echo, "completions", body)
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "one two three"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


async def test_completions_accept_token_ids(echo: EchoBackend) -> None:
    response = await echo.request("completions", {"model": "m", "prompt": [11, 22, 33]}, CALL)
    assert response["choices"][0]["text"] == "11 22 33"


# --- embeddings ---------------------------------------------------------------------------


async def test_embeddings_are_unit_vectors_of_384(echo: EchoBackend) -> None:
    body = {"model": "emb", "input": ["the cat sat", "the cat ran", "bank loan rates"]}
    response = await echo.request("embeddings", body, CALL)
    assert response["object"] == "list" and response["model"] == "emb"
    vectors = [d["embedding"] for d in response["data"]]
    assert [d["index"] for d in response["data"]] == [0, 1, 2]
    assert all(len(v) == 384 and math.isclose(math.sqrt(cosine(v, v)), 1.0, rel_tol=1e-6) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert response["usage"] == {"prompt_tokens": 9, "total_tokens": 9}


async def test_embeddings_base64_decodes_to_the_float_vector(echo: EchoBackend) -> None:
    floats = await echo.request("embeddings", {"model": "m", "input": "Some Words here"}, CALL)
    packed = await echo.request(
        "embeddings", {"model": "m", "input": "Some Words here", "encoding_format": "base64"}, CALL
    )
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert list(struct.unpack("<384f", raw)) == floats["data"][0]["embedding"]


async def test_embeddings_are_case_insensitive_and_deterministic(echo: EchoBackend) -> None:
    a = await echo.request("embeddings", {"model": "m", "input": "Hello World"}, CALL)
    b = await echo.request("embeddings", {"model": "m", "input": "hello, world!"}, CALL)
    assert a["data"][0]["embedding"] == b["data"][0]["embedding"]


async def test_embeddings_token_ids_are_words(echo: EchoBackend) -> None:
    ids = await echo.request("embeddings", {"model": "m", "input": [[5, 7], [9]]}, CALL)
    words = await echo.request("embeddings", {"model": "m", "input": ["5 7", "9"]}, CALL)
    assert [d["embedding"] for d in ids["data"]] == [d["embedding"] for d in words["data"]]
    single = await echo.request("embeddings", {"model": "m", "input": [5, 7]}, CALL)
    assert len(single["data"]) == 1 and single["data"][0]["embedding"] == ids["data"][0]["embedding"]
    assert ids["usage"]["prompt_tokens"] == 3


async def test_embeddings_dimensions(echo: EchoBackend) -> None:
    response = await echo.request("embeddings", {"model": "m", "input": "abc", "dimensions": 64}, CALL)
    assert len(response["data"][0]["embedding"]) == 64


@pytest.mark.parametrize(
    "body",
    [
        {"input": ""},
        {"input": []},
        {"input": ["ok", ""]},
        {"input": [[]]},
        {"input": 5},
        {"input": ["x"] * 2049},
        {"input": "x", "encoding_format": "hex"},
        {"input": "x", "dimensions": 0},
    ],
)
async def test_invalid_embedding_requests(echo: EchoBackend, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        await echo.request("embeddings", {"model": "m", **body}, CALL)
    assert info.value.param in {"input", "encoding_format", "dimensions"}


async def test_embeddings_cannot_stream(echo: EchoBackend) -> None:
    with pytest.raises(InvalidRequest):
        await echo.open_stream("embeddings", {"model": "m", "input": "x"}, CALL)


async def test_probe_and_close_do_nothing(echo: EchoBackend) -> None:
    await echo.probe()
    await echo.aclose()


async def test_default_clock_is_now() -> None:
    response = await EchoBackend().request("chat.completions", chat("hi"), CALL)
    assert isinstance(response["created"], int) and response["created"] > NOW
    assert re.fullmatch(r"chatcmpl-echo-[0-9a-f]{24}", response["id"])


# --- the token counter the prompt estimate uses ---


@pytest.mark.parametrize(
    "body",
    [
        chat("hello there, how are you?"),
        chat([{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]),
        {"model": "echo-model", "messages": [{"role": "user", "content": "a b c"}] * 5},
    ],
)
async def test_estimate_with_the_echo_counter_is_never_below_its_usage(echo: EchoBackend, body: Any) -> None:
    counter = token_counter(echo)
    assert counter is not None
    used = (await echo.request("chat.completions", body, CALL))["usage"]["prompt_tokens"]
    estimate = estimate_prompt("chat.completions", body, counter=counter)
    assert used <= estimate <= used + 1  # one separator between two text parts


@pytest.mark.parametrize(("op", "field"), [("completions", "prompt"), ("embeddings", "input")])
async def test_estimate_with_the_echo_counter_matches_text_inputs(
    echo: EchoBackend, op: Any, field: str
) -> None:
    body = {"model": "echo-model", field: "  one two\tthree  four "}
    used = (await echo.request(op, body, CALL))["usage"]["prompt_tokens"]
    assert estimate_prompt(op, body, counter=token_counter(echo)) == used == 4
