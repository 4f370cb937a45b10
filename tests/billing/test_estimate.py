"""The prompt estimate counts the whole prompt, not just the messages' text."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from lumen.billing.estimate import (
    CHARACTER_RULE,
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TokenCounter,
    chat_prompt_tokens,
    counter_for,
    estimate_prompt,
    prompt_tokens,
    text_tokens,
)

CHAT = "chat.completions"
USER = {"role": "user", "content": "What is the weather like in Paris today?"}


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages or [USER]), **extra}


def weather_tool(i: int) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": f"get_weather_{i}",
            "description": "Get the current weather in a given location, in the unit asked for.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    }


def json_size(value: Any) -> int:
    return len(orjson.dumps(value)) // 4


def test_twenty_tool_definitions_count_about_their_size() -> None:
    tools = [weather_tool(i) for i in range(20)]
    added = estimate_prompt(CHAT, chat(tools=tools)) - estimate_prompt(CHAT, chat())

    size = json_size(tools)
    assert size > 1500  # the case of the issue: far more than the message itself
    assert size <= added <= size + 20


def test_legacy_functions_count_like_tools() -> None:
    functions = [weather_tool(i)["function"] for i in range(5)]
    added = estimate_prompt(CHAT, chat(functions=functions)) - estimate_prompt(CHAT, chat())
    assert json_size(functions) <= added <= json_size(functions) + 20


def test_named_tool_choice_counts() -> None:
    tools = [weather_tool(0)]
    choice = {"type": "function", "function": {"name": "get_weather_0"}}
    named = estimate_prompt(CHAT, chat(tools=tools, tool_choice=choice))
    assert named - estimate_prompt(CHAT, chat(tools=tools)) == text_tokens(orjson.dumps(choice).decode())


def test_json_schema_response_format_counts() -> None:
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "forecast",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    f"day_{d}": {"type": "number", "description": "Temperature"} for d in range(7)
                },
                "required": [f"day_{d}" for d in range(7)],
                "additionalProperties": False,
            },
        },
    }
    added = estimate_prompt(CHAT, chat(response_format=schema)) - estimate_prompt(CHAT, chat())
    assert added == text_tokens(orjson.dumps(schema).decode()) > 100


def test_json_object_counts_and_text_does_not() -> None:
    base = estimate_prompt(CHAT, chat())
    assert estimate_prompt(CHAT, chat(response_format={"type": "json_object"})) > base
    assert estimate_prompt(CHAT, chat(response_format={"type": "text"})) == base


def test_template_overhead_per_message_and_reply_priming() -> None:
    one = estimate_prompt(CHAT, chat({"role": "user", "content": ""}))
    two = estimate_prompt(CHAT, chat({"role": "user", "content": ""}, {"role": "user", "content": ""}))
    assert one == MESSAGE_OVERHEAD + REPLY_PRIMING
    assert two - one == MESSAGE_OVERHEAD


def test_message_name_counts() -> None:
    named = {**USER, "name": "alice_smith"}
    assert estimate_prompt(CHAT, chat(named)) - estimate_prompt(CHAT, chat()) == 1 + text_tokens(
        "alice_smith"
    )


def test_tool_calls_and_tool_results_count() -> None:
    arguments = orjson.dumps({"location": "Paris, France", "unit": "celsius"}).decode()
    call = {
        "id": "call_abc123",
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temperature": 21, "sky": "clear"}'}

    with_call = estimate_prompt(CHAT, chat(USER, assistant))
    with_result = estimate_prompt(CHAT, chat(USER, assistant, result))

    assert with_call - estimate_prompt(CHAT, chat(USER)) >= (
        MESSAGE_OVERHEAD + text_tokens("get_weather") + text_tokens(arguments)
    )
    assert with_result - with_call >= MESSAGE_OVERHEAD + text_tokens(result["content"])


def test_text_parts_count_with_their_separators() -> None:
    parts = [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]
    as_parts = estimate_prompt(CHAT, chat({"role": "user", "content": parts}))
    as_string = estimate_prompt(CHAT, chat({"role": "user", "content": ""}))
    assert as_parts == as_string + 2 * text_tokens("Part one.") + 1


# --- images -----------------------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + b"IHDR" + ihdr + b"\0" * 4 + b"\0" * 2000


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\0" * 100


def jpeg(width: int, height: int, *, exif: int = 0) -> bytes:
    """A JPEG head: APP0, an APP1 of `exif` bytes, a quantisation table, then the frame (SOF2)."""
    app0 = b"\xff\xe0" + (16).to_bytes(2, "big") + b"JFIF\0" + b"\x01\x01\0\0\x01\0\x01\0\0"
    app1 = b"\xff\xe1" + (exif + 2).to_bytes(2, "big") + b"E" * exif if exif else b""
    dqt = b"\xff\xdb" + (67).to_bytes(2, "big") + b"\0" * 65
    sof = (
        b"\xff\xc2" + (17).to_bytes(2, "big") + b"\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big")
    )
    return b"\xff\xd8" + app0 + app1 + dqt + b"\xff" + sof + b"\x03" + b"\0" * 9 + b"\xff\xda" + b"\0" * 500


def webp(kind: bytes, width: int, height: int) -> bytes:
    if kind == b"VP8 ":
        data = b"\0\0\0\x9d\x01\x2a" + width.to_bytes(2, "little") + height.to_bytes(2, "little")
    elif kind == b"VP8L":
        data = b"\x2f" + ((width - 1) | (height - 1) << 14).to_bytes(4, "little")
    else:
        data = b"\0" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + (100).to_bytes(4, "little") + b"WEBP" + kind + (len(data)).to_bytes(4, "little") + data


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def image_cost(url: str, detail: str | None = None) -> int:
    spec = {"url": url} if detail is None else {"url": url, "detail": detail}
    content = [{"type": "image_url", "image_url": spec}]
    return estimate_prompt(CHAT, chat({"role": "user", "content": content})) - estimate_prompt(
        CHAT, chat({"role": "user", "content": []})
    )


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        (1024, 1024, 765),  # OpenAI's examples: 768x768, 4 tiles
        (2048, 4096, 1105),  # 1024x2048, then 768x1536: 6 tiles
        (512, 512, 255),  # small: no scaling, 1 tile
        (100, 3000, 765),  # 68x2048 after fitting, short side kept: 1 by 4 tiles
        (4096, 4096, 765),
    ],
)
def test_image_data_url_counts_by_the_documented_formula(width: int, height: int, tokens: int) -> None:
    assert image_cost(data_url(png(width, height))) == tokens
    assert image_cost(data_url(png(width, height)), "auto") == tokens
    assert image_cost(data_url(png(width, height)), "low") == 85


@pytest.mark.parametrize(
    "raw",
    [
        gif(1024, 1024),
        jpeg(1024, 1024),
        jpeg(1024, 1024, exif=60_000),  # the frame header after a large EXIF block
        webp(b"VP8 ", 1024, 1024),
        webp(b"VP8L", 1024, 1024),
        webp(b"VP8X", 1024, 1024),
    ],
)
def test_image_sizes_are_read_from_every_supported_header(raw: bytes) -> None:
    assert image_cost(data_url(raw, "image/x")) == 765


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/cat.png",
        "data:image/png;base64,bm90IGFuIGltYWdl",  # "not an image"
        "data:image/svg+xml,%3Csvg%3E%3C/svg%3E",
        data_url(jpeg(1024, 1024)).replace("A", "\nA", 1),  # broken base64: offsets unreliable
        data_url(png(1024, 1024))[:40],
    ],
)
def test_unknown_image_sizes_count_the_worst_case(url: str) -> None:
    assert image_cost(url) == 1445
    assert image_cost(url, "low") == 85


def test_image_url_as_a_bare_string_counts() -> None:
    content = [{"type": "image_url", "image_url": "https://example.org/cat.png"}]
    body = chat({"role": "user", "content": content})
    assert estimate_prompt(CHAT, body) == estimate_prompt(CHAT, chat({"role": "user", "content": []})) + 1445


def test_chat_prompt_tokens_counts_images_too() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://x"}},
    ]
    assert chat_prompt_tokens([{"role": "user", "content": content}]) > 1445


# --- audio and files ----------------------------------------------------------------------------


def wav(seconds: int, byte_rate: int = 32_000) -> bytes:
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16_000).to_bytes(4, "little")
    fmt += byte_rate.to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    samples = b"\0" * (byte_rate * seconds)
    head = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data"
    return (
        b"RIFF"
        + (len(head) + len(samples)).to_bytes(4, "little")
        + head
        + len(samples).to_bytes(4, "little")
        + samples
    )


def part_cost(part: dict[str, Any]) -> int:
    return estimate_prompt(CHAT, chat({"role": "user", "content": [part]})) - estimate_prompt(
        CHAT, chat({"role": "user", "content": []})
    )


def test_wav_audio_counts_ten_tokens_per_second_of_its_length() -> None:
    data = base64.b64encode(wav(3)).decode()
    cost = part_cost({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
    assert cost == 31  # 3 s and the 44-byte header


def test_compressed_audio_counts_as_if_at_the_lowest_bitrate() -> None:
    data = base64.b64encode(b"\xff\xfb\x90\x00" + b"\0" * 9996).decode()
    assert part_cost({"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}) == 100


def test_pdf_file_counts_per_page() -> None:
    pages = b"".join(b"<< /Type /Page /Parent 2 0 R >>" for _ in range(3))
    pdf = b"%PDF-1.4\n<< /Type /Pages /Count 3 >>\n" + pages
    data = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    one_page = part_cost({"type": "file", "file": {"file_id": "file-abc"}})
    assert one_page > 1445
    assert part_cost({"type": "file", "file": {"file_data": data, "filename": "x.pdf"}}) == 3 * one_page


# --- completions, embeddings and counters ----------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    ["Once upon a time", ["one", "two three"], [1, 2, 3, 4], [[1, 2], [3, 4, 5]], "", []],
)
def test_completions_and_embeddings_count_the_prompt(prompt: Any) -> None:
    assert estimate_prompt("completions", {"prompt": prompt}) == prompt_tokens(prompt)
    assert estimate_prompt("embeddings", {"input": prompt}) == prompt_tokens(prompt)


def test_completion_suffix_counts() -> None:
    body = {"prompt": "def add(a, b):", "suffix": "    return result"}
    assert estimate_prompt("completions", body) == text_tokens(body["prompt"]) + text_tokens(body["suffix"])


def test_token_id_inputs_count_one_token_each() -> None:
    assert prompt_tokens([[1, 2], [3, 4, 5]]) == 5


def test_a_backend_counter_counts_text_and_framing() -> None:
    words = TokenCounter(
        lambda text: len(text.split()), per_message=2, per_chat=1, default_system=10, per_text=1
    )
    body = chat({"role": "user", "content": "one two three"})
    assert estimate_prompt(CHAT, body, counter=words) == 1 + 10 + 2 + 3
    system = chat({"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"})
    assert estimate_prompt(CHAT, system, counter=words) == 1 + 2 + 2 + 2 + 3
    assert estimate_prompt("embeddings", {"input": ["a b", "c"]}, counter=words) == 2 + 1 + 1 + 1


class _Backend:
    def __init__(self, counter: TokenCounter | None) -> None:
        self.token_counter = counter


def test_counter_for_a_model_takes_the_largest_of_its_endpoints() -> None:
    big = TokenCounter(lambda text: 2 * len(text), per_message=9)
    small = TokenCounter(lambda text: 1)
    assert counter_for([_Backend(None), object()]) is None
    assert counter_for([_Backend(big), _Backend(big)]) is big
    mixed = counter_for([_Backend(small), _Backend(None)])
    assert mixed is not None
    assert mixed.count("a b c d e f g h") == text_tokens("a b c d e f g h")  # the character rule is larger
    both = counter_for([_Backend(small), _Backend(big)])
    assert both is not None and both.count("abc") == 6 and both.per_message == 9


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": "hello"},
        {"messages": [None, 3, {"content": [None, {"type": "image_url"}, {"type": "input_audio"}]}]},
        {"messages": [{"role": "assistant", "tool_calls": [None, {"function": "x"}]}], "tools": {"a": 1}},
        {"messages": [{"role": "user", "content": "x"}], "response_format": "json", "tool_choice": 5},
    ],
)
def test_malformed_bodies_are_estimated_without_raising(body: dict[str, Any]) -> None:
    assert estimate_prompt(CHAT, body) >= 0
    assert estimate_prompt("completions", body) >= 0


def test_unknown_operation_is_zero() -> None:
    assert estimate_prompt("audio.speech", chat()) == 0
    assert CHARACTER_RULE.count("abcdefgh") == 2


def test_dense_scripts_count_by_their_utf8_size() -> None:
    """A CJK character is about one token; counting characters by four would reserve a quarter."""
    text = "今天天气怎么样？我想去公园散步。" * 10
    assert text_tokens(text) >= len(text) * 3 // 4
    assert text_tokens("naïve café") == 3  # 12 bytes


def test_a_costly_counter_counts_at_most_its_exact_budget() -> None:
    """Beyond `exact_chars` characters in one request, texts go by the character rule, so a huge
    request cannot keep a slow tokenizer busy on the event loop."""
    calls: list[str] = []

    def slow(text: str) -> int:
        calls.append(text)
        return 100

    counter = TokenCounter(slow, exact_chars=10)
    body = {"input": ["abcdefgh", "x" * 4000, "ij", "k"]}
    assert estimate_prompt("embeddings", body, counter=counter) == 100 + 1000 + 100 + text_tokens("k")
    assert calls == ["abcdefgh", "ij"]
    assert estimate_prompt("embeddings", body, counter=counter) == 1201  # a fresh budget per request


def test_inputs_are_billed_at_most_max_per_text() -> None:
    counter = TokenCounter(text_tokens, max_per_text=256)
    body = {"input": ["word " * 1000, [1] * 300, "short"]}
    assert estimate_prompt("embeddings", body, counter=counter) == 256 + 256 + text_tokens("short")
