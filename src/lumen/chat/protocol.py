"""Wire models of the `/api/chat` JSON API and of the JSON export, apart from tables and logic.

Money is shown in coins (a decimal, from integer micro-coins), as in the admin API.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from lumen.chat.records import Role


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests ---------------------------------------------------------------------------------


class ConversationCreate(_Body):
    title: str | None = None
    """None: "New chat"."""
    model: str | None = None
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None


class ConversationUpdate(_Body):
    """Rename, change settings or archive: only the fields sent change; null clears a setting."""

    title: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    archived: bool | None = None


class BranchSelect(_Body):
    message_id: int
    """Show the branch through this message (its newest continuation)."""


# --- responses --------------------------------------------------------------------------------


class AttachmentInfo(BaseModel):
    """What the page lists of an attachment: never an image's data (megabytes per message)."""

    name: str
    type: str
    size: int
    text_chars: int


class AttachmentUploaded(AttachmentInfo):
    """A validated upload: the text to send to a model, or an image as a data URL."""

    kind: Literal["text", "pdf", "image"]
    text: str | None = None
    data_url: str | None = None


class MessagePublic(BaseModel):
    id: int
    parent_id: int | None
    position: int
    role: Role
    content: str
    attachments: list[AttachmentInfo]
    created_at: datetime
    sibling_ids: list[int]
    """The alternatives at this point, oldest first, this message included (for "2 / 3")."""
    # What an answer cost and how it ended (None for the user's messages).
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: Decimal | None
    ttft_ms: float | None
    finish_reason: str | None
    stopped: bool


class ConversationSummary(BaseModel):
    id: str
    title: str
    model: str | None
    archived: bool
    created_at: datetime
    updated_at: datetime


class ConversationPublic(ConversationSummary):
    system_prompt: str
    temperature: float | None
    max_tokens: int | None
    messages: list[MessagePublic]
    """The shown branch, oldest first."""


class ConversationPage(BaseModel):
    items: list[ConversationSummary]
    next_cursor: str | None


class SearchHitPublic(ConversationSummary):
    message_id: int | None
    snippet: str | None


class SearchPagePublic(BaseModel):
    items: list[SearchHitPublic]
    next_cursor: str | None


# --- the JSON export (also what import reads) -----------------------------------------------


class ExportAttachment(_Body):
    name: str
    type: str
    size: int = Field(ge=0)
    text_chars: int = Field(default=0, ge=0)
    text: str | None = None
    data_url: str | None = None
    """An image's ``data:`` URL: the export is the full record (listings leave it out)."""


class ExportMessage(_Body):
    id: int
    """Local to the document; `parent` and `current` refer to it."""
    parent: int | None
    role: Role
    content: str
    attachments: list[ExportAttachment] = []
    created_at: AwareDatetime
    model: str | None = None
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    cost_micro: int | None = Field(default=None, ge=0)
    ttft_ms: float | None = Field(default=None, ge=0)
    finish_reason: str | None = None
    stopped: bool = False


class ExportConversation(_Body):
    title: str
    model: str | None = None
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    archived: bool = False
    created_at: AwareDatetime
    updated_at: AwareDatetime


class ExportDocument(_Body):
    format: Literal["lumen.conversation"]
    version: Literal[1]
    exported_at: AwareDatetime
    conversation: ExportConversation
    messages: list[ExportMessage]
    """Every message of every branch, parents before children."""
    current: int | None
    """The id of the shown leaf."""
