from __future__ import annotations

import pytest
from pydantic import ValidationError

from lumen.access.config import (
    AccessSettings,
    EntityAccess,
    ModelAccess,
    is_pattern,
    notice_hash,
    unmatched_entries,
)


def test_defaults() -> None:
    assert AccessSettings().default == "allowed"
    assert ModelAccess() == ModelAccess(access=None, acknowledge=False, notice="")
    assert EntityAccess().is_empty()
    assert not EntityAccess(default="blocked").is_empty()


def test_model_access_short_form() -> None:
    assert ModelAccess.model_validate("blocked") == ModelAccess(access="blocked")
    assert ModelAccess.model_validate({"access": "allowed", "acknowledge": True}).acknowledge
    with pytest.raises(ValidationError):
        ModelAccess.model_validate("acknowledge")


def test_a_notice_without_acknowledge_is_refused() -> None:
    with pytest.raises(ValidationError, match="only used with `acknowledge: true`"):
        ModelAccess(notice="Read me")


def test_effective_notice() -> None:
    settings = AccessSettings(notice="global")
    assert ModelAccess().effective_notice(settings) is None
    assert ModelAccess(acknowledge=True).effective_notice(settings) == "global"
    assert ModelAccess(acknowledge=True, notice="  \n").effective_notice(settings) == "global"
    assert ModelAccess(acknowledge=True, notice="own").effective_notice(settings) == "own"


@pytest.mark.parametrize(
    "data",
    [
        {"allowed": ["x"]},  # NCSA Lumen's key names are typos here
        {"whitelist": ["x"]},
        {"default": "graylist"},
        {"allow": ["has space"]},
        {"allow": [""]},
        {"allow": ["x"], "block": ["x"]},
    ],
)
def test_entity_access_refuses(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EntityAccess.model_validate(data)


def test_entity_access_drops_repeats_and_keeps_order() -> None:
    assert EntityAccess(allow=("b", "a", "b")).allow == ("b", "a")


def test_rules_are_hashable_and_compare_by_value() -> None:
    assert hash(EntityAccess(allow=("a",))) == hash(EntityAccess(allow=("a",)))
    assert EntityAccess.model_validate({"allow": ["a"]}) == EntityAccess(allow=("a",))


@pytest.mark.parametrize(
    ("rule", "model", "expected"),
    [
        (EntityAccess(allow=("gpt-*",)), "gpt-4o", ("allowed", "gpt-*")),
        (EntityAccess(allow=("gpt-*",)), "llama", None),
        (EntityAccess(allow=("gpt-*",), block=("gpt-4o",)), "gpt-4o", ("blocked", "gpt-4o")),
        (EntityAccess(allow=("gpt-*",), block=("gpt-4o",)), "gpt-4o-mini", ("allowed", "gpt-*")),
        (EntityAccess(block=("gpt-*",), allow=("gpt-4o-mini",)), "gpt-4o-mini", ("allowed", "gpt-4o-mini")),
        (EntityAccess(allow=("*",), block=("?pt-4o",)), "gpt-4o", ("blocked", "?pt-4o")),
        (EntityAccess(allow=("llama-3.[13]-*",)), "llama-3.3-70b", ("allowed", "llama-3.[13]-*")),
        (EntityAccess(allow=("llama-3.[13]-*",)), "llama-3.2-1b", None),
        (EntityAccess(default="allowed"), "x", None),
    ],
)
def test_verdict(rule: EntityAccess, model: str, expected: tuple[str, str] | None) -> None:
    assert rule.verdict(model) == expected


def test_is_pattern() -> None:
    assert [is_pattern(e) for e in ("a", "a*", "a?", "[ab]", "org/x")] == [False, True, True, True, False]


def test_unmatched_entries_finds_typos() -> None:
    rule = EntityAccess(allow=("gpt-*", "lama-3"), block=("qwen?", "gpt-4o"))
    assert unmatched_entries(rule, ["gpt-4o", "llama-3", "qwen3"]) == ["lama-3"]


def test_notice_hash_ignores_layout_but_not_wording() -> None:
    base = notice_hash("Research use only.\nNo patient data.")
    assert notice_hash("Research use only.\nNo patient data.\n") == base
    assert notice_hash("\n\nResearch use only.   \nNo patient data.\t\n\n") == base
    assert notice_hash("Research use only.\nNo patient data!") != base
    assert notice_hash("Research use only. No patient data.") != base
    assert len(base) == 64
