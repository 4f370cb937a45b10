"""Limit settings and their resolution: own beats the most generous group beats the default, number by
number; left out is inherited, `null`/`unlimited` is no limit."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lumen.limits import (
    UNLIMITED,
    EffectiveLimits,
    LimiterSettings,
    LimitResolver,
    LimitSettings,
    Rates,
    ScopeLimits,
    resolve_limits,
)
from lumen.limits.config import UNLIMITED_RATES
from lumen.limits.limiter import Limiter
from lumen.limits.memory import MemoryBackend


def settings(data: dict[str, Any]) -> LimitSettings:
    return LimitSettings.model_validate(data)


DEFAULT = settings(
    {
        "key": {"rpm": 100},
        "principal": {"rpm": 60, "tpm": 100_000, "concurrent": 4},
        "model": {"rpm": 30},
        "models": {"big": {"rpm": 5, "concurrent": 1}},
    }
)


def test_nothing_configured_is_unlimited() -> None:
    assert resolve_limits(LimitSettings()) == UNLIMITED
    assert resolve_limits(LimitSettings()).principal is UNLIMITED_RATES  # the limiter skips it at once
    assert LimiterSettings().backend == "memory"


def test_the_default_applies_to_everyone() -> None:
    limits = resolve_limits(DEFAULT, model="small")
    assert limits == EffectiveLimits(
        key=Rates(rpm=100), principal=Rates(rpm=60, tpm=100_000, concurrent=4), model=Rates(rpm=30)
    )


def test_a_named_model_beats_the_all_models_entry_number_by_number() -> None:
    assert resolve_limits(DEFAULT, model="big").model == Rates(rpm=5, concurrent=1)
    assert resolve_limits(DEFAULT, model=None).model == Rates(rpm=30)


def test_a_group_beats_the_default_even_when_stricter() -> None:
    strict = settings({"principal": {"rpm": 10}})
    limits = resolve_limits(DEFAULT, [strict])
    assert limits.principal == Rates(rpm=10, tpm=100_000, concurrent=4)  # tpm, concurrent: inherited


def test_the_most_generous_group_wins_each_number() -> None:
    a = settings({"principal": {"rpm": 120, "tpm": 1000}})
    b = settings({"principal": {"rpm": 90, "tpm": 50_000}, "model": {"rpm": 1}})
    limits = resolve_limits(DEFAULT, [a, b])
    assert limits.principal == Rates(rpm=120, tpm=50_000, concurrent=4)
    assert limits.model == Rates(rpm=1)
    assert resolve_limits(DEFAULT, [b, a]) == limits


def test_unlimited_in_a_group_is_the_most_generous() -> None:
    a = settings({"principal": {"rpm": "unlimited"}})
    b = settings({"principal": {"rpm": 1000}})
    assert resolve_limits(DEFAULT, [b, a]).principal.rpm is None
    assert resolve_limits(DEFAULT, [a, b]).principal.rpm is None


def test_a_group_that_leaves_a_number_out_does_not_lift_it() -> None:
    only_tpm = settings({"principal": {"tpm": 5}})
    assert resolve_limits(DEFAULT, [only_tpm]).principal == Rates(rpm=60, tpm=5, concurrent=4)


def test_own_setting_beats_every_group_even_when_stricter() -> None:
    generous = settings({"principal": {"rpm": 1000}, "key": {"rpm": None}})
    own = settings({"principal": {"rpm": 2}})
    limits = resolve_limits(DEFAULT, [generous], own)
    assert limits.principal.rpm == 2
    assert limits.key.rpm is None  # the group's explicit null: unlimited


def test_own_all_models_entry_beats_a_group_named_model_entry() -> None:
    group = settings({"models": {"big": {"rpm": 50}}})
    own = settings({"model": {"rpm": 7}})
    assert resolve_limits(DEFAULT, [group], own, model="big").model.rpm == 7
    assert resolve_limits(DEFAULT, [group], None, model="big").model.rpm == 50


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5])
def test_bad_limits_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        ScopeLimits.model_validate({"rpm": bad})


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        LimitSettings.model_validate({"principal": {"rqm": 5}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        LimiterSettings.model_validate({"backnd": "redis"})


def test_unlimited_is_spelled_null_or_unlimited() -> None:
    assert ScopeLimits.model_validate({"tpm": None}).model_fields_set == {"tpm"}
    assert ScopeLimits.model_validate({"tpm": " Unlimited "}).tpm is None
    assert ScopeLimits.model_validate({}).model_fields_set == set()


def test_the_resolver_looks_groups_up_by_name_and_adds_model_totals() -> None:
    config = LimiterSettings.model_validate(
        {
            "default": {"principal": {"rpm": 60}},
            "model_totals": {"big": {"concurrent": 8, "tpm": 1_000_000}},
        }
    )
    resolver = LimitResolver(config, {"staff": settings({"principal": {"rpm": 600}})})
    assert resolver.resolve(["staff", "unknown"], model="small").principal.rpm == 600
    big = resolver.resolve(["unknown"], model="big")
    assert big.principal.rpm == 60
    assert big.model_total == Rates(tpm=1_000_000, concurrent=8)
    assert resolver.resolve((), own=settings({"principal": {"rpm": 1}}), model="big").principal.rpm == 1


def test_the_resolver_remembers_results_without_an_own_override() -> None:
    resolver = LimitResolver(LimiterSettings(default=DEFAULT), {"a": LimitSettings(), "b": LimitSettings()})
    first = resolver.resolve(["a", "b"], model="big")
    assert resolver.resolve(("b", "a", "b"), model="big") is first
    assert resolver.resolve(["a", "b"], model="small") is not first
    with_own = resolver.resolve(["a", "b"], own=LimitSettings(), model="big")
    assert with_own == first
    assert with_own is not first


def test_from_settings_builds_the_configured_backend() -> None:
    limiter = Limiter.from_settings(LimiterSettings())
    assert isinstance(limiter._backend, MemoryBackend)


def test_the_settings_document_every_field() -> None:
    for model in (ScopeLimits, LimitSettings, LimiterSettings):
        for name, field in model.model_fields.items():
            assert (field.description or "").strip(), f"{model.__name__}.{name} has no docstring"
