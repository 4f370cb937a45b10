"""`lumen users`, `lumen projects`, `lumen keys`: administering an instance from its host.

They work on the instance's database, so they need the same `--config` / `--data-dir` as
`lumen serve`. Revocations and disabled accounts go through the same services as the admin API's
(`lumen.actions`): audited, and seen by running servers at once with Redis (`server.redis_url`),
otherwise within half a second (they poll the change log).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.actions import accounts
from lumen.actions import keys as key_actions
from lumen.actions.context import Actor, Services
from lumen.billing.config import coins_to_micro
from lumen.cli.common import (
    config_option,
    data_dir_option,
    echo_table,
    load,
    secret_of,
    with_database,
    with_services,
)
from lumen.errors import InvalidRequest
from lumen.identity import store
from lumen.identity.passwords import check_password_rules, set_password
from lumen.identity.sessions import delete_user_sessions


@click.group()
def users() -> None:
    """People who use Lumen."""


@users.command("create")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@config_option
@data_dir_option
def users_create(email: str, name: str, admin: bool, config: Path | None, data_dir: Path | None) -> None:
    """Create a user."""
    settings = load(config, **{"server.data_dir": data_dir})

    async def work(engine: AsyncEngine) -> store.User:
        return await store.create_user(engine=engine, email=email, name=name, is_admin=admin)

    user = with_database(settings, work)
    click.echo(f"created user {user.email} (id {user.id}{', administrator' if user.is_admin else ''})")


@users.command("disable")
@click.argument("email")
@click.option("--enable", is_flag=True, help="Enable the user again instead.")
@config_option
@data_dir_option
def users_disable(email: str, enable: bool, config: Path | None, data_dir: Path | None) -> None:
    """Disable (or re-enable) a user: their keys stop working."""
    settings = load(config, **{"server.data_dir": data_dir})

    async def work(services: Services) -> store.User:
        user = await store.find_user(engine=services.engine, email=email)
        return await accounts.set_user_flags(services, user.id, by=Actor.cli(), disabled=not enable)

    user = with_services(settings, work)
    click.echo(f"{user.email} is {'disabled' if user.disabled else 'enabled'}")


@users.command("set-password")
@click.argument("email")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of standard input."
)
@config_option
@data_dir_option
def users_set_password(email: str, password_stdin: bool, config: Path | None, data_dir: Path | None) -> None:
    """Set a user's password for the portal's local login; ends their portal sessions."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_password_rules(password)
    except InvalidRequest as exc:
        raise click.ClickException(exc.message) from exc
    settings = load(config, **{"server.data_dir": data_dir})

    async def work(engine: AsyncEngine) -> tuple[store.User, int]:
        user = await store.find_user(engine=engine, email=email)
        await set_password(engine=engine, user_id=user.id, password=password)
        return user, await delete_user_sessions(engine=engine, user_id=user.id)

    user, ended = with_database(settings, work)
    click.echo(f"password set for {user.email}; {ended} portal session(s) ended")


@click.group()
def projects() -> None:
    """Projects: service accounts with an owner and managers."""


@projects.command("create")
@click.argument("name")
@click.option("--owner", required=True, help="Email of the owning user.")
@click.option("--description", default="")
@config_option
@data_dir_option
def projects_create(
    name: str, owner: str, description: str, config: Path | None, data_dir: Path | None
) -> None:
    """Create a project owned (and managed) by a user."""
    settings = load(config, **{"server.data_dir": data_dir})

    async def work(engine: AsyncEngine) -> store.Project:
        user = await store.find_user(engine=engine, email=owner)
        return await store.create_project(engine=engine, name=name, owner_id=user.id, description=description)

    project = with_database(settings, work)
    click.echo(f"created project {project.name} (id {project.id}, owner {owner})")


