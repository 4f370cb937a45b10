"""The rate-limit headers, with OpenAI's names and formats.

Reset times are Go-style duration strings (`1s`, `6m0s`, `12ms`), not timestamps. We round up to whole
milliseconds below a second and to whole seconds above, so a client never retries too early and the
common `(\\d+)(ms|s|m|h)` parsers read every value right (a fractional `8.64s` would confuse them).
"""

from __future__ import annotations

import math

LIMIT_REQUESTS = "x-ratelimit-limit-requests"
REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
RESET_REQUESTS = "x-ratelimit-reset-requests"
LIMIT_TOKENS = "x-ratelimit-limit-tokens"
REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
RESET_TOKENS = "x-ratelimit-reset-tokens"
RETRY_AFTER = "retry-after"
RETRY_AFTER_MS = "retry-after-ms"

HEADER_NAMES = (
    LIMIT_REQUESTS,
    REMAINING_REQUESTS,
    RESET_REQUESTS,
    LIMIT_TOKENS,
    REMAINING_TOKENS,
    RESET_TOKENS,
    RETRY_AFTER,
    RETRY_AFTER_MS,
)
"""Every header the limiter sets, for `Access-Control-Expose-Headers`."""


def go_duration(seconds: float) -> str:
    """`0s`, `12ms`, `1s`, `59s`, `1m0s`, `6m0s`, `1h2m3s`: Go's `time.Duration` format, rounded up."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = math.ceil(seconds * 1000 - 1e-9)
        if ms < 1000:
            return f"{max(ms, 1)}ms"
    total = math.ceil(seconds - 1e-9)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def retry_after(seconds: float) -> dict[str, str]:
    """`retry-after` in whole seconds (at least 1: the SDKs ignore 0) and `retry-after-ms`, which the
    OpenAI SDKs prefer."""
    ms = max(math.ceil(seconds * 1000 - 1e-9), 1)
    return {RETRY_AFTER: str(max(math.ceil(ms / 1000), 1)), RETRY_AFTER_MS: str(ms)}
