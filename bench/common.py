"""Small helpers shared by the bench tools (each tool is also runnable on its own)."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed: Lumen runs on uvloop, so the bench does too."""
    try:
        import uvloop
    except ImportError:  # still works, just slower
        return asyncio.run(coro)
    return uvloop.run(coro)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean, linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return {}
    v = sorted(values)

    def pct(p: float) -> float:
        k = (len(v) - 1) * p / 100.0
        lo, hi = math.floor(k), math.ceil(k)
        return v[lo] + (v[hi] - v[lo]) * (k - lo)

    return {
        "p50": round(pct(50), 4),
        "p90": round(pct(90), 4),
        "p99": round(pct(99), 4),
        "max": round(v[-1], 4),
        "mean": round(sum(v) / len(v), 4),
        "n": len(v),
    }


def raise_nofile(want: int | None = None) -> tuple[int, int]:
    """Raises this process's soft RLIMIT_NOFILE to `want` (default: the hard limit) and returns the
    new (soft, hard). Children inherit it, so calling this in the orchestrator covers the load
    generator, the fake upstream and Lumen: 1,000 open streams need ~1,000 sockets in the load
    generator, ~1,000 in the fake upstream and ~2,000 in Lumen (client side plus upstream side)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else want
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def load1() -> float:
    """The 1-minute load average: a rough gauge of what else ran on the machine around a run."""
    import os

    return round(os.getloadavg()[0], 2)
