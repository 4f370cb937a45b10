"""The in-process backend: plain dicts, no locks.

Everything between two awaits runs alone on the event loop, so a synchronous check-and-take over all
of a request's limits is atomic without a lock, and costs a few microseconds. Only correct for one
process: with several workers each would allow the full limit.
"""

from __future__ import annotations

import time

from lumen.limits.backend import Bucket, Pool, Refund, Verdict
from lumen.limits.gcra import EPSILON, WINDOW

SWEEP_EVERY = 4096
"""Checks between sweeps of idle state; a sweep is O(state), so it runs at most once per that many."""


class MemoryBackend:
    def __init__(self, *, slot_ttl: float) -> None:
        self._slot_ttl = slot_ttl
        self._tats: dict[str, float] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._until_sweep = SWEEP_EVERY

    async def acquire(
        self, buckets: list[Bucket], pools: list[Pool], slot: str, now: float | None, *, commit: bool
    ) -> Verdict:
        return self.acquire_now(buckets, pools, slot, time.monotonic() if now is None else now, commit)

    def acquire_now(
        self, buckets: list[Bucket], pools: list[Pool], slot: str, now: float, commit: bool
    ) -> Verdict:
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._sweep(now)
        tats = self._tats
        ok = True
        backlogs: list[float] = []
        bucket_full: list[bool] = []
        for bucket in buckets:
            tat = tats.get(bucket.key)
            backlog = tat - now if tat is not None and tat > now else 0.0
            # the rule of `gcra`, inlined: this loop is most of the cost of a check
            full = backlog + bucket.cost * (WINDOW / bucket.limit) > WINDOW + EPSILON
            if full:
                ok = False
            backlogs.append(backlog)
            bucket_full.append(full)
        held: list[int] = []
        pool_full: list[bool] = []
        for pool in pools:
            slots = self._slots.get(pool.key)
            count = _drop_expired(slots, now) if slots else 0
            full = count >= pool.limit
            if full:
                ok = False
            held.append(count)
            pool_full.append(full)
        if ok and commit:
            for i, bucket in enumerate(buckets):
                if bucket.cost:
                    backlogs[i] += bucket.cost * (WINDOW / bucket.limit)
                    tats[bucket.key] = now + backlogs[i]
            deadline = now + self._slot_ttl
            for i, pool in enumerate(pools):
                self._slots.setdefault(pool.key, {})[slot] = deadline
                held[i] += 1
        return Verdict(ok, backlogs, bucket_full, held, pool_full)

    async def settle(self, refunds: list[Refund], pools: list[str], slot: str, now: float | None) -> None:
        self.settle_now(refunds, pools, slot, time.monotonic() if now is None else now)

    def settle_now(self, refunds: list[Refund], pools: list[str], slot: str, now: float) -> None:
        tats = self._tats
        for refund in refunds:
            tat = tats.get(refund.key)
            backlog = tat - now if tat is not None and tat > now else 0.0
            backlog += refund.units * (WINDOW / refund.limit)
            if backlog > 0:
                tats[refund.key] = now + backlog
            else:
                tats.pop(refund.key, None)
        for key in pools:
            slots = self._slots.get(key)
            if slots is not None:
                slots.pop(slot, None)
                if not slots:
                    del self._slots[key]

    async def aclose(self) -> None:
        self._tats.clear()
        self._slots.clear()

    def _sweep(self, now: float) -> None:
        # A bucket whose TAT has passed is full, the same as absent; dropping it bounds memory by the
        # callers active in the last minute. Rescheduled after as many checks as there are entries,
        # so the sweep's cost per check stays constant however many callers there are.
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        for key in [key for key, slots in self._slots.items() if not _drop_expired(slots, now)]:
            del self._slots[key]
        self._until_sweep = max(SWEEP_EVERY, len(self._tats) + len(self._slots))


def _drop_expired(slots: dict[str, float], now: float) -> int:
    """Forgets slots whose holder never released them (a crashed task, a bug); returns how many are
    left. Slots are inserted with `now + ttl`, so the oldest come first and the scan stops at the
    first live one: O(1) unless something has expired."""
    expired = []
    for slot, deadline in slots.items():
        if deadline > now:
            break
        expired.append(slot)
    for slot in expired:
        del slots[slot]
    return len(slots)
