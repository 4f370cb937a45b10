"""`lumen coins grant|set|reset|show|settings` and `lumen audit`: coins from the Lumen host.

Every command goes through the same service as the admin API's (`lumen.actions.coins`): the pool's
parameters come from its groups as on the request path (claim rules included), the ledger rows
and the audit log name the person running the command, and the balance printed is the one the
servers use. With `server.redis_url` the balances live in Redis and the command changes them
there; without Redis, a running server keeps them in its memory, so the command is handed to that
server, which carries it out and answers (`lumen.actions.commands`); with no server running it is
written to the database, where the server reads it when it starts.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import cast

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.actions.coins import CoinAction, CoinCommand, change_coins
from lumen.actions.context import Actor, Services
from lumen.billing.pools import NO_OVERRIDES, PoolOverrides
from lumen.billing.store import PoolView
from lumen.cli.common import (
    config_option,
    data_dir_option,
    echo_table,
    load,
    principal_of,
    with_database,
    with_services,
)
from lumen.settings import Settings
from lumen.usage.queries import StoredUsageRecord


def _principal_option(function: click.decorators.FC) -> click.decorators.FC:
    function = click.option("--project", "project_name", help="A project's pool (name).")(function)
    return click.option("--user", "user_email", help="A user's pool (email).")(function)


def _coins(micro: int | None) -> str:
    return "unlimited" if micro is None else f"{Decimal(micro) / 1_000_000:f}"


def _describe(view: PoolView) -> str:
    params = view.params
    own = " (own settings)" if view.overrides != NO_OVERRIDES else ""
    if params.state == "limited":
        terms = f"max {_coins(params.max_micro)}, refresh {_coins(params.refresh_micro)}/h{own}"
    else:
        terms = f"{params.state}{own}"
    return f"balance {_coins(view.balance_micro)} coins, reserved {_coins(view.reserved_micro)}; {terms}"


def _on_pool(
    settings: Settings,
    user_email: str | None,
    project_name: str | None,
    action: CoinAction,
    *,
    amount: Decimal | None = None,
    overrides: PoolOverrides | None = None,
) -> str:
    """Carries out `action` on the pool of the user or project and describes the pool after it,
    as the bank that holds it reports it."""
    from lumen.billing.config import coins_to_micro

    try:
        micro = None if amount is None else coins_to_micro(amount)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="AMOUNT") from exc

    async def work(services: Services) -> str:
        principal = await principal_of(services.engine, user_email, project_name)
        command = CoinCommand(principal, action, amount_micro=micro, overrides=overrides)
        view = await change_coins(services, command, by=Actor.cli())
        return f"{principal}: {_describe(view)}"

    if (user_email is None) == (project_name is None):
        raise click.UsageError("give exactly one of --user or --project")
    return with_services(settings, work)


@click.group()
def coins() -> None:
    """Coin balances of users and projects."""


@coins.command("show")
@_principal_option
@config_option
@data_dir_option
def coins_show(
    user_email: str | None, project_name: str | None, config: Path | None, data_dir: Path | None
) -> None:
    """Show a pool's balance (with the refill up to now)."""
    click.echo(_on_pool(load(config, **{"server.data_dir": data_dir}), user_email, project_name, "show"))


@coins.command("grant")
@click.argument("amount", type=Decimal)
@_principal_option
@config_option
@data_dir_option
def coins_grant(
    amount: Decimal,
    user_email: str | None,
    project_name: str | None,
    config: Path | None,
    data_dir: Path | None,
) -> None:
    """Add AMOUNT coins to a pool (a ledger row of kind grant)."""
    settings = load(config, **{"server.data_dir": data_dir})
    click.echo(_on_pool(settings, user_email, project_name, "grant", amount=amount))


@coins.command("set")
@click.argument("amount", type=Decimal)
@_principal_option
@config_option
@data_dir_option
def coins_set(
    amount: Decimal,
    user_email: str | None,
    project_name: str | None,
    config: Path | None,
    data_dir: Path | None,
) -> None:
    """Set a pool's balance to AMOUNT coins."""
    settings = load(config, **{"server.data_dir": data_dir})
    click.echo(_on_pool(settings, user_email, project_name, "set", amount=amount))


@coins.command("reset")
@_principal_option
@config_option
@data_dir_option
def coins_reset(
    user_email: str | None, project_name: str | None, config: Path | None, data_dir: Path | None
) -> None:
    """Put a pool back to its starting balance."""
    click.echo(_on_pool(load(config, **{"server.data_dir": data_dir}), user_email, project_name, "reset"))


