"""Everything that may refuse a call before a backend is asked, in one place and in order: model
access policy and the key's own model list, then rate limits. (Coin reservations join here.)

`admit()` returns a `Pass` that carries the response headers (`x-ratelimit-*`) and must be
closed exactly once with what the call used, whatever happened: success, error, disconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from lumen.access.resolver import AccessResolver
from lumen.identity.principal import Principal
from lumen.limits import Admission, Limiter, LimitResolver, tokens_to_reserve
from lumen.settings import Settings
from lumen.upstream.registry import Model

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Pass:
    headers: dict[str, str]
    _admission: Admission | None = None
    _closed: bool = False
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def close(self, usage: dict[str, Any] | None) -> None:
        """Gives back what the call did not use. Safe to call from a `finally` of a cancelled task."""
        if self._closed:
            return
        self._closed = True
        if self._admission is None:
            return
        used = int((usage or {}).get("total_tokens") or 0)
        task = asyncio.ensure_future(self._admission.release(used))
        self._tasks.add(task)  # a reference, so the release is not collected before it ran
        task.add_done_callback(self._tasks.discard)


class Gate:
    def __init__(self, limiter: Limiter, access: AccessResolver, settings: Callable[[], Settings]) -> None:
        self._limiter = limiter
        self._access = access
        self._settings = settings
        self._resolver: LimitResolver | None = None
        self._resolver_for: Settings | None = None

    def _limits_resolver(self) -> LimitResolver:
        settings = self._settings()
        if self._resolver is None or self._resolver_for is not settings:
            groups = {g.name: g.rate_limits for g in settings.groups if g.rate_limits is not None}
            self._resolver, self._resolver_for = LimitResolver(settings.rate_limits, groups), settings
        return self._resolver

    async def admit(
        self, principal: Principal, model: Model, *, op: str, prompt_estimate: int, body: dict[str, Any]
    ) -> Pass:
        view = await self._access.resolve(principal.id, principal.groups)
        view.require(
            model.name,
            acknowledge_url=acknowledge_url(self._settings(), model.name),
            key_models=principal.models,
        )
        limits = self._limits_resolver().resolve(principal.groups, None, model.name)
        reserve = tokens_to_reserve(
            prompt_estimate,
            0 if op == "embeddings" else _output_cap(body),
            model_max_output=model.settings.capabilities.max_output_tokens,
            n=_choices(body),
        )
        admission = await self._limiter.check_and_acquire(
            limits, principal=principal.id, model=model.name, key_id=principal.key_id, tokens=reserve
        )
        return Pass(headers=admission.headers, _admission=admission)

    async def aclose(self) -> None:
        await self._limiter.aclose()


def acknowledge_url(settings: Settings, model: str) -> str:
    """Where a person reads and acknowledges a model's notice (the portal's model page)."""
    return f"{settings.public_url}/models/{quote(model, safe='')}"


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _output_cap(body: dict[str, Any]) -> int | None:
    for field_name in ("max_completion_tokens", "max_tokens"):
        value = body.get(field_name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
