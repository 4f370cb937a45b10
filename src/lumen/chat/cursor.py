"""Opaque keyset cursors for conversation lists: the (updated_at, id) of the last row of a page."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from lumen.errors import InvalidRequest


def encode_cursor(updated_at: datetime, conversation_id: str) -> str:
    raw = f"{updated_at.isoformat()}|{conversation_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The cursor's position, or `InvalidRequest` for anything this module did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, separator, conversation_id = raw.partition("|")
        updated_at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(
            "The cursor is not one this server gave out.", param="cursor", code="invalid_cursor"
        ) from exc
    if not separator or not conversation_id or updated_at.tzinfo is None:
        raise InvalidRequest(
            "The cursor is not one this server gave out.", param="cursor", code="invalid_cursor"
        )
    return updated_at, conversation_id
