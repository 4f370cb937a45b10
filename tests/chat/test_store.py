from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.chat import store
from lumen.chat.records import AnswerStats, AttachmentMeta, NewMessage
from lumen.errors import InvalidRequest, NotFound
from lumen.store.tables import conversations, messages, users
from tests.chat.conftest import ANN, BEN

USER = NewMessage(role="user", content="What is 2+2?")
ANSWER = NewMessage(
    role="assistant",
    content="4",
    stats=AnswerStats(
        model="echo",
        prompt_tokens=12,
        completion_tokens=1,
        cost_micro=1_234,
        ttft_ms=87.5,
        finish_reason="stop",
        request_id="req-1",
    ),
)


async def _count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_create_get_and_defaults(people: AsyncEngine) -> None:
    made = await store.create_conversation(
        engine=people, owner_id=ANN, model="echo", system_prompt="Be brief.", temperature=0.2, max_tokens=64
    )
    assert made.title == store.DEFAULT_TITLE and not made.archived
    assert len(made.id) >= 22 and made.id.replace("-", "").replace("_", "").isalnum()
    detail = await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)
    assert detail.conversation == made
    assert detail.messages == ()
    assert made.created_at.tzinfo is not None


async def test_another_user_sees_nothing_of_a_conversation(people: AsyncEngine) -> None:
    mine = await store.create_conversation(engine=people, owner_id=ANN, title="private")
    first = await store.append_message(engine=people, owner_id=ANN, conversation_id=mine.id, message=USER)
    calls = [
        store.get_conversation(engine=people, owner_id=BEN, conversation_id=mine.id),
        store.conversation_tree(engine=people, owner_id=BEN, conversation_id=mine.id),
        store.rename_conversation(engine=people, owner_id=BEN, conversation_id=mine.id, title="x"),
        store.update_conversation(engine=people, owner_id=BEN, conversation_id=mine.id, archived=True),
        store.delete_conversation(engine=people, owner_id=BEN, conversation_id=mine.id),
        store.append_message(engine=people, owner_id=BEN, conversation_id=mine.id, message=USER),
        store.edit_message(
            engine=people, owner_id=BEN, conversation_id=mine.id, message_id=first.id, content="x"
        ),
        store.select_branch(engine=people, owner_id=BEN, conversation_id=mine.id, message_id=first.id),
        store.message_path(engine=people, owner_id=BEN, conversation_id=mine.id, message_id=first.id),
    ]
    for call in calls:
        with pytest.raises(NotFound) as caught:
            await call
        # The same answer as for an id that does not exist: nothing to probe.
        assert caught.value.code == "conversation_not_found"
    assert (await store.list_conversations(engine=people, owner_id=BEN)).conversations == ()
    assert (await store.search_conversations(engine=people, owner_id=BEN, query="private")).hits == ()
    assert (await store.search_conversations(engine=people, owner_id=BEN, query="2+2")).hits == ()
    detail = await store.get_conversation(engine=people, owner_id=ANN, conversation_id=mine.id)
    assert detail.conversation.title == "private" and len(detail.messages) == 1


async def test_a_message_of_another_conversation_is_not_found(people: AsyncEngine) -> None:
    one = await store.create_conversation(engine=people, owner_id=ANN)
    two = await store.create_conversation(engine=people, owner_id=ANN)
    elsewhere = await store.append_message(engine=people, owner_id=ANN, conversation_id=two.id, message=USER)
    with pytest.raises(NotFound) as caught:
        await store.append_message(
            engine=people, owner_id=ANN, conversation_id=one.id, message=ANSWER, parent_id=elsewhere.id
        )
    assert caught.value.code == "message_not_found"
    assert await _count(people, messages) == 1


