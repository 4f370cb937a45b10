"""`CoinBank`: reserve before the upstream call, settle after, and every other movement of coins.

On the request path::

    params = resolver.inherited(groups)                 # memoised, no I/O
    r = await bank.reserve(principal, worst_case_micro(...), request_id=rid, params=params)
    try:
        ... call the upstream, relay ...
    finally:
        await bank.settle(r, cost_micro(price, prompt, completion))   # what was really used

`reserve` raises `lumen.errors.InsufficientQuota` (429) when the pool cannot pay. `settle` must run
on every ending (success, upstream error after tokens were produced, client disconnect: bill what
was generated); `release` is `settle` with nothing used. Both are shielded from cancellation.

The pool state lives in a `PoolStore` (memory for one process, Redis for several); the database
is read once per principal per process (when the store does not know the pool yet) and written
behind. With Redis, the store's script records each movement in the Redis ledger outbox in the
same atomic step as the balance change, and an `OutboxDrainer` moves the outbox to the database:
a crashed process loses no movement. With the memory store, the bank hands each movement to an
in-process `LedgerWriter` in the same (non-cancellable) step as the change; a crash loses the
movements not yet written, together with the balances they changed (see docs/coins.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.config import BillingSettings
from lumen.billing.ledger import LedgerWriter, load_pool, save_overrides
from lumen.billing.pools import NO_OVERRIDES, Clock, PoolOverrides, PoolParams, check_amount, wall_clock_ms
from lumen.billing.quota import insufficient_quota
from lumen.billing.store import (
    START_CONTEXT,
    AdjustKind,
    Admission,
    Change,
    Context,
    Movement,
    PoolNotLoaded,
    PoolStore,
    PoolView,
    Seed,
    forgiven_note,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class Reservation:
    """Coins held for one request until it is settled or released (or the hold expires)."""

    principal: str
    request_id: str
    amount_micro: int
    params: PoolParams
    hold_id: str
    expires_at: int
    unlimited: bool
    actor: str | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    charged_micro: int
    forgiven_micro: int  # hard mode: cost beyond what the pool had (see `CoinBank.settle`)
    balance_micro: int | None  # after the charge; None when the pool was not touched


class CoinBank:
    """Construct, ``await start()`` at startup, ``await aclose()`` at shutdown (before the engine
    is disposed and after requests have drained)."""

    def __init__(
        self,
        store: PoolStore,
        engine: AsyncEngine,
        *,
        mode: Literal["hard", "soft"] = "hard",
        reservation_ttl: float = 3600.0,
        flush_interval: float = 0.5,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.mode = mode
        self.reservation_ttl_ms = int(reservation_ttl * 1000)
        self.ledger = LedgerWriter(engine, flush_interval=flush_interval)  # a store that does not journal
        self.outbox = store.outbox_drainer(engine, interval=flush_interval)  # one that does
        self._store = store
        self._engine = engine
        self._clock = clock
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls, settings: BillingSettings, store: PoolStore, engine: AsyncEngine, *, clock: Clock = wall_clock_ms
    ) -> CoinBank:
        return cls(
            store,
            engine,
            mode=settings.mode,
            reservation_ttl=settings.reservation_ttl,
            flush_interval=settings.flush_interval,
            clock=clock,
        )

    def configure(self, settings: BillingSettings) -> None:
        """Apply a reloaded config (mode and reservation TTL take effect for the next request)."""
        self.mode = settings.mode
        self.reservation_ttl_ms = int(settings.reservation_ttl * 1000)

    async def start(self) -> None:
        if self.outbox is None:
            await self.ledger.start()
        else:
            await self.outbox.start()

    async def flush(self) -> None:
        """Write every movement made so far to the database now (with Redis: every process's)."""
        await self.ledger.flush()
        if self.outbox is not None:
            await self.outbox.flush()

    async def aclose(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.ledger.aclose()
        if self.outbox is not None:
            await self.outbox.aclose()
        await self._store.aclose()

    # -- the request path -------------------------------------------------------------------

    async def reserve(
        self,
        principal: str,
        amount_micro: int,
        *,
        request_id: str,
        params: PoolParams,
        actor: str | None = None,
    ) -> Reservation:
        """Hold `amount_micro` (the request's worst case) or raise `InsufficientQuota`.

        `params` are the principal's inherited pool parameters (`PoolResolver.inherited`); the
        pool's own settings are applied on top by the store. `actor` (e.g. the API key's id, or
        the user acting for a project) is written on the charge's ledger row.
        """
        check_amount(amount_micro)
        now = self._clock()
        hold_id = os.urandom(16).hex()
        expires_at = now + self.reservation_ttl_ms
        soft = self.mode == "soft"

        def store_reserve() -> Awaitable[Admission]:
            return self._store.reserve(
                principal,
                now=now,
                params=params,
                soft=soft,
                amount=amount_micro,
                hold_id=hold_id,
                expires_at=expires_at,
            )

        admission: Admission | None = None
        if self._store.runs_without_awaiting:
            # Nothing in the call can suspend, so it cannot be cancelled half-way: no task needed.
            try:
                admission = await store_reserve()
            except PoolNotLoaded:
                admission = None
        if admission is None:
            task = asyncio.ensure_future(self._with_pool(principal, params, store_reserve))
            try:
                admission = await asyncio.shield(task)
            except asyncio.CancelledError:
                # The caller went away; if the hold was taken, give it back rather than wait for expiry.
                task.add_done_callback(lambda t: self._release_orphan(t, principal, hold_id))
                raise
        if not admission.admitted:
            raise insufficient_quota(admission, amount_micro, soft=soft, now_ms=now)
        return Reservation(
            principal,
            request_id,
            amount_micro,
            params,
            hold_id,
            expires_at,
            unlimited=admission.status == "unlimited",
            actor=actor,
        )

    async def settle(self, reservation: Reservation, cost_micro: int) -> Settlement:
        """Release the hold and charge the real cost (what was generated, also on a disconnect).

        If the cost exceeds the reservation (the prompt estimate was low) or the hold expired, the
        cost is charged from the pool's free coins. In hard mode the charge stops where the pool
        would go below zero or uncover other requests' holds; the rest is forgiven, reported in
        `Settlement.forgiven_micro` and in the ledger row's note. Soft mode charges it all.
        Unlimited pools are never charged. A second settle of the same reservation does nothing.
        """
        check_amount(cost_micro)
        if reservation.done:
            log.warning("reservation of request %s settled twice; ignored", reservation.request_id)
            return Settlement(0, 0, None)
        reservation.done = True
        if cost_micro == 0 and (reservation.unlimited or reservation.amount_micro == 0):
            return Settlement(0, 0, None)  # nothing held, nothing to charge: no round trip
        return await asyncio.shield(asyncio.ensure_future(self._settle(reservation, cost_micro)))

    async def release(self, reservation: Reservation) -> None:
        """Give the hold back without charging (the request never reached the upstream)."""
        if reservation.done:
            return
        reservation.done = True
        if reservation.amount_micro and not reservation.unlimited:
            await asyncio.shield(
                asyncio.ensure_future(
                    self._store.release(reservation.principal, now=self._clock(), hold_id=reservation.hold_id)
                )
            )

    async def renew(self, reservation: Reservation) -> bool:
        """Extend a long request's hold by another TTL; False if it already expired."""
        if reservation.done or not reservation.amount_micro or reservation.unlimited:
            return not reservation.done
        now = self._clock()
        expires_at = now + self.reservation_ttl_ms
        try:
            renewed = await self._store.renew(
                reservation.principal, now=now, hold_id=reservation.hold_id, expires_at=expires_at
            )
        except PoolNotLoaded:
            return False
        if renewed:
            reservation.expires_at = expires_at
        return renewed

    # -- administration -----------------------------------------------------------------------

    async def balance(self, principal: str, *, params: PoolParams) -> PoolView:
        """The pool as of now, refill applied; loads it on first use like a request would."""
        now = self._clock()
        return await self._with_pool(
            principal, params, lambda: self._store.view(principal, now=now, params=params)
        )

    async def grant(
        self,
        principal: str,
        amount_micro: int,
        *,
        params: PoolParams,
        actor: str | None = None,
        note: str | None = None,
        request_id: str | None = None,
    ) -> int:
        """Add coins (may go above `max`: the refill then pauses until the pool is below it)."""
        check_amount(amount_micro, allow_zero=False)
        return await self._adjust(principal, "grant", amount_micro, params, actor, note, request_id)

    async def refund(
        self,
        principal: str,
        amount_micro: int,
        *,
        params: PoolParams,
        request_id: str | None,
        actor: str | None = None,
        note: str | None = None,
    ) -> int:
        """Give back coins charged for a request (e.g. a failed one)."""
        check_amount(amount_micro, allow_zero=False)
        return await self._adjust(principal, "refund", amount_micro, params, actor, note, request_id)

    async def set_balance(
        self,
        principal: str,
        amount_micro: int,
        *,
        params: PoolParams,
        actor: str | None = None,
        note: str | None = None,
    ) -> int:
        """Make the balance exactly `amount_micro`; the refill clock restarts now."""
        check_amount(amount_micro)
        return await self._adjust(principal, "set", amount_micro, params, actor, note, None)

    async def reset(
        self, principal: str, *, params: PoolParams, actor: str | None = None, note: str | None = None
    ) -> int:
        """Put the balance back to the pool's starting balance; the refill clock restarts now."""
        return await self._adjust(principal, "reset", 0, params, actor, note, None)

    async def set_pool_settings(
        self, principal: str, overrides: PoolOverrides, *, params: PoolParams
    ) -> PoolView:
        """Store the entity's own pool settings (None fields inherit) and apply them at once."""
        for value in (overrides.max_micro, overrides.refresh_micro, overrides.starting_micro):
            if value is not None:
                check_amount(value)
        await save_overrides(self._engine, principal, overrides, self._clock())
        await self._with_pool(principal, params, lambda: self._store.set_overrides(principal, overrides))
        return await self.balance(principal, params=params)

    # -- internals ----------------------------------------------------------------------------

    async def _with_pool(self, principal: str, params: PoolParams, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except PoolNotLoaded:
            await self._load(principal, params)
            return await op()

    async def _load(self, principal: str, params: PoolParams) -> None:
        # One load per principal at a time: 200 concurrent first requests read the database once.
        task = self._loads.get(principal)
        if task is None:
            task = asyncio.create_task(
                self._load_now(principal, params), name=f"lumen-coins-load-{principal}"
            )
            self._loads[principal] = task
            task.add_done_callback(lambda _: self._loads.pop(principal, None))
        await asyncio.shield(task)

    async def _load_now(self, principal: str, params: PoolParams) -> None:
        record = await load_pool(self._engine, principal)
        if record is not None and record.seed is not None:
            await self._store.seed(principal, record.seed)
            return
        overrides = record.overrides if record is not None else NO_OVERRIDES
        starting = overrides.apply(params).starting_micro
        now = self._clock()
        # Only the process whose seed creates the pool (in Redis: the first) credits the start.
        if await self._store.seed(principal, Seed(starting, now, 0, overrides), opens=True):
            start = Change((Movement("start", starting, starting),), starting, now, 0)
            self._record(principal, start, now, START_CONTEXT)

    async def _settle(self, r: Reservation, cost: int) -> Settlement:
        now = self._clock()
        soft = self.mode == "soft"
        try:
            change = await self._with_pool(
                r.principal,
                r.params,
                lambda: self._store.settle(
                    r.principal,
                    now=now,
                    params=r.params,
                    soft=soft,
                    hold_id=r.hold_id,
                    cost=cost,
                    ctx=Context(r.request_id, r.actor),
                ),
            )
        except Exception:
            log.error(
                "could not settle request %s of %s (cost %d micro-coins)", r.request_id, r.principal, cost
            )
            raise
        note = forgiven_note(cost, change.forgiven_micro) if change.forgiven_micro else None
        self._record(r.principal, change, now, Context(r.request_id, r.actor, note))
        return Settlement(change.charged_micro, change.forgiven_micro, change.balance_micro)

    async def _adjust(
        self,
        principal: str,
        kind: AdjustKind,
        amount: int,
        params: PoolParams,
        actor: str | None,
        note: str | None,
        request_id: str | None,
    ) -> int:
        ctx = Context(request_id, actor, note)

        async def run() -> int:
            now = self._clock()
            change = await self._with_pool(
                principal,
                params,
                lambda: self._store.adjust(
                    principal, now=now, params=params, kind=kind, amount=amount, ctx=ctx
                ),
            )
            self._record(principal, change, now, ctx)
            return change.balance_micro

        return await asyncio.shield(asyncio.ensure_future(run()))

    def _record(self, principal: str, change: Change, now: int, ctx: Context) -> None:
        # A journaling store (Redis) has already put the movements in its outbox, atomically.
        if not self._store.journals:
            self.ledger.record_change(
                principal, change, now, request_id=ctx.request_id, actor=ctx.actor, note=ctx.note
            )

    def _release_orphan(self, task: asyncio.Task[Admission], principal: str, hold_id: str) -> None:
        if task.cancelled() or task.exception() is not None or task.result().status != "ok":
            return
        release = asyncio.ensure_future(self._store.release(principal, now=self._clock(), hold_id=hold_id))
        self._background.add(release)
        release.add_done_callback(self._background.discard)
