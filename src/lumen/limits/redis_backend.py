"""The Redis backend: limits shared by every Lumen process that uses the same Redis.

A request costs one round trip to check and take (one Lua script over all of its limits, so a request
refused by one limit takes nothing from the others, and concurrent processes cannot both take the last
unit) and one to settle, shared by all the requests that end in the same turn of the event loop.
Times come from the Redis server's clock, so processes on different hosts agree; tests inject their
own clock instead.

Keys: `<prefix><scope>:r` and `:t` hold a bucket's TAT (seconds since 2025-01-01, expiring when the
bucket is full again); `<prefix><scope>:c` is a sorted set of held concurrency slots scored by their
deadline, so a slot whose process died frees itself after `concurrency_ttl`. A principal's scopes
share the hash tag `{<principal>}`; `model_totals` limits live in their own slot, so with them the
script needs a single Redis server (or Sentinel), not a Cluster.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from lumen.limits import gcra
from lumen.limits.backend import BackendUnavailable, Bucket, Pool, Refund, Verdict

log = logging.getLogger(__name__)

# Server time is counted from 2025-01-01 so that the doubles keep sub-microsecond precision.
_NOW = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = (tonumber(t[1]) - 1735689600) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
"""

# KEYS: nb bucket keys, then pool keys.
# ARGV: now ('' = server time), window, epsilon, slot ttl, slot id, commit (1/0), nb,
#       then limit and cost per bucket, then limit per pool.
# Reply: ok, then per bucket: full (1/0) and backlog, then per pool: full (1/0) and held.
ACQUIRE = (
    _NOW
    + """
local window = tonumber(ARGV[2])
local eps = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local slot = ARGV[5]
local commit = ARGV[6] == '1'
local nb = tonumber(ARGV[7])
local ok = 1
local reply = {0}
local after = {}
for i = 1, nb do
  local limit = tonumber(ARGV[6 + 2 * i])
  local cost = tonumber(ARGV[7 + 2 * i])
  local stored = redis.call('GET', KEYS[i])
  local backlog = 0
  if stored then backlog = math.max(tonumber(stored) - now, 0) end
  local full = 0
  if backlog + cost * (window / limit) > window + eps then
    full = 1
    ok = 0
  end
  after[i] = backlog + cost * (window / limit)
  reply[2 * i] = full
  reply[2 * i + 1] = string.format('%.17g', backlog)
end
local base = 7 + 2 * nb
for j = 1, #KEYS - nb do
  local key = KEYS[nb + j]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  local full = 0
  if held >= tonumber(ARGV[base + j]) then
    full = 1
    ok = 0
  end
  reply[2 * (nb + j)] = full
  reply[2 * (nb + j) + 1] = held
end
if ok == 1 and commit then
  for i = 1, nb do
    if tonumber(ARGV[7 + 2 * i]) > 0 then
      redis.call('SET', KEYS[i], string.format('%.17g', now + after[i]), 'PX', math.ceil(after[i] * 1000) + 1)
      reply[2 * i + 1] = string.format('%.17g', after[i])
    end
  end
  for j = 1, #KEYS - nb do
    local key = KEYS[nb + j]
    redis.call('ZADD', key, string.format('%.17g', now + ttl), slot)
    redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
    reply[2 * (nb + j) + 1] = reply[2 * (nb + j) + 1] + 1
  end
end
reply[1] = ok
return reply
"""
)

# Settles a batch of requests. KEYS: nb bucket keys (repeats allowed), then pool keys.
# ARGV: now, window, nb, then limit and units per bucket, then the slot id per pool key.
SETTLE = (
    _NOW
    + """
local window = tonumber(ARGV[2])
local nb = tonumber(ARGV[3])
for i = 1, nb do
  local units = tonumber(ARGV[3 + 2 * i])
  if units ~= 0 then
    local stored = redis.call('GET', KEYS[i])
    local backlog = 0
    if stored then backlog = math.max(tonumber(stored) - now, 0) end
    backlog = backlog + units * (window / tonumber(ARGV[2 + 2 * i]))
    if backlog > 0 then
      redis.call('SET', KEYS[i], string.format('%.17g', now + backlog), 'PX', math.ceil(backlog * 1000) + 1)
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
for j = nb + 1, #KEYS do
  redis.call('ZREM', KEYS[j], ARGV[3 + 2 * nb + (j - nb)])
end
return 1
"""
)


