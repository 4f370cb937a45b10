from __future__ import annotations

import random

import pytest

from lumen.billing.pools import (
    HOUR_MS,
    MICRO,
    PoolOverrides,
    PoolParams,
    PoolResolver,
    accrue,
    format_coins,
    most_generous,
    resolve_pool,
    time_to_afford,
)

DEFAULT = PoolParams("limited", 10 * MICRO, 1 * MICRO, 10 * MICRO)
STUDENT = PoolParams("limited", 20 * MICRO, 2 * MICRO, 5 * MICRO)
STAFF = PoolParams("limited", 100 * MICRO, 1 * MICRO, 50 * MICRO)
VIP = PoolParams("unlimited", 0, 0, 0)
BANNED = PoolParams("blocked", 0, 0, 0)


@pytest.mark.parametrize(
    ("own", "groups", "expected"),
    [
        # No own setting, no group pool: the default.
        (None, [], DEFAULT),
        (None, [None, None], DEFAULT),  # groups without a pool contribute nothing
        # One group: its pool.
        (None, [STUDENT], STUDENT),
        # Several: each parameter at its most generous, independent of order.
        (None, [STUDENT, STAFF], PoolParams("limited", 100 * MICRO, 2 * MICRO, 50 * MICRO)),
        (None, [STAFF, STUDENT], PoolParams("limited", 100 * MICRO, 2 * MICRO, 50 * MICRO)),
        # unlimited > limited > blocked: one blocking group does not block a member of another.
        (None, [STUDENT, VIP], PoolParams("unlimited", 20 * MICRO, 2 * MICRO, 5 * MICRO)),
        (None, [BANNED, STUDENT], STUDENT),
        (None, [BANNED], BANNED),
        # The entity's own settings win, field by field; the rest is inherited.
        (PoolOverrides(max_micro=3 * MICRO), [STAFF], PoolParams("limited", 3 * MICRO, MICRO, 50 * MICRO)),
        (PoolOverrides(state="blocked"), [VIP], PoolParams("blocked", 0, 0, 0)),
        (PoolOverrides(state="unlimited"), [], PoolParams("unlimited", *[10 * MICRO, MICRO, 10 * MICRO])),
        (PoolOverrides(refresh_micro=0), [], PoolParams("limited", 10 * MICRO, 0, 10 * MICRO)),
        (PoolOverrides(), [STUDENT], STUDENT),
    ],
)
def test_resolution(own: PoolOverrides | None, groups: list[PoolParams | None], expected: PoolParams) -> None:
    assert resolve_pool(own, groups, DEFAULT) == expected


def test_most_generous_of_nothing_is_none() -> None:
    assert most_generous([]) is None


def test_resolver_memoises_and_ignores_unknown_groups() -> None:
    resolver = PoolResolver(DEFAULT, {"students": STUDENT, "staff": STAFF, "plain": None})
    assert resolver.inherited([]) == DEFAULT
    assert resolver.inherited(["students"]) == STUDENT
    assert resolver.inherited(["plain", "gone"]) == DEFAULT
    both = resolver.inherited(["staff", "students"])
    assert both is resolver.inherited(["students", "staff"])


def test_negative_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        PoolParams("limited", -1, 0, 0)


# -- refill over simulated time -----------------------------------------------------------------


def refill_steps(balance: int, params: PoolParams, steps: list[int], t0: int = 0) -> tuple[int, int, int]:
    at, carry, now = t0, 0, t0
    for step in steps:
        now += step
        credit, at, carry = accrue(balance, at, carry, params, now)
        balance += credit
    return balance, at, carry


def test_refill_is_continuous_and_exact() -> None:
    params = PoolParams("limited", 100 * MICRO, 1 * MICRO, 0)  # 1 coin per hour
    assert refill_steps(0, params, [HOUR_MS])[0] == MICRO
    assert refill_steps(0, params, [HOUR_MS // 2])[0] == MICRO // 2
    assert refill_steps(0, params, [3600])[0] == 1000  # 3.6 s -> 1/1000 coin
    assert refill_steps(0, params, [1])[0] == 0  # 1 ms is 0.277… micro-coins: carried, not lost


def test_many_small_steps_give_exactly_one_big_step() -> None:
    params = PoolParams("limited", 10**12, 7 * MICRO + 3, 0)  # an awkward rate
    rng = random.Random(42)
    steps = [rng.randint(1, 5000) for _ in range(20_000)]
    small = refill_steps(0, params, steps)[0]
    big = refill_steps(0, params, [sum(steps)])[0]
    assert small == big == sum(steps) * params.refresh_micro // HOUR_MS


def test_every_millisecond_for_an_hour_gives_the_hourly_rate() -> None:
    params = PoolParams("limited", 10**12, 1, 0)  # 1 micro-coin per hour: all carry
    assert refill_steps(0, params, [1] * HOUR_MS)[0] == 1


def test_refill_stops_at_max_and_drops_the_remainder() -> None:
    params = PoolParams("limited", 10 * MICRO, 4 * MICRO, 0)
    balance, _, carry = refill_steps(9 * MICRO, params, [HOUR_MS])
    assert (balance, carry) == (10 * MICRO, 0)
    # Above max (a grant), nothing is credited and nothing is taken away.
    assert accrue(12 * MICRO, 0, 0, params, HOUR_MS) == (0, HOUR_MS, 0)


def test_no_refresh_credits_nothing() -> None:
    params = PoolParams("limited", 10 * MICRO, 0, 0)
    assert refill_steps(0, params, [10 * HOUR_MS])[0] == 0


def test_a_clock_behind_credits_nothing_and_keeps_the_refill_time() -> None:
    params = PoolParams("limited", 10 * MICRO, MICRO, 0)
    assert accrue(0, 5000, 7, params, 4000) == (0, 5000, 7)


@pytest.mark.parametrize("needed", [1, 999, MICRO, 3 * MICRO + 17])
def test_time_to_afford_is_the_first_instant_with_enough(needed: int) -> None:
    params = PoolParams("limited", 10 * MICRO, MICRO + 1, 0)
    balance, carry = 12_345, 678
    wait = time_to_afford(balance, 0, carry, params, needed)
    assert wait is not None

    def credit(ms: int) -> int:
        return accrue(balance, 0, carry, params, ms)[0]

    assert balance + credit(wait) >= needed
    if wait > 0:
        assert balance + credit(wait - 1) < needed


def test_time_to_afford_when_refill_cannot_help() -> None:
    params = PoolParams("limited", 10 * MICRO, MICRO, 0)
    assert time_to_afford(5 * MICRO, 0, 0, params, 5 * MICRO) == 0
    assert time_to_afford(0, 0, 0, params, 11 * MICRO) is None  # more than the pool holds
    assert time_to_afford(10 * MICRO, 8 * MICRO, 0, params, 5 * MICRO) is None  # held by requests
    assert time_to_afford(0, 0, 0, PoolParams("limited", 10 * MICRO, 0, 0), 1) is None


@pytest.mark.parametrize(
    ("micro", "text"),
    [(0, "0"), (1, "0.000001"), (1_500_000, "1.5"), (10 * MICRO, "10"), (-2_000_001, "-2.000001")],
)
def test_format_coins(micro: int, text: str) -> None:
    assert format_coins(micro) == text