async def test_rename_settings_and_archive(people: AsyncEngine) -> None:
    made = await store.create_conversation(engine=people, owner_id=ANN, model="echo", temperature=1.0)
    renamed = await store.rename_conversation(
        engine=people, owner_id=ANN, conversation_id=made.id, title="  Tax\nquestions\t2026 "
    )
    assert renamed.title == "Tax questions 2026"
    # Renaming is not activity: the sidebar order does not change.
    assert renamed.updated_at == made.updated_at
    changed = await store.update_conversation(
        engine=people,
        owner_id=ANN,
        conversation_id=made.id,
        model="smollm2-135m-instruct",
        system_prompt="You are terse.",
        max_tokens=100,
        temperature=None,
    )
    assert (changed.model, changed.system_prompt, changed.max_tokens, changed.temperature) == (
        "smollm2-135m-instruct",
        "You are terse.",
        100,
        None,
    )
    assert changed.title == "Tax questions 2026"
    await store.update_conversation(engine=people, owner_id=ANN, conversation_id=made.id, archived=True)
    assert (await store.list_conversations(engine=people, owner_id=ANN)).conversations == ()
    archived = await store.list_conversations(engine=people, owner_id=ANN, archived=True)
    assert [c.id for c in archived.conversations] == [made.id]


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("title", "   ", "title"),
        ("title", "x" * 201, "title"),
        ("temperature", 2.5, "temperature"),
        ("temperature", float("nan"), "temperature"),
        ("max_tokens", 0, "max_tokens"),
        ("model", "", "model"),
        ("system_prompt", "x" * 100_001, "system_prompt"),
    ],
)
async def test_bad_settings_are_refused_and_change_nothing(
    people: AsyncEngine, field: str, value: object, param: str
) -> None:
    made = await store.create_conversation(engine=people, owner_id=ANN, title="keep", temperature=0.5)
    with pytest.raises(InvalidRequest) as caught:
        # A valid change alongside the bad one must not be written either.
        changes: dict[str, object] = {"title": "changed", field: value}
        await store.update_conversation(
            engine=people,
            owner_id=ANN,
            conversation_id=made.id,
            **changes,  # type: ignore[arg-type]
        )
    assert caught.value.param == param
    after = await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)
    assert after.conversation == made


async def test_delete_removes_the_conversation_and_its_messages(people: AsyncEngine) -> None:
    gone = await store.create_conversation(engine=people, owner_id=ANN)
    kept = await store.create_conversation(engine=people, owner_id=ANN)
    for conversation in (gone, kept):
        await store.append_message(engine=people, owner_id=ANN, conversation_id=conversation.id, message=USER)
        await store.append_message(
            engine=people, owner_id=ANN, conversation_id=conversation.id, message=ANSWER
        )
    await store.delete_conversation(engine=people, owner_id=ANN, conversation_id=gone.id)
    with pytest.raises(NotFound):
        await store.get_conversation(engine=people, owner_id=ANN, conversation_id=gone.id)
    with pytest.raises(NotFound):
        await store.delete_conversation(engine=people, owner_id=ANN, conversation_id=gone.id)
    assert await _count(people, messages) == 2
    assert await _count(people, conversations) == 1


async def test_append_records_the_answer_and_moves_the_conversation_up(people: AsyncEngine) -> None:
    older = await store.create_conversation(engine=people, owner_id=ANN, title="older")
    newer = await store.create_conversation(engine=people, owner_id=ANN, title="newer")
    question = await store.append_message(
        engine=people,
        owner_id=ANN,
        conversation_id=older.id,
        message=NewMessage(
            role="user",
            content="Summarise this",
            attachments=(
                AttachmentMeta(name="a.txt", type="text/plain", size=5, text_chars=5, text="hello"),
            ),
        ),
    )
    answer = await store.append_message(
        engine=people, owner_id=ANN, conversation_id=older.id, message=ANSWER, parent_id=question.id
    )
    assert (question.position, answer.position, answer.parent_id) == (0, 1, question.id)
    detail = await store.get_conversation(engine=people, owner_id=ANN, conversation_id=older.id)
    assert [s.message for s in detail.messages] == [question, answer]
    assert detail.messages[1].message.stats == ANSWER.stats
    assert detail.messages[0].message.attachments[0].text == "hello"
    assert detail.conversation.leaf_message_id == answer.id
    listed = await store.list_conversations(engine=people, owner_id=ANN)
    assert [c.title for c in listed.conversations] == ["older", "newer"]
    assert newer.updated_at < detail.conversation.updated_at


async def test_a_stopped_answer_keeps_its_partial_text(people: AsyncEngine) -> None:
    made = await store.create_conversation(engine=people, owner_id=ANN)
    question = await store.append_message(engine=people, owner_id=ANN, conversation_id=made.id, message=USER)
    partial = NewMessage(
        role="assistant",
        content="The answer is",
        stats=AnswerStats(model="echo", prompt_tokens=12, completion_tokens=3, cost_micro=40, stopped=True),
    )
    await store.append_message(
        engine=people, owner_id=ANN, conversation_id=made.id, message=partial, parent_id=question.id
    )
    shown = (await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)).messages
    assert shown[-1].message.content == "The answer is"
    assert shown[-1].message.stats.stopped and shown[-1].message.stats.completion_tokens == 3


