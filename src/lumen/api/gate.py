"""Everything that may refuse a call before a backend is asked, in one place and in order: model
access policy and the key's own model list, rate limits, then the coin reservation of the call's
worst-case cost.

`admit()` returns a `Pass` that carries the response headers (`x-ratelimit-*`) and must be
closed exactly once with what the call used, whatever happened: success, error, disconnect.
Closing settles the coins at the real cost and gives back unused rate-limit tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.access.resolver import AccessResolver
from lumen.billing.bank import CoinBank, Reservation
from lumen.billing.config import pool_resolver
from lumen.billing.pools import PoolParams, PoolResolver
from lumen.billing.prices import cost_micro, worst_case_micro
from lumen.identity.principal import Principal
from lumen.limits import Admission, EffectiveLimits, Limiter, LimitResolver, LimitSettings, tokens_to_reserve
from lumen.limits.store import all_overrides
from lumen.settings import Price, Settings
from lumen.upstream.registry import Model

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Pass:
    headers: dict[str, str]
    price: Price
    _admission: Admission | None = None
    _reservations: tuple[Reservation, ...] = ()
    _bank: CoinBank | None = None
    _pending: set[asyncio.Future[None]] | None = None
    _closed: bool = False
    _settling: asyncio.Future[None] | None = None
    _gate: Gate | None = None

    def close(self, usage: dict[str, Any] | None) -> int:
        """Settles what the call used and returns its cost in micro-coins. Safe to call from a
        `finally` of a cancelled task; only the first call counts."""
        if self._closed:
            return 0
        self._closed = True
        if self._gate is not None:
            self._gate.closed += 1
        usage = usage or {}
        prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        cost = cost_micro(self.price, prompt, completion)
        if self._admission is not None or self._reservations:
            # A task of its own, so the settlement runs to its end even when the request's task is
            # being cancelled; the gate keeps a reference until it is done.
            task = self._settling = asyncio.ensure_future(self._settle(prompt + completion, cost))
            if self._pending is not None:
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        return cost

    async def settled(self) -> None:
        """Waits until a closed pass's coins are settled, so a balance read next is current."""
        if self._settling is not None:
            await asyncio.shield(self._settling)

    async def _settle(self, tokens: int, cost: int) -> None:
        # One task for both, not one each: a task is a large part of a fast request's cost.
        try:
            if self._admission is not None:
                await self._admission.release(tokens)
        finally:
            if self._bank is not None:
                for reservation in self._reservations:
                    await self._bank.settle(reservation, cost)


