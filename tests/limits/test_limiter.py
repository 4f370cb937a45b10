"""The limiter's behaviour, identical on the memory and the Redis backend (the `make_limiter` fixture
runs every test on both). Time is a fake clock: nothing sleeps, nothing asserts on elapsed time."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from lumen.api.errors import error_response
from lumen.errors import RateLimited
from lumen.limits import EffectiveLimits, Rates
from lumen.limits.limiter import Admission, Limiter
from tests.limits.conftest import SLOT_TTL, FakeClock, MakeLimiter

USER = "user:1"


def rpm(n: int) -> EffectiveLimits:
    return EffectiveLimits(principal=Rates(rpm=n))


async def admit(limiter: Limiter, limits: EffectiveLimits, **kwargs: object) -> Admission:
    args: dict[str, object] = {"principal": USER, "model": "m", "key_id": "key_1", **kwargs}
    return await limiter.check_and_acquire(limits, **args)  # type: ignore[arg-type]


async def refused(limiter: Limiter, limits: EffectiveLimits, **kwargs: object) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        await admit(limiter, limits, **kwargs)
    return info.value


async def count_admitted(limiter: Limiter, limits: EffectiveLimits, n: int, **kwargs: object) -> int:
    admitted = 0
    for _ in range(n):
        try:
            await admit(limiter, limits, **kwargs)
            admitted += 1
        except RateLimited:
            pass
    return admitted


# Requests per minute


async def test_rpm_admits_exactly_the_limit_then_one_per_interval(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    limits = rpm(10)
    assert await count_admitted(limiter, limits, 10) == 10
    error = await refused(limiter, limits)
    assert error.headers["retry-after"] == "6"
    assert error.headers["retry-after-ms"] == "6000"

    clock.advance(5.99)  # one request comes back every 60/10 = 6 s, not earlier
    await refused(limiter, limits)
    clock.advance(0.01)
    await admit(limiter, limits)
    await refused(limiter, limits)

    clock.advance(60)  # a full minute refills the whole burst, no more
    assert await count_admitted(limiter, limits, 12) == 10


async def test_limits_that_do_not_divide_the_minute_still_admit_exactly_n(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    assert await count_admitted(limiter, rpm(7), 8) == 7
    assert await count_admitted(limiter, rpm(7), 1, principal="user:2") == 1


async def test_a_refused_request_takes_nothing_from_any_limit(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(key=Rates(rpm=2), principal=Rates(rpm=3, tpm=100))
    assert await count_admitted(limiter, limits, 5, key_id="key_a", tokens=10) == 2
    # key_a's three refusals took nothing from the principal: one request and 80 tokens are left
    admission = await admit(limiter, limits, key_id="key_b", tokens=10)
    assert admission.headers["x-ratelimit-remaining-requests"] == "0"
    assert admission.headers["x-ratelimit-remaining-tokens"] == "70"
    await refused(limiter, limits, key_id="key_c")


async def test_scopes_are_separate_per_key_principal_and_model(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(key=Rates(rpm=1), model=Rates(rpm=1))
    await admit(limiter, limits, key_id="key_a", model="a")
    await refused(limiter, limits, key_id="key_a", model="b")  # the key's limit
    await refused(limiter, limits, key_id="key_b", model="a")  # the principal's limit on model a
    await admit(limiter, limits, key_id="key_b", model="b")
    await admit(limiter, limits, key_id="key_c", model="a", principal="user:2")


async def test_model_total_is_shared_by_every_principal(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(model_total=Rates(rpm=2))
    await admit(limiter, limits, principal="user:1")
    await admit(limiter, limits, principal="project:7", key_id="key_p")
    error = await refused(limiter, limits, principal="user:3")
    assert "Rate limit reached for m (all callers together) on requests per min" in error.message
    await admit(limiter, limits, principal="user:3", model="other")


# Tokens per minute


async def test_tpm_reserves_before_and_settles_to_the_real_count(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(tpm=1000))
    first = await admit(limiter, limits, tokens=600)
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    await refused(limiter, limits, tokens=600)  # 600 + 600 reserved would exceed 1000
    await first.release(150)  # the answer was short: 450 come back
    second = await admit(limiter, limits, tokens=600)
    assert second.headers["x-ratelimit-remaining-tokens"] == "250"
    await second.release(600)
    assert (await limiter.peek(limits, principal=USER))["x-ratelimit-remaining-tokens"] == "250"


async def test_tpm_is_exact_in_steady_state(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    """Whatever the reservations, the limit ends up charged exactly the tokens used: under steady
    load, what is left equals the burst plus the refill since, minus the tokens really used."""
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(tpm=1000))
    start, used, admitted = clock.now, 0, 0
    for _ in range(100):
        try:
            admission = await admit(limiter, limits, tokens=300)
        except RateLimited:
            clock.advance(0.6)  # 10 tokens come back
            continue
        await admission.release(100)
        used += 100
        admitted += 1
    left = int((await limiter.peek(limits, principal=USER))["x-ratelimit-remaining-tokens"])
    refilled = round((clock.now - start) * 1000 / 60)
    assert left == 1000 + refilled - used
    assert 0 <= left < 300  # saturated: the next 300-token reservation did not fit
    assert admitted > 10  # far more than 1000 / 300 requests: the unused reservations came back


async def test_an_answer_longer_than_reserved_puts_the_limit_in_debt(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(tpm=600))
    admission = await admit(limiter, limits, tokens=100)
    await admission.release(1200)  # twice the limit: two minutes of debt
    error = await refused(limiter, limits, tokens=1)
    assert error.headers["retry-after"] == "61"  # 1200 - 600 + 1 tokens at 10 per second
    assert error.headers["x-ratelimit-remaining-tokens"] == "0"
    assert error.headers["x-ratelimit-reset-tokens"] == "2m0s"
    clock.advance(60.1)
    await admit(limiter, limits, tokens=1)


async def test_a_reservation_above_the_limit_passes_when_the_limit_is_full(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(tpm=1000))
    big = await admit(limiter, limits, tokens=5000)  # takes the whole minute rather than never passing
    assert big.headers["x-ratelimit-remaining-tokens"] == "0"
    error = await refused(limiter, limits, tokens=5000)
    assert "Requested 5000" in error.message
    await big.release(5000)  # and settles to what it really used
    clock.advance(300)
    await admit(limiter, limits, tokens=5000)


async def test_zero_tokens_used_returns_the_whole_reservation(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(tpm=100))
    for _ in range(5):
        admission = await admit(limiter, limits, tokens=100)
        await admission.release(0)  # e.g. the upstream failed before the model ran


# Concurrent requests


async def test_concurrency_slots_are_held_until_release(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(concurrent=2))
    first = await admit(limiter, limits)
    await admit(limiter, limits)
    error = await refused(limiter, limits)
    assert error.headers["retry-after"] == "1"
    assert "Too many concurrent requests for user:1: Limit 2, In flight 2" in error.message
    await first.release(0)
    await first.release(0)  # only the first release counts
    await admit(limiter, limits)
    await refused(limiter, limits)


async def test_the_slot_is_released_when_the_request_fails(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(concurrent=1))

    async def handler() -> None:
        admission = await admit(limiter, limits)
        try:
            raise ConnectionResetError("upstream went away")
        finally:
            await admission.release(0)

    with pytest.raises(ConnectionResetError):
        await handler()
    await admit(limiter, limits)


async def test_the_slot_is_released_when_the_client_disconnects(make_limiter: MakeLimiter) -> None:
    """A disconnect cancels the request's task; the release in its `finally` still completes."""
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(concurrent=1, tpm=1000))
    streaming = asyncio.Event()

    async def handler() -> None:
        admission = await admit(limiter, limits, tokens=500)
        try:
            streaming.set()
            await asyncio.Event().wait()  # the upstream stream, until the client goes away
        finally:
            await admission.release(20)  # tokens streamed before the disconnect

    task = asyncio.create_task(handler())
    await streaming.wait()
    await refused(limiter, limits)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    admission = await admit(limiter, limits, tokens=10)
    assert admission.headers["x-ratelimit-remaining-tokens"] == "970"


