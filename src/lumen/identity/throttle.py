"""Slowing down password guessing: failed logins per account and client address.

Each (email, address) pair has a GCRA bucket of `per_minute` failures (the arithmetic of
`lumen.limits.gcra`, in memory or in the same Redis as the rate limits when several processes
serve): a burst of that many failures passes, then one more per 60/N seconds. While the bucket is
full even the right password is refused, so a guesser learns nothing. A login from another
address is not affected: an attacker cannot lock a user out from elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from lumen.limits import gcra
from lumen.limits.backend import Backend, BackendUnavailable, Bucket
from lumen.limits.memory import MemoryBackend

log = logging.getLogger(__name__)


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
        bucket = self._bucket(email, address)
        try:
            verdict = await self._backend.acquire([bucket], [], "", self._now(), commit=False)
        except BackendUnavailable:
            log.warning("login throttle unavailable; allowing the attempt")
            return 0.0
        if not verdict.bucket_full[0]:
            return 0.0
        return max(gcra.wait(verdict.backlogs[0], 1, bucket.limit), 1.0)

    async def failed(self, email: str, address: str) -> None:
        try:
            await self._backend.acquire([self._bucket(email, address)], [], "", self._now(), commit=True)
        except BackendUnavailable:
            log.warning("login throttle unavailable; a failed login was not counted")

    async def aclose(self) -> None:
        await self._backend.aclose()

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def _bucket(self, email: str, address: str) -> Bucket:
        # Hashed: the Redis keys name no email address.
        pair = hashlib.sha256(f"{email.strip().lower()}|{address}".encode()).hexdigest()[:32]
        limit = self._per_minute()
        return Bucket(key=f"login:{pair}", scope="key", kind="requests", limit=limit, cost=1, requested=1)
