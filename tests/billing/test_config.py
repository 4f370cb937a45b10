from __future__ import annotations

from decimal import Decimal

import pytest
import yaml
from pydantic import ValidationError

from lumen.billing.config import BillingSettings, PoolSettings, pool_resolver
from lumen.billing.pools import PoolParams


def test_defaults() -> None:
    settings = BillingSettings()
    assert settings.mode == "hard"
    assert settings.default_pool.params() == PoolParams("limited", 100_000_000, 10_000_000, 100_000_000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max: 0.1\nrefresh: 0.2\nstarting: 0.3", (100_000, 200_000, 300_000)),
        ("max: 1000000000\nrefresh: 0.000001\nstarting: 0", (10**15, 1, 0)),
        ("max: 12.345678\nrefresh: 1e-6", (12_345_678, 1, 12_345_678)),  # starting: = max
        ("max: '2.5'\nrefresh: 3", (2_500_000, 3_000_000, 2_500_000)),
    ],
)
def test_coins_convert_to_micro_exactly(text: str, expected: tuple[int, int, int]) -> None:
    params = PoolSettings.model_validate(yaml.safe_load(text)).params()
    assert (params.max_micro, params.refresh_micro, params.starting_micro) == expected


@pytest.mark.parametrize(
    "data",
    [
        {"max": 0.0000001},  # finer than a micro-coin
        {"max": -1},
        {"refresh": 10**10},  # above the 10^9 coin limit
        {"unlimited": True, "blocked": True},
        {"maximum": 3},  # typo
    ],
)
def test_invalid_pools_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PoolSettings.model_validate(data)


def test_states() -> None:
    assert PoolSettings(unlimited=True).params().state == "unlimited"
    assert PoolSettings(blocked=True).params().state == "blocked"
    assert PoolSettings(max=Decimal(1)).params().state == "limited"


def test_soft_mode_from_yaml() -> None:
    settings = BillingSettings.model_validate(
        yaml.safe_load("mode: soft\ndefault_pool: {max: 5, refresh: 1}\nreservation_ttl: 60")
    )
    assert settings.mode == "soft"
    assert settings.default_pool.params().max_micro == 5_000_000


def test_pool_resolver_from_config() -> None:
    billing = BillingSettings(default_pool=PoolSettings(max=Decimal(5), refresh=Decimal(1)))
    resolver = pool_resolver(
        billing, {"staff": PoolSettings(max=Decimal(50), refresh=Decimal("0.5")), "guests": None}
    )
    assert resolver.inherited([]).max_micro == 5_000_000
    assert resolver.inherited(["guests"]).max_micro == 5_000_000
    staff = resolver.inherited(["staff", "guests"])
    assert (staff.max_micro, staff.refresh_micro, staff.starting_micro) == (50_000_000, 500_000, 50_000_000)
