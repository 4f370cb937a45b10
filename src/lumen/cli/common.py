"""What the commands share: loading the config, and running against the instance's database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import LumenError
from lumen.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from lumen.actions.context import Services

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML config file (default: the embedded default).",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the database and generated secrets (default ./lumen-data).",
)


def principal_options(function: click.decorators.FC) -> click.decorators.FC:
    """`--user EMAIL` or `--project NAME`: exactly one is required (checked by `principal_of`)."""
    function = click.option("--project", "project_name", help="A project (name).")(function)
    return click.option("--user", "user_email", help="A user (email).")(function)


async def principal_of(engine: AsyncEngine, user_email: str | None, project_name: str | None) -> str:
    """`user:<id>` or `project:<id>` of the user or project named on the command line."""
    from lumen.identity import store

    if (user_email is None) == (project_name is None):
        raise click.UsageError("give exactly one of --user or --project")
    if user_email is not None:
        return (await store.find_user(engine=engine, email=user_email)).principal
    assert project_name is not None
    return (await store.find_project(engine=engine, name=project_name)).principal


def load(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, overrides={k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def secret_of(settings: Settings) -> bytes:
    from lumen.identity.secret import load_or_create_secret

    configured = settings.server.secret_key
    return (
        configured.get_secret_value().encode()
        if configured
        else load_or_create_secret(settings.server.data_dir)
    )


def with_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Runs `work` against the instance's (migrated) database; Lumen errors become CLI errors."""
    from lumen.store.engine import create_engine, prepare_data_dir
    from lumen.store.migrate import upgrade_database

    async def run() -> T:
        prepare_data_dir(settings.server.data_dir)
        await upgrade_database(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except LumenError as exc:
        raise click.ClickException(exc.message) from exc


def with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Runs `work` with the instance's services (`lumen.actions`): what it changes is audited
    (actor `cli:<login>`, face `cli`) and reaches running servers, with Redis or without."""
    from lumen.actions.faces import cli_services

    async def run(engine: AsyncEngine) -> T:
        async with cli_services(settings, engine) as services:
            return await work(services)

    return with_database(settings, run)


def echo_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("(none)")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