async def test_regenerate_keeps_the_old_answer_as_an_alternative(people: AsyncEngine) -> None:
    made = await store.create_conversation(engine=people, owner_id=ANN)
    question = await store.append_message(engine=people, owner_id=ANN, conversation_id=made.id, message=USER)
    first = await store.append_message(engine=people, owner_id=ANN, conversation_id=made.id, message=ANSWER)
    context = await store.regeneration_context(
        engine=people, owner_id=ANN, conversation_id=made.id, message_id=first.id
    )
    assert context == [question]
    second = await store.append_message(
        engine=people,
        owner_id=ANN,
        conversation_id=made.id,
        message=NewMessage(role="assistant", content="four"),
        parent_id=context[-1].id,
    )
    shown = (await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)).messages
    assert [s.message.id for s in shown] == [question.id, second.id]
    assert shown[1].sibling_ids == (first.id, second.id)
    back = await store.select_branch(
        engine=people, owner_id=ANN, conversation_id=made.id, message_id=first.id
    )
    assert [s.message.content for s in back.messages] == ["What is 2+2?", "4"]
    again = await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)
    assert again.messages == back.messages
    with pytest.raises(InvalidRequest) as caught:
        await store.regeneration_context(
            engine=people, owner_id=ANN, conversation_id=made.id, message_id=question.id
        )
    assert caught.value.code == "not_an_answer"


async def test_editing_an_earlier_message_branches_and_keeps_the_old_branch(people: AsyncEngine) -> None:
    made = await store.create_conversation(engine=people, owner_id=ANN)

    async def add(message: NewMessage) -> int:
        stored = await store.append_message(
            engine=people, owner_id=ANN, conversation_id=made.id, message=message
        )
        return stored.id

    q1, a1 = await add(USER), await add(ANSWER)
    q2, a2 = await add(NewMessage(role="user", content="And 3+3?")), await add(ANSWER)
    edited = await store.edit_message(
        engine=people, owner_id=ANN, conversation_id=made.id, message_id=q2, content="And 4+4?"
    )
    assert (edited.parent_id, edited.position, edited.role) == (a1, 2, "user")
    path = await store.message_path(
        engine=people, owner_id=ANN, conversation_id=made.id, message_id=edited.id
    )
    assert [m.id for m in path] == [q1, a1, edited.id]
    a3 = await add(NewMessage(role="assistant", content="8"))
    shown = (await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)).messages
    assert [s.message.id for s in shown] == [q1, a1, edited.id, a3]
    assert shown[2].sibling_ids == (q2, edited.id)
    # Back to the first version: its whole branch, answer included, is still there.
    old = await store.select_branch(engine=people, owner_id=ANN, conversation_id=made.id, message_id=q2)
    assert [s.message.id for s in old.messages] == [q1, a1, q2, a2]
    # Editing the very first message makes a second root.
    root = await store.edit_message(
        engine=people, owner_id=ANN, conversation_id=made.id, message_id=q1, content="Hi"
    )
    shown = (await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)).messages
    assert [s.message.id for s in shown] == [root.id] and shown[0].sibling_ids == (q1, root.id)
    assert await _count(people, messages) == 7


