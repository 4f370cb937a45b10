"""Validate an uploaded attachment and turn it into what a model can read.

- Text files: UTF-8 (or UTF-16 with a byte-order mark); the text is kept.
- PDF: the text layer, extracted with pypdf (pure Python); scanned PDFs without one are refused,
  since Lumen does no OCR.
- Images (PNG, JPEG, GIF, WebP): a base64 ``data:`` URL for models that take images.

The type is sniffed from the content's first bytes, never taken from the file name or the
browser's claim. Anything else, anything over a limit, and extracted text longer than the limit
are refused with a message that says which limit; nothing is ever silently truncated.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from lumen.chat.checks import MAX_ATTACHMENT_NAME_CHARS, MAX_ATTACHMENT_TEXT_CHARS
from lumen.chat.records import AttachmentMeta
from lumen.errors import InvalidRequest, PayloadTooLarge

Kind = Literal["text", "pdf", "image"]

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    """Upload limits, in bytes of the file (and characters of extracted text)."""

    text_bytes: int = 2_000_000
    pdf_bytes: int = 20_000_000
    pdf_pages: int = 500
    image_bytes: int = 10_000_000
    text_chars: int = MAX_ATTACHMENT_TEXT_CHARS

    @property
    def max_bytes(self) -> int:
        """The largest upload any type may be: bigger bodies are refused before they are read."""
        return max(self.text_bytes, self.pdf_bytes, self.image_bytes)


@dataclass(frozen=True, slots=True)
class Extracted:
    kind: Kind
    meta: AttachmentMeta
    data_url: str | None = None
    """For images: ``data:<type>;base64,...``."""


def sniff(data: bytes) -> str | None:
    """The MIME type of a PDF or a supported image from its magic bytes; None for anything else."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def clean_name(name: str) -> str:
    """The file name without any directory part or control characters, at most 255 characters."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = _CONTROL.sub("", base).strip()[:MAX_ATTACHMENT_NAME_CHARS]
    return base if base.strip(".") else "attachment"


def _too_large(name: str, what: str, size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"'{name}' is too large: {what} {size:,} bytes, and the limit is {limit:,} bytes.",
        param="file",
        code="attachment_too_large",
    )


def _text_too_long(name: str, chars: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The text of '{name}' has {chars:,} characters or more; the limit is {limit:,}. "
        "Split the document and attach the parts you need.",
        param="file",
        code="attachment_text_too_long",
    )


async def extract(name: str, data: bytes, limits: AttachmentLimits | None = None) -> Extracted:
    """Validate `data` and extract what a model reads; PDF parsing runs in a worker thread."""
    return await asyncio.to_thread(extract_sync, name, data, limits or AttachmentLimits())


def extract_sync(name: str, data: bytes, limits: AttachmentLimits) -> Extracted:
    name = clean_name(name)
    if not data:
        raise InvalidRequest(f"'{name}' is empty.", param="file", code="empty_attachment")
    mime = sniff(data)
    if mime == "application/pdf":
        if len(data) > limits.pdf_bytes:
            raise _too_large(name, "this PDF has", len(data), limits.pdf_bytes)
        text = _pdf_text(name, data, limits)
        return Extracted(kind="pdf", meta=_meta(name, mime, len(data), text))
    if mime is not None:
        if len(data) > limits.image_bytes:
            raise _too_large(name, "this image has", len(data), limits.image_bytes)
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        return Extracted(
            kind="image", meta=AttachmentMeta(name=name, type=mime, size=len(data)), data_url=url
        )
    if len(data) > limits.text_bytes:
        raise _too_large(name, "this text file has", len(data), limits.text_bytes)
    text = _decode_text(name, data)
    if len(text) > limits.text_chars:
        raise _text_too_long(name, len(text), limits.text_chars)
    return Extracted(kind="text", meta=_meta(name, "text/plain", len(data), text))


def _meta(name: str, mime: str, size: int, text: str) -> AttachmentMeta:
    return AttachmentMeta(name=name, type=mime, size=size, text_chars=len(text), text=text)


def _decode_text(name: str, data: bytes) -> str:
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = ""
        unreadable = True
    else:
        # NUL does not occur in text files; it marks a binary format that happens to decode.
        unreadable = "\x00" in text
    if unreadable:
        raise InvalidRequest(
            f"'{name}' is not a type Lumen can attach. Attach UTF-8 text, a PDF, "
            "or a PNG, JPEG, GIF or WebP image.",
            param="file",
            code="unsupported_attachment_type",
        )
    return text


def _unreadable_pdf(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{name}' could not be read as a PDF: {why}", param="file", code="unreadable_pdf")


def _pdf_text(name: str, data: bytes, limits: AttachmentLimits) -> str:
    # Imported here: pypdf is only needed when someone attaches a PDF.
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise _unreadable_pdf(name, "it is protected by a password.")
        if len(reader.pages) > limits.pdf_pages:
            raise PayloadTooLarge(
                f"'{name}' has {len(reader.pages):,} pages; the limit is {limits.pdf_pages:,}.",
                param="file",
                code="attachment_too_large",
            )
        parts: list[str] = []
        chars = 0
        for page in reader.pages:
            page_text = page.extract_text() or ""
            chars += len(page_text)
            # Stop at the first page past the limit rather than extracting a huge document.
            if chars > limits.text_chars:
                raise _text_too_long(name, chars, limits.text_chars)
            parts.append(page_text)
    except (InvalidRequest, PayloadTooLarge):
        raise
    except Exception as exc:
        # The file is untrusted input to a parser that can fail in many ways (pypdf's own errors,
        # but also KeyError/ValueError/RecursionError on malformed objects): each means "unreadable".
        raise _unreadable_pdf(name, f"{type(exc).__name__}: {exc}"[:300]) from exc
    text = "\n\n".join(parts).replace("\x00", "")
    if len(text) > limits.text_chars:
        raise _text_too_long(name, len(text), limits.text_chars)
    if not text.strip():
        raise _unreadable_pdf(
            name, "it has no text layer (a scan?). Lumen does not recognise text in images."
        )
    return text
