"""What every service is given: who acts and from which face, and the instance they act on."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.admin import audit_log
from lumen.changes import ChangeBus
from lumen.identity.principal import Principal
from lumen.settings import Settings

if TYPE_CHECKING:
    from lumen.actions.coins import CoinCommand
    from lumen.billing.store import PoolView

Face = Literal["api", "portal", "cli"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change (written on the audit-log entry and on ledger rows) and through which face."""

    id: str
    """`user:<id>` for a person signed in to the API or portal; `cli:<login>` on the host."""
    name: str
    """Their email, or `<login>@<host>` for the CLI."""
    face: Face

    @classmethod
    def of(cls, principal: Principal, face: Face) -> Actor:
        return cls(id=principal.id, name=principal.name, face=face)

    @classmethod
    def cli(cls) -> Actor:
        """The person running `lumen` on the host (the operating system's login)."""
        login = getpass.getuser()
        return cls(id=f"cli:{login}", name=f"{login}@{socket.gethostname()}", face="cli")


class CoinDesk(Protocol):
    """Where coin commands are carried out: the bank that holds the balances."""

    async def run(self, command: CoinCommand, actor: str) -> PoolView: ...


@dataclass(frozen=True, slots=True)
class Services:
    """The instance a service acts on: its database, config, change bus and coin desk."""

    engine: AsyncEngine
    settings: Callable[[], Settings]
    changes: ChangeBus
    coins: CoinDesk

    async def audit(self, by: Actor, action: str, target: str, details: Mapping[str, Any]) -> None:
        await audit_log.record(
            engine=self.engine,
            actor_id=by.id,
            actor_name=by.name,
            face=by.face,
            action=action,
            target=target,
            details=details,
        )
