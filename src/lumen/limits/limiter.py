"""The limiter on the request path: check and take every limit of a request at once, give back what
was not used afterwards, and say what the `x-ratelimit-*` headers are.

    admission = await limiter.check_and_acquire(limits, principal=..., model=..., key_id=..., tokens=...)
    try:
        ...call the upstream; add admission.headers to the response...
    finally:
        await admission.release(tokens_used)

`check_and_acquire` raises `RateLimited` (429, with `retry-after` and the headers) when any limit is
reached; nothing is taken from any limit then.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable

from lumen.errors import LumenError, RateLimited
from lumen.limits import gcra
from lumen.limits import headers as h
from lumen.limits.backend import Backend, BackendUnavailable, Bucket, Pool, Refund, Scope, Verdict
from lumen.limits.config import UNLIMITED_RATES, EffectiveLimits, LimiterSettings, Rates
from lumen.limits.memory import MemoryBackend

log = logging.getLogger(__name__)

CONCURRENCY_RETRY_AFTER = 1.0
"""Seconds a caller refused for concurrency is told to wait: when a slot frees is unknowable."""
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_LOG_EVERY = 10.0  # seconds between two warnings about an unreachable backend


class LimiterUnavailable(LumenError):
    """The shared limiter cannot be reached and `on_backend_error` is `reject`."""

    status = 503
    type = "server_error"
    code = "rate_limiter_unavailable"


class Admission:
    """A request let through. `headers` go on its response; `release()` must follow once it is over,
    whether it succeeded, failed or was cancelled."""

    __slots__ = ("_limiter", "_pools", "_released", "_slot", "_tokens", "headers")

    def __init__(
        self,
        limiter: Limiter | None,
        headers: dict[str, str],
        tokens: list[Bucket],
        pools: list[Pool],
        slot: str,
    ) -> None:
        self._limiter = limiter
        self.headers = headers
        """`x-ratelimit-*` values for the response (empty when no limit applies)."""
        self._tokens = tokens
        self._pools = pools
        self._slot = slot
        self._released = False

    async def release(self, tokens_used: int) -> None:
        """Frees the concurrency slots and settles the tokens limits to `tokens_used` (prompt plus
        completion as reported, or the best estimate after an error or a disconnect; 0 when nothing
        reached the model). Only the first call counts; safe to call from a cancelled task."""
        if self._released or self._limiter is None:
            return
        self._released = True
        used = tokens_used if tokens_used > 0 else 0
        refunds = [Refund(b.key, b.limit, used - b.cost) for b in self._tokens if used != b.cost]
        if refunds or self._pools:
            await self._limiter._settle(refunds, [pool.key for pool in self._pools], self._slot)


class Limiter:
    """Rate limits per key, per principal, per model for a principal and per model overall, on one
    backend. `clock` (seconds, any origin) replaces the backend's clock, for tests."""

    def __init__(
        self, backend: Backend, *, clock: Callable[[], float] | None = None, fail_open: bool = True
    ) -> None:
        self._backend = backend
        # The memory backend is called synchronously: one coroutine less per call, and nothing to wait for.
        self._memory = backend if isinstance(backend, MemoryBackend) else None
        self._clock = clock
        self._fail_open = fail_open
        self._slot_prefix = os.urandom(6).hex() + ":"
        self._slot_ids = itertools.count()
        self._last_warning = -_LOG_EVERY

    @classmethod
    def from_settings(cls, settings: LimiterSettings, *, clock: Callable[[], float] | None = None) -> Limiter:
        backend: Backend
        if settings.backend == "redis":
            from lumen.limits.redis_backend import RedisBackend  # only Redis deployments import redis

            url = settings.redis_url.get_secret_value() if settings.redis_url else DEFAULT_REDIS_URL
            backend = RedisBackend.from_url(
                url,
                prefix=settings.key_prefix,
                slot_ttl=settings.concurrency_ttl,
                timeout=settings.redis_timeout,
            )
        else:
            backend = MemoryBackend(slot_ttl=settings.concurrency_ttl)
        return cls(backend, clock=clock, fail_open=settings.on_backend_error == "allow")

    async def check_and_acquire(
        self,
        limits: EffectiveLimits,
        *,
        principal: str,
        model: str | None,
        key_id: str | None = None,
        tokens: int = 0,
    ) -> Admission:
        """Takes one request and `tokens` (the reservation, see `tokens_to_reserve`) from every limit
        of the request, and a concurrency slot, all or nothing. Raises `RateLimited` if any limit is
        reached, `LimiterUnavailable` if the backend is down and configured to reject."""
        buckets, pools = _plan(limits, principal, model, key_id, max(tokens, 0))
        if not buckets and not pools:
            return Admission(None, {}, [], [], "")
        slot = self._slot_prefix + str(next(self._slot_ids)) if pools else ""
        try:
            if self._memory is not None:
                now = time.monotonic() if self._clock is None else self._clock()
                verdict = self._memory.acquire_now(buckets, pools, slot, now, True)
            else:
                verdict = await self._backend.acquire(buckets, pools, slot, self._now(), commit=True)
        except BackendUnavailable as exc:
            self._unavailable(exc)
            return Admission(None, {}, [], [], "")
        if not verdict.ok:
            raise _refusal(buckets, pools, verdict, principal, model, key_id)
        token_buckets = [b for b in buckets if b.kind == "tokens"]
        return Admission(self, _rate_headers(buckets, verdict.backlogs), token_buckets, pools, slot)

    async def peek(
        self, limits: EffectiveLimits, *, principal: str, model: str | None = None, key_id: str | None = None
    ) -> dict[str, str]:
        """The `x-ratelimit-*` headers as they stand, taking nothing (for responses that are not
        limited themselves, such as the model list)."""
        buckets, _ = _plan(limits, principal, model, key_id, 0, cost=0)
        if not buckets:
            return {}
        try:
            verdict = await self._backend.acquire(buckets, [], "", self._now(), commit=False)
        except BackendUnavailable as exc:
            self._unavailable(exc)
            return {}
        return _rate_headers(buckets, verdict.backlogs)

    async def aclose(self) -> None:
        await self._backend.aclose()

    async def _settle(self, refunds: list[Refund], pools: list[str], slot: str) -> None:
        if self._memory is not None:
            now = time.monotonic() if self._clock is None else self._clock()
            self._memory.settle_now(refunds, pools, slot, now)
            return
        try:
            await self._backend.settle(refunds, pools, slot, self._now())
        except BackendUnavailable as exc:
            log.warning("rate limiter: settling failed (%s)", exc)

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def _unavailable(self, exc: BackendUnavailable) -> None:
        if not self._fail_open:
            raise LimiterUnavailable(
                "Rate limits cannot be checked right now; please retry shortly.",
                headers=h.retry_after(1.0),
            ) from exc
        now = time.monotonic()
        if now - self._last_warning >= _LOG_EVERY:
            self._last_warning = now
            log.warning("rate limiter unavailable, requests pass unlimited: %s", exc)


