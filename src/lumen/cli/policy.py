"""`lumen access` and `lumen limits`: a user's or project's own model access rule and rate limits,
from the Lumen host — the same operations as `PUT /api/admin/access` and `/api/admin/rate-limits`.

The change goes through the same services as the admin API's (`lumen.actions.policy`): audited,
and announced to every running process, at once with `server.redis_url` set, otherwise within
half a second (servers without Redis poll the change log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.actions.context import Actor, Services
from lumen.actions.policy import set_access_rule, set_rate_limits
from lumen.cli.common import (
    config_option,
    data_dir_option,
    load,
    principal_of,
    principal_options,
    with_database,
    with_services,
)


@click.group()
def access() -> None:
    """Model access rules of single users and projects (groups and models are set in the config)."""


@access.command("show")
@principal_options
@config_option
@data_dir_option
def access_show(
    user_email: str | None, project_name: str | None, config: Path | None, data_dir: Path | None
) -> None:
    """Show the user's or project's own rule and acknowledgements."""
    from lumen.access import store

    settings = load(config, **{"server.data_dir": data_dir})

    async def work(engine: AsyncEngine) -> str:
        principal = await principal_of(engine, user_email, project_name)
        stored = await store.load_principal(engine=engine, principal=principal)
        rule = stored.rule.model_dump(mode="json", exclude_defaults=True) if stored.rule else {}
        acks = [
            {"model": a.model, "at": a.acknowledged_at.isoformat(), "by": a.acknowledged_by, "via": a.via}
            for a in stored.acknowledgements
        ]
        return _yaml({"principal": principal, "rule": rule, "acknowledgements": acks})

    click.echo(with_database(settings, work), nl=False)


@access.command("set")
@principal_options
@click.option(
    "--default",
    "default",
    type=click.Choice(["allowed", "blocked"]),
    help="Models that no rule and no model setting decides.",
)
@click.option("--allow", "allow", multiple=True, help="A model (or pattern) to allow; repeatable.")
@click.option("--block", "block", multiple=True, help="A model (or pattern) to block; repeatable.")
@config_option
@data_dir_option
def access_set(
    user_email: str | None,
    project_name: str | None,
    default: str | None,
    allow: tuple[str, ...],
    block: tuple[str, ...],
    config: Path | None,
    data_dir: Path | None,
) -> None:
    """Replace the user's or project's own rule (no option: remove it, so groups decide)."""
    from lumen.access.config import EntityAccess

    settings = load(config, **{"server.data_dir": data_dir})
    try:
        rule = EntityAccess.model_validate({"default": default, "allow": allow, "block": block})
    except ValidationError as exc:
        raise click.BadParameter(_first_error(exc)) from exc

    async def work(services: Services) -> str:
        principal = await principal_of(services.engine, user_email, project_name)
        await set_access_rule(services, principal, rule, by=Actor.cli())
        return principal

    principal = with_services(settings, work)
    click.echo(f"{principal}: access rule {'removed' if rule == EntityAccess() else 'set'}")


@click.group()
def limits() -> None:
    """Rate limits of single users and projects (defaults and groups are set in the config)."""


@limits.command("show")
@principal_options
@config_option
@data_dir_option
def limits_show(
    user_email: str | None, project_name: str | None, config: Path | None, data_dir: Path | None
) -> None:
    """Show the user's or project's own rate limits (what they leave out is inherited)."""
    from lumen.limits.store import all_overrides

    settings = load(config, **{"server.data_dir": data_dir})

    async def work(engine: AsyncEngine) -> str:
        principal = await principal_of(engine, user_email, project_name)
        own = (await all_overrides(engine=engine)).get(principal)
        stored = own.model_dump(mode="json", exclude_unset=True) if own is not None else {}
        return _yaml({"principal": principal, "limits": stored})

    click.echo(with_database(settings, work), nl=False)


@limits.command("set")
@principal_options
@click.option("--rpm", help="Requests per minute of the user or project (all keys), or 'unlimited'.")
@click.option("--tpm", help="Tokens per minute of the user or project (all keys), or 'unlimited'.")
@click.option("--concurrent", help="Requests in flight of the user or project (all keys), or 'unlimited'.")
@click.option(
    "--yaml",
    "document",
    help="The whole override as YAML or JSON, shaped like a group's `rate_limits` in the config "
    "(key, principal, model, models); cannot be combined with --rpm/--tpm/--concurrent.",
)
@config_option
@data_dir_option
def limits_set(
    user_email: str | None,
    project_name: str | None,
    rpm: str | None,
    tpm: str | None,
    concurrent: str | None,
    document: str | None,
    config: Path | None,
    data_dir: Path | None,
) -> None:
    """Replace the user's or project's own rate limits (no option: remove them)."""
    from lumen.limits.config import LimitSettings

    settings = load(config, **{"server.data_dir": data_dir})
    scope = {name: value for name, value in (("rpm", rpm), ("tpm", tpm), ("concurrent", concurrent)) if value}
    if document is not None and scope:
        raise click.UsageError("give either --yaml or --rpm/--tpm/--concurrent, not both")
    raw: Any = {"principal": scope} if scope else {}
    if document is not None:
        try:
            raw = yaml.safe_load(document) or {}
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"not valid YAML: {exc}", param_hint="--yaml") from exc
    try:
        overrides = LimitSettings.model_validate(raw)
    except ValidationError as exc:
        raise click.BadParameter(_first_error(exc)) from exc

    async def work(services: Services) -> str:
        principal = await principal_of(services.engine, user_email, project_name)
        await set_rate_limits(services, principal, overrides, by=Actor.cli())
        return principal

    principal = with_services(settings, work)
    click.echo(f"{principal}: rate limits {'set' if overrides.model_fields_set else 'removed'}")


def _yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


COMMANDS = (access, limits)
