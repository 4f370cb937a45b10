"""The `Services` of each face: a serving process's own (admin API, portal, coin commands), and
the `lumen` command's on the host."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.actions.coins import CoinCommand, LocalCoins, inherited_pool
from lumen.actions.commands import ServerCoins
from lumen.actions.context import CoinDesk, Services
from lumen.billing.bank import CoinBank
from lumen.billing.store import PoolView
from lumen.changes import Change, ChangeBus, ChangeLog, local_server_runs
from lumen.errors import LumenError
from lumen.settings import Settings

if TYPE_CHECKING:
    from lumen.state import AppState


def server_services(state: AppState) -> Services:
    """A serving process changes state with its own bank and change bus."""
    return Services(
        engine=state.engine,
        settings=lambda: state.settings,
        changes=state.changes,
        coins=LocalCoins(state.bank, state.engine, lambda: state.settings, state.gate.pool_params),
    )


class CliCoins:
    """The CLI's `CoinDesk`, chosen at the first command: with Redis, a bank over the shared Redis
    store (servers see its changes at once); without Redis, the running server that holds the
    balances if there is one, else a bank over the database (read by servers when they start)."""

    def __init__(self, settings: Settings, engine: AsyncEngine, changes: ChangeBus) -> None:
        self._settings = settings
        self._engine = engine
        self._changes = changes
        self._desk: CoinDesk | None = None
        self._bank: CoinBank | None = None

    async def run(self, command: CoinCommand, actor: str) -> PoolView:
        if self._desk is None:
            self._desk = await self._choose()
        return await self._desk.run(command, actor)

    async def _choose(self) -> CoinDesk:
        settings = self._settings
        if settings.server.redis_url is None and await local_server_runs(self._engine):
            return ServerCoins(self._engine, self._changes)
        from lumen.app import pool_store  # the server's choice of store, made the same way

        self._bank = CoinBank.from_settings(settings.billing, pool_store(settings), self._engine)
        await self._bank.start()
        return LocalCoins(self._bank, self._engine, lambda: settings, inherited_pool(settings))

    async def aclose(self) -> None:
        if self._bank is not None:
            await self._bank.aclose()  # writes the ledger rows of what this command did


async def _nothing_cached_here(change: Change, principal: str | None) -> None:
    return None


class ChangeNotApplied(LumenError):
    status = 503
    code = "change_not_applied"


@contextlib.asynccontextmanager
async def cli_services(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Services]:
    """The services of one `lumen` command: changes go to the change log (which servers without
    Redis poll) and, with Redis, to every process by push. Without Redis the command ends only
    once every running server has applied its changes."""
    url = settings.server.redis_url
    change_log = ChangeLog(engine)
    changes = ChangeBus(
        _nothing_cached_here,
        redis=Redis.from_url(url.get_secret_value()) if url is not None else None,
        channel=settings.server.redis_prefix + "changes",
        log=change_log,
    )
    coins = CliCoins(settings, engine, changes)
    try:
        yield Services(engine=engine, settings=lambda: settings, changes=changes, coins=coins)
    finally:
        await coins.aclose()
        await changes.aclose()
    if url is None and changes.last_logged and not await change_log.wait_read(changes.last_logged):
        raise ChangeNotApplied(
            "The change is stored, but a running Lumen server has not applied it yet; "
            "it does when it next reads the change log (is it overloaded or stopping?)."
        )
