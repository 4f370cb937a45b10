from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lumen.identity.groups import ClaimRule, GroupSettings, claim_values, project_groups, user_groups

GROUPS = [
    GroupSettings(name="staff", rules=[ClaimRule(claim="affiliation", equals="staff@illinois.edu")]),
    GroupSettings(
        name="ncsa-staff",
        rules=[
            ClaimRule(claim="affiliation", equals="staff@illinois.edu"),
            ClaimRule(claim="member_of", one_of=["ncsa", "ncsa-all"]),
        ],
    ),
    GroupSettings(
        name="campus", rules=[ClaimRule(claim="idp", pattern=r"urn:mace:incommon:.*illinois\.edu")]
    ),
    GroupSettings(name="friends", members=["Guest@Example.org"], projects=["climate"]),
]


@pytest.mark.parametrize(
    ("email", "claims", "expected"),
    [
        ("a@illinois.edu", {"affiliation": "member@illinois.edu;staff@illinois.edu"}, ("staff",)),
        (
            "a@illinois.edu",
            {"affiliation": "staff@illinois.edu", "member_of": ["ncsa"]},
            ("staff", "ncsa-staff"),
        ),
        ("a@illinois.edu", {"affiliation": "student@illinois.edu", "member_of": ["ncsa"]}, ()),
        ("a@illinois.edu", {"idp": "urn:mace:incommon:uiuc.illinois.edu"}, ("campus",)),
        ("a@illinois.edu", {"idp": "urn:mace:incommon:evil.edu/illinois.edu.x"}, ()),
        ("guest@example.org", None, ("friends",)),
        ("guest@example.org", {"affiliation": "staff@illinois.edu"}, ("staff", "friends")),
        ("nobody@example.org", {}, ()),
    ],
)
def test_membership(email: str, claims: dict[str, Any] | None, expected: tuple[str, ...]) -> None:
    assert user_groups(GROUPS, email, claims) == expected


def test_projects_by_name() -> None:
    assert project_groups(GROUPS, "climate") == ("friends",)
    assert project_groups(GROUPS, "other") == ()


def test_claim_values_accept_lists_and_separated_strings() -> None:
    assert claim_values("a; b,c") == ["a", "b", "c"]
    assert claim_values(["x", 1]) == ["x", "1"]
    assert claim_values(None) == []


@pytest.mark.parametrize(
    "rule", [{"claim": "x"}, {"claim": "x", "equals": "a", "one_of": ["b"]}, {"claim": "x", "pattern": "("}]
)
def test_a_rule_has_exactly_one_valid_test(rule: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ClaimRule.model_validate(rule)
