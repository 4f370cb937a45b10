"""Local passwords: Argon2id hashes (argon2-cffi), stored in `users.password_hash`.

Hashing costs tens of milliseconds of CPU and 64 MiB on purpose, so it runs in a worker thread
and never blocks the event loop. A user without a hash cannot log in with a password (OIDC users,
by default). Verifying against a dummy hash when the user does not exist keeps the response time
of an unknown email the same as a wrong password.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import InvalidRequest, NotFound
from lumen.identity.store import User, normalise_email
from lumen.store.tables import users

MIN_LENGTH = 10
MAX_LENGTH = 1024
"""Longer passwords are refused rather than hashed: a megabyte-long one would be a cheap way to
make the server work."""

_hasher = PasswordHasher()  # RFC 9106's low-memory profile: Argon2id, t=3, m=64 MiB, p=4


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def check_password_rules(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidRequest(f"A password needs at least {MIN_LENGTH} characters.", param="password")
    if len(password) > MAX_LENGTH:
        raise InvalidRequest(f"A password may have at most {MAX_LENGTH} characters.", param="password")
    if password != password.strip():
        raise InvalidRequest("A password may not start or end with a space.", param="password")


def generate_password() -> str:
    """A random password for the first administrator (about 143 bits)."""
    return secrets.token_urlsafe(18)


async def hash_password(password: str) -> str:
    check_password_rules(password)
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if `password` matches; False for no hash, a wrong password or an unusable hash."""
    if len(password) > MAX_LENGTH:
        return False
    return await asyncio.to_thread(_verify, stored_hash, password)


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


async def set_password(*, engine: AsyncEngine, user_id: int, password: str) -> None:
    digest = await hash_password(password)
    async with engine.begin() as conn:
        result = await conn.execute(update(users).where(users.c.id == user_id).values(password_hash=digest))
    if result.rowcount == 0:
        raise NotFound(f"No user with id {user_id}.", code="user_not_found")


async def clear_password(*, engine: AsyncEngine, user_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(users).where(users.c.id == user_id).values(password_hash=None))


async def check_login(*, engine: AsyncEngine, email: str, password: str) -> User | None:
    """The user whose email and password these are, or None. Does not look at `disabled`: the
    caller refuses a disabled user exactly as a wrong password."""
    try:
        email = normalise_email(email)
    except InvalidRequest:
        await verify_password(None, password)
        return None
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.email == email))).first()
    if not await verify_password(row.password_hash if row is not None else None, password):
        return None
    assert row is not None
    if needs_rehash(row.password_hash):
        # Not `hash_password`: a password set under older rules must still work.
        digest = await asyncio.to_thread(_hasher.hash, password)
        async with engine.begin() as conn:
            await conn.execute(update(users).where(users.c.id == row.id).values(password_hash=digest))
    return User(**{f: getattr(row, f) for f in User.__dataclass_fields__})


async def record_login(*, engine: AsyncEngine, user_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(users).where(users.c.id == user_id).values(last_login_at=datetime.now(UTC)))
