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


OLD_URL = "data:image/png;base64,AAAA"
NEW_URL = "data:image/jpeg;base64,BBBB"


def path_with_images() -> list[Message]:
    notes = AttachmentMeta(name="notes.txt", type="text/plain", size=5, text_chars=5, text="12345")
    old_image = AttachmentMeta(name="old.png", type="image/png", size=3, data_url=OLD_URL)
    new_image = AttachmentMeta(name="new.jpg", type="image/jpeg", size=3, data_url=NEW_URL)
    return [
        message(1, "user", "Look", old_image, notes),
        message(2, "assistant", "Seen"),
        message(3, "user", "And this?", new_image),
    ]


def test_documents_go_inline_and_every_stored_image_goes_to_an_image_model() -> None:
    sent = openai_messages("Be brief.", path_with_images(), images=True)
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[1]["content"] == [
        {"type": "text", "text": "Look\n\n[Attachment: notes.txt]\n12345\n[End of attachment: notes.txt]"},
        {"type": "image_url", "image_url": {"url": OLD_URL}},
    ]
    assert sent[2] == {"role": "assistant", "content": "Seen"}
    assert sent[3]["content"] == [
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": NEW_URL}},
    ]


def test_a_model_without_images_reads_a_note_instead() -> None:
    sent = openai_messages("  ", path_with_images(), images=False)
    assert sent[0]["role"] == "user" and len(sent) == 3  # no system prompt, no entry
    assert sent[0]["content"] == (
        "Look\n\n[An image, old.png, was attached here; the chosen model cannot see images.]\n\n"
        "[Attachment: notes.txt]\n12345\n[End of attachment: notes.txt]"
    )
    assert sent[2]["content"] == (
        "And this?\n\n[An image, new.jpg, was attached here; the chosen model cannot see images.]"
    )
    assert "image_url" not in orjson.dumps(sent).decode()


def test_an_image_stored_without_its_data_is_said_to_be_gone() -> None:
    # Rows from before images were kept have no data URL, whatever the model takes.
    gone = AttachmentMeta(name="gone.png", type="image/png", size=10)
    for images in (True, False):
        sent = openai_messages("", [message(1, "user", "What is it?", gone)], images=images)
        note = "[An image, gone.png, was attached here; it is no longer available.]"
        assert sent == [{"role": "user", "content": f"What is it?\n\n{note}"}]


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
