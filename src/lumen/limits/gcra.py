"""The generic cell rate algorithm (GCRA), the arithmetic shared by every backend.

A limit of N per minute is a bucket of N units that refills continuously, one unit every 60/N seconds
(as OpenAI's limits behave: `x-ratelimit-reset-requests: 1s` at 60 RPM). GCRA keeps one number per
bucket, its theoretical arrival time (TAT); `backlog = max(TAT - now, 0)` is how far the bucket is
from full, in seconds. Taking `cost` units moves the TAT by `cost * 60/N`, and is allowed while the
backlog stays within the 60 s window. So a burst of N passes, then one unit every 60/N seconds; over
any long stretch the average stays within N per minute. Returned tokens move the TAT back, which keeps
token accounting exact in steady state.

The rule, in the same order of operations on doubles in `memory.py` and in the Lua script of
`redis_backend.py`: taking `cost` units is allowed iff

    backlog + cost * (WINDOW / limit) <= WINDOW + EPSILON
"""

from __future__ import annotations

import math

WINDOW = 60.0
"""Seconds of the rate window: limits are per minute."""
EPSILON = 1e-4
"""Slack for float rounding when comparing times (0.1 ms): N requests at N per minute always fit."""


def remaining(backlog: float, limit: int) -> int:
    """Whole units that could be taken now."""
    units = math.floor((WINDOW + EPSILON - backlog) / (WINDOW / limit))
    return 0 if units < 0 else limit if units > limit else units


def wait(backlog: float, cost: float, limit: int) -> float:
    """Seconds until `cost` units fit (0 if they fit now)."""
    return max(backlog + cost * (WINDOW / limit) - WINDOW, 0.0)
