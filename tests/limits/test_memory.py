"""The memory backend: idle state is dropped, and a check never waits."""

from __future__ import annotations

import pytest

from lumen.limits import EffectiveLimits, Rates
from lumen.limits import memory as memory_module
from lumen.limits.limiter import Limiter
from lumen.limits.memory import MemoryBackend
from tests.limits.conftest import FakeClock


async def test_idle_buckets_and_expired_slots_are_swept(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_module, "SWEEP_EVERY", 10)
    backend = MemoryBackend(slot_ttl=30)
    limiter = Limiter(backend, clock=clock)
    limits = EffectiveLimits(principal=Rates(rpm=60, tpm=600, concurrent=5))
    for i in range(20):
        admission = await limiter.check_and_acquire(limits, principal=f"user:{i}", model="m", tokens=10)
        if i % 2:
            await admission.release(10)
    assert len(backend._tats) == 40 and len(backend._slots) == 10
    clock.advance(31)  # every bucket is full again, every unreleased slot has expired
    others = EffectiveLimits(principal=Rates(tpm=10**6))
    for _ in range(100):  # enough checks for the next sweep (scheduled after as many as there are entries)
        await limiter.check_and_acquire(others, principal="user:new", model="m", tokens=1)
    assert set(backend._tats) == {"{user:new}p:t"}
    assert backend._slots == {}


async def test_a_check_completes_without_yielding_to_the_event_loop(clock: FakeClock) -> None:
    """Atomic without a lock: the whole check runs between two awaits of the caller."""
    limiter = Limiter(MemoryBackend(slot_ttl=30), clock=clock)
    coroutine = limiter.check_and_acquire(
        EffectiveLimits(principal=Rates(rpm=1, concurrent=1)), principal="user:1", model="m"
    )
    with pytest.raises(StopIteration) as done:
        coroutine.send(None)
    admission = done.value.value
    release = admission.release(0)
    with pytest.raises(StopIteration):
        release.send(None)
