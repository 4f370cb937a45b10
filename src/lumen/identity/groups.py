"""Groups, declared in config: explicit members, plus rules on identity-provider claims.

A user is in a group when their email is listed in `members`, or when the group has `rules` and
every one of them matches the claims of their last login. A project is in a group when it is
listed in `projects`. A user or project may be in several groups.

`member_groups` is the one resolution every face uses: the request path (through the principal a
key or a portal session resolves to), the portal, the admin API and the CLI, the last two through
`principal_groups`, which reads the stored claims. So a group that a claim rule grants gives its
pool, access and limits everywhere alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.access.config import EntityAccess
from lumen.billing.config import PoolSettings
from lumen.config_base import ConfigSection
from lumen.errors import NotFound
from lumen.identity.store import get_project, user_claims
from lumen.limits.config import LimitSettings


class ClaimRule(ConfigSection):
    claim: str = Field(min_length=1)
    """The claim to look at, e.g. `affiliation`, `member_of`, `idp`, `email`."""
    equals: str | None = None
    """The claim (or one of its values) equals this."""
    one_of: list[str] | None = None
    """The claim (or one of its values) is one of these."""
    pattern: str | None = None
    """The claim (or one of its values) matches this regular expression (full match)."""

    @model_validator(mode="after")
    def _one_test(self) -> ClaimRule:
        tests = [t for t in (self.equals, self.one_of, self.pattern) if t is not None]
        if len(tests) != 1:
            raise ValueError("a rule needs exactly one of `equals`, `one_of`, `pattern`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"`pattern` is not a valid regular expression: {exc}") from exc
        return self

    def matches(self, claims: Mapping[str, Any]) -> bool:
        return any(self._test(value) for value in claim_values(claims.get(self.claim)))

    def _test(self, value: str) -> bool:
        if self.equals is not None:
            return value == self.equals
        if self.one_of is not None:
            return value in self.one_of
        assert self.pattern is not None
        return re.fullmatch(self.pattern, value) is not None


class GroupSettings(ConfigSection):
    name: str = Field(min_length=1)
    """The group's name, used in usage filters and the admin pages."""
    description: str = ""
    """Shown to administrators."""
    members: list[str] = Field(default_factory=list)
    """Emails of users who are members whatever their claims."""
    projects: list[str] = Field(default_factory=list)
    """Names of projects in the group."""
    rules: list[ClaimRule] = Field(default_factory=list)
    """Claim rules; a user whose last login's claims match all of them is a member."""
    access: EntityAccess | None = None
    """The group's model access: a default and allow/block lists (docs/access.md)."""
    pool: PoolSettings | None = None
    """The group's coin pool (docs/coins.md); members get the most generous of their groups."""
    rate_limits: LimitSettings | None = None
    """The group's rate limits (docs/rate-limits.md); members get the most generous of their groups."""


def claim_values(value: Any) -> list[str]:
    """A claim as a list of strings. CILogon sends multi-valued claims (`affiliation`,
    `member_of`) as one string separated by `;` or `,`; other providers send lists."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [part.strip() for part in re.split(r"[;,]", str(value)) if part.strip()]


def user_groups(
    groups: Iterable[GroupSettings], email: str, claims: Mapping[str, Any] | None
) -> tuple[str, ...]:
    email = email.lower()
    found = []
    for group in groups:
        listed = email in (m.lower() for m in group.members)
        by_rules = bool(group.rules) and claims is not None and all(r.matches(claims) for r in group.rules)
        if listed or by_rules:
            found.append(group.name)
    return tuple(found)


def project_groups(groups: Iterable[GroupSettings], name: str) -> tuple[str, ...]:
    return tuple(g.name for g in groups if name in g.projects)


def member_groups(
    groups: Iterable[GroupSettings], *, kind: str, name: str, claims: Mapping[str, Any] | None
) -> tuple[str, ...]:
    """The groups of a user (`name` is the email; `claims` those of the last login) or of a
    project (`name` is its name)."""
    return user_groups(groups, name, claims) if kind == "user" else project_groups(groups, name)


async def principal_groups(
    *, engine: AsyncEngine, groups: Iterable[GroupSettings], principal: str
) -> tuple[str, ...]:
    """The groups of `user:<id>` or `project:<id>` as stored now (claims included)."""
    kind, _, number = principal.partition(":")
    if kind == "user" and number.isdigit():
        found = (await user_claims(engine=engine, user_ids=[int(number)])).get(int(number))
        if found is None:
            raise NotFound(f"No user with id {number}.", code="user_not_found")
        email, claims = found
        return member_groups(groups, kind="user", name=email, claims=claims)
    if kind == "project" and number.isdigit():
        project = await get_project(engine=engine, project_id=int(number))
        return member_groups(groups, kind="project", name=project.name, claims=None)
    raise NotFound(f"No user or project '{principal}'.", code="principal_not_found")
