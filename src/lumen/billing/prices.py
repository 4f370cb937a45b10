"""What a request costs, in integer micro-coins.

Prices are configured in coins per million tokens (and per hour of audio). A price of ``p`` coins
per million tokens is exactly ``p`` micro-coins per token, so a request's cost is

    input price * prompt tokens + output price * completion tokens
        + audio price per hour * 1,000,000 * audio seconds / 3600      (micro-coins)

computed exactly (rational arithmetic, no float) and **rounded up once**, on the total, to a whole
micro-coin: a request never costs less than its exact price and never more than one micro-coin
above it. A configured price is read as the decimal the administrator wrote (``0.15`` is 15/100,
not the nearest binary float): floats from the config parser are converted through their shortest
decimal representation.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Protocol

from lumen.billing.pools import MICRO

DEFAULT_OUTPUT_TOKENS = 4096
"""Output tokens reserved when neither the request nor the model bounds the answer."""


class PriceLike(Protocol):
    """A model's price (`lumen.settings.Price`): coins per million tokens, coins per audio hour."""

    @property
    def input(self) -> float | Decimal | int: ...
    @property
    def output(self) -> float | Decimal | int: ...
    @property
    def audio_hour(self) -> float | Decimal | int: ...


@lru_cache(maxsize=4096, typed=True)
def _exact(value: float | Decimal | int) -> Fraction:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a price or quantity must be finite, not {value!r}")
        # repr gives the shortest decimal that reads back as this float: what the YAML said.
        return Fraction(repr(value))
    return Fraction(value)


def cost_micro(
    price: PriceLike,
    prompt_tokens: int,
    completion_tokens: int,
    audio_seconds: float | Decimal | int = 0,
) -> int:
    """The cost of a request in micro-coins: exact, rounded up once (see the module docstring)."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts cannot be negative")
    if not audio_seconds:
        # The hot path: whole numbers only (Fraction arithmetic costs tens of microseconds).
        (in_num, in_den), (out_num, out_den) = _ratio(price.input), _ratio(price.output)
        numerator = in_num * out_den * prompt_tokens + out_num * in_den * completion_tokens
        return -(-numerator // (in_den * out_den))  # ceil, exactly
    seconds = _exact(audio_seconds)
    if seconds < 0:
        raise ValueError("audio seconds cannot be negative")
    exact = _exact(price.input) * prompt_tokens + _exact(price.output) * completion_tokens
    exact += _exact(price.audio_hour) * MICRO * seconds / 3600
    return math.ceil(exact)


@lru_cache(maxsize=4096, typed=True)
def _ratio(value: float | Decimal | int) -> tuple[int, int]:
    exact = _exact(value)
    return exact.numerator, exact.denominator


def output_budget(
    *,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    output_cap: int | None = None,
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    n: int = 1,
) -> int:
    """The most completion tokens a request can produce, for its reservation.

    The request's own bound (``max_completion_tokens``, else ``max_tokens``) limited by the model's
    output cap; without a request bound, the model's cap; without either, `default_output_tokens`
    (a site setting, so a request without ``max_tokens`` is not refused for an absurd worst case).
    Times ``n`` choices.
    """
    requested = max_completion_tokens if max_completion_tokens is not None else max_tokens
    if requested is not None and requested < 0:
        raise ValueError("max_tokens cannot be negative")
    if requested is None:
        budget = output_cap if output_cap is not None else default_output_tokens
    else:
        budget = requested if output_cap is None else min(requested, output_cap)
    return budget * max(n, 1)


def worst_case_micro(
    price: PriceLike,
    prompt_tokens: int,
    *,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    output_cap: int | None = None,
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    n: int = 1,
    audio_seconds: float | Decimal | int = 0,
) -> int:
    """What to reserve before the upstream call: the cost of the prompt estimate plus the largest
    answer the request allows (`output_budget`), priced and rounded like `cost_micro`."""
    completion = output_budget(
        max_tokens=max_tokens,
        max_completion_tokens=max_completion_tokens,
        output_cap=output_cap,
        default_output_tokens=default_output_tokens,
        n=n,
    )
    return cost_micro(price, prompt_tokens, completion, audio_seconds)


def affordable_completion(price: PriceLike, prompt_tokens: int, budget_micro: int) -> int | None:
    """The most completion tokens `budget_micro` pays for beside the prompt (None: output is free)."""
    per_token = _exact(price.output)
    if per_token == 0:
        return None
    left = budget_micro - _exact(price.input) * prompt_tokens
    return max(math.floor(left / per_token), 0)
