"""The branching rules of a conversation, as pure functions over its messages.

A conversation is a tree of messages: each message has a parent (None for the first), and
siblings are alternatives. Regenerating an answer adds a sibling of the answer; editing a message
adds a sibling of the message, and what followed the old version stays on the old branch. The
conversation remembers one leaf; what is shown (and sent to a model) is the path from the root
to that leaf. Choosing another sibling shows its newest branch.
"""

from __future__ import annotations

from collections.abc import Sequence

from lumen.chat.records import Message, ShownMessage


def _by_parent(messages: Sequence[Message]) -> dict[int | None, list[Message]]:
    children: dict[int | None, list[Message]] = {}
    for message in sorted(messages, key=lambda m: m.id):
        children.setdefault(message.parent_id, []).append(message)
    return children


def path_to(messages: Sequence[Message], message_id: int) -> list[Message]:
    """The messages from the root to `message_id` (included); empty if it is not in `messages`."""
    by_id = {m.id: m for m in messages}
    path: list[Message] = []
    current = by_id.get(message_id)
    # Parents always precede their children, so a walk is at most len(messages) long; the bound
    # turns a corrupted (cyclic) tree into a short path instead of an endless loop.
    while current is not None and len(path) <= len(messages):
        path.append(current)
        current = by_id.get(current.parent_id) if current.parent_id is not None else None
    path.reverse()
    return path


def newest_leaf(messages: Sequence[Message], message_id: int) -> int:
    """The leaf reached from `message_id` by always following the newest child."""
    children = _by_parent(messages)
    current = message_id
    for _ in range(len(messages)):
        below = children.get(current)
        if not below:
            break
        current = below[-1].id
    return current


def shown_branch(messages: Sequence[Message], leaf_id: int | None) -> tuple[ShownMessage, ...]:
    """The path from the root to `leaf_id`, each message with its siblings' ids (oldest first).

    An unknown leaf (None, or an id not among `messages`) falls back to the newest message, so a
    conversation always shows its latest exchange.
    """
    if not messages:
        return ()
    ids = {m.id for m in messages}
    if leaf_id is None or leaf_id not in ids:
        leaf_id = max(ids)
    children = _by_parent(messages)
    return tuple(
        ShownMessage(message=m, sibling_ids=tuple(s.id for s in children[m.parent_id]))
        for m in path_to(messages, leaf_id)
    )