def _plan(
    limits: EffectiveLimits,
    principal: str,
    model: str | None,
    key_id: str | None,
    tokens: int,
    *,
    cost: int = 1,
) -> tuple[list[Bucket], list[Pool]]:
    buckets: list[Bucket] = []
    pools: list[Pool] = []
    # Storage keys: the principal's scopes share the hash tag `{principal}` (one Redis Cluster slot);
    # the principal sits in braces and the model name comes last, so any model name is unambiguous.
    if key_id is not None and limits.key is not UNLIMITED_RATES:
        _add(buckets, pools, f"{{{principal}}}k:{key_id}", "key", limits.key, tokens, cost)
    if limits.principal is not UNLIMITED_RATES:
        _add(buckets, pools, f"{{{principal}}}p", "principal", limits.principal, tokens, cost)
    if model is not None:
        if limits.model is not UNLIMITED_RATES:
            _add(buckets, pools, f"{{{principal}}}m:{model}", "model", limits.model, tokens, cost)
        if limits.model_total is not UNLIMITED_RATES:
            _add(buckets, pools, f"{{M:{model}}}", "model_total", limits.model_total, tokens, cost)
    return buckets, pools


def _add(
    buckets: list[Bucket], pools: list[Pool], key: str, scope: Scope, rates: Rates, tokens: int, cost: int
) -> None:
    if rates.rpm is not None:
        buckets.append(Bucket(key + ":r", scope, "requests", rates.rpm, cost, 1))
    if rates.tpm is not None:
        buckets.append(Bucket(key + ":t", scope, "tokens", rates.tpm, min(tokens, rates.tpm) * cost, tokens))
    if rates.concurrent is not None:
        pools.append(Pool(key + ":c", scope, rates.concurrent))


