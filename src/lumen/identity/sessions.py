"""Server-side portal sessions.

The browser's cookie holds only a random token; the database keeps a keyed hash of it (HMAC with
the server secret, like API keys), so a copy of the database cannot be turned into live sessions.
A session ends after `idle` without use, `max_age` after login, or at logout (the row is deleted).
Each session has its own CSRF token, which the portal puts in its pages and checks on every
state-changing request.

Reading a session joins its user, so a disabled user or a changed admin flag takes effect on the
next request. `last_seen_at` is written at most once a minute per session, not on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.identity.groups import GroupSettings, user_groups
from lumen.identity.principal import Principal
from lumen.store.tables import portal_sessions, users

TOUCH_EVERY = timedelta(minutes=1)
"""How stale `last_seen_at` may be; the idle expiry is correspondingly approximate."""


@dataclass(frozen=True, slots=True)
class PortalSession:
    id: str
    """The keyed hash of the cookie's token (never the token itself)."""
    user_id: int
    email: str
    name: str
    is_admin: bool
    disabled: bool
    claims: dict[str, Any] | None
    csrf_token: str
    method: str
    """How the user logged in: `password` or `oidc`."""
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    @property
    def principal_id(self) -> str:
        return f"user:{self.user_id}"

    def principal(self, groups: Sequence[GroupSettings], admins: Sequence[str]) -> Principal:
        """The same principal an API key of this user gets, without a key: the portal calls the
        same access, limit and billing code as /v1 with it."""
        return Principal(
            id=self.principal_id,
            kind="user",
            name=self.email,
            groups=user_groups(groups, self.email, self.claims),
            is_admin=self.is_admin or self.email in {a.lower() for a in admins},
        )

    @staticmethod
    def tokens_match(expected: str, supplied: str | None) -> bool:
        """Constant-time comparison of CSRF tokens; an empty token never matches."""
        if not expected or not supplied:
            return False
        return hmac.compare_digest(expected.encode(), supplied.encode())


async def delete_user_sessions(*, engine: AsyncEngine, user_id: int) -> int:
    """Ends every portal session of a user (after a password change, say); returns how many."""
    async with engine.begin() as conn:
        result = await conn.execute(delete(portal_sessions).where(portal_sessions.c.user_id == user_id))
    return int(result.rowcount)


def session_hash(secret: bytes, token: str) -> str:
    return hmac.new(secret, b"session:" + token.encode(), hashlib.sha256).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class SessionStore:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        secret: bytes,
        idle: Callable[[], timedelta],
        max_age: Callable[[], timedelta],
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._engine = engine
        self._secret = secret
        self._idle = idle
        self._max_age = max_age
        self._clock = clock

    async def create(
        self, *, user_id: int, method: str, ip: str | None = None, user_agent: str | None = None
    ) -> tuple[str, PortalSession]:
        """A new session; returns the token for the cookie (shown once) and the session."""
        now = self._clock()
        await self.sweep()
        token = secrets.token_urlsafe(32)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(portal_sessions).values(
                    id=session_hash(self._secret, token),
                    user_id=user_id,
                    csrf_token=secrets.token_urlsafe(32),
                    method=method,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + self._max_age(),
                    ip=ip,
                    user_agent=(user_agent or "")[:400] or None,
                )
            )
        session = await self.get(token)
        assert session is not None
        return token, session

    async def get(self, token: str | None) -> PortalSession | None:
        """The live session of this cookie token, or None (unknown, expired or logged out)."""
        if not token or len(token) > 200:
            return None
        digest = session_hash(self._secret, token)
        query = (
            select(
                portal_sessions,
                users.c.email,
                users.c.name,
                users.c.is_admin,
                users.c.disabled,
                users.c.claims,
            )
            .join(users, users.c.id == portal_sessions.c.user_id)
            .where(portal_sessions.c.id == digest)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        now = self._clock()
        if row.expires_at <= now or row.last_seen_at + self._idle() <= now:
            await self._delete(digest)
            return None
        last_seen = row.last_seen_at
        if now - last_seen >= TOUCH_EVERY:
            last_seen = now
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(portal_sessions).where(portal_sessions.c.id == digest).values(last_seen_at=now)
                )
        return PortalSession(
            id=digest,
            user_id=int(row.user_id),
            email=row.email,
            name=row.name,
            is_admin=bool(row.is_admin),
            disabled=bool(row.disabled),
            claims=row.claims,
            csrf_token=row.csrf_token,
            method=row.method,
            created_at=row.created_at,
            last_seen_at=last_seen,
            expires_at=row.expires_at,
        )

    async def delete(self, token: str | None) -> None:
        """Logout: the session is gone for every process at once."""
        if token:
            await self._delete(session_hash(self._secret, token))

    async def delete_for_user(self, user_id: int) -> int:
        return await delete_user_sessions(engine=self._engine, user_id=user_id)

    async def sweep(self) -> None:
        """Deletes expired sessions of everyone (run at each login, so the table stays small)."""
        now = self._clock()
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(portal_sessions).where(
                    or_(
                        portal_sessions.c.expires_at <= now,
                        portal_sessions.c.last_seen_at <= now - self._idle(),
                    )
                )
            )

    async def _delete(self, digest: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(portal_sessions).where(portal_sessions.c.id == digest))
