"""The interface between `CoinBank` and where hot pool state lives (process memory or Redis).

A store keeps, per principal: the balance, the refill clock (`refilled_at` in epoch milliseconds
and the sub-micro-coin `carry`), the coins held by reservations in flight and the entity's own pool
settings. Every operation is atomic with respect to the others on the same pool: in memory because
no await happens inside one, in Redis because each is one Lua script.

Shared rules, implemented identically by both stores (one test suite runs against both):

- Every operation first releases the pool's expired reservations (``expires_at <= now``).
- The refill (`lumen.billing.pools.accrue`) is *virtual* when only read (admission, views) and
  *materialised* as a ``refill`` movement right before a movement that changes the balance, so the
  balance changes only at movements and the stored balance is always the sum of the movements.
- ``available = balance + due refill - reserved``. Hard mode admits a request if ``amount <=
  available``; soft mode if ``available > 0``. A zero amount is always admitted (free models work
  with an empty pool); a blocked pool admits nothing; an unlimited pool admits everything, holds
  nothing and is never charged.
- Settling releases the hold and charges the cost. In hard mode the charge is capped at what the
  pool has beyond the other requests' holds (so the balance never goes below zero and other holds
  stay covered); the rest is *forgiven* and reported. Soft mode charges the full cost.

Where the movements go: a store that `journals` (Redis) writes each movement's ledger entry itself,
in the same atomic step as the balance change (into its outbox, which `outbox_drainer` drains to
the database), so no movement a caller was told about can be lost with a process. Otherwise (the
memory store, whose balances die with the process anyway) the bank hands the returned `Change` to
an in-process `LedgerWriter`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lumen.billing.pools import PoolOverrides, PoolParams

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lumen.billing.outbox import OutboxDrainer

AdjustKind = Literal["grant", "refund", "set", "reset"]
AdmissionStatus = Literal["ok", "unlimited", "insufficient", "blocked"]


class PoolNotLoaded(Exception):
    """The store has no state for this principal yet: load it from the database and `seed` it."""


@dataclass(frozen=True, slots=True)
class Movement:
    kind: str  # "start", "charge", "refill", "grant", "refund", "reset", "set"
    amount_micro: int
    balance_after_micro: int


@dataclass(frozen=True, slots=True)
class Context:
    """What the ledger rows of one balance change say besides the amounts (refill rows, made by
    the system, say ``actor="system"`` and nothing else)."""

    request_id: str | None = None
    actor: str | None = None
    note: str | None = None


NO_CONTEXT = Context()
START_CONTEXT = Context(actor="system", note="starting balance")
"""The ledger context of a new pool's ``start`` movement."""


def forgiven_note(cost: int, forgiven: int) -> str:
    """The note on a charge that could not be taken in full (the Redis script writes the same)."""
    return f"cost {cost}, {forgiven} forgiven (pool empty)"


@dataclass(frozen=True, slots=True)
class Change:
    """What a balance-changing operation did: its movements (in order) and the new refill clock."""

    movements: tuple[Movement, ...]
    balance_micro: int
    refilled_at: int
    carry: int
    charged_micro: int = 0
    forgiven_micro: int = 0


@dataclass(frozen=True, slots=True)
class PoolView:
    """A pool as of now, refill applied (virtually), with its effective parameters."""

    balance_micro: int
    reserved_micro: int
    carry: int
    refilled_at: int
    params: PoolParams
    overrides: PoolOverrides

    @property
    def available_micro(self) -> int:
        return self.balance_micro - self.reserved_micro


@dataclass(frozen=True, slots=True)
class Admission:
    status: AdmissionStatus
    view: PoolView

    @property
    def admitted(self) -> bool:
        return self.status in ("ok", "unlimited")


@dataclass(frozen=True, slots=True)
class Seed:
    """The state a store starts a pool from (read from the database, or a new pool)."""

    balance_micro: int
    refilled_at: int
    carry: int
    overrides: PoolOverrides


class PoolStore(ABC):
    """Hot pool state. ``params`` are the inherited parameters; the store applies the pool's own
    overrides on top. Every method but `seed` raises `PoolNotLoaded` for an unknown principal."""

    runs_without_awaiting: bool = False
    """True when no method ever suspends, so the bank may call it without a shielding task."""

    journals: bool = False
    """True when the store writes every movement's ledger entry itself, atomically with it."""

    def outbox_drainer(self, engine: AsyncEngine, *, interval: float) -> OutboxDrainer | None:
        """What moves a journaling store's entries to the database (None: the store does not journal)."""
        return None

    @abstractmethod
    async def seed(self, principal: str, seed: Seed, *, opens: bool = False) -> bool:
        """Create the pool from `seed` unless it exists; True if this call created it.

        `opens`: the pool is new, and its balance is its starting balance: a journaling store
        records a ``start`` movement with it when (and only when) this call creates the pool.
        """

    @abstractmethod
    async def reserve(
        self,
        principal: str,
        *,
        now: int,
        params: PoolParams,
        soft: bool,
        amount: int,
        hold_id: str,
        expires_at: int,
    ) -> Admission: ...

    @abstractmethod
    async def settle(
        self,
        principal: str,
        *,
        now: int,
        params: PoolParams,
        soft: bool,
        hold_id: str,
        cost: int,
        ctx: Context = NO_CONTEXT,
    ) -> Change:
        """Release the hold (if it has not expired) and charge `cost`. A charge not taken in full
        gets the `forgiven_note` instead of ``ctx.note``."""

    @abstractmethod
    async def release(self, principal: str, *, now: int, hold_id: str) -> None: ...

    @abstractmethod
    async def renew(self, principal: str, *, now: int, hold_id: str, expires_at: int) -> bool:
        """Move a live hold's expiry; False if it has already expired or been settled."""

    @abstractmethod
    async def adjust(
        self,
        principal: str,
        *,
        now: int,
        params: PoolParams,
        kind: AdjustKind,
        amount: int,
        ctx: Context = NO_CONTEXT,
    ) -> Change:
        """grant/refund: add `amount`; set: make the balance `amount`; reset: the starting balance."""

    @abstractmethod
    async def view(self, principal: str, *, now: int, params: PoolParams) -> PoolView: ...

    @abstractmethod
    async def set_overrides(self, principal: str, overrides: PoolOverrides) -> None: ...

    async def aclose(self) -> None:
        """Release the store's own resources (not a client passed in by the caller)."""
        return None
