"""What the chat store reads and writes, as plain frozen dataclasses (apart from tables and wire models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class AttachmentMeta:
    """What a message keeps of an attachment, so the conversation can be sent to a model again
    (follow-up, regenerate, edit): ``text`` is the extracted text of a text file or PDF, ``data_url``
    an image's ``data:`` URL (None in rows stored before images were kept)."""

    name: str
    type: str  # MIME type, as sniffed from the content
    size: int  # bytes uploaded
    text_chars: int = 0
    text: str | None = None
    data_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "text_chars": self.text_chars,
        }
        if self.text is not None:
            data["text"] = self.text
        if self.data_url is not None:
            data["data_url"] = self.data_url
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttachmentMeta:
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            size=int(data["size"]),
            text_chars=int(data.get("text_chars", 0)),
            text=data.get("text"),
            data_url=data.get("data_url"),
        )


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    owner_id: int
    title: str
    model: str | None
    system_prompt: str
    temperature: float | None
    max_tokens: int | None
    archived: bool
    leaf_message_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AnswerStats:
    """What an assistant message records about the request that produced it."""

    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_micro: int | None = None  # integer micro-coins
    ttft_ms: float | None = None
    finish_reason: str | None = None
    stopped: bool = False  # the user pressed Stop: the content is the partial answer
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewMessage:
    role: Role
    content: str
    attachments: tuple[AttachmentMeta, ...] = ()
    stats: AnswerStats = field(default_factory=AnswerStats)


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    conversation_id: str
    parent_id: int | None
    position: int
    role: Role
    content: str
    attachments: tuple[AttachmentMeta, ...]
    stats: AnswerStats
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ShownMessage:
    """A message on the shown branch, with its alternatives (siblings, itself included, oldest first)."""

    message: Message
    sibling_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    conversation: Conversation
    messages: tuple[ShownMessage, ...]
    """The shown branch: root first, ending at the conversation's leaf."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    conversation: Conversation
    message_id: int | None
    """The first message whose content matches (None: only the title matched)."""
    snippet: str | None


@dataclass(frozen=True, slots=True)
class Page:
    conversations: tuple[Conversation, ...]
    next_cursor: str | None
    """Pass back for the next page; None on the last page."""


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: tuple[SearchHit, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ImportedMessage:
    """A message of an imported conversation; ``parent`` is the index of an earlier message."""

    parent: int | None
    message: NewMessage
    created_at: datetime
