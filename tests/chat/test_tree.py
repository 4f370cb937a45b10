from __future__ import annotations

from datetime import UTC, datetime

from lumen.chat.records import AnswerStats, Message
from lumen.chat.tree import newest_leaf, path_to, shown_branch

T = datetime(2026, 11, 1, tzinfo=UTC)


def msg(id: int, parent: int | None, position: int = 0) -> Message:
    return Message(
        id=id,
        conversation_id="c",
        parent_id=parent,
        position=position,
        role="user",
        content=str(id),
        attachments=(),
        stats=AnswerStats(),
        created_at=T,
    )


# 1 ─ 2 ─ 3          (3 and 5 answer 2: a regenerated answer)
#      └─ 5 ─ 6
# 4                   (an edited first message: a second root)
TREE = [msg(1, None), msg(2, 1, 1), msg(3, 2, 2), msg(4, None), msg(5, 2, 2), msg(6, 5, 3)]


def test_path_runs_from_the_root_to_the_message() -> None:
    assert [m.id for m in path_to(TREE, 6)] == [1, 2, 5, 6]
    assert [m.id for m in path_to(TREE, 4)] == [4]
    assert path_to(TREE, 99) == []


def test_shown_branch_lists_siblings_oldest_first() -> None:
    shown = shown_branch(TREE, 3)
    assert [s.message.id for s in shown] == [1, 2, 3]
    assert [s.sibling_ids for s in shown] == [(1, 4), (2,), (3, 5)]


def test_an_unknown_leaf_shows_the_newest_message() -> None:
    assert [s.message.id for s in shown_branch(TREE, None)] == [1, 2, 5, 6]
    assert [s.message.id for s in shown_branch(TREE, 42)] == [1, 2, 5, 6]
    assert shown_branch([], None) == ()


def test_newest_leaf_follows_the_newest_child() -> None:
    assert newest_leaf(TREE, 1) == 6
    assert newest_leaf(TREE, 3) == 3
    assert newest_leaf(TREE, 4) == 4


def test_a_cyclic_tree_cannot_hang_the_walk() -> None:
    cyclic = [msg(1, 2), msg(2, 1)]
    assert len(path_to(cyclic, 1)) <= 3
    assert newest_leaf(cyclic, 1) in (1, 2)
