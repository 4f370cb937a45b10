"""What the chat sends a model and reads back from the relay (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from lumen.chat.records import AnswerStats, AttachmentMeta, Message, Role
from lumen.portal.chat_wire import event, openai_messages, read_relayed

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def message(number: int, role: Role, content: str, *attachments: AttachmentMeta) -> Message:
    return Message(
        id=number,
        conversation_id="c",
        parent_id=number - 1 or None,
        position=number - 1,
        role=role,
        content=content,
        attachments=attachments,
        stats=AnswerStats(),
        created_at=NOW,
    )


def test_documents_go_inline_and_images_only_with_the_question() -> None:
    notes = AttachmentMeta(name="notes.txt", type="text/plain", size=5, text_chars=5, text="12345")
    old_image = AttachmentMeta(name="old.png", type="image/png", size=10)
    new_image = AttachmentMeta(name="new.png", type="image/png", size=10)
    path = [
        message(1, "user", "Look", old_image, notes),
        message(2, "assistant", "Seen"),
        message(3, "user", "And this?", new_image),
    ]
    sent = openai_messages("Be brief.", path, ["data:image/png;base64,AAAA"])
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[1]["content"] == (
        "Look\n\n[An image, old.png, was attached here; it is no longer available.]\n\n"
        "[Attachment: notes.txt]\n12345\n[End of attachment: notes.txt]"
    )
    assert sent[2] == {"role": "assistant", "content": "Seen"}
    assert sent[3]["content"] == [
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    # Without the image (a regenerate), the question says it is gone; no system prompt, no entry.
    again = openai_messages("  ", path)
    assert again[0]["role"] == "user" and len(again) == 3
    assert (
        again[2]["content"]
        == "And this?\n\n[An image, new.png, was attached here; it is no longer available.]"
    )


def test_reading_what_the_relay_sent() -> None:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    finish = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1}}
    batch = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in (chunk, chunk, finish, usage))
    assert read_relayed(batch + b"data: [DONE]\n\n") == ("HiHi", None)
    failure = {"error": {"message": "backend failed", "type": "server_error", "code": "upstream_error"}}
    text, error = read_relayed(
        b"data: " + orjson.dumps(chunk) + b"\n\ndata: " + orjson.dumps(failure) + b"\n\n"
    )
    assert text == "Hi" and error == failure["error"]
    assert read_relayed(b": keep-alive\n\n") == ("", None)


def test_events_are_one_sse_event_each() -> None:
    raw = event("delta", {"text": "a\nb"})
    assert raw == b'event: delta\ndata: {"text":"a\\nb"}\n\n'  # a newline in the text stays escaped
