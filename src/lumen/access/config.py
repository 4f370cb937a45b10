"""The config vocabulary of model access: the global default, a model's own setting, and the rules
of a group, user or project.

`AccessSettings` is the top-level `access:` section, `ModelAccess` is `models[].access` and
`EntityAccess` is `groups[].access` (and the shape of the per-user and per-project rules stored in
the database). The resolution order that combines them is in `lumen.access.policy` and
`docs/access.md`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import field_validator, model_validator

from lumen.config_base import ConfigSection

Access = Literal["allowed", "blocked"]

DEFAULT_NOTICE = (
    "This model comes with terms of use. Read them on the model's page and acknowledge them once "
    "before using the model."
)

_WILDCARD_CHARS = frozenset("*?[")


class AccessSettings(ConfigSection):
    default: Access = "allowed"
    """Access to a model when no rule, model setting or group default decides (last step of the order)."""
    notice: str = DEFAULT_NOTICE
    """Notice shown for a model with `acknowledge: true` and no `notice` of its own."""


class ModelAccess(ConfigSection):
    access: Access | None = None
    """The model's own setting; it beats group defaults but not user, project or group rules.
    Unset: the defaults decide."""
    acknowledge: bool = False
    """Callers (a user, or a manager for a project) must acknowledge the notice once before use."""
    notice: str = ""
    """The text to acknowledge; default: `access.notice`. Changing it asks everyone again."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `access: blocked` on a model reads better than `access: {access: blocked}`.
        return {"access": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _notice_needs_acknowledge(self) -> ModelAccess:
        # A notice alone would look like a gate to the administrator but gate nothing.
        if self.notice.strip() and not self.acknowledge:
            raise ValueError("`notice` is only used with `acknowledge: true`")
        return self

    def effective_notice(self, settings: AccessSettings) -> str | None:
        """The notice callers must acknowledge, or None when the model needs no acknowledgement."""
        if not self.acknowledge:
            return None
        return self.notice if self.notice.strip() else settings.notice


class EntityAccess(ConfigSection):
    default: Access | None = None
    """Access to models that no rule, and no model setting, decides. Unset: the next step decides."""
    allow: tuple[str, ...] = ()
    """Models allowed, by name or shell-style pattern (`gpt-*`, `org/*`, `llama-3.?-*`)."""
    block: tuple[str, ...] = ()
    """Models blocked, by name or pattern. In one rule a name beats a pattern; otherwise block beats allow."""

    @field_validator("allow", "block")
    @classmethod
    def _clean_entries(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            if not entry or entry != entry.strip() or any(c.isspace() for c in entry):
                raise ValueError(f"{entry!r} is not a model name or pattern (no spaces allowed)")
        # Keep the order the administrator wrote, without repeats.
        return tuple(dict.fromkeys(entries))

    @model_validator(mode="after")
    def _no_contradiction(self) -> EntityAccess:
        both = sorted(set(self.allow) & set(self.block))
        if both:
            raise ValueError(f"listed in both `allow` and `block`: {', '.join(both)}")
        return self

    def is_empty(self) -> bool:
        return self.default is None and not self.allow and not self.block

    def verdict(self, model: str) -> tuple[Access, str] | None:
        """This rule's own word on `model` (ignoring `default`): the access and the entry that
        matched, or None when no entry matches.

        An exact name beats a pattern, so "allow `gpt-*` but block `gpt-4o`" and "block `gpt-*`
        but allow `gpt-4o-mini`" both do what they say; between two patterns, block wins.
        """
        if model in self.block:
            return "blocked", model
        if model in self.allow:
            return "allowed", model
        for entry in self.block:
            if is_pattern(entry) and fnmatchcase(model, entry):
                return "blocked", entry
        for entry in self.allow:
            if is_pattern(entry) and fnmatchcase(model, entry):
                return "allowed", entry
        return None


def is_pattern(entry: str) -> bool:
    return not _WILDCARD_CHARS.isdisjoint(entry)


def unmatched_entries(rule: EntityAccess, models: Iterable[str]) -> list[str]:
    """Entries of `rule` that match none of `models`: most likely typos, worth a warning."""
    names = list(models)
    return [
        entry
        for entry in (*rule.allow, *rule.block)
        if not any(fnmatchcase(name, entry) if is_pattern(entry) else name == entry for name in names)
    ]


def notice_hash(notice: str) -> str:
    """The identity of a notice text: SHA-256 of the text with trailing spaces and surrounding blank
    lines removed, so re-indenting the YAML does not ask everyone again but any change of wording does."""
    lines = [line.rstrip() for line in notice.strip().splitlines()]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
