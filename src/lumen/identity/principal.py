"""The caller a request is made for, once its API key has been checked."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    """Who pays: `user:<id>` or `project:<id>`."""
    kind: str
    """`user` or `project`."""
    key_id: str | None = None
    """Which API key was used, when one was."""
    name: str = ""
    """The user's email or the project's name."""
    groups: tuple[str, ...] = ()
    """The config groups the user or project is in."""
    is_admin: bool = False
    """Administrator rights: a portal session of an administrator, or an administrator's admin
    key (`ApiKey.admin`); never any other key."""
    models: frozenset[str] | None = field(default=None)
    """The key's model allow-list; None allows every model policy allows."""
    coin_cap_micro: int | None = None
    """The key's own coin cap, if any."""
