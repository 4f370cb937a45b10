"""The coin settings of the config file: the budget mode and the pools.

Amounts are written in coins (``max: 100``, ``refresh: 2.5``) and parsed as `Decimal` with at most
six decimal places, so converting them to integer micro-coins is exact: no float ever reaches an
amount. The lead's `Settings` holds a `BillingSettings` under ``billing:`` and each config-declared
group may hold a `PoolSettings` under ``pool:``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator

from lumen.billing.pools import MICRO, PoolParams, PoolResolver
from lumen.config_base import ConfigSection

# 10^9 coins: keeps every balance far below 2^53 micro-coins, the largest integer the Redis Lua
# scripts (IEEE doubles) hold exactly.
MAX_COINS = Decimal(1_000_000_000)

Coins = Annotated[Decimal, Field(ge=0, le=MAX_COINS, decimal_places=6)]


def coins_to_micro(coins: Decimal) -> int:
    """Exact conversion; `Coins` values have at most six decimal places."""
    micro = coins * MICRO
    if micro != micro.to_integral_value():
        raise ValueError(f"{coins} coins is not a whole number of micro-coins")
    return int(micro)


class PoolSettings(ConfigSection):
    max: Coins = Decimal(100)
    """Most coins the pool holds; the refill stops here (grants may go above it)."""
    refresh: Coins = Decimal(10)
    """Coins per hour credited continuously until the pool holds `max`."""
    starting: Coins | None = None
    """Coins a new pool starts with; default: `max` (a new pool starts full)."""
    unlimited: bool = False
    """Never refuse and never charge this pool (usage records still show the cost)."""
    blocked: bool = False
    """Refuse every priced and free request of this pool with 429 `insufficient_quota`."""

    @model_validator(mode="after")
    def _one_state(self) -> PoolSettings:
        if self.unlimited and self.blocked:
            raise ValueError("a pool cannot be both `unlimited` and `blocked`")
        return self

    def params(self) -> PoolParams:
        """These settings as integer micro-coins."""
        state: Literal["limited", "unlimited", "blocked"] = (
            "blocked" if self.blocked else "unlimited" if self.unlimited else "limited"
        )
        max_micro = coins_to_micro(self.max)
        return PoolParams(
            state=state,
            max_micro=max_micro,
            refresh_micro=coins_to_micro(self.refresh),
            starting_micro=max_micro if self.starting is None else coins_to_micro(self.starting),
        )


class BillingSettings(ConfigSection):
    mode: Literal["hard", "soft"] = "hard"
    """`hard`: a request must be able to pay its worst case up front; `soft`: a request is admitted
    while the pool has coins. Both charge the full cost: a request that costs more than it held
    may take the pool below zero, a debt that the next refills pay first."""
    default_pool: PoolSettings = PoolSettings()
    """The pool of users and projects that neither have their own settings nor a group with a pool."""
    default_output_tokens: int = Field(default=4096, ge=1)
    """Output tokens reserved for a request that sets no `max_tokens` on a model with no output cap."""
    reservation_ttl: float = Field(default=60.0, ge=1)
    """Seconds after which a reservation that is no longer renewed is released. Each process renews
    the holds of its requests in progress every third of this, so it bounds only how long a dead
    process's holds keep coins from the pool."""
    flush_interval: float = Field(default=0.5, gt=0)
    """Seconds between batched writes of ledger rows to the database."""
    min_output_tokens: int = Field(default=32, ge=1)
    """Hard mode: a pool that cannot pay for a request's output cap admits it with the cap lowered
    to what it can pay, down to this many tokens; below, the request is refused."""


def pool_resolver(billing: BillingSettings, group_pools: Mapping[str, PoolSettings | None]) -> PoolResolver:
    """The resolver of inherited pool parameters for this config: the default pool and each
    config-declared group's ``pool`` (None for a group without one). Rebuild it on reload."""
    return PoolResolver(
        billing.default_pool.params(),
        {name: None if pool is None else pool.params() for name, pool in group_pools.items()},
    )
