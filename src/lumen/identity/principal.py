"""The caller a request is made for, once its API key has been checked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    """Stable id of the user or project that pays for the request."""
    kind: str
    """`user`, `project` or `bootstrap`."""
    key_id: str | None = None
    """Which API key was used, when one was."""
