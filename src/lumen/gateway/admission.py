"""Everything that may refuse a call before a backend is asked, in one place and in order: model
access policy and the key's own model list, the coin hold, then rate limits.

Coins come before rate limits so that a request refused for coins spends none of the caller's
request rate, and so that the rate limiter reserves tokens for the output cap the coins could pay
for. In hard mode a pool that cannot pay for the spec's output cap still admits the call with a
lower cap, down to `billing.min_output_tokens`: a user's last coins buy a short answer.

`admit()` returns a `Ticket`; the pipeline releases it exactly once, whatever happens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.access.resolver import AccessResolver
from lumen.billing.bank import CoinBank, Reservation
from lumen.billing.config import pool_resolver
from lumen.billing.pools import PoolParams, PoolResolver
from lumen.billing.prices import affordable_completion, cost_micro
from lumen.gateway.spec import CallSpec
from lumen.identity.principal import Principal
from lumen.limits import Admission, EffectiveLimits, Limiter, LimitResolver, LimitSettings
from lumen.limits.store import all_overrides
from lumen.settings import Settings

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Ticket:
    """An admitted call: the spec with the cap admission settled on, the response's rate-limit
    headers, and what the call holds until the pipeline releases it."""

    spec: CallSpec
    headers: dict[str, str]
    reservations: tuple[Reservation, ...]
    limits: Admission


class Gate:
    def __init__(
        self, limiter: Limiter, access: AccessResolver, bank: CoinBank, settings: Callable[[], Settings]
    ) -> None:
        self._limiter = limiter
        self._access = access
        self._bank = bank
        self._settings = settings
        self._limit_overrides: dict[str, LimitSettings] = {}
        self._pools: PoolResolver | None = None
        self._pools_for: Settings | None = None
        self._resolver: LimitResolver | None = None
        self._resolver_for: Settings | None = None

    def pool_params(self, groups: tuple[str, ...]) -> PoolParams:
        """The coin pool parameters a principal inherits from its groups and the default."""
        settings = self._settings()
        if self._pools is None or self._pools_for is not settings:
            self._pools = pool_resolver(settings.billing, {g.name: g.pool for g in settings.groups})
            self._pools_for = settings
        return self._pools.inherited(groups)

    async def reload_limit_overrides(self, engine: AsyncEngine) -> None:
        self._limit_overrides = await all_overrides(engine=engine)

    def limits_of(self, principal: Principal, model: str | None = None) -> EffectiveLimits:
        """The principal's rate limits as `admit` applies them: config default, groups, own override
        (for the portal's usage page and the admin pages)."""
        settings = self._settings()
        if self._resolver is None or self._resolver_for is not settings:
            groups = {g.name: g.rate_limits for g in settings.groups if g.rate_limits is not None}
            self._resolver, self._resolver_for = LimitResolver(settings.rate_limits, groups), settings
        return self._resolver.resolve(principal.groups, self._limit_overrides.get(principal.id), model)

    async def peek_headers(self, principal: Principal, model: str | None = None) -> dict[str, str]:
        """The caller's `x-ratelimit-*` headers as they stand, spending nothing: for responses
        that are not limited themselves (the model list) and for refusals before admission."""
        limits = self.limits_of(principal, model)
        return await self._limiter.peek(limits, principal=principal.id, model=model, key_id=principal.key_id)

    async def admit(self, spec: CallSpec, principal: Principal, *, request_id: str) -> Ticket:
        model = spec.model
        view = await self._access.resolve(principal.id, principal.groups)
        view.require(
            model.name,
            acknowledge_url=acknowledge_url(self._settings(), model.name),
            key_models=principal.models,
        )
        reservations, spec = await self._hold_coins(spec, principal, request_id)
        try:
            limits = await self._limiter.check_and_acquire(
                self.limits_of(principal, model.name),
                principal=principal.id,
                model=model.name,
                key_id=principal.key_id,
                tokens=spec.prompt_estimate + spec.max_completion,
            )
        except BaseException:
            for reservation in reservations:
                await self._bank.release(reservation)
            raise
        return Ticket(spec, limits.headers, reservations, limits)

    async def _hold_coins(
        self, spec: CallSpec, principal: Principal, request_id: str
    ) -> tuple[tuple[Reservation, ...], CallSpec]:
        """Holds the call's worst case in the user's or project's pool and, for a key with a coin
        cap, in the key's own pool (`key:<id>`: the cap, never refilled); lowers the spec's cap to
        what both can pay when the mode allows."""
        price, prompt = spec.model.settings.price, spec.prompt_estimate
        amount = worst_case = cost_micro(price, prompt, spec.max_completion)
        minimum = self._minimum(spec)
        held: list[Reservation] = []
        pools: list[tuple[str, PoolParams, str | None]] = []
        # The ledger's charge rows say who (the key, or the user in the portal) and what.
        who = f"key:{principal.key_id}" if principal.key_id is not None else principal.id
        cause = f"{spec.op} {spec.model.name}"
        if principal.coin_cap_micro is not None and principal.key_id is not None:
            cap = principal.coin_cap_micro
            pools.append((f"key:{principal.key_id}", PoolParams("limited", cap, 0, cap), principal.id))
        pools.append((principal.id, self.pool_params(principal.groups), who))
        try:
            for pool, params, actor in pools:
                reservation = await self._reserve(pool, amount, minimum, params, request_id, actor, cause)
                held.append(reservation)
                amount = min(amount, reservation.amount_micro)
        except BaseException:
            for reservation in held:
                await self._bank.release(reservation)
            raise
        granted = min((r.amount_micro for r in held if not r.unlimited), default=None)
        if granted is not None and spec.output_cap is not None and granted < worst_case:
            affordable = affordable_completion(price, prompt, granted)
            if affordable is not None:
                spec = spec.with_cap(max(affordable // spec.choices, self._min_output(spec)))
        return tuple(held), spec

    def _min_output(self, spec: CallSpec) -> int:
        return min(spec.output_cap or 0, self._settings().billing.min_output_tokens)

    def _minimum(self, spec: CallSpec) -> int | None:
        """The smallest hold that still admits the call (hard mode, an output to shorten)."""
        if spec.output_cap is None or self._bank.mode != "hard":
            return None
        return cost_micro(
            spec.model.settings.price, spec.prompt_estimate, self._min_output(spec) * spec.choices
        )

    async def _reserve(
        self,
        pool: str,
        amount: int,
        minimum: int | None,
        params: PoolParams,
        request_id: str,
        actor: str | None,
        cause: str,
    ) -> Reservation:
        return await self._bank.reserve(
            pool,
            amount,
            request_id=request_id,
            params=params,
            actor=actor,
            cause=cause,
            minimum_micro=None if minimum is None else min(minimum, amount),
        )

    async def aclose(self) -> None:
        await self._limiter.aclose()


def acknowledge_url(settings: Settings, model: str) -> str:
    """Where a person reads and acknowledges a model's notice (the portal's model page)."""
    return f"{settings.public_url}/models/{quote(model, safe='')}"
