"""Wire models of the chat page's own calls: sending, editing, regenerating, acknowledging.

The conversation CRUD calls are `lumen.chat.protocol`'s; these are the ones that run a model.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lumen.chat.checks import MAX_ATTACHMENT_NAME_CHARS, MAX_ATTACHMENTS, MAX_CONTENT_CHARS

IMAGE_DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttachmentIn(_Body):
    """An attachment as `POST /api/chat/attachments` returned it, sent along with a message."""

    name: str = Field(min_length=1, max_length=MAX_ATTACHMENT_NAME_CHARS)
    type: str = Field(min_length=1, max_length=100)
    size: int = Field(ge=0)
    text_chars: int = Field(default=0, ge=0)
    kind: Literal["text", "pdf", "image"]
    text: str | None = None
    data_url: str | None = None

    @model_validator(mode="after")
    def _payload(self) -> AttachmentIn:
        if self.kind == "image":
            if self.data_url is None or not IMAGE_DATA_URL.match(self.data_url):
                raise ValueError(f"the image '{self.name}' has no PNG, JPEG, GIF or WebP data")
            if self.text is not None:
                raise ValueError("an image has no text")
        elif self.text is None or self.data_url is not None:
            raise ValueError(f"the document '{self.name}' needs its extracted text and no data URL")
        return self


class SendBody(_Body):
    content: str = Field(default="", max_length=MAX_CONTENT_CHARS)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    model: str | None = None
    """Answer with this model (and make it the conversation's); None: the conversation's model."""


class EditBody(_Body):
    content: str = Field(max_length=MAX_CONTENT_CHARS)
    model: str | None = None


class RegenerateBody(_Body):
    model: str | None = None


class AcknowledgeBody(_Body):
    notice_hash: str | None = None
    """The hash of the notice the page showed: refused if the notice changed meanwhile."""
