"""Coins: grants, sets, resets and a pool's own settings, and reading a pool (`show`).

A command runs on the bank that holds the balances (`CoinDesk`): in a server, its own bank; in the
CLI with Redis, a bank over the shared Redis store; in the CLI without Redis while a server runs,
that server's bank (`lumen.actions.commands`), because its memory is where the balances live;
without a running server, a bank over the database. Wherever it runs, the pool's parameters come
from the same groups (`lumen.identity.groups.principal_groups`, claims included) as on the request
path, and the ledger rows name the person who acted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.actions.context import Actor, Services
from lumen.billing.bank import CoinBank
from lumen.billing.config import pool_resolver
from lumen.billing.pools import MAX_AMOUNT_MICRO, MICRO, PoolOverrides, PoolParams
from lumen.billing.store import PoolView
from lumen.errors import InvalidRequest
from lumen.identity.groups import principal_groups
from lumen.settings import Settings

CoinAction = Literal["show", "grant", "set", "reset", "settings"]
ParamsOf = Callable[[tuple[str, ...]], PoolParams]


@dataclass(frozen=True, slots=True)
class CoinCommand:
    principal: str
    """The pool: `user:<id>` or `project:<id>`."""
    action: CoinAction
    amount_micro: int | None = None
    """For `grant` (at least one micro-coin) and `set`."""
    overrides: PoolOverrides | None = None
    """For `settings`: the pool's own settings (None fields inherit)."""
    note: str | None = None

    def check(self) -> None:
        """Refuses a command the bank would refuse, with an error that names the amount."""
        if self.action in ("grant", "set"):
            if self.amount_micro is None:
                raise InvalidRequest(f"'{self.action}' needs an amount of coins.", param="amount")
            lowest = 1 if self.action == "grant" else 0
            if not lowest <= self.amount_micro <= MAX_AMOUNT_MICRO:
                highest = coins_text(MAX_AMOUNT_MICRO)
                raise InvalidRequest(
                    f"The amount must be between {coins_text(lowest)} and {highest} coins.", param="amount"
                )
        if self.action == "settings" and self.overrides is None:
            raise InvalidRequest("'settings' needs the pool's settings.", param="settings")

    def details(self) -> dict[str, Any]:
        """What the audit log keeps of the command."""
        if self.action == "settings":
            own = self.overrides
            assert own is not None
            amounts = {"max": own.max_micro, "refresh": own.refresh_micro, "starting": own.starting_micro}
            state = {"state": own.state} if own.state is not None else {}
            return state | {k: coins_text(v) for k, v in amounts.items() if v is not None}
        found: dict[str, Any] = {}
        if self.amount_micro is not None:
            found["amount"] = coins_text(self.amount_micro)
        if self.note is not None:
            found["note"] = self.note
        return found


def coins_text(micro: int) -> str:
    """Micro-coins as a plain decimal: 2500000 -> "2.5"."""
    return f"{(Decimal(micro) / MICRO).normalize():f}"


def inherited_pool(settings: Settings) -> ParamsOf:
    """The pool parameters a set of groups gives, for this config (what `Gate.pool_params` does
    for a server)."""
    return pool_resolver(settings.billing, {g.name: g.pool for g in settings.groups}).inherited


class LocalCoins:
    """A `CoinDesk` over a bank in this process."""

    def __init__(
        self, bank: CoinBank, engine: AsyncEngine, settings: Callable[[], Settings], params_of: ParamsOf
    ) -> None:
        self.bank = bank
        self._engine = engine
        self._settings = settings
        self._params_of = params_of

    async def params(self, principal: str) -> PoolParams:
        groups = await principal_groups(
            engine=self._engine, groups=self._settings().groups, principal=principal
        )
        return self._params_of(groups)

    async def run(self, command: CoinCommand, actor: str) -> PoolView:
        command.check()
        bank, principal, note = self.bank, command.principal, command.note
        params = await self.params(principal)
        if command.action == "grant":
            assert command.amount_micro is not None
            await bank.grant(principal, command.amount_micro, params=params, actor=actor, note=note)
        elif command.action == "set":
            assert command.amount_micro is not None
            await bank.set_balance(principal, command.amount_micro, params=params, actor=actor, note=note)
        elif command.action == "reset":
            await bank.reset(principal, params=params, actor=actor, note=note)
        elif command.action == "settings":
            assert command.overrides is not None
            return await bank.set_pool_settings(principal, command.overrides, params=params)
        return await bank.balance(principal, params=params)


async def change_coins(services: Services, command: CoinCommand, *, by: Actor) -> PoolView:
    """Carries out `command` where the balances live and returns the pool as that bank has it
    then; every change (not `show`) leaves an audit-log entry."""
    command.check()
    view = await services.coins.run(command, by.id)
    if command.action != "show":
        await services.audit(by, f"coins.{command.action}", command.principal, command.details())
    return view
