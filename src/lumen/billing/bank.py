"""`CoinBank`: reserve before the upstream call, settle after, and every other movement of coins.

On the request path::

    params = resolver.inherited(groups)                 # memoised, no I/O
    r = await bank.reserve(principal, worst_case_micro(...), request_id=rid, params=params,
                           actor="key:7", cause="chat.completions gpt-x",
                           minimum_micro=prompt_cost)   # optional floor, see below
    # r.amount_micro is what is held: with a floor it may be less than asked (cap the output)
    try:
        ... call the upstream, relay ...
    finally:
        await bank.finish([r, key_r], usage_record)     # charges record.cost_micro to each

`reserve` raises `lumen.errors.InsufficientQuota` (429) when the pool cannot pay (a pool in debt
pays for nothing). With ``minimum_micro`` it is a *floor* reservation: in hard mode, a pool with
less than the amount but at least the minimum available is admitted and holds exactly what is
available, so the caller can lower the request's output cap to what the pool can pay.

`finish(reservations, record)` is the one call that ends a request: it charges the record's cost
to every reservation (a request holds its owner's pool and, for a key with a coin cap, the key's
pool ``key:<id>``), gives zero-cost holds back, and makes the usage record durable together with
the charge. With Redis the record is appended to the ledger outbox in the same script call as the
owner's charge (the first reservation), so a killed process loses neither; otherwise (the memory
store, or no reservation at all) the record goes to the write-behind `UsageRecorder`. It must run
on every ending (success, upstream error after tokens were produced, client disconnect: bill what
was generated), is shielded from cancellation, and returns once the charge (and with Redis the
record) is in Redis, or handed over in process. `settle` (one reservation, no record) and `release`
(nothing used) remain for other callers; all three are shielded from cancellation.

The charge is always the full cost. When it exceeds the hold the pool may go below zero: that is a
debt, which the next refills pay first; the ledger row's note says how much went beyond the hold.
A negative balance is visible in `balance` (and so on the user's pages).

Holds expire ``reservation_ttl`` seconds (default 60) after they were made or last renewed. The
bank keeps the set of this process's live reservations and one background task renews them all
every ``reservation_ttl / 3`` (with Redis, one script call per round). When the process dies the
renewing stops, and its holds stop counting against the pools at most ``reservation_ttl`` later.

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
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

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
    beyond_hold_note,
)
from lumen.ids import unique_id
from lumen.usage.recorder import UsageRecord, UsageRecorder, usage_json

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True, eq=False, weakref_slot=True)
class Reservation:
    """Coins held for one request until it is settled or released (or the hold expires).

    The bank renews the hold only while the caller keeps this object: one dropped without being
    settled (a bug) stops being renewed and its hold expires within the TTL, like a dead process's.
    """

    principal: str
    request_id: str
    amount_micro: int
    """What is held: the amount asked for, or less for a floor reservation (0: nothing held)."""
    params: PoolParams
    hold_id: str
    expires_at: int
    unlimited: bool
    actor: str | None = None
    """Who made the request (an API key, or the user acting for a project): on the charge row."""
    cause: str | None = None
    """What the request was (e.g. ``"chat.completions gpt-x"``): the charge row's note."""
    done: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    charged_micro: int
    balance_micro: int | None  # after the charge; None when the pool was not touched
    beyond_hold_micro: int = 0
    """How much of the charge the hold did not cover (a low prompt estimate, or an expired hold)."""

    @property
    def owed_micro(self) -> int:
        """The pool's debt after the charge (0 when the balance is not below zero)."""
        return max(-(self.balance_micro or 0), 0)


NOT_CHARGED = Settlement(0, None)


