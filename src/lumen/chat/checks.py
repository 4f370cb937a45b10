"""The limits of stored conversations, checked before anything is written.

Every function returns the value to store or raises `InvalidRequest` saying which limit was hit.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Sequence
from datetime import datetime
from enum import Enum

from lumen.chat.records import ROLES, AttachmentMeta, NewMessage
from lumen.errors import InvalidRequest

MAX_TITLE_CHARS = 200
MAX_MODEL_CHARS = 200
MAX_SYSTEM_PROMPT_CHARS = 100_000
MAX_CONTENT_CHARS = 1_000_000
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_NAME_CHARS = 255
MAX_ATTACHMENT_TEXT_CHARS = 1_000_000
MAX_IMAGE_BYTES = 10_000_000
"""The largest image a message keeps (the API's upload limit; the portal's is lower)."""
IMAGE_DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,")
MAX_TOKENS = 10_000_000
MAX_PAGE = 200
MAX_SEARCH_CHARS = 200
MAX_IMPORT_MESSAGES = 10_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Unset(Enum):
    """The value of an argument that was not given (None means "clear")."""

    UNSET = "unset"


UNSET = Unset.UNSET


def storable(text: str) -> str:
    """`text` as every backend can store it.

    PostgreSQL refuses NUL in text and any backend refuses lone surrogates (which JSON can carry);
    each becomes U+FFFD, visibly, instead of failing a write that may hold a whole answer.
    """
    text = text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(text) else text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _too_long(what: str, limit: int, param: str) -> InvalidRequest:
    return InvalidRequest(f"The {what} is longer than {limit:,} characters.", param=param, code="too_long")


def title(value: str) -> str:
    cleaned = " ".join(_CONTROL.sub(" ", storable(value)).split())
    if not cleaned:
        raise InvalidRequest("The title is empty.", param="title")
    if len(cleaned) > MAX_TITLE_CHARS:
        raise _too_long("title", MAX_TITLE_CHARS, "title")
    return cleaned


def model(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = value.strip()
    if not cleaned or _CONTROL.search(cleaned) or len(cleaned) > MAX_MODEL_CHARS:
        raise InvalidRequest(f"'{value[:MAX_MODEL_CHARS]}' is not a model name.", param="model")
    return cleaned


def system_prompt(value: str) -> str:
    if len(value) > MAX_SYSTEM_PROMPT_CHARS:
        raise _too_long("system prompt", MAX_SYSTEM_PROMPT_CHARS, "system_prompt")
    return storable(value)


def temperature(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= 2:
        raise InvalidRequest(f"The temperature must be between 0 and 2, not {value}.", param="temperature")
    return float(value)


def max_tokens(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
        raise InvalidRequest(
            f"max_tokens must be a whole number from 1 to {MAX_TOKENS:,}, not {value}.", param="max_tokens"
        )
    return value


def page_limit(value: int) -> int:
    if not 1 <= value <= MAX_PAGE:
        raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}, not {value}.", param="limit")
    return value


def search_term(value: str) -> str:
    term = " ".join(storable(value).split())
    if not term:
        raise InvalidRequest("The search is empty.", param="q")
    if len(term) > MAX_SEARCH_CHARS:
        raise _too_long("search", MAX_SEARCH_CHARS, "q")
    return term


def aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequest(f"The time {value.isoformat()} has no time zone.", param="created_at")
    return value


def attachment(meta: AttachmentMeta) -> None:
    name = meta.name.strip()
    if not name or len(name) > MAX_ATTACHMENT_NAME_CHARS or _CONTROL.search(name):
        raise InvalidRequest(f"'{meta.name[:80]}' is not a file name Lumen keeps.", param="attachments")
    if meta.size < 0 or meta.text_chars < 0:
        raise InvalidRequest("An attachment's size cannot be negative.", param="attachments")
    if meta.text is not None and len(meta.text) > MAX_ATTACHMENT_TEXT_CHARS:
        raise _too_long(f"text of '{name}'", MAX_ATTACHMENT_TEXT_CHARS, "attachments")
    if meta.data_url is not None:
        if meta.text is not None:
            raise InvalidRequest(f"'{name}' cannot be both a document and an image.", param="attachments")
        size = image_bytes(meta.data_url)
        if size is None:
            raise InvalidRequest(
                f"The image '{name}' is not a PNG, JPEG, GIF or WebP data URL.", param="attachments"
            )
        if size > MAX_IMAGE_BYTES:
            raise InvalidRequest(
                f"The image '{name}' has {size:,} bytes; the limit is {MAX_IMAGE_BYTES:,}.",
                param="attachments",
                code="attachment_too_large",
            )


def image_bytes(data_url: str) -> int | None:
    """The size of the image in a base64 image data URL; None if it is not one."""
    found = IMAGE_DATA_URL.match(data_url)
    if found is None:
        return None
    try:
        return len(base64.b64decode(data_url[found.end() :], validate=True))
    except (binascii.Error, ValueError):
        return None


def new_message(message: NewMessage) -> None:
    if message.role not in ROLES:
        raise InvalidRequest(
            f"The role must be one of {', '.join(ROLES)}, not '{message.role}'.", param="role"
        )
    if len(message.content) > MAX_CONTENT_CHARS:
        raise _too_long("message", MAX_CONTENT_CHARS, "content")
    if len(message.attachments) > MAX_ATTACHMENTS:
        raise InvalidRequest(
            f"A message can have at most {MAX_ATTACHMENTS} attachments.", param="attachments"
        )
    for meta in message.attachments:
        attachment(meta)
    stats = message.stats
    for name in ("prompt_tokens", "completion_tokens", "cost_micro"):
        value = getattr(stats, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidRequest(f"{name} must be a whole number of at least 0, not {value}.", param=name)
    if stats.ttft_ms is not None and (not math.isfinite(stats.ttft_ms) or stats.ttft_ms < 0):
        raise InvalidRequest(f"ttft_ms must be at least 0, not {stats.ttft_ms}.", param="ttft_ms")


def import_shape(parents: Sequence[int | None], leaf: int | None) -> None:
    """Parents must come before their children (which also rules out cycles)."""
    if len(parents) > MAX_IMPORT_MESSAGES:
        raise InvalidRequest(
            f"A conversation can have at most {MAX_IMPORT_MESSAGES:,} messages.", param="messages"
        )
    for index, parent in enumerate(parents):
        if parent is not None and not 0 <= parent < index:
            raise InvalidRequest(
                f"Message {index} names parent {parent}, which is not an earlier message.", param="messages"
            )
    if leaf is not None and not 0 <= leaf < len(parents):
        raise InvalidRequest(f"The current message {leaf} is not one of the messages.", param="current")
