"""API-key authentication on the hot path.

A key is hashed (HMAC with the server secret) and looked up in a cache; the database is read
only on a miss and when an entry is older than `ttl()`. So that the entries cached together do not
all expire together (and every request of that moment wait on the database), each key's entry
lives between 80 and 100 % of `ttl()` (spread by its hash), an entry in the last quarter of its
life is re-read in the background while the cached one still answers, and one read per key
serves every request waiting for it. A process that revokes a key or disables
an account drops the cache at once (`invalidate`), and so does every other process when the
change reaches it through Redis (`lumen.changes`). Without that channel `ttl()` is short (one
second by default), which bounds how long another process may still accept a revoked key.

`last_used_at` is kept in memory and written in batches by `flush_last_used`.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import AuthenticationFailed, PermissionDenied
from lumen.identity import keys as key_material
from lumen.identity.groups import GroupSettings, member_groups
from lumen.identity.principal import Principal
from lumen.identity.store import KeyOwner, administers, key_owner_by_hash, touch_keys

UNKNOWN = "Incorrect API key provided. You can create an API key under Profile → API Keys."
NEGATIVE_CACHE_LIMIT = 10_000
SPREAD = 0.2
"""Entries live between (1 - SPREAD) and 1 times `ttl()`, by the key's hash."""
REFRESH_AHEAD = 0.75
"""An entry older than this share of its life is re-read in the background."""

Cached = tuple[float, KeyOwner | None, Principal | None]


class AccountDisabled(PermissionDenied):
    code = "account_disabled"


class KeyAuthenticator:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        secret: bytes,
        groups: Callable[[], Sequence[GroupSettings]],
        admins: Callable[[], Sequence[str]],
        ttl: Callable[[], float] = lambda: 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self.secret = secret
        self._groups = groups
        self._admins = admins
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, Cached] = {}
        self._reads: dict[str, asyncio.Future[Cached]] = {}
        self._generation = 0
        """Bumped by `invalidate`: a read that started before is not cached."""
        self._last_used: dict[str, datetime] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        if not key_material.looks_like_a_key(token):
            raise AuthenticationFailed(UNKNOWN)
        digest = key_material.key_hash(self.secret, token)
        now = self._clock()
        cached = self._cache.get(digest)
        life = self._ttl() * (1 - SPREAD * zlib.crc32(digest.encode()) / 2**32)
        if cached is None or now - cached[0] > life:
            cached = await self._read(digest)
        elif now - cached[0] > life * REFRESH_AHEAD and digest not in self._reads:
            self._read_soon(digest)
        _, owner, principal = cached
        at = datetime.now(UTC)
        self._check(owner, at)
        assert principal is not None  # `_check` refused a missing owner
        self._last_used[principal.key_id or ""] = at
        return principal

    async def _read(self, digest: str) -> Cached:
        """The key's owner from the database: one read per key at a time, shared by every request
        waiting for it (shielded: a request that is cancelled does not cancel it for the others)."""
        pending = self._reads.get(digest)
        if pending is None:
            pending = self._read_soon(digest)
        return await asyncio.shield(pending)

    def _read_soon(self, digest: str) -> asyncio.Future[Cached]:
        future = asyncio.ensure_future(self._load(digest, self._generation))
        self._reads[digest] = future
        future.add_done_callback(lambda done: self._read_done(digest, done))
        return future

    def _read_done(self, digest: str, done: asyncio.Future[Cached]) -> None:
        if self._reads.get(digest) is done:
            del self._reads[digest]
        if not done.cancelled():
            done.exception()  # a background refresh that failed: the next request reads again

    async def _load(self, digest: str, generation: int) -> Cached:
        read_at = self._clock()
        owner = await key_owner_by_hash(engine=self._engine, secret_hash=digest)
        # The principal (groups, admin) is derived once per read, not on every request.
        cached = (read_at, owner, self._principal(owner) if owner else None)
        if generation == self._generation:  # else a revocation may have come after the read
            if owner is None and len(self._cache) >= NEGATIVE_CACHE_LIMIT:
                self._cache.clear()  # bounded: a flood of random keys cannot grow memory
            self._cache[digest] = cached
        return cached

    def _check(self, owner: KeyOwner | None, at: datetime) -> None:
        """What can change between two refreshes of the cache entry: expiry passes with time."""
        if owner is None or owner.key.revoked_at is not None:
            raise AuthenticationFailed(UNKNOWN)
        key = owner.key
        if key.expires_at is not None and key.expires_at <= at:
            raise AuthenticationFailed("This API key has expired. Create a new one under Profile → API Keys.")
        if owner.disabled:
            what = "user account" if key.owner_kind == "user" else f"project '{owner.name}'"
            raise AccountDisabled(f"This {what} is disabled. Ask your Lumen administrator.")

    def _principal(self, owner: KeyOwner) -> Principal:
        key = owner.key
        groups = member_groups(self._groups(), kind=key.owner_kind, name=owner.name, claims=owner.claims)
        # Admin rights need an administrator's key made for administration: any other key of
        # theirs (one handed to a script, one limited to a few models) is an ordinary one.
        is_admin = (
            key.owner_kind == "user"
            and key.admin
            and key.models is None
            and administers(is_admin=owner.is_admin, email=owner.name, admins=self._admins())
        )
        return Principal(
            id=key.principal,
            kind=key.owner_kind,
            key_id=key.id,
            name=owner.name,
            groups=groups,
            is_admin=is_admin,
            models=frozenset(key.models) if key.models is not None else None,
            coin_cap_micro=key.coin_cap_micro,
        )

    def invalidate(self) -> None:
        """Forget every cached key (after a revocation, a disabled account, a policy change)."""
        self._generation += 1
        self._cache.clear()
        self._reads.clear()  # a read in flight may predate the change: later requests read again

    async def flush_last_used(self) -> None:
        pending, self._last_used = self._last_used, {}
        pending.pop("", None)
        await touch_keys(engine=self._engine, last_used=pending)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it in the Authorization header as 'Bearer sk_...'."
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("The Authorization header must have the form 'Bearer sk_...'.")
    return token
