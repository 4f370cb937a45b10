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
  available`` and holds `amount`; given a ``minimum`` (a *floor*), it also admits a request if
  ``max(minimum, 1) <= available < amount`` and then holds exactly ``available`` (the caller lowers
  the request's output cap to what that pays for). Soft mode admits if ``available > 0`` and holds
  `amount`. A zero amount is always admitted (free models work with an empty pool, even one in
  debt); a blocked pool admits nothing; an unlimited pool admits everything, holds nothing and is
  never charged. `Admission.held_micro` is what was actually held.
- Settling releases the hold and charges the full cost, in both modes. The balance may go below
  zero: a negative balance is a *debt*. Nothing is ever forgiven: a pool in debt has ``available <
  0`` and so admits no priced request until refills (which accrue as usual, and so pay the debt
  first) or a grant bring it back. A charge beyond the hold it settles (the prompt estimate fell
  short, or the hold had expired) gets the `beyond_hold_note`, the same in both stores.

Where the movements go: a store that `journals` (Redis) writes each movement's ledger entry itself,
in the same atomic step as the balance change (into its outbox, which `outbox_drainer` drains to
the database), so no movement a caller was told about can be lost with a process; a settle may
also carry the request's usage record into the outbox, in the same step. Otherwise (the memory
store, whose balances die with the process anyway) the bank hands the returned `Change` to an
in-process `LedgerWriter`, and usage records go to the write-behind `UsageRecorder`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
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


def beyond_hold_note(cause: str | None, cost: int, beyond: int) -> str:
    """The note on a charge that exceeded the hold it settled, after the charge's cause (e.g. the
    operation and model); amounts in micro-coins. The Redis script writes exactly the same."""
    text = f"cost {cost}, {beyond} beyond the hold, owed as debt if the pool is short (micro-coins)"
    return text if cause is None else f"{cause}; {text}"


def hold_size(available: int, amount: int, minimum: int | None, *, soft: bool) -> int | None:
    """What a reservation of `amount` holds given the pool's `available` coins, None if refused
    (the admission rule above; the Redis script decides the same way)."""
    if amount == 0:
        return 0
    if soft:
        return amount if available > 0 else None
    if available >= amount:
        return amount
    if minimum is not None and available >= max(minimum, 1):
        return available
    return None


@dataclass(frozen=True, slots=True)
class Change:
    """What a balance-changing operation did: its movements (in order) and the new refill clock."""

    movements: tuple[Movement, ...]
    balance_micro: int
    refilled_at: int
    carry: int
    charged_micro: int = 0
    beyond_hold_micro: int = 0
    """A settle: how much of the charge the hold did not cover (0 for every other change)."""


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
    held_micro: int = 0
    """What the reservation holds: its amount, what was available (a floor reservation), or 0."""

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
        minimum: int | None = None,
    ) -> Admission:
        """Admit and hold (see the rules above); `minimum` makes a hard-mode reservation a floor one."""

    @abstractmethod
    async def settle(
        self,
        principal: str,
        *,
        now: int,
        params: PoolParams,
        hold_id: str,
        cost: int,
        ctx: Context = NO_CONTEXT,
        usage: str | None = None,
    ) -> Change:
        """Release the hold (if it has not expired) and charge `cost` in full. A charge beyond the
        hold gets the `beyond_hold_note` (with ``ctx.note`` as its cause) instead of ``ctx.note``.

        `usage` (a journaling store only): a usage record as JSON (`lumen.usage.recorder.usage_json`),
        appended to the outbox in the same atomic step as the charge, even when nothing is charged.
        """

    @abstractmethod
    async def release(self, principal: str, *, now: int, hold_id: str) -> None: ...

    @abstractmethod
    async def renew(self, principal: str, *, now: int, hold_id: str, expires_at: int) -> bool:
        """Move a live hold's expiry; False if it has already expired or been settled."""

    async def renew_many(self, holds: Sequence[tuple[str, str]], *, now: int, expires_at: int) -> list[bool]:
        """`renew` for each (principal, hold id), in order; a store may do it in one round trip.
        A pool the store does not know counts as an expired hold."""
        renewed: list[bool] = []
        for principal, hold_id in holds:
            try:
                renewed.append(await self.renew(principal, now=now, hold_id=hold_id, expires_at=expires_at))
            except PoolNotLoaded:
                renewed.append(False)
        return renewed

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
