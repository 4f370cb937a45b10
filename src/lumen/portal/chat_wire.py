"""What the chat sends a model (OpenAI messages) and the page (SSE events), and what it reads
back from the relay: pure functions over plain data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from lumen.chat.records import Message


def openai_messages(system_prompt: str, path: Sequence[Message], *, images: bool) -> list[dict[str, Any]]:
    """The conversation as a model reads it: the system prompt, then the branch up to the
    question; documents' text goes inline, and each user message's stored images (data URLs) with
    it when the model takes images (`images`), else a note that an image was there."""
    messages: list[dict[str, Any]] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    for message in path:
        takes = images and message.role == "user"
        sent = [a.data_url for a in message.attachments if a.data_url is not None] if takes else []
        text = _with_attachments(message, images_sent=bool(sent))
        content: str | list[dict[str, Any]] = text
        if sent:
            content = [{"type": "text", "text": text}] + [
                {"type": "image_url", "image_url": {"url": url}} for url in sent
            ]
        messages.append({"role": message.role, "content": content})
    return messages


def _with_attachments(message: Message, *, images_sent: bool) -> str:
    parts = [message.content] if message.content else []
    for attachment in message.attachments:
        if attachment.text is not None:
            parts.append(
                f"[Attachment: {attachment.name}]\n{attachment.text}\n[End of attachment: {attachment.name}]"
            )
        elif attachment.data_url is None:
            # Stored before images were kept: say so rather than let the model guess at a picture.
            parts.append(f"[An image, {attachment.name}, was attached here; it is no longer available.]")
        elif not images_sent:
            # The conversation moved to a model without images: the rest of it can still be answered.
            parts.append(
                f"[An image, {attachment.name}, was attached here; the chosen model cannot see images.]"
            )
    return "\n\n".join(parts)


def read_relayed(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    """The answer text and the error in bytes the relay sent (whole SSE events, valid JSON)."""
    texts: list[str] = []
    error: dict[str, Any] | None = None
    for block in raw.split(b"\n\n"):
        if not block.startswith(b"data: ") or block == b"data: [DONE]":
            continue
        chunk = orjson.loads(block[6:])
        if chunk.get("error"):
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            continue
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                texts.append(content)
    return "".join(texts), error


def event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
