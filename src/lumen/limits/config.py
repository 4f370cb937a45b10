"""Rate-limit configuration, and how a default, groups and an override combine into one caller's limits.

Three numbers limit a scope: requests per minute (`rpm`), tokens per minute (`tpm`) and requests in
flight (`concurrent`). The scopes are each API key, each user or project (all its keys together), and
each model per user or project. `LimitSettings` is what one level sets: the global default, a group,
or a user's or project's own override.

Resolution is per number, with the coin-pool rule: the caller's own setting beats the most generous
of its groups, which beats the global default. A number left out of a level is inherited from the next
one; `null` (or `unlimited`) sets it explicitly to no limit, which also counts as the most generous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr

from lumen.config_base import ConfigSection


def _unlimited_as_none(value: object) -> object:
    return None if isinstance(value, str) and value.strip().lower() == "unlimited" else value


Limit = Annotated[Annotated[int, Field(ge=1)] | None, BeforeValidator(_unlimited_as_none)]
"""A positive number, or `null`/`unlimited` for no limit. Zero is refused: blocking is access control."""


class ScopeLimits(ConfigSection):
    rpm: Limit = None
    """Requests per minute (left out: inherited; `null` or `unlimited`: no limit)."""
    tpm: Limit = None
    """Tokens per minute, prompt and completion together (left out: inherited; `unlimited`: no limit)."""
    concurrent: Limit = None
    """Requests in flight at the same time (left out: inherited; `unlimited`: no limit)."""


class LimitSettings(ConfigSection):
    key: ScopeLimits = ScopeLimits()
    """Limits on each API key on its own."""
    principal: ScopeLimits = ScopeLimits()
    """Limits on the user or project: all of its keys together."""
    model: ScopeLimits = ScopeLimits()
    """Limits on each model, per user or project (all of its keys together)."""
    models: dict[str, ScopeLimits] = Field(default_factory=dict)
    """Limits on the named models, per user or project; beat `model` at the same level."""


class LimiterSettings(ConfigSection):
    backend: Literal["memory", "redis"] = "memory"
    """`memory`: counters inside this process; `redis`: shared by every Lumen process using the same Redis."""
    redis_url: SecretStr | None = None
    """Redis URL for the `redis` backend (e.g. `redis://:password@host:6379/0`); default `redis://127.0.0.1:6379/0`."""
    redis_timeout: float = Field(default=0.5, gt=0)
    """Seconds to wait for Redis before the request goes on as `on_backend_error` says."""
    on_backend_error: Literal["allow", "reject"] = "allow"
    """When Redis cannot be reached: `allow` serves requests unlimited (and logs), `reject` answers 503."""
    key_prefix: str = "lumen:rl:"
    """Prefix of every Redis key the limiter writes."""
    concurrency_ttl: float = Field(default=900.0, gt=0)
    """Seconds after which a concurrency slot that was never released (crashed process) frees itself."""
    default: LimitSettings = LimitSettings()
    """Limits for everyone, unless their groups (`groups[].rate_limits`) or own setting say otherwise."""
    model_totals: dict[str, ScopeLimits] = Field(default_factory=dict)
    """Limits per model name on all callers together (protects a backend's capacity)."""


@dataclass(frozen=True, slots=True)
class Rates:
    """Resolved limits of one scope; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None


UNLIMITED_RATES = Rates()


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """Everything that limits one request: per key, per principal, per model for the principal, and per
    model for everyone."""

    key: Rates = UNLIMITED_RATES
    principal: Rates = UNLIMITED_RATES
    model: Rates = UNLIMITED_RATES
    model_total: Rates = UNLIMITED_RATES


UNLIMITED = EffectiveLimits()

_Candidates = Callable[[LimitSettings], tuple[ScopeLimits, ...]]


def resolve_limits(
    default: LimitSettings,
    groups: Iterable[LimitSettings] = (),
    own: LimitSettings | None = None,
    *,
    model: str | None = None,
) -> EffectiveLimits:
    """Combines the levels number by number: `own` beats the most generous of `groups`, which beats
    `default`; what no level sets is unlimited. Within a level, `models[model]` beats `model`."""
    group_list = list(groups)

    def model_candidates(settings: LimitSettings) -> tuple[ScopeLimits, ...]:
        named = settings.models.get(model) if model is not None and settings.models else None
        return (settings.model,) if named is None else (named, settings.model)

    return EffectiveLimits(
        key=_resolve_scope(default, group_list, own, lambda s: (s.key,)),
        principal=_resolve_scope(default, group_list, own, lambda s: (s.principal,)),
        model=_resolve_scope(default, group_list, own, model_candidates),
    )


def _resolve_scope(
    default: LimitSettings,
    groups: list[LimitSettings],
    own: LimitSettings | None,
    candidates: _Candidates,
) -> Rates:
    values = _set_values(candidates(default))
    generous: dict[str, int | None] = {}
    for group in groups:
        for field, value in _set_values(candidates(group)).items():
            if field not in generous:
                generous[field] = value
            else:
                best = generous[field]
                if best is not None and (value is None or value > best):
                    generous[field] = value
    values.update(generous)
    if own is not None:
        values.update(_set_values(candidates(own)))
    if not values:
        return UNLIMITED_RATES
    rates = Rates(values.get("rpm"), values.get("tpm"), values.get("concurrent"))
    return UNLIMITED_RATES if rates == UNLIMITED_RATES else rates


def _set_values(candidates: tuple[ScopeLimits, ...]) -> dict[str, int | None]:
    """The numbers the candidates set explicitly (`null` included); the first candidate wins."""
    values: dict[str, int | None] = {}
    for limits in reversed(candidates):
        for field in limits.model_fields_set:
            values[field] = getattr(limits, field)
    return values


def _own_rates(limits: ScopeLimits) -> Rates:
    return Rates(limits.rpm, limits.tpm, limits.concurrent)


class LimitResolver:
    """Resolves a request's limits from the config (the `rate_limits` section and each group's
    `rate_limits`), remembering the result per (groups, model) for callers without an own override,
    the common case. Build a new one when the config changes."""

    MAX_CACHED = 10_000

    def __init__(self, settings: LimiterSettings, groups: Mapping[str, LimitSettings]) -> None:
        self._settings = settings
        self._groups = dict(groups)
        self._cache: dict[tuple[tuple[str, ...], str | None], EffectiveLimits] = {}

    def resolve(
        self, groups: Iterable[str] = (), own: LimitSettings | None = None, model: str | None = None
    ) -> EffectiveLimits:
        """The limits of a caller in `groups` (names; unknown ones are ignored) with its own override
        `own`, for `model` (None: no per-model scopes)."""
        names = tuple(sorted({name for name in groups if name in self._groups}))
        if own is None:
            cached = self._cache.get((names, model))
            if cached is not None:
                return cached
        resolved = resolve_limits(
            self._settings.default, [self._groups[name] for name in names], own, model=model
        )
        total = self._settings.model_totals.get(model) if model is not None else None
        if total is not None:
            resolved = EffectiveLimits(resolved.key, resolved.principal, resolved.model, _own_rates(total))
        if own is None:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()  # unknown model names must not grow the cache without bound
            self._cache[(names, model)] = resolved
        return resolved