class _Batch:
    """Settlements made in one turn of the event loop, sent together in one script call."""

    __slots__ = ("now", "pools", "refunds", "task")

    def __init__(self) -> None:
        self.refunds: list[Refund] = []
        self.pools: list[tuple[str, str]] = []
        self.now: float | None = None
        self.task: asyncio.Task[None] | None = None


class RedisBackend:
    def __init__(self, client: aioredis.Redis, *, prefix: str, slot_ttl: float) -> None:
        self._client = client
        self._prefix = prefix
        self._slot_ttl = repr(slot_ttl)
        self._acquire = client.register_script(ACQUIRE)
        self._settle = client.register_script(SETTLE)
        self._pending: set[asyncio.Task[None]] = set()
        self._batch: _Batch | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str, slot_ttl: float, timeout: float) -> RedisBackend:
        """A client with its own connection pool. A dead connection (Redis restarted) is retried once
        at once; a timeout is not retried, since the script may have run."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        return cls(client, prefix=prefix, slot_ttl=slot_ttl)

    async def acquire(
        self, buckets: list[Bucket], pools: list[Pool], slot: str, now: float | None, *, commit: bool
    ) -> Verdict:
        prefix = self._prefix
        keys = [prefix + b.key for b in buckets] + [prefix + p.key for p in pools]
        args: list[str | int] = [
            "" if now is None else repr(now),
            repr(gcra.WINDOW),
            repr(gcra.EPSILON),
            self._slot_ttl,
            slot,
            1 if commit else 0,
            len(buckets),
        ]
        for bucket in buckets:
            args += (bucket.limit, bucket.cost)
        args += [pool.limit for pool in pools]
        try:
            reply: list[Any] = await self._acquire(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"Redis: {exc}") from exc
        nb = len(buckets)
        return Verdict(
            ok=reply[0] == 1,
            backlogs=[float(reply[2 * i + 2]) for i in range(nb)],
            bucket_full=[reply[2 * i + 1] == 1 for i in range(nb)],
            held=[int(reply[2 * j + 2]) for j in range(nb, nb + len(pools))],
            pool_full=[reply[2 * j + 1] == 1 for j in range(nb, nb + len(pools))],
        )

    async def settle(self, refunds: list[Refund], pools: list[str], slot: str, now: float | None) -> None:
        # Requests that end in the same turn of the event loop share one round trip: the batch's
        # task first runs on the next turn. Being a task, it also completes if the caller is
        # cancelled (client disconnect), so no slot stays held and no tokens stay unsettled;
        # aclose() waits for the ones still running.
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            batch.task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._pending.add(batch.task)
            batch.task.add_done_callback(self._pending.discard)
        batch.refunds += refunds
        batch.pools += [(key, slot) for key in pools]
        if now is not None and (batch.now is None or now > batch.now):
            batch.now = now
        assert batch.task is not None
        await asyncio.shield(batch.task)

    async def _flush(self, batch: _Batch) -> None:
        self._batch = None
        prefix = self._prefix
        keys = [prefix + r.key for r in batch.refunds] + [prefix + key for key, _ in batch.pools]
        args: list[str | int] = ["" if batch.now is None else repr(batch.now), repr(gcra.WINDOW)]
        args.append(len(batch.refunds))
        for refund in batch.refunds:
            args += (refund.limit, refund.units)
        args += [slot for _, slot in batch.pools]
        try:
            await self._settle(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            # The slots expire by themselves after concurrency_ttl; the tokens stay as reserved.
            log.warning("rate limiter: could not settle in Redis (%s); slots expire by their TTL", exc)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5)
        await self._client.aclose()
