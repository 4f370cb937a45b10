"""What the first start of an instance does: create the first administrator and an admin key for
them, so that the printed curl example and the admin API work at once, and a password for the
portal's local login."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import InvalidRequest, NotFound
from lumen.identity import keys as key_material
from lumen.identity import store
from lumen.identity.passwords import generate_password, set_password
from lumen.settings import Settings
from lumen.store.tables import api_keys

DEFAULT_ADMIN = "admin@localhost"


@dataclass(frozen=True, slots=True)
class FirstStart:
    admin: store.User
    key: str | None
    """The new key's secret, to print once; None when the key came from the config."""
    password: str | None = None
    """The administrator's portal password, to print once; None without local login."""


async def prepare_identity(settings: Settings, *, engine: AsyncEngine, secret: bytes) -> FirstStart | None:
    """Creates the first admin (and a key) on an empty database; registers `server.bootstrap_key`.

    Returns what to tell the operator on the first start, None afterwards.
    """
    first: FirstStart | None = None
    admin_email = settings.admins[0] if settings.admins else DEFAULT_ADMIN
    admin = None
    if await store.count_users(engine=engine) == 0:
        with contextlib.suppress(InvalidRequest):  # another process, starting at the same time, made it
            admin = await store.create_user(
                engine=engine, email=admin_email, name="Administrator", is_admin=True
            )
    if admin is not None:
        key = None
        if settings.server.bootstrap_key is None:
            _, key = await store.create_key(
                engine=engine,
                secret=secret,
                owner_kind="user",
                owner_id=admin.id,
                name="first key",
                admin=True,
            )
        password = None
        if settings.portal.enabled and settings.portal.local_login:
            password = generate_password()
            await set_password(engine=engine, user_id=admin.id, password=password)
        first = FirstStart(admin=admin, key=key, password=password)
    if settings.server.bootstrap_key is not None:
        await _register_bootstrap_key(settings, engine=engine, secret=secret, admin_email=admin_email)
    return first


async def _register_bootstrap_key(
    settings: Settings, *, engine: AsyncEngine, secret: bytes, admin_email: str
) -> None:
    assert settings.server.bootstrap_key is not None
    plain = settings.server.bootstrap_key.get_secret_value()
    if not key_material.looks_like_a_key(plain):
        raise ValueError(
            "server.bootstrap_key must look like an API key: 'sk_' and 40 or more URL-safe characters"
        )
    digest = key_material.key_hash(secret, plain)
    async with engine.connect() as conn:
        exists = (await conn.execute(select(api_keys.c.id).where(api_keys.c.secret_hash == digest))).first()
    if exists:
        return
    try:
        admin = await store.find_user(engine=engine, email=admin_email)
    except NotFound:
        try:
            admin = await store.create_user(
                engine=engine, email=admin_email, name="Administrator", is_admin=True
            )
        except InvalidRequest:  # created by another process starting at the same time
            admin = await store.find_user(engine=engine, email=admin_email)
    # Replicas starting together may all get here; the key's unique hash lets one insert win.
    with contextlib.suppress(IntegrityError, InvalidRequest):
        await store.insert_key(
            engine=engine,
            secret_hash=digest,
            hint=key_material.hint(plain),
            owner_kind="user",
            owner_id=admin.id,
            name="bootstrap key (server.bootstrap_key)",
            admin=True,
        )
