"""Pure pool logic: parameter resolution, continuous refill in integers, time until affordable.

Everything here is integer micro-coins (1 coin = `MICRO`) and integer milliseconds; nothing awaits
and nothing reads a clock (the caller passes ``now``), so it is exact and testable over simulated
time. The Redis backend's Lua script implements the same refill rule; the shared test suite runs
both against each other's expectations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

MICRO = 1_000_000
"""Micro-coins per coin."""
HOUR_MS = 3_600_000
"""Milliseconds per hour: refill rates are per hour, clocks tick in milliseconds."""

MAX_AMOUNT_MICRO = 10**15
"""Largest pool parameter or single amount (10^9 coins): keeps every sum exact in Redis's Lua
numbers (doubles, exact to 2^53)."""

Clock = Callable[[], int]
"""Returns the time in integer epoch milliseconds (injected, so tests simulate time)."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def check_amount(amount: int, *, allow_zero: bool = True) -> None:
    """Refuse a float, a bool, a negative or an oversized amount of micro-coins."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"coin amounts are integer micro-coins, not {type(amount).__name__}")
    if amount < (0 if allow_zero else 1) or amount > MAX_AMOUNT_MICRO:
        raise ValueError(f"coin amount {amount} out of range")


PoolStateName = Literal["limited", "unlimited", "blocked"]
# "Most generous" order of the states: unlimited beats any limited pool, which beats blocked.
_GENEROSITY: dict[PoolStateName, int] = {"blocked": 0, "limited": 1, "unlimited": 2}


@dataclass(frozen=True, slots=True)
class PoolParams:
    """A pool's parameters in micro-coins; `refresh_micro` is credited per hour."""

    state: PoolStateName
    max_micro: int
    refresh_micro: int
    starting_micro: int

    def __post_init__(self) -> None:
        if min(self.max_micro, self.refresh_micro, self.starting_micro) < 0:
            raise ValueError(f"pool parameters cannot be negative: {self!r}")


@dataclass(frozen=True, slots=True)
class PoolOverrides:
    """An entity's own pool settings (stored with its pool); None fields are inherited."""

    state: PoolStateName | None = None
    max_micro: int | None = None
    refresh_micro: int | None = None
    starting_micro: int | None = None

    def apply(self, inherited: PoolParams) -> PoolParams:
        return PoolParams(
            state=inherited.state if self.state is None else self.state,
            max_micro=inherited.max_micro if self.max_micro is None else self.max_micro,
            refresh_micro=inherited.refresh_micro if self.refresh_micro is None else self.refresh_micro,
            starting_micro=inherited.starting_micro if self.starting_micro is None else self.starting_micro,
        )


NO_OVERRIDES = PoolOverrides()


def most_generous(pools: Iterable[PoolParams]) -> PoolParams | None:
    """Each parameter at its most generous value over `pools` (None for no pools).

    Parameter by parameter, so the result does not depend on the order of the groups: the state is
    the most generous (unlimited > limited > blocked: one blocked group does not block a member of
    another group), and `max`, `refresh` and `starting` are each the largest any group gives. The
    result may combine two groups (one's `max`, another's `refresh`); it is never less generous than
    any single group in any respect.
    """
    best: PoolParams | None = None
    for pool in pools:
        if best is None:
            best = pool
            continue
        best = PoolParams(
            state=pool.state if _GENEROSITY[pool.state] > _GENEROSITY[best.state] else best.state,
            max_micro=max(best.max_micro, pool.max_micro),
            refresh_micro=max(best.refresh_micro, pool.refresh_micro),
            starting_micro=max(best.starting_micro, pool.starting_micro),
        )
    return best


def resolve_pool(
    own: PoolOverrides | None, group_pools: Iterable[PoolParams | None], default: PoolParams
) -> PoolParams:
    """The effective pool: each parameter from the entity's own setting, else the most generous of
    its groups that declare a pool, else the global default."""
    inherited = most_generous(p for p in group_pools if p is not None) or default
    return (own or NO_OVERRIDES).apply(inherited)


class PoolResolver:
    """The inherited (group or default) parameters of a set of groups, memoised.

    Built from config at start and on reload; `inherited` is a dict lookup in the steady state. The
    entity's own overrides are applied by the bank, which stores them with the pool.
    """

    def __init__(self, default: PoolParams, groups: Mapping[str, PoolParams | None]) -> None:
        self._default = default
        self._groups = dict(groups)
        self._cache: dict[frozenset[str], PoolParams] = {}

    def inherited(self, group_names: Iterable[str]) -> PoolParams:
        key = frozenset(group_names)
        params = self._cache.get(key)
        if params is None:
            # Unknown group names (removed from config) simply contribute no pool.
            params = resolve_pool(None, (self._groups.get(name) for name in sorted(key)), self._default)
            if len(self._cache) < 10_000:  # bounded: group sets are few in practice
                self._cache[key] = params
        return params


def accrue(balance: int, refilled_at: int, carry: int, params: PoolParams, now: int) -> tuple[int, int, int]:
    """The refill due at `now`: ``(credit, new_refilled_at, new_carry)``.

    The pool is credited ``refresh_micro`` per hour, continuously, while it holds less than
    ``max_micro``. ``carry`` keeps the remainder of the integer division in units of
    micro-coin-milliseconds-per-hour (always below `HOUR_MS`), so crediting in many small steps
    gives exactly what one big step would: no drift. When the pool reaches `max` the remainder is
    dropped (a full pool accrues nothing). A clock behind `refilled_at` (another replica's clock)
    credits nothing and never moves `refilled_at` back.
    """
    if now <= refilled_at:
        return 0, refilled_at, carry
    deficit = params.max_micro - balance
    if deficit <= 0 or params.refresh_micro == 0:
        return 0, now, 0
    credit, remainder = divmod((now - refilled_at) * params.refresh_micro + carry, HOUR_MS)
    if credit >= deficit:
        return deficit, now, 0
    return credit, now, remainder


def time_to_afford(balance: int, reserved: int, carry: int, params: PoolParams, needed: int) -> int | None:
    """Milliseconds of refill until ``balance - reserved >= needed``; None if refill alone never
    gets there (no refresh, or `needed` plus the coins held by requests in flight exceeds `max`).

    `balance` and `carry` are the pool's as of now, refill applied (see `accrue`).
    """
    deficit = needed - (balance - reserved)
    if deficit <= 0:
        return 0
    if params.refresh_micro == 0 or balance + deficit > params.max_micro:
        return None
    # Smallest e with (e * refresh + carry) // HOUR_MS >= deficit.
    return max(0, -((carry - deficit * HOUR_MS) // params.refresh_micro))


def format_coins(micro: int) -> str:
    """Micro-coins as a coin amount for people: ``1500000`` -> ``"1.5"``; exact, no exponent."""
    text = format(Decimal(micro).scaleb(-6), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
