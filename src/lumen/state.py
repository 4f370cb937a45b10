"""Everything a running Lumen holds, built in the app's lifespan and reached through the request."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from lumen.access.resolver import AccessResolver
from lumen.actions import commands
from lumen.actions.faces import server_services
from lumen.billing.bank import CoinBank
from lumen.changes import Change, ChangeBus, Heartbeat
from lumen.gateway.admission import Gate
from lumen.gateway.pipeline import Pipeline
from lumen.identity.auth import KeyAuthenticator
from lumen.identity.principal import Principal
from lumen.ops.metrics import Metrics
from lumen.settings import Settings
from lumen.upstream.registry import Registry
from lumen.usage.recorder import UsageRecorder

log = logging.getLogger(__name__)


@dataclass(eq=False)
class AppState:
    settings: Settings
    registry: Registry
    pipeline: Pipeline
    """Every model call goes through it (admission, lease, relay, settlement)."""
    gate: Gate
    bank: CoinBank
    access: AccessResolver
    metrics: Metrics
    authenticator: KeyAuthenticator
    recorder: UsageRecorder
    engine: AsyncEngine
    session: aiohttp.ClientSession
    config_path: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    changes: ChangeBus = field(init=False)
    """Set right after construction: it applies changes to this state."""
    heartbeat: Heartbeat = field(init=False)
    """Set once the change bus is: this process's row in `process_heartbeats`."""

    async def authenticate(self, authorization: str | None) -> Principal:
        return await self.authenticator.authenticate(authorization)

    async def apply(self, settings: Settings) -> None:
        """Installs a reloaded config: models, endpoints, prices and routing change at once."""
        if settings.server != self.settings.server:
            log.warning("config reload: changes to `server` take effect only after a restart")
            settings = settings.model_copy(update={"server": self.settings.server})
        retired = self.registry.apply(settings)
        self.settings = settings
        configure_access(self.access, settings)
        self.authenticator.invalidate()  # principals carry their groups and admin flag
        self.bank.configure(settings.billing)
        for backend in retired:
            await backend.aclose()
        log.info("config reloaded: %d models", len(settings.models))

    def cache_seconds(self) -> float:
        """How long cached keys and access decisions are trusted: long while other processes'
        changes reach this one (pushed through Redis, or polled from the change log), short
        otherwise."""
        server = self.settings.server
        return server.redis_cache_seconds if self.changes.live else server.auth_cache_seconds

    async def apply_change(self, change: Change, principal: str | None) -> None:
        """Drops what `change` makes stale in this process's caches; carries out a coin command
        when this process holds the balances (no Redis)."""
        if change is Change.COINS:
            if principal is not None and principal.isdigit() and self.settings.server.redis_url is None:
                await commands.execute(self.engine, int(principal), server_services(self).coins)
            return
        if change in (Change.KEYS, Change.ALL):
            self.authenticator.invalidate()
        if change in (Change.ACCESS, Change.ALL):
            self.access.invalidate(principal if change is Change.ACCESS else None)
        if change in (Change.LIMITS, Change.ALL):
            await self.gate.reload_limit_overrides(self.engine)


def configure_access(resolver: AccessResolver, settings: Settings) -> None:
    groups = {g.name: g.access for g in settings.groups if g.access is not None}
    resolver.configure(models=settings.models, groups=groups, settings=settings.access)
    resolver.invalidate()


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.lumen
    return state