class Gate:
    def __init__(
        self, limiter: Limiter, access: AccessResolver, bank: CoinBank, settings: Callable[[], Settings]
    ) -> None:
        self._limiter = limiter
        self._access = access
        self.bank = bank
        self._pending: set[asyncio.Future[None]] = set()
        self._limit_overrides: dict[str, LimitSettings] = {}
        self._pools: PoolResolver | None = None
        self._pools_for: Settings | None = None
        self._settings = settings
        self._resolver: LimitResolver | None = None
        self._resolver_for: Settings | None = None
        # Both only grow; their difference is the number of admitted requests still open.
        self.admitted = 0
        self.closed = 0

    @property
    def holding(self) -> int:
        """Requests holding a rate-limit admission and coin reservations right now."""
        return self.admitted - self.closed

    @property
    def settling(self) -> int:
        """Settlements (coins, tokens) started and not yet finished."""
        return len(self._pending)

    def pool_params(self, groups: tuple[str, ...]) -> PoolParams:
        """The coin pool parameters a principal inherits from its groups and the default."""
        settings = self._settings()
        if self._pools is None or self._pools_for is not settings:
            self._pools = pool_resolver(settings.billing, {g.name: g.pool for g in settings.groups})
            self._pools_for = settings
        return self._pools.inherited(groups)

    async def reload_limit_overrides(self, engine: AsyncEngine) -> None:
        self._limit_overrides = await all_overrides(engine=engine)

    def _limits_resolver(self) -> LimitResolver:
        settings = self._settings()
        if self._resolver is None or self._resolver_for is not settings:
            groups = {g.name: g.rate_limits for g in settings.groups if g.rate_limits is not None}
            self._resolver, self._resolver_for = LimitResolver(settings.rate_limits, groups), settings
        return self._resolver

    async def admit(
        self,
        principal: Principal,
        model: Model,
        *,
        op: str,
        prompt_estimate: int,
        body: dict[str, Any],
        request_id: str,
    ) -> Pass:
        view = await self._access.resolve(principal.id, principal.groups)
        view.require(
            model.name,
            acknowledge_url=acknowledge_url(self._settings(), model.name),
            key_models=principal.models,
        )
        own = self._limit_overrides.get(principal.id)
        limits = self._limits_resolver().resolve(principal.groups, own, model.name)
        reserve = tokens_to_reserve(
            prompt_estimate,
            0 if op == "embeddings" else _output_cap(body),
            model_max_output=model.settings.capabilities.max_output_tokens,
            n=_choices(body),
        )
        admission = await self._limiter.check_and_acquire(
            limits, principal=principal.id, model=model.name, key_id=principal.key_id, tokens=reserve
        )
        gate_pass = Pass(
            headers=admission.headers,
            price=model.settings.price,
            _admission=admission,
            _pending=self._pending,
        )
        try:
            gate_pass._reservations = await self._reserve(
                principal, model, op, prompt_estimate, body, request_id
            )
        except BaseException:
            gate_pass.close(None)  # give the rate-limit admission back
            raise
        gate_pass._bank = self.bank
        gate_pass._gate = self
        self.admitted += 1
        return gate_pass

    async def _reserve(
        self,
        principal: Principal,
        model: Model,
        op: str,
        prompt_estimate: int,
        body: dict[str, Any],
        request_id: str,
    ) -> tuple[Reservation, ...]:
        """Holds the worst-case cost in the user's or project's pool and, for a key with a coin
        cap, in the key's own pool (`key:<id>`: the cap, never refilled)."""
        settings = self._settings()
        amount = worst_case_micro(
            model.settings.price,
            prompt_estimate,
            max_tokens=0 if op == "embeddings" else _int_field(body, "max_tokens"),
            max_completion_tokens=_int_field(body, "max_completion_tokens"),
            output_cap=model.settings.capabilities.max_output_tokens,
            default_output_tokens=settings.billing.default_output_tokens,
            n=_choices(body),
        )
        owner = await self.bank.reserve(
            principal.id, amount, request_id=request_id, params=self.pool_params(principal.groups)
        )
        if principal.coin_cap_micro is None or principal.key_id is None:
            return (owner,)
        cap = principal.coin_cap_micro
        try:
            key = await self.bank.reserve(
                f"key:{principal.key_id}",
                amount,
                request_id=request_id,
                params=PoolParams("limited", cap, 0, cap),
                actor=principal.id,
            )
        except BaseException:
            await self.bank.release(owner)
            raise
        return (owner, key)

    def limits_of(self, principal: Principal, model: str | None = None) -> EffectiveLimits:
        """The principal's rate limits as `admit` applies them: config default, groups, own override
        (for the portal's usage page and the admin pages)."""
        return self._limits_resolver().resolve(
            principal.groups, self._limit_overrides.get(principal.id), model
        )

    async def peek_headers(self, principal: Principal, model: str | None = None) -> dict[str, str]:
        """The caller's `x-ratelimit-*` headers as they stand, spending nothing: for responses
        that are not limited themselves (the model list) and for refusals before admission."""
        limits = self._limits_resolver().resolve(
            principal.groups, self._limit_overrides.get(principal.id), model
        )
        return await self._limiter.peek(limits, principal=principal.id, model=model, key_id=principal.key_id)

    async def aclose(self) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._limiter.aclose()
        await self.bank.aclose()


def acknowledge_url(settings: Settings, model: str) -> str:
    """Where a person reads and acknowledges a model's notice (the portal's model page)."""
    return f"{settings.public_url}/models/{quote(model, safe='')}"


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _output_cap(body: dict[str, Any]) -> int | None:
    return _int_field(body, "max_completion_tokens") or _int_field(body, "max_tokens")


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
