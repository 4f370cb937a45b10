"""Slowing down password guessing: failed logins per account and client address, and per address.

Following OWASP's authentication guidance, failures slow down where they come from and never lock
an account for everyone. Each (email, address) pair has a GCRA bucket of `per_minute` failures
(the arithmetic of `lumen.limits.gcra`, in memory or in the same Redis as the rate limits when
several processes serve): a burst of that many failures passes, then one more per 60/N seconds.
Each address also has a bucket of `ADDRESS_FACTOR` times as many failures over all accounts, so
one address trying many accounts (password spraying) is slowed too. While a bucket is full even
the right password is refused from that address, so a guesser learns nothing; the right password
from any other address still logs in, so an attacker cannot lock a user out from elsewhere.

The address is the connection's, or the client's as a trusted reverse proxy names it
(`server.trusted_proxies`, applied by `lumen serve`): behind a proxy that is not listed, every
login would share the proxy's address.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from lumen.limits import gcra
from lumen.limits.backend import Backend, BackendUnavailable, Bucket
from lumen.limits.memory import MemoryBackend

log = logging.getLogger(__name__)

ADDRESS_FACTOR = 10
"""Failed logins per minute one address may make over all accounts, as a multiple of the per
account and address limit."""


class LoginThrottle:
    def __init__(
        self, backend: Backend, per_minute: Callable[[], int], *, clock: Callable[[], float] | None = None
    ) -> None:
        """`clock` (seconds, any origin) replaces the backend's own clock, for tests."""
        self._backend = backend
        self._per_minute = per_minute
        self._clock = clock

    @classmethod
    def create(cls, *, redis_url: str | None, prefix: str, per_minute: Callable[[], int]) -> LoginThrottle:
        backend: Backend
        if redis_url is None:
            backend = MemoryBackend(slot_ttl=60.0)
        else:
            from lumen.limits.redis_backend import RedisBackend

            backend = RedisBackend.from_url(redis_url, prefix=prefix, slot_ttl=60.0, timeout=2.0)
        return cls(backend, per_minute)

    async def wait_seconds(self, email: str, address: str) -> float:
        """0 if a login may be tried now; otherwise the seconds until the next try."""
        buckets = self._buckets(email, address)
        try:
            verdict = await self._backend.acquire(buckets, [], "", self._now(), commit=False)
        except BackendUnavailable:
            log.warning("login throttle unavailable; allowing the attempt")
            return 0.0
        waits = [
            gcra.wait(backlog, 1, bucket.limit)
            for bucket, backlog, full in zip(buckets, verdict.backlogs, verdict.bucket_full, strict=True)
            if full
        ]
        return max(*waits, 1.0) if waits else 0.0

    async def failed(self, email: str, address: str) -> None:
        try:
            await self._backend.acquire(self._buckets(email, address), [], "", self._now(), commit=True)
        except BackendUnavailable:
            log.warning("login throttle unavailable; a failed login was not counted")

    async def aclose(self) -> None:
        await self._backend.aclose()

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def _buckets(self, email: str, address: str) -> list[Bucket]:
        # Hashed: the Redis keys name no email address (nor client address).
        pair = hashlib.sha256(f"{email.strip().lower()}|{address}".encode()).hexdigest()[:32]
        source = hashlib.sha256(f"address|{address}".encode()).hexdigest()[:32]
        limit = self._per_minute()
        return [
            Bucket(key=f"login:{pair}", scope="key", kind="requests", limit=limit, cost=1, requested=1),
            Bucket(
                key=f"login-from:{source}",
                scope="principal",
                kind="requests",
                limit=limit * ADDRESS_FACTOR,
                cost=1,
                requested=1,
            ),
        ]