def _rate_headers(buckets: list[Bucket], backlogs: list[float]) -> dict[str, str]:
    """The binding limit of each kind: the one with the fewest units left (then the smaller one)."""
    requests: tuple[int, int, float] | None = None
    tokens: tuple[int, int, float] | None = None
    for bucket, backlog in zip(buckets, backlogs, strict=True):
        candidate = (gcra.remaining(backlog, bucket.limit), bucket.limit, backlog)
        if bucket.kind == "requests":
            if requests is None or candidate[:2] < requests[:2]:
                requests = candidate
        elif tokens is None or candidate[:2] < tokens[:2]:
            tokens = candidate
    headers: dict[str, str] = {}
    if requests is not None:
        headers[h.LIMIT_REQUESTS] = str(requests[1])
        headers[h.REMAINING_REQUESTS] = str(requests[0])
        headers[h.RESET_REQUESTS] = h.go_duration(requests[2])
    if tokens is not None:
        headers[h.LIMIT_TOKENS] = str(tokens[1])
        headers[h.REMAINING_TOKENS] = str(tokens[0])
        headers[h.RESET_TOKENS] = h.go_duration(tokens[2])
    return headers


def _refusal(
    buckets: list[Bucket],
    pools: list[Pool],
    verdict: Verdict,
    principal: str,
    model: str | None,
    key_id: str | None,
) -> RateLimited:
    waits: list[tuple[float, str]] = []
    for bucket, backlog, full in zip(buckets, verdict.backlogs, verdict.bucket_full, strict=True):
        if full:
            delay = gcra.wait(backlog, bucket.cost, bucket.limit)
            unit = "requests per min (RPM)" if bucket.kind == "requests" else "tokens per min (TPM)"
            used = bucket.limit - gcra.remaining(backlog, bucket.limit)
            waits.append(
                (
                    delay,
                    f"Rate limit reached for {_label(bucket.scope, principal, model, key_id)} on {unit}: "
                    f"Limit {bucket.limit}, Used {used}, Requested {bucket.requested}. "
                    f"Please try again in {h.go_duration(delay)}.",
                )
            )
    for pool, held, full in zip(pools, verdict.held, verdict.pool_full, strict=True):
        if full:
            waits.append(
                (
                    CONCURRENCY_RETRY_AFTER,
                    f"Too many concurrent requests for {_label(pool.scope, principal, model, key_id)}: "
                    f"Limit {pool.limit}, In flight {held}. Please try again when one has finished.",
                )
            )
    delay, message = max(waits, key=lambda wait: wait[0])
    headers = _rate_headers(buckets, verdict.backlogs) | h.retry_after(delay)
    return RateLimited(message, headers=headers)


def _label(scope: Scope, principal: str, model: str | None, key_id: str | None) -> str:
    # OpenAI's wording is "Rate limit reached for gpt-4 in organization org-… on tokens per min".
    if scope == "key":
        return f"API key {key_id}"
    if scope == "principal":
        return principal
    if scope == "model":
        return f"{model} in {principal}"
    return f"{model} (all callers together)"
