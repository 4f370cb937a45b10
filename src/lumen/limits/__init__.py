"""Rate limits: requests per minute, tokens per minute and concurrent requests, per API key, per user
or project, and per model, in memory for one process or in Redis for several (docs/rate-limits.md)."""

from __future__ import annotations

from lumen.limits.config import (
    UNLIMITED,
    EffectiveLimits,
    LimiterSettings,
    LimitResolver,
    LimitSettings,
    Rates,
    ScopeLimits,
    resolve_limits,
)
from lumen.limits.headers import HEADER_NAMES
from lumen.limits.limiter import Admission, Limiter, LimiterUnavailable
from lumen.limits.reservation import tokens_to_reserve

__all__ = [
    "HEADER_NAMES",
    "UNLIMITED",
    "Admission",
    "EffectiveLimits",
    "LimitSettings",
    "Limiter",
    "LimiterSettings",
    "LimiterUnavailable",
    "LimitResolver",
    "Rates",
    "ScopeLimits",
    "resolve_limits",
    "tokens_to_reserve",
]
