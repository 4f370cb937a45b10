"""Revoking an API key: by its owner (portal), a project's manager (portal), an administrator
(admin API) or on the host (CLI). Every revocation is audited, whoever makes it."""

from __future__ import annotations

from lumen.actions.context import Actor, Services
from lumen.changes import Change
from lumen.identity import store


async def revoke_key(services: Services, key_id: str, *, by: Actor) -> store.ApiKey:
    """Marks the key revoked (idempotent: its usage history is kept); every process refuses it
    from now on. Whether `by` may revoke this key is the face's check."""
    key = await store.revoke_key(engine=services.engine, key_id=key_id)
    await services.changes.publish(Change.KEYS, key.principal)
    await services.audit(by, "key.revoke", f"key:{key.id}", {"owner": key.principal, "name": key.name})
    return key