@coins.command("settings")
@_principal_option
@click.option(
    "--state",
    type=click.Choice(["limited", "unlimited", "blocked"]),
    help="unlimited: never refused for coins; blocked: always refused.",
)
@click.option("--max", "max_", type=Decimal, help="The most coins the pool holds.")
@click.option("--refresh", type=Decimal, help="Coins credited per hour, continuously, up to --max.")
@click.option("--starting", type=Decimal, help="The balance of a new (or reset) pool.")
@click.option("--inherit", is_flag=True, help="Remove the pool's own settings: its groups decide again.")
@config_option
@data_dir_option
def coins_settings(
    user_email: str | None,
    project_name: str | None,
    state: str | None,
    max_: Decimal | None,
    refresh: Decimal | None,
    starting: Decimal | None,
    inherit: bool,
    config: Path | None,
    data_dir: Path | None,
) -> None:
    """Set a user's or project's own pool settings; what is left out is inherited from its groups
    and the default. The whole set is replaced: give every setting the pool should keep."""
    from lumen.billing.config import coins_to_micro
    from lumen.billing.pools import PoolStateName

    given = (state, max_, refresh, starting)
    if inherit == any(value is not None for value in given):
        raise click.UsageError("give --inherit alone, or at least one of --state/--max/--refresh/--starting")
    if (user_email is None) == (project_name is None):
        raise click.UsageError("give exactly one of --user or --project")
    settings = load(config, **{"server.data_dir": data_dir})

    def micro(value: Decimal | None, name: str) -> int | None:
        if value is None:
            return None
        try:
            return coins_to_micro(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=name) from exc

    overrides = PoolOverrides(
        state=cast(PoolStateName | None, state),  # click.Choice admits only the names
        max_micro=micro(max_, "--max"),
        refresh_micro=micro(refresh, "--refresh"),
        starting_micro=micro(starting, "--starting"),
    )

    click.echo(_on_pool(settings, user_email, project_name, "settings", overrides=overrides))


@click.command("audit")
@config_option
@data_dir_option
def audit_command(config: Path | None, data_dir: Path | None) -> None:
    """Recompute every balance from the ledger; exit non-zero on any difference. With Redis, also
    compare each live balance with the database (the movements still in the outbox counted)."""
    from lumen.billing.audit import audit_all

    settings = load(config, **{"server.data_dir": data_dir})
    redis_url = settings.server.redis_url

    async def work(engine: AsyncEngine) -> list[object]:
        result = await audit_all(
            engine,
            redis_url=redis_url.get_secret_value() if redis_url is not None else None,
            redis_prefix=settings.server.redis_prefix,
        )
        if result.live is not None:
            live = result.live
            click.echo(f"audit: {live.pools} pools in Redis, {live.outbox} movements in the ledger outbox")
        return result.discrepancies

    found = with_database(settings, work)
    if found:
        echo_table([{"difference": str(d)} for d in found])
        raise click.ClickException(f"{len(found)} balance(s) differ from the ledger")
    click.echo("audit: every balance equals its ledger; no discrepancies")


@click.command("usage")
@_principal_option
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@config_option
@data_dir_option
def usage_command(
    user_email: str | None, project_name: str | None, limit: int, config: Path | None, data_dir: Path | None
) -> None:
    """Recent requests (everyone's, or one user's or project's) and their totals."""
    from lumen.usage.queries import recent_usage

    settings = load(config, **{"server.data_dir": data_dir})

    async def work(engine: AsyncEngine) -> list[StoredUsageRecord]:
        principal = None
        if user_email is not None or project_name is not None:
            principal = await principal_of(engine, user_email, project_name)
        return list(await recent_usage(engine=engine, limit=limit, principal=principal))

    rows = with_database(settings, work)
    echo_table(
        [
            {
                "time": r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                "who": r.principal,
                "key": r.key_id or "-",
                "model": r.model,
                "status": r.status,
                "prompt": r.prompt_tokens,
                "completion": r.completion_tokens,
                "coins": _coins(r.cost_micro),
            }
            for r in rows
        ]
    )
    total = sum(r.cost_micro for r in rows)
    click.echo(f"{len(rows)} requests, {_coins(total)} coins")


COMMANDS = [coins, audit_command, usage_command]
