from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.chat import store
from lumen.chat.records import NewMessage
from lumen.errors import InvalidRequest
from tests.chat.conftest import ANN, BEN

# Title, then message contents. The % and _ of LIKE, its escape character and SQL quotes are
# all plain text to a search.
CONVERSATIONS = {
    "percent": ("Growth of 100% in a year", ["no wildcard here"]),
    "hundred": ("Growth of 100 in a year", ["100 points"]),
    "underscore": ("Naming", ["use snake_case names"]),
    "snake": ("Snakes", ["snakeXcase is not snake case"]),
    "backslash": ("Windows", ["open C:\\temp\\new"]),
    "quotes": ("Quoting", ["it's \"quoted\" -- '; DROP TABLE messages; --"]),
    "unicode": ("Café notes", ["ÉCOLE and école"]),
    "long": ("Long one", ["x" * 500 + " needle in a haystack " + "y" * 500]),
}


@pytest.fixture
async def corpus(people: AsyncEngine) -> dict[str, str]:
    ids: dict[str, str] = {}
    for key, (title, contents) in CONVERSATIONS.items():
        made = await store.create_conversation(engine=people, owner_id=ANN, title=title)
        for content in contents:
            await store.append_message(
                engine=people,
                owner_id=ANN,
                conversation_id=made.id,
                message=NewMessage(role="user", content=content),
            )
        ids[made.id] = key
    # Ben has the same words: never found by Ann, and Ann's never by Ben.
    ben = await store.create_conversation(engine=people, owner_id=BEN, title="Growth of 100% too")
    await store.append_message(
        engine=people,
        owner_id=BEN,
        conversation_id=ben.id,
        message=NewMessage(role="user", content="snake_case"),
    )
    return ids


async def _found(engine: AsyncEngine, ids: dict[str, str], query: str, owner: int = ANN) -> set[str]:
    page = await store.search_conversations(engine=engine, owner_id=owner, query=query)
    return {ids.get(h.conversation.id, "ben's") for h in page.hits}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("100%", {"percent"}),
        ("%", {"percent"}),
        ("snake_case", {"underscore"}),
        ("_", {"underscore"}),
        ("snake_case is", set()),  # "_" as a wildcard would match "snakeXcase is"
        ("C:\\temp", {"backslash"}),
        ("\\", {"backslash"}),
        ("it's", {"quotes"}),
        ('"quoted"', {"quotes"}),
        ("'; DROP TABLE", {"quotes"}),
        ("GROWTH", {"percent", "hundred"}),
        ("Snake", {"underscore", "snake"}),
        ("needle", {"long"}),
        ("nothing like this", set()),
    ],
)
async def test_search_matches_literally_and_ignores_case(
    people: AsyncEngine, corpus: dict[str, str], query: str, expected: set[str]
) -> None:
    assert await _found(people, corpus, query) == expected


async def test_search_never_reads_another_users_conversations(
    people: AsyncEngine, corpus: dict[str, str]
) -> None:
    assert await _found(people, corpus, "snake_case", owner=BEN) == {"ben's"}
    assert await _found(people, corpus, "needle", owner=BEN) == set()


async def test_search_finds_non_ascii_text_exactly(people: AsyncEngine, corpus: dict[str, str]) -> None:
    assert await _found(people, corpus, "café") == {"unicode"}
    assert await _found(people, corpus, "école") == {"unicode"}


async def test_hits_carry_the_first_matching_message_and_a_snippet(
    people: AsyncEngine, corpus: dict[str, str]
) -> None:
    page = await store.search_conversations(engine=people, owner_id=ANN, query="NEEDLE")
    (hit,) = page.hits
    detail = await store.get_conversation(engine=people, owner_id=ANN, conversation_id=hit.conversation.id)
    assert hit.message_id == detail.messages[0].message.id
    assert hit.snippet is not None and "needle in a haystack" in hit.snippet
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…") and len(hit.snippet) < 200
    (title_only,) = (await store.search_conversations(engine=people, owner_id=ANN, query="Quoting")).hits
    assert title_only.message_id is None and title_only.snippet is None


async def test_search_follows_the_archive_filter_and_pages(people: AsyncEngine) -> None:
    made = []
    for i in range(7):
        conversation = await store.create_conversation(engine=people, owner_id=ANN, title=f"report {i}")
        made.append(conversation.id)
    await store.update_conversation(engine=people, owner_id=ANN, conversation_id=made[0], archived=True)
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.search_conversations(
            engine=people, owner_id=ANN, query="report", limit=2, cursor=cursor
        )
        seen += [h.conversation.id for h in page.hits]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == made[:0:-1]
    archived = await store.search_conversations(engine=people, owner_id=ANN, query="report", archived=True)
    assert [h.conversation.id for h in archived.hits] == [made[0]]


async def test_an_empty_or_huge_search_is_refused(people: AsyncEngine) -> None:
    for query in ("", "   ", "x" * 201):
        with pytest.raises(InvalidRequest) as caught:
            await store.search_conversations(engine=people, owner_id=ANN, query=query)
        assert caught.value.param == "q"
