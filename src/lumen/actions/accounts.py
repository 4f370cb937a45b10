"""Disabling (and enabling) users and projects, and a user's administrator flag: their keys are
refused, or work again, in every process at once."""

from __future__ import annotations

from lumen.actions.context import Actor, Services
from lumen.changes import Change
from lumen.identity import store


async def set_user_flags(
    services: Services, user_id: int, *, by: Actor, disabled: bool | None = None, is_admin: bool | None = None
) -> store.User:
    """Sets what is given of `disabled` and `is_admin` (None leaves a flag as it is)."""
    user = await store.set_user_flags(
        engine=services.engine, user_id=user_id, disabled=disabled, is_admin=is_admin
    )
    await services.changes.publish(Change.KEYS, user.principal)
    given = {
        name: value for name, value in (("disabled", disabled), ("is_admin", is_admin)) if value is not None
    }
    await services.audit(by, "user.update", user.principal, given)
    return user


async def set_project_disabled(
    services: Services, project_id: int, disabled: bool, *, by: Actor
) -> store.Project:
    project = await store.set_project_disabled(
        engine=services.engine, project_id=project_id, disabled=disabled
    )
    await services.changes.publish(Change.KEYS, project.principal)
    await services.audit(by, "project.update", project.principal, {"disabled": disabled})
    return project