class CoinBank:
    """Construct, ``await start()`` at startup, ``await aclose()`` at shutdown (before the engine
    is disposed and after requests have drained)."""

    def __init__(
        self,
        store: PoolStore,
        engine: AsyncEngine,
        *,
        mode: Literal["hard", "soft"] = "hard",
        reservation_ttl: float = 60.0,
        flush_interval: float = 0.5,
        clock: Clock = wall_clock_ms,
        recorder: UsageRecorder | None = None,
        renew_interval: float | None = None,
    ) -> None:
        """`recorder` takes the usage records `finish` cannot put in a journaling store's outbox
        (required for `finish` unless the store journals and every call has a reservation).
        `renew_interval`: seconds between renewals of the live holds; default a third of the TTL."""
        self.mode = mode
        self.reservation_ttl_ms = int(reservation_ttl * 1000)
        self.ledger = LedgerWriter(engine, flush_interval=flush_interval)  # a store that does not journal
        self.outbox = store.outbox_drainer(engine, interval=flush_interval)  # one that does
        self._store = store
        self._engine = engine
        self._clock = clock
        self._recorder = recorder
        self._renew_interval = renew_interval
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Future[Any]] = set()
        # Hold id -> this process's unsettled holds, as long as their callers keep them.
        self._live: weakref.WeakValueDictionary[str, Reservation] = weakref.WeakValueDictionary()
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: BillingSettings,
        store: PoolStore,
        engine: AsyncEngine,
        *,
        clock: Clock = wall_clock_ms,
        recorder: UsageRecorder | None = None,
    ) -> CoinBank:
        return cls(
            store,
            engine,
            mode=settings.mode,
            reservation_ttl=settings.reservation_ttl,
            flush_interval=settings.flush_interval,
            clock=clock,
            recorder=recorder,
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
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="lumen-coin-holds")

    async def flush(self) -> None:
        """Write every movement made so far to the database now (with Redis: every process's)."""
        await self.ledger.flush()
        if self.outbox is not None:
            await self.outbox.flush()

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.ledger.aclose()
        if self.outbox is not None:
            await self.outbox.aclose()
        await self._store.aclose()

    @property
    def live_reservations(self) -> int:
        """This process's holds not yet settled or released (the ones it renews)."""
        return len(self._live)

    # -- the request path -------------------------------------------------------------------

    async def reserve(
        self,
        principal: str,
        amount_micro: int,
        *,
        request_id: str,
        params: PoolParams,
        actor: str | None = None,
        cause: str | None = None,
        minimum_micro: int | None = None,
    ) -> Reservation:
        """Hold `amount_micro` (the request's worst case) or raise `InsufficientQuota`.

        `params` are the principal's inherited pool parameters (`PoolResolver.inherited`); the
        pool's own settings are applied on top by the store. `actor` (the API key, or the user
        acting for a project) and `cause` (e.g. ``"chat.completions gpt-x"``) are written on the
        charge's ledger row. `minimum_micro` (hard mode; at most `amount_micro`): when the pool
        has less than `amount_micro` available but at least `minimum_micro` (and at least one
        micro-coin), hold exactly what is available; `Reservation.amount_micro` says what was held.
        """
        check_amount(amount_micro)
        if minimum_micro is not None:
            check_amount(minimum_micro)
            if minimum_micro > amount_micro:
                raise ValueError(f"minimum {minimum_micro} above the amount {amount_micro}")
        now = self._clock()
        hold_id = unique_id()
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
                minimum=minimum_micro,
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
        reservation = Reservation(
            principal,
            request_id,
            admission.held_micro,
            params,
            hold_id,
            expires_at,
            unlimited=admission.status == "unlimited",
            actor=actor,
            cause=cause,
        )
        if reservation.amount_micro:
            self._live[hold_id] = reservation
        return reservation

    async def finish(
        self, reservations: Sequence[Reservation], record: UsageRecord, *, own_task: bool = True
    ) -> Settlement:
        """End a request: charge ``record.cost_micro`` to every reservation and make the usage
        record durable with the charge; returns the first (the owner's) reservation's settlement.

        With a journaling store (Redis) the record is appended to the outbox in the same script
        call as the first reservation's charge (also when that charges nothing); otherwise, or
        when there is no reservation (the call was refused) or the first one was already settled,
        or its settlement failed, it goes to the usage recorder. Reservations already settled are
        not charged again. Shielded from cancellation: the caller may be cancelled, the work is
        not, and `aclose` waits for it. `own_task=False` runs it in the caller's task instead, for
        a caller that already runs it in a task nothing cancels and that it waits for before the
        bank closes (the call pipeline's settlement): one task fewer per request.
        """
        check_amount(record.cost_micro)
        carrier = reservations[0] if reservations and not reservations[0].done else None
        if carrier is not None and not self._store.journals:
            carrier = None
        if carrier is None and self._recorder is None:
            raise RuntimeError("CoinBank.finish needs a usage recorder for this record (see __init__)")
        pending = [r for r in reservations if not r.done]
        for r in pending:
            self._retire(r)
        first = reservations[0] if reservations else None
        if not own_task:
            return await self._finish(first, pending, carrier, record)
        task = asyncio.ensure_future(self._finish(first, pending, carrier, record))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await asyncio.shield(task)

    async def settle(self, reservation: Reservation, cost_micro: int) -> Settlement:
        """Release the hold and charge the real cost (what was generated, also on a disconnect).

        The whole cost is charged, in both modes, also when it exceeds the reservation (the prompt
        estimate was low) or the hold expired: the pool may go below zero, a debt that the next
        refills pay first (`Settlement.owed_micro`; the ledger row's note gives the part beyond
        the hold). Unlimited pools are never charged. A second settle of the same reservation does
        nothing. For a request's end, prefer `finish`, which also stores its usage record.
        """
        check_amount(cost_micro)
        if reservation.done:
            log.warning("reservation of request %s settled twice; ignored", reservation.request_id)
            return NOT_CHARGED
        self._retire(reservation)
        return await asyncio.shield(asyncio.ensure_future(self._settle(reservation, cost_micro, None)))

    async def release(self, reservation: Reservation) -> None:
        """Give the hold back without charging (the request never reached the upstream)."""
        if reservation.done:
            return
        self._retire(reservation)
        if reservation.amount_micro and not reservation.unlimited:
            await asyncio.shield(
                asyncio.ensure_future(
                    self._store.release(reservation.principal, now=self._clock(), hold_id=reservation.hold_id)
                )
            )

    async def renew(self, reservation: Reservation) -> bool:
        """Extend one hold by another TTL now; False if it already expired. (The bank renews every
        live hold by itself; see `renew_live`.)"""
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

    async def renew_live(self) -> int:
        """Renew every live hold of this process by another TTL, in one store call; returns how
        many were renewed. A hold found expired (the process stalled for longer than the TTL) is
        dropped from the set: its request is still charged in full when it ends."""
        live = [r for r in self._live.values() if not r.done]
        if not live:
            return 0
        now = self._clock()
        expires_at = now + self.reservation_ttl_ms
        flags = await self._store.renew_many(
            [(r.principal, r.hold_id) for r in live], now=now, expires_at=expires_at
        )
        for r, renewed in zip(live, flags, strict=True):
            if renewed:
                r.expires_at = expires_at
            elif not r.done:
                self._live.pop(r.hold_id, None)
                log.warning("the hold of request %s had expired before it was renewed", r.request_id)
        return sum(flags)

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

    async def _finish(
        self,
        first: Reservation | None,
        pending: list[Reservation],
        carrier: Reservation | None,
        record: UsageRecord,
    ) -> Settlement:
        usage = None if carrier is None else usage_json(record)
        owner = NOT_CHARGED
        failure: Exception | None = None
        for r in pending:
            try:
                settlement = await self._settle(r, record.cost_micro, usage if r is carrier else None)
            except Exception as exc:  # noqa: BLE001 - the others are still settled; raised below
                failure = failure or exc
                if r is carrier:
                    carrier = None  # the record did not reach the outbox
                continue
            if r is first:
                owner = settlement
        if carrier is None and self._recorder is not None:
            self._recorder.record(record)
        elif carrier is None:  # `finish` checked for a recorder; only a failed carrier gets here
            log.error("usage record of request %s lost: its charge failed, no recorder", record.request_id)
        if failure is not None:
            raise failure
        return owner

    async def _settle(self, r: Reservation, cost: int, usage: str | None) -> Settlement:
        if usage is None and cost == 0 and (r.unlimited or r.amount_micro == 0):
            return NOT_CHARGED  # nothing held, nothing to charge, nothing to carry: no round trip
        now = self._clock()
        ctx = Context(r.request_id, r.actor, r.cause)
        try:
            change = await self._with_pool(
                r.principal,
                r.params,
                lambda: self._store.settle(
                    r.principal,
                    now=now,
                    params=r.params,
                    hold_id=r.hold_id,
                    cost=cost,
                    ctx=ctx,
                    usage=usage,
                ),
            )
        except Exception:
            log.error(
                "could not settle request %s of %s (cost %d micro-coins)", r.request_id, r.principal, cost
            )
            raise
        if change.beyond_hold_micro:
            ctx = Context(r.request_id, r.actor, beyond_hold_note(r.cause, cost, change.beyond_hold_micro))
        self._record(r.principal, change, now, ctx)
        if not change.movements:
            return NOT_CHARGED
        return Settlement(change.charged_micro, change.balance_micro, change.beyond_hold_micro)

    def _retire(self, r: Reservation) -> None:
        r.done = True
        self._live.pop(r.hold_id, None)

    async def _renew_forever(self) -> None:
        while True:
            ttl_s = self.reservation_ttl_ms / 1000
            await asyncio.sleep(self._renew_interval if self._renew_interval is not None else ttl_s / 3)
            try:
                await self.renew_live()
            except Exception:  # Redis down: the holds may expire; retried next round
                log.warning("could not renew %d coin holds", len(self._live), exc_info=True)

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
        if task.cancelled() or task.exception() is not None or not task.result().held_micro:
            return
        release = asyncio.ensure_future(self._store.release(principal, now=self._clock(), hold_id=hold_id))
        self._background.add(release)
        release.add_done_callback(self._background.discard)
