"""How a request ended, in words for people (the usage pages and the CSV export)."""

from __future__ import annotations

CLIENT_CLOSED = 499
"""The status a usage record carries when the client stopped the request (nginx's convention)."""


def outcome_label(status: int, error_code: str | None) -> str:
    """`OK`, `Stopped` (the client stopped it: not an error), or the status and error code."""
    if status < 400:
        return "OK"
    if status == CLIENT_CLOSED:
        return "Stopped"
    return f"{status} {error_code or ''}".strip()
