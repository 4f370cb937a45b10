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
from lumen.api.gate import Gate
from lumen.api.proxy import Proxy
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
    proxy: Proxy
    gate: Gate
    access: AccessResolver
    metrics: Metrics
    authenticator: KeyAuthenticator
    recorder: UsageRecorder
    engine: AsyncEngine
    session: aiohttp.ClientSession
    config_path: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

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
        self.gate.bank.configure(settings.billing)
        for backend in retired:
            await backend.aclose()
        log.info("config reloaded: %d models", len(settings.models))


def configure_access(resolver: AccessResolver, settings: Settings) -> None:
    groups = {g.name: g.access for g in settings.groups if g.access is not None}
    resolver.configure(models=settings.models, groups=groups, settings=settings.access)
    resolver.invalidate()


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.lumen
    return state
