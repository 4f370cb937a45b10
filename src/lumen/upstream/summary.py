"""What a caller may see of a backend's own error message.

A backend's words are useful when the request was at fault ("maximum context length is 4096
tokens"), but they may also name the backend's host, its URL, an internal address, or be a whole
HTML error page from a proxy in front of it. Callers see a short summary with every address taken
out, or nothing; the full text goes to the logs and the admin pages (`UpstreamError.detail`).
"""

from __future__ import annotations

import re
from typing import Any

from lumen.errors import UpstreamError

LIMIT = 300
"""The longest summary shown, in characters."""

HIDDEN = "[address]"

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_IPV6 = re.compile(
    r"\[[0-9a-f:.%]*:[0-9a-f:.%]*\](?::\d+)?"  # [fd00::1]:8000
    r"|\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b"  # every group written out
    r"|(?<![\w:])(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*)?::"  # fe80::1
    r"(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*)?(?![\w:])",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
# A host name: dotted lower-case labels ending in an alphabetic one (`gpu-3.cluster.internal`,
# `api.example.com`), or any name followed by a port (`vllm:8000`). Python paths such as
# `torch.cuda.OutOfMemoryError` keep their capitals and are left alone; version numbers
# (`llama-3.1`) end in digits.
_HOST = re.compile(
    r"(?<![\w./-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}(?::\d+)?(?!\.?[\w/-])"
    r"|\b[a-z0-9-]*[a-z][a-z0-9.-]*:\d{2,5}\b"
    r"|\blocalhost\b",
)
_TAG = re.compile(r"<[^>]{0,500}>")
_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def summarise(text: str | None, limit: int = LIMIT) -> str | None:
    """`text` without URLs, host names, IP addresses, ports or HTML tags, on one line, at most
    `limit` characters; None when nothing readable is left."""
    if not text:
        return None
    if _looks_like_html(text):
        return None  # a whole error page: its words are the proxy's, not the model's
    cleaned = _TAG.sub(" ", text)
    cleaned = _URL.sub(HIDDEN, cleaned)
    cleaned = _IPV6.sub(HIDDEN, cleaned)
    cleaned = _IPV4.sub(HIDDEN, cleaned)
    cleaned = _HOST.sub(HIDDEN, cleaned)
    cleaned = "".join(c if c.isprintable() else " " for c in cleaned)
    cleaned = _SPACE.sub(" ", cleaned).strip()
    if not cleaned or cleaned == HIDDEN:
        return None
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def token(value: Any) -> str | None:
    """An error `type`, `code` or `param` of the backend's, if it is a plain identifier."""
    return value if isinstance(value, str) and _TOKEN.match(value) else None


def event_error(error: Any) -> UpstreamError:
    """The error an upstream sent as an event in the middle of a stream (`{"error": ...}`)."""
    message = error.get("message") if isinstance(error, dict) else error
    text = message if isinstance(message, str) else None
    summary = summarise(text)
    shown = "The model backend failed while answering" + (f": {summary}" if summary else ".")
    return UpstreamError(shown, detail=f"The model backend sent an error event: {str(error)[:2000]}")


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype", "<html", "<?xml", "<head", "<body")) or "</html>" in text.lower()
