"""A user's or project's own model access rule and rate limits (what groups and the config give
everyone else is set in the config file)."""

from __future__ import annotations

from lumen.access import store as access_store
from lumen.access.config import EntityAccess
from lumen.actions.context import Actor, Services
from lumen.changes import Change
from lumen.limits.config import LimitSettings
from lumen.limits.store import set_override


async def set_access_rule(services: Services, principal: str, rule: EntityAccess, *, by: Actor) -> None:
    """Replaces the principal's own rule (an empty rule removes it: its groups decide again)."""
    await access_store.set_rule(engine=services.engine, principal=principal, rule=rule, actor=by.id)
    await services.changes.publish(Change.ACCESS, principal)
    await services.audit(by, "access.set", principal, rule.model_dump(mode="json", exclude_unset=True))


async def set_rate_limits(services: Services, principal: str, limits: LimitSettings, *, by: Actor) -> None:
    """Replaces the principal's own rate limits; fields left out are inherited, none removes them."""
    await set_override(engine=services.engine, principal=principal, limits=limits, actor=by.id)
    await services.changes.publish(Change.LIMITS, principal)
    await services.audit(by, "limits.set", principal, limits.model_dump(mode="json", exclude_unset=True))
