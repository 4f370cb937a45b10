"""Micro-benchmark: CPU per request of the rate limiter (lumen.limits), memory and Redis backends.

One "request" is what the gateway does per call: `check_and_acquire` (every limit of the request at
once, all or nothing) plus `Admission.release` (settle the tokens, free the concurrency slot), and
reading the headers. CPU is this process's `time.process_time()` over the measured requests, on
uvloop like Lumen; the Redis server's own CPU is not counted. Limits are set high so that nothing is
refused, and the requests are spread over many principals, so the numbers include dict/key growth.

    python bench/limits_overhead.py [--requests 20000] [--redis-url redis://127.0.0.1:6379/0]
                                    [--no-redis] [--compare-limits]

`--compare-limits` also times the `limits` library (5.x, `pip install limits==5.8.0`) doing the same
checks (one `hit` per limit plus `get_window_stats` for the headers), the alternative this module
was measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable

from common import run
from lumen.limits import (
    EffectiveLimits,
    LimiterSettings,
    LimitResolver,
    LimitSettings,
    Rates,
    ScopeLimits,
    resolve_limits,
)
from lumen.limits.limiter import Limiter
from lumen.limits.memory import MemoryBackend

BIG = 10**9
SCENARIOS = {
    # key rpm; principal rpm, tpm, concurrent; model-per-principal rpm, tpm: 5 buckets, 1 pool
    "typical (5 limits + 1 concurrency)": EffectiveLimits(
        key=Rates(rpm=BIG),
        principal=Rates(rpm=BIG, tpm=BIG, concurrent=BIG),
        model=Rates(rpm=BIG, tpm=BIG),
    ),
    "principal rpm+tpm only": EffectiveLimits(principal=Rates(rpm=BIG, tpm=BIG)),
    "no limits": EffectiveLimits(),
}
PRINCIPALS = 1000


async def lumen_request(limiter: Limiter, limits: EffectiveLimits, i: int) -> None:
    principal = f"user:{i % PRINCIPALS}"
    admission = await limiter.check_and_acquire(
        limits, principal=principal, model="llama", key_id=f"key_{i % PRINCIPALS}", tokens=300
    )
    _ = admission.headers
    await admission.release(250)


async def measure(step: Callable[[int], Awaitable[None]], n: int, concurrency: int = 1) -> float:
    """Microseconds of CPU per step."""
    for i in range(min(n // 10, 500)):  # warm up: caches, connections, script loaded
        await step(i)
    start = time.process_time()
    if concurrency == 1:
        for i in range(n):
            await step(i)
    else:
        per_worker = n // concurrency

        async def worker(w: int) -> None:
            for i in range(per_worker):
                await step(w * per_worker + i)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        n = per_worker * concurrency
    return (time.process_time() - start) / n * 1e6


async def bench_lumen(args: argparse.Namespace) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    settings = LimiterSettings(
        default=LimitSettings(principal=ScopeLimits(rpm=BIG, tpm=BIG)),
        model_totals={"other": ScopeLimits(rpm=BIG)},
    )
    groups = {
        "staff": LimitSettings(model=ScopeLimits(rpm=BIG)),
        "hpc": LimitSettings(principal=ScopeLimits(tpm=BIG)),
    }
    group_list = list(groups.values())
    own = LimitSettings(key=ScopeLimits(rpm=BIG))
    resolver = LimitResolver(settings, groups)

    async def resolve(i: int) -> None:
        resolve_limits(settings.default, group_list, None, model="llama")

    async def resolve_cached(i: int) -> None:
        resolver.resolve(("staff", "hpc"), None, model="llama")

    async def resolve_own(i: int) -> None:
        resolver.resolve(("staff", "hpc"), own, model="llama")

    rows.append(("resolve_limits (default + 2 groups)", await measure(resolve, args.requests)))
    rows.append(
        ("LimitResolver.resolve, no own override (cached)", await measure(resolve_cached, args.requests))
    )
    rows.append(("LimitResolver.resolve, with own override", await measure(resolve_own, args.requests)))
    for name, limits in SCENARIOS.items():
        limiter = Limiter(MemoryBackend(slot_ttl=900))
        step = functools.partial(lumen_request, limiter, limits)
        rows.append((f"memory: {name}", await measure(step, args.requests)))
        await limiter.aclose()
    if not args.no_redis:
        from lumen.limits.redis_backend import RedisBackend

        for concurrency in (1, 16):
            prefix = f"bench:{uuid.uuid4().hex}:"
            backend = RedisBackend.from_url(args.redis_url, prefix=prefix, slot_ttl=900, timeout=1)
            limiter = Limiter(backend)
            step = functools.partial(lumen_request, limiter, SCENARIOS["typical (5 limits + 1 concurrency)"])
            cpu = await measure(step, max(args.requests // 5, 1000), concurrency)
            rows.append((f"redis: typical, {concurrency} concurrent clients", cpu))
            await _clean(args.redis_url, prefix)
            await limiter.aclose()
    return rows


async def bench_limits_library(args: argparse.Namespace) -> list[tuple[str, float]]:
    try:
        from limits.aio.storage import MemoryStorage, RedisStorage
        from limits.aio.strategies import SlidingWindowCounterRateLimiter

        from limits import RateLimitItemPerMinute
    except ImportError:
        print("(the `limits` library is not installed: pip install limits==5.8.0)")
        return []
    rpm, tpm = RateLimitItemPerMinute(BIG), RateLimitItemPerMinute(BIG)

    def step_for(strategy: SlidingWindowCounterRateLimiter) -> Callable[[int], Awaitable[None]]:
        async def step(i: int) -> None:
            p = str(i % PRINCIPALS)
            # the same five limits as "typical"; the concurrency slot has no counterpart
            await strategy.hit(rpm, "key", p)
            await strategy.hit(rpm, "principal", p)
            await strategy.hit(tpm, "principal-tokens", p, cost=300)
            await strategy.hit(rpm, "model", p)
            await strategy.hit(tpm, "model-tokens", p, cost=300)
            await strategy.get_window_stats(rpm, "principal", p)
            await strategy.get_window_stats(tpm, "principal-tokens", p)

        return step

    rows = [
        (
            "limits 5.x memory, sliding window counter (5 hits + 2 stats)",
            await measure(step_for(SlidingWindowCounterRateLimiter(MemoryStorage())), args.requests),
        )
    ]
    if not args.no_redis:
        prefix = f"bench:{uuid.uuid4().hex}"
        storage = RedisStorage(
            "async+" + args.redis_url, implementation="redispy", key_prefix=prefix, wrap_exceptions=True
        )
        n = max(args.requests // 10, 500)
        cpu = await measure(step_for(SlidingWindowCounterRateLimiter(storage)), n)
        rows.append(("limits 5.x redis (redispy), same: 7 round trips", cpu))
        await _clean(args.redis_url, prefix)
    return rows


async def _clean(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def main(args: argparse.Namespace) -> None:
    rows = await bench_lumen(args)
    if args.compare_limits:
        rows += await bench_limits_library(args)
    width = max(len(name) for name, _ in rows)
    print(f"{'CPU per request':<{width}}  µs")
    for name, cpu in rows:
        print(f"{name:<{width}}  {cpu:8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true", help="memory backend only")
    parser.add_argument("--compare-limits", action="store_true", help="also time the `limits` library")
    run(main(parser.parse_args()))
