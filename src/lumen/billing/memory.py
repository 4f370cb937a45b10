"""The in-process pool store, for a single Lumen process.

Each method runs to completion without awaiting, so on one event loop every check-and-reserve is
atomic. It is correct for exactly one process: with several workers or replicas, use
`lumen.billing.redis_store.RedisPoolStore` (each process would otherwise spend the whole pool).
It does not journal: the ledger context (`Context`) is the bank's to record.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from lumen.billing.pools import PoolOverrides, PoolParams, accrue
from lumen.billing.store import (
    NO_CONTEXT,
    AdjustKind,
    Admission,
    Change,
    Context,
    Movement,
    PoolNotLoaded,
    PoolStore,
    PoolView,
    Seed,
    hold_size,
)


@dataclass(slots=True)
class _Pool:
    balance: int
    refilled_at: int
    carry: int
    overrides: PoolOverrides
    reserved: int = 0
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (amount, expires_at)
    # (expires_at, id); entries whose hold is gone or was renewed are skipped when popped.
    expiry: list[tuple[int, str]] = field(default_factory=list)


class MemoryPoolStore(PoolStore):
    runs_without_awaiting = True

    def __init__(self) -> None:
        self._pools: dict[str, _Pool] = {}

    def _pool(self, principal: str, now: int) -> _Pool:
        pool = self._pools.get(principal)
        if pool is None:
            raise PoolNotLoaded(principal)
        while pool.expiry and pool.expiry[0][0] <= now:
            expires_at, hold_id = heapq.heappop(pool.expiry)
            hold = pool.holds.get(hold_id)
            if hold is not None and hold[1] == expires_at:
                del pool.holds[hold_id]
                pool.reserved -= hold[0]
        return pool

    @staticmethod
    def _view(pool: _Pool, now: int, params: PoolParams) -> PoolView:
        effective = pool.overrides.apply(params)
        credit, at, carry = accrue(pool.balance, pool.refilled_at, pool.carry, effective, now)
        return PoolView(pool.balance + credit, pool.reserved, carry, at, effective, pool.overrides)

    @staticmethod
    def _materialise(pool: _Pool, now: int, params: PoolParams, out: list[Movement]) -> None:
        credit, pool.refilled_at, pool.carry = accrue(pool.balance, pool.refilled_at, pool.carry, params, now)
        if credit:
            pool.balance += credit
            out.append(Movement("refill", credit, pool.balance))

    async def seed(self, principal: str, seed: Seed, *, opens: bool = False) -> bool:
        if principal in self._pools:
            return False
        self._pools[principal] = _Pool(seed.balance_micro, seed.refilled_at, seed.carry, seed.overrides)
        return True

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
        pool = self._pool(principal, now)
        view = self._view(pool, now, params)
        if view.params.state == "blocked":
            return Admission("blocked", view)
        if view.params.state == "unlimited":
            return Admission("unlimited", view)
        held = hold_size(view.available_micro, amount, minimum, soft=soft)
        if held is None:
            return Admission("insufficient", view)
        if held:
            pool.holds[hold_id] = (held, expires_at)
            heapq.heappush(pool.expiry, (expires_at, hold_id))
            pool.reserved += held
            view = PoolView(
                view.balance_micro, pool.reserved, view.carry, view.refilled_at, view.params, view.overrides
            )
        return Admission("ok", view, held)

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
        pool = self._pool(principal, now)
        hold = pool.holds.pop(hold_id, None)
        held = 0 if hold is None else hold[0]
        pool.reserved -= held
        effective = pool.overrides.apply(params)
        if cost <= 0 or effective.state == "unlimited":
            return Change((), pool.balance, pool.refilled_at, pool.carry)
        movements: list[Movement] = []
        self._materialise(pool, now, effective, movements)
        pool.balance -= cost  # in full: below zero is a debt, paid by the next refills
        movements.append(Movement("charge", -cost, pool.balance))
        beyond = max(cost - held, 0)
        return Change(tuple(movements), pool.balance, pool.refilled_at, pool.carry, cost, beyond)

    async def release(self, principal: str, *, now: int, hold_id: str) -> None:
        pool = self._pool(principal, now)
        hold = pool.holds.pop(hold_id, None)
        if hold is not None:
            pool.reserved -= hold[0]

    async def renew(self, principal: str, *, now: int, hold_id: str, expires_at: int) -> bool:
        pool = self._pool(principal, now)
        hold = pool.holds.get(hold_id)
        if hold is None:
            return False
        pool.holds[hold_id] = (hold[0], expires_at)
        heapq.heappush(pool.expiry, (expires_at, hold_id))
        return True

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
        pool = self._pool(principal, now)
        effective = pool.overrides.apply(params)
        movements: list[Movement] = []
        if kind in ("grant", "refund"):
            self._materialise(pool, now, effective, movements)
            delta = amount
        else:
            # An explicit balance replaces whatever refill was due: the refill clock restarts now.
            target = effective.starting_micro if kind == "reset" else amount
            delta = target - pool.balance
            pool.refilled_at, pool.carry = max(now, pool.refilled_at), 0
        pool.balance += delta
        movements.append(Movement(kind, delta, pool.balance))
        return Change(tuple(movements), pool.balance, pool.refilled_at, pool.carry)

    async def view(self, principal: str, *, now: int, params: PoolParams) -> PoolView:
        return self._view(self._pool(principal, now), now, params)

    async def set_overrides(self, principal: str, overrides: PoolOverrides) -> None:
        pool = self._pools.get(principal)
        if pool is None:
            raise PoolNotLoaded(principal)
        pool.overrides = overrides
