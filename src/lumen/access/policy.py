"""Who may use which model: the pure resolution, with no I/O.

The order (first step with an answer wins; `docs/access.md` has the table of examples):

0. A disabled model is off for everyone (hidden).
1. The caller's own rule (the user's or the project's `allow`/`block` lists).
2. The rules of the caller's groups; if one group blocks and another allows, **block wins**.
3. The model's own `access`.
4. The caller's own `default`.
5. The defaults of the caller's groups; if one allows and another blocks, **allow wins**.
6. The global `access.default`.

If the answer is "allowed" and the model needs acknowledgement, the caller must have acknowledged
the model's current notice; otherwise the status is `needs_ack`.

Explicit rules (steps 1 and 2) are stricter than the model's setting and the defaults on purpose:
a group rule is how an administrator opens a restricted model to one group, or closes an open one.
Among defaults, the caller's own comes first because it is the most specific; NCSA Lumen checks it
after the group defaults, which makes a user's `default: blocked` useless as soon as any of their
groups opens its default.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from lumen.access.config import Access, AccessSettings, EntityAccess, ModelAccess, notice_hash


class Status(StrEnum):
    ALLOWED = "allowed"
    """The caller may use the model."""
    NEEDS_ACK = "needs_ack"
    """Allowed once the caller acknowledges the notice: listed, but requests get 403."""
    REFUSED = "refused"
    """Not allowed by the model's setting or a default: not listed, requests get 403."""
    HIDDEN = "hidden"
    """Disabled, or blocked by a rule naming the caller or their group: 404 as if it did not exist."""


class Step(StrEnum):
    DISABLED = "disabled"
    PRINCIPAL_RULE = "principal_rule"
    GROUP_RULE = "group_rule"
    MODEL = "model"
    PRINCIPAL_DEFAULT = "principal_default"
    GROUP_DEFAULT = "group_default"
    GLOBAL_DEFAULT = "global_default"


# A block at these steps targets the caller (by name or by group), so the model is hidden from
# them; a block by the model's own setting or a default leaves it visible as "not allowed".
_HIDING_STEPS = frozenset({Step.DISABLED, Step.PRINCIPAL_RULE, Step.GROUP_RULE})


class ModelLike(Protocol):
    """What the policy needs of a model; `lumen.settings.ModelSettings` has it."""

    @property
    def name(self) -> str: ...

    @property
    def enabled(self) -> bool: ...

    @property
    def access(self) -> ModelAccess: ...


@dataclass(frozen=True, slots=True)
class Decision:
    model: str
    status: Status
    step: Step
    """The step of the order that decided allowed or blocked."""
    reason: str
    """Why, for administrators and logs (names the rule and entry); never shown to callers."""
    notice: str | None = None
    """The notice to acknowledge, when the model needs acknowledgement and is not refused or hidden."""
    notice_hash: str | None = None
    acknowledged: bool = False
    """True when the model needs acknowledgement and the caller has acknowledged the current notice."""

    @property
    def usable(self) -> bool:
        return self.status is Status.ALLOWED

    @property
    def visible(self) -> bool:
        return self.status is not Status.HIDDEN

    @property
    def listed(self) -> bool:
        """Whether `/v1/models` lists it: the models the caller may use, or may once acknowledged."""
        return self.status in (Status.ALLOWED, Status.NEEDS_ACK)

    @property
    def acknowledgement(self) -> Literal["required", "acknowledged"] | None:
        if self.notice is None:
            return None
        return "acknowledged" if self.acknowledged else "required"


def decide(
    model: ModelLike,
    principal_rule: EntityAccess | None,
    group_rules: Mapping[str, EntityAccess],
    global_access: AccessSettings,
    acknowledged: Collection[str] = (),
) -> Decision:
    """Resolves one model for one caller.

    `group_rules` maps the caller's group names to their rules (groups without rules may be left
    out); `acknowledged` holds the notice hashes the caller has acknowledged for this model.
    """
    access, step, reason = _allow_or_block(model, principal_rule, group_rules, global_access)
    if access == "blocked":
        status = Status.HIDDEN if step in _HIDING_STEPS else Status.REFUSED
        return Decision(model.name, status, step, reason)
    notice = model.access.effective_notice(global_access)
    if notice is None:
        return Decision(model.name, Status.ALLOWED, step, reason)
    digest = notice_hash(notice)
    done = digest in acknowledged
    return Decision(
        model.name,
        Status.ALLOWED if done else Status.NEEDS_ACK,
        step,
        reason,
        notice=notice,
        notice_hash=digest,
        acknowledged=done,
    )


def _allow_or_block(
    model: ModelLike,
    principal_rule: EntityAccess | None,
    group_rules: Mapping[str, EntityAccess],
    global_access: AccessSettings,
) -> tuple[Access, Step, str]:
    name = model.name
    if not model.enabled:
        return "blocked", Step.DISABLED, "the model is disabled"

    if principal_rule is not None:
        own = principal_rule.verdict(name)
        if own is not None:
            return own[0], Step.PRINCIPAL_RULE, f"{own[0]} by the caller's rule ({own[1]!r})"

    groups = sorted(group_rules.items())
    verdicts = [(group, v) for group, rule in groups if (v := rule.verdict(name)) is not None]
    for wanted in ("blocked", "allowed"):  # across groups, a block beats an allow
        for group, (verdict, entry) in verdicts:
            if verdict == wanted:
                return verdict, Step.GROUP_RULE, f"{verdict} by group {group!r} ({entry!r})"

    if model.access.access is not None:
        return model.access.access, Step.MODEL, f"{model.access.access} by the model's own setting"

    if principal_rule is not None and principal_rule.default is not None:
        return (
            principal_rule.default,
            Step.PRINCIPAL_DEFAULT,
            f"the caller's default: {principal_rule.default}",
        )

    for wanted in ("allowed", "blocked"):  # across group defaults, an allow beats a block
        for group, rule in groups:
            if rule.default == wanted:
                return wanted, Step.GROUP_DEFAULT, f"default of group {group!r}: {wanted}"

    return global_access.default, Step.GLOBAL_DEFAULT, f"the global default: {global_access.default}"
