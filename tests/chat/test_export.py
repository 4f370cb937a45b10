from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.chat import export, store
from lumen.chat.records import AnswerStats, AttachmentMeta, NewMessage
from lumen.errors import InvalidRequest
from lumen.store.tables import conversations
from tests.chat.conftest import ANN, BEN
from tests.chat.test_safe_markdown import _dangerous, render

NOTES = AttachmentMeta(name="notes.txt", type="text/plain", size=11, text_chars=11, text="hello world")
MOON = AttachmentMeta(
    name="moon.png", type="image/png", size=8, data_url="data:image/png;base64,iVBORw0KGgo="
)


async def _branched(engine: AsyncEngine) -> str:
    """A conversation with a regenerated answer (the old one shown) and an edited question."""
    made = await store.create_conversation(
        engine=engine,
        owner_id=ANN,
        title="Physics <b>homework</b>",
        model="echo",
        system_prompt="Answer in one line.",
        temperature=0.3,
        max_tokens=256,
    )

    async def add(message: NewMessage, parent: int | None = None) -> int:
        stored = await store.append_message(
            engine=engine, owner_id=ANN, conversation_id=made.id, message=message, parent_id=parent
        )
        return stored.id

    q1 = await add(NewMessage(role="user", content="What is g?", attachments=(NOTES,)))
    a1 = await add(
        NewMessage(
            role="assistant",
            content="About 9.81 m/s².\n\n```python\nprint(9.81 < 10)\n```",
            stats=AnswerStats(
                model="echo", prompt_tokens=20, completion_tokens=9, cost_micro=1_500, ttft_ms=120.0
            ),
        )
    )
    await add(NewMessage(role="assistant", content="9.8", stats=AnswerStats(model="echo", stopped=True)), q1)
    await add(NewMessage(role="user", content="And on the Moon?", attachments=(MOON,)), a1)
    await store.edit_message(
        engine=engine, owner_id=ANN, conversation_id=made.id, message_id=q1, content="What is G?"
    )
    await store.select_branch(engine=engine, owner_id=ANN, conversation_id=made.id, message_id=a1)
    return made.id


def _shape(document: dict[str, Any]) -> dict[str, Any]:
    """The document less what an import changes: ids (renumbered), export and activity times."""
    index = {m["id"]: i for i, m in enumerate(document["messages"])}
    messages = [
        {**m, "id": index[m["id"]], "parent": None if m["parent"] is None else index[m["parent"]]}
        for m in document["messages"]
    ]
    conversation = {k: v for k, v in document["conversation"].items() if k != "updated_at"}
    return {"conversation": conversation, "messages": messages, "current": index[document["current"]]}


async def test_json_export_imports_back_to_the_same_tree(people: AsyncEngine) -> None:
    conversation_id = await _branched(people)
    conversation, messages = await store.conversation_tree(
        engine=people, owner_id=ANN, conversation_id=conversation_id
    )
    raw = export.to_json(conversation, messages)
    document = orjson.loads(raw)
    assert (document["format"], document["version"]) == ("lumen.conversation", 1)
    assert len(document["messages"]) == 5

    imported = await store.import_conversation(
        engine=people, owner_id=BEN, **export.import_arguments(export.parse_document(raw))
    )
    assert imported.conversation.id != conversation_id and imported.conversation.owner_id == BEN
    again, again_messages = await store.conversation_tree(
        engine=people, owner_id=BEN, conversation_id=imported.conversation.id
    )
    assert _shape(orjson.loads(export.to_json(again, again_messages))) == _shape(document)
    original = await store.get_conversation(engine=people, owner_id=ANN, conversation_id=conversation_id)
    assert [s.message.content for s in imported.messages] == [s.message.content for s in original.messages]
    assert imported.messages[0].message.attachments == (NOTES,)
    # The JSON export is the full record: a kept image's data goes out and comes back.
    assert imported.messages[-1].message.attachments == (MOON,)
    assert MOON.data_url in raw.decode()


async def test_markdown_export_is_readable_and_safe(people: AsyncEngine) -> None:
    conversation_id = await _branched(people)
    conversation, messages = await store.conversation_tree(
        engine=people, owner_id=ANN, conversation_id=conversation_id
    )
    markdown = export.to_markdown(conversation, messages)
    assert markdown.startswith("# Physics &lt;b>homework&lt;/b>\n")
    assert "Model: echo" in markdown and "temperature 0.3" in markdown and "max tokens 256" in markdown
    assert "## System prompt\n\nAnswer in one line." in markdown
    # The shown branch: the first question (version 1 of 2), its first answer (1 of 2), the follow-up.
    assert "## User · version 1 of 2\n\nWhat is g?" in markdown
    assert "📎 notes.txt (text/plain, 11 bytes)" in markdown
    assert "📎 moon.png (image/png, 8 bytes)" in markdown and "iVBORw0KGgo" not in markdown  # named only
    assert "## Assistant (echo) · version 1 of 2" in markdown
    assert "```python\nprint(9.81 < 10)\n```" in markdown
    assert "*20 prompt + 9 completion tokens · 0.0015 coins · first token after 120 ms*" in markdown
    assert "And on the Moon?" in markdown and "What is G?" not in markdown and "9.8\n" not in markdown
    rendered = render(markdown)
    assert _dangerous(rendered) == []
    assert "<h1>Physics &lt;b&gt;homework&lt;/b&gt;</h1>" in rendered


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: b"{not json", "does not parse"),
        (lambda d: {**d, "format": "chatgpt"}, '"format": "lumen.conversation"'),
        (lambda d: {**d, "version": 2}, "version 2 is not one this Lumen reads"),
        (lambda d: {**d, "messages": [{**d["messages"][0], "parent": 99}]}, "messages.0.parent"),
        (lambda d: {**d, "messages": [d["messages"][0], d["messages"][0]]}, "used twice"),
        (lambda d: {**d, "current": 12345}, "current"),
        (lambda d: {**d, "messages": [{**d["messages"][0], "role": "tool"}]}, "messages.0.role"),
        (
            lambda d: {**d, "messages": [{**d["messages"][0], "created_at": "2026-11-01T10:00:00"}]},
            "created_at",
        ),
        (lambda d: {**d, "conversation": {**d["conversation"], "temperature": 9}}, "temperature"),
        (lambda d: {**d, "conversation": {**d["conversation"], "title": ""}}, "title"),
        (lambda d: {**d, "extra": 1}, "extra"),
        (lambda d: {**d, "conversation": {**d["conversation"], "title": "a\x00b"}}, "NUL"),
        (lambda d: b'{"format": ' + b"[" * 100 + b"]" * 100 + b"}", "levels deep"),
    ],
)
async def test_a_bad_export_is_refused_and_nothing_is_imported(
    people: AsyncEngine, change: Any, message: str
) -> None:
    conversation_id = await _branched(people)
    conversation, messages = await store.conversation_tree(
        engine=people, owner_id=ANN, conversation_id=conversation_id
    )
    changed = change(orjson.loads(export.to_json(conversation, messages)))
    raw = changed if isinstance(changed, bytes) else orjson.dumps(changed)
    with pytest.raises(InvalidRequest) as caught:
        document = export.parse_document(raw)
        await store.import_conversation(engine=people, owner_id=BEN, **export.import_arguments(document))
    assert message in caught.value.message
    async with people.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(conversations))).scalar_one()
    assert count == 1