async def test_a_slot_never_released_expires_after_the_ttl(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(concurrent=1))
    await admit(limiter, limits)  # its process "crashes": no release
    clock.advance(SLOT_TTL - 1)
    await refused(limiter, limits)
    clock.advance(1)
    await admit(limiter, limits)


# Headers and the 429


async def test_admission_headers_name_the_tightest_limit_of_each_kind(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(
        key=Rates(rpm=100, tpm=50_000), principal=Rates(rpm=60, tpm=150_000), model=Rates(rpm=3)
    )
    admission = await admit(limiter, limits, tokens=16)
    assert admission.headers == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-limit-tokens": "50000",
        "x-ratelimit-remaining-tokens": "49984",
        "x-ratelimit-reset-tokens": "20ms",
    }


async def test_headers_count_down_and_reset_is_the_time_until_full(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    limits = rpm(60)
    for expected in range(59, 55, -1):
        admission = await admit(limiter, limits)
        assert admission.headers["x-ratelimit-remaining-requests"] == str(expected)
    assert admission.headers["x-ratelimit-reset-requests"] == "4s"
    clock.advance(1.5)
    headers = await limiter.peek(limits, principal=USER)
    assert headers["x-ratelimit-remaining-requests"] == "57"
    assert headers["x-ratelimit-reset-requests"] == "3s"  # 2.5 s, rounded up


async def test_peek_takes_nothing(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = rpm(2)
    for _ in range(5):
        headers = await limiter.peek(limits, principal=USER, model="m", key_id="key_1")
        assert headers == {
            "x-ratelimit-limit-requests": "2",
            "x-ratelimit-remaining-requests": "2",
            "x-ratelimit-reset-requests": "0s",
        }
    assert await count_admitted(limiter, limits, 3) == 2


async def test_no_limit_no_headers(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(principal=Rates(concurrent=5))  # concurrency has no standard header
    admission = await admit(limiter, limits, tokens=10**9)
    assert admission.headers == {}
    await admission.release(10**9)
    assert (await admit(limiter, EffectiveLimits())).headers == {}
    assert await limiter.peek(EffectiveLimits(), principal=USER) == {}


async def test_the_429_is_openai_shaped(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(model=Rates(rpm=1))
    await admit(limiter, limits)
    error = await refused(limiter, limits)
    response = error_response(error)
    assert response.status_code == 429
    body = orjson.loads(bytes(response.body))
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["message"] == (
        "Rate limit reached for m in user:1 on requests per min (RPM): "
        "Limit 1, Used 1, Requested 1. Please try again in 1m0s."
    )
    assert response.headers["retry-after"] == "60"
    assert response.headers["retry-after-ms"] == "60000"
    assert response.headers["x-should-retry"] == "true"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"] == "1m0s"


async def test_the_429_waits_for_the_slowest_limit(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = EffectiveLimits(key=Rates(rpm=30), principal=Rates(tpm=60))
    await admit(limiter, limits, tokens=60)
    error = await refused(limiter, limits, tokens=30)  # tokens: 30 s; requests: 2 s
    assert error.headers["retry-after"] == "30"
    assert "tokens per min (TPM): Limit 60, Used 60, Requested 30. Please try again in 30s." in error.message