@click.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--user", "user_email", help="Create the key for this user (email).")
@click.option("--project", "project_name", help="Create the key for this project (name).")
@click.option("--name", default="", help="A name to recognise the key by.")
@click.option(
    "--expires",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Expiry date (UTC), e.g. 2027-06-30.",
)
@click.option("--models", help="Comma-separated models the key may use (default: all the owner may use).")
@click.option("--coin-cap", type=Decimal, help="Most coins this key may ever spend.")
@click.option(
    "--admin",
    is_flag=True,
    help="An admin key, for the admin API: only for an administrator, never limited to some models.",
)
@config_option
@data_dir_option
def keys_create(
    user_email: str | None,
    project_name: str | None,
    name: str,
    expires: datetime | None,
    models: str | None,
    coin_cap: Decimal | None,
    admin: bool,
    config: Path | None,
    data_dir: Path | None,
) -> None:
    """Create an API key. The key is printed alone on the last line, once."""
    if (user_email is None) == (project_name is None):
        raise click.UsageError("give exactly one of --user or --project")
    settings = load(config, **{"server.data_dir": data_dir})
    secret = secret_of(settings)
    model_list = [m.strip() for m in models.split(",") if m.strip()] if models else None

    async def work(engine: AsyncEngine) -> tuple[store.ApiKey, str]:
        if user_email is not None:
            user = await store.find_user(engine=engine, email=user_email)
            kind, owner_id = "user", user.id
            if admin and not store.administers(
                is_admin=user.is_admin, email=user.email, admins=settings.admins
            ):
                raise click.ClickException(f"{user.email} is not an administrator: an admin key needs one")
        else:
            assert project_name is not None
            kind, owner_id = "project", (await store.find_project(engine=engine, name=project_name)).id
        return await store.create_key(
            engine=engine,
            secret=secret,
            owner_kind=kind,
            owner_id=owner_id,
            name=name,
            expires_at=expires.replace(tzinfo=UTC) if expires else None,
            models=model_list,
            coin_cap_micro=None if coin_cap is None else coins_to_micro(coin_cap),
            admin=admin,
        )

    key, plain = with_database(settings, work)
    kind = "admin key" if key.admin else "key"
    click.echo(
        f"created {kind} {key.id} ({key.hint}) for {user_email or project_name}; it is shown only now:",
        err=True,
    )
    click.echo(plain)


@keys.command("revoke")
@click.argument("key_id")
@config_option
@data_dir_option
def keys_revoke(key_id: str, config: Path | None, data_dir: Path | None) -> None:
    """Revoke a key by its id (key_...). Its usage history is kept."""
    settings = load(config, **{"server.data_dir": data_dir})

    async def work(services: Services) -> store.ApiKey:
        return await key_actions.revoke_key(services, key_id, by=Actor.cli())

    key = with_services(settings, work)
    click.echo(f"revoked {key.id} ({key.hint})")


@keys.command("list")
@click.option("--user", "user_email")
@click.option("--project", "project_name")
@config_option
@data_dir_option
def keys_list(
    user_email: str | None, project_name: str | None, config: Path | None, data_dir: Path | None
) -> None:
    """List a user's or a project's keys."""
    if (user_email is None) == (project_name is None):
        raise click.UsageError("give exactly one of --user or --project")
    settings = load(config, **{"server.data_dir": data_dir})

    async def work(engine: AsyncEngine) -> list[store.ApiKey]:
        if user_email is not None:
            return await store.list_keys(
                engine=engine,
                owner_kind="user",
                owner_id=(await store.find_user(engine=engine, email=user_email)).id,
            )
        assert project_name is not None
        project = await store.find_project(engine=engine, name=project_name)
        return await store.list_keys(engine=engine, owner_kind="project", owner_id=project.id)

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "-"

    echo_table(
        [
            {
                "id": k.id,
                "name": k.name,
                "hint": k.hint,
                "created": when(k.created_at),
                "last used": when(k.last_used_at),
                "expires": when(k.expires_at),
                "revoked": when(k.revoked_at),
                "admin": "yes" if k.admin else "",
            }
            for k in with_database(settings, work)
        ]
    )


COMMANDS = [users, projects, keys]