async def test_text_every_backend_can_store(people: AsyncEngine) -> None:
    made = await store.create_conversation(engine=people, owner_id=ANN, title="nul\x00title")
    stored = await store.append_message(
        engine=people,
        owner_id=ANN,
        conversation_id=made.id,
        message=NewMessage(
            role="assistant",
            content="a\x00b \ud800 ✓",
            attachments=(
                AttachmentMeta(name="x.txt", type="text/plain", size=3, text_chars=3, text="x\x00y"),
            ),
            stats=AnswerStats(finish_reason="stop\x00"),
        ),
    )
    shown = (await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)).messages
    assert shown[0].message == stored
    assert stored.content == "a\ufffdb ? ✓" and stored.attachments[0].text == "x\ufffdy"
    assert stored.stats.finish_reason == "stop\ufffd"
    assert made.title == "nul\ufffdtitle"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (NewMessage(role="tool", content="x"), "role"),  # type: ignore[arg-type]
        (NewMessage(role="user", content="x" * 1_000_001), "content"),
        (NewMessage(role="assistant", content="x", stats=AnswerStats(prompt_tokens=-1)), "prompt_tokens"),
        (NewMessage(role="assistant", content="x", stats=AnswerStats(ttft_ms=float("inf"))), "ttft_ms"),
        (
            NewMessage(
                role="user",
                content="x",
                attachments=(AttachmentMeta(name="a", type="text/plain", size=1),) * 11,
            ),
            "attachments",
        ),
        *(
            (
                NewMessage(
                    role="user",
                    content="x",
                    attachments=(AttachmentMeta(name="a.png", type="image/png", size=1, data_url=url),),
                ),
                "attachments",
            )
            for url in (
                "data:image/svg+xml;base64,PHN2Zz4=",  # not an image type a model is sent
                "data:image/png;base64,not*base64",
                "data:image/png;base64," + "A" * (4 * 10_000_001 // 3 + 4),  # over 10 MB of image
            )
        ),
    ],
)
async def test_bad_messages_are_refused_and_nothing_is_written(
    people: AsyncEngine, message: NewMessage, param: str
) -> None:
    made = await store.create_conversation(engine=people, owner_id=ANN)
    with pytest.raises(InvalidRequest) as caught:
        await store.append_message(engine=people, owner_id=ANN, conversation_id=made.id, message=message)
    assert caught.value.param == param
    assert await _count(people, messages) == 0
    after = await store.get_conversation(engine=people, owner_id=ANN, conversation_id=made.id)
    assert after.conversation == made


# --- pagination -------------------------------------------------------------------------------

SAME_TIME = datetime(2026, 11, 2, 9, 30, 0, 123456, tzinfo=UTC)


async def _many(engine: AsyncEngine, count: int, *, same_time: bool) -> list[str]:
    ids = [
        (await store.create_conversation(engine=engine, owner_id=ANN, title=f"c{i}")).id for i in range(count)
    ]
    if same_time:
        async with engine.begin() as conn:
            await conn.execute(update(conversations).values(updated_at=SAME_TIME))
    return ids


async def _all_pages(engine: AsyncEngine, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.list_conversations(engine=engine, owner_id=ANN, limit=limit, cursor=cursor)
        pages.append([c.id for c in page.conversations])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_pages_cover_every_conversation_once_even_with_equal_times(people: AsyncEngine) -> None:
    ids = await _many(people, 23, same_time=True)
    pages = await _all_pages(people, 5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    flat = [i for page in pages for i in page]
    # Equal times are ordered by id, descending, the index's order.
    assert flat == sorted(ids, reverse=True)
    exact = await _all_pages(people, 23)
    assert exact == [flat]


async def test_pages_stay_stable_while_the_list_changes(people: AsyncEngine) -> None:
    ids = await _many(people, 12, same_time=False)
    first = await store.list_conversations(engine=people, owner_id=ANN, limit=4)
    seen = [c.id for c in first.conversations]
    assert seen == ids[::-1][:4]
    # Meanwhile: a new conversation, and activity in one already seen; both move to the top.
    await store.create_conversation(engine=people, owner_id=ANN, title="new")
    await store.append_message(engine=people, owner_id=ANN, conversation_id=seen[2], message=USER)
    rest: list[str] = []
    cursor = first.next_cursor
    while cursor is not None:
        page = await store.list_conversations(engine=people, owner_id=ANN, limit=4, cursor=cursor)
        rest += [c.id for c in page.conversations]
        cursor = page.next_cursor
    assert rest == ids[::-1][4:]


async def test_a_forged_cursor_is_refused(people: AsyncEngine) -> None:
    for cursor in ("nonsense!", "bm9wZQ", "MjAyNi0xMS0wMlQwOTozMDowMHxhYmM"):  # the last is naive time
        with pytest.raises(InvalidRequest) as caught:
            await store.list_conversations(engine=people, owner_id=ANN, cursor=cursor)
        assert caught.value.code == "invalid_cursor"
    with pytest.raises(InvalidRequest):
        await store.list_conversations(engine=people, owner_id=ANN, limit=0)


async def test_deleting_a_user_deletes_their_conversations(people: AsyncEngine) -> None:
    gone = await store.create_conversation(engine=people, owner_id=BEN)
    await store.append_message(engine=people, owner_id=BEN, conversation_id=gone.id, message=USER)
    kept = await store.create_conversation(engine=people, owner_id=ANN)
    async with people.begin() as conn:
        await conn.execute(users.delete().where(users.c.id == BEN))
    assert await _count(people, conversations) == 1 and await _count(people, messages) == 0
    await store.get_conversation(engine=people, owner_id=ANN, conversation_id=kept.id)
