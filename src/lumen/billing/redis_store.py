"""The Redis pool store: pools shared by every Lumen process, each operation one Lua script.

Per principal, three keys with one hash tag:

    <prefix>{<principal>}:pool   hash: bal, at, carry, res, and the own settings os, om, or, ost
    <prefix>{<principal>}:holds  hash: reservation id -> amount
    <prefix>{<principal>}:exp    sorted set: reservation id scored by its expiry (epoch ms)

and, shared by all pools, the ledger outbox (`lumen.billing.outbox`):

    <prefix>outbox               list: the movements (and usage records) not yet in the database
    <prefix>outbox:meta          hash: epoch, seq (the entry ids' counter)

Every script that moves coins appends the movements to the outbox in the same atomic step, so a
movement is either not made at all or made and on its way to the ledger, whatever process dies
when. A settle may carry the request's usage record (JSON made by `lumen.usage.recorder`); the
script appends it right after the charge, so a request's charge and its usage row survive or are
lost together. Because the scripts touch a pool's keys and the shared outbox, Lumen needs one Redis server
(or a primary with Sentinel), not a Redis Cluster.

Expiry is logical (the caller's clock, so tests can simulate time): every script first releases
the holds whose expiry has passed, so a crashed process's reservations stop counting against the
pool as soon as it is next touched. The keys never expire: Redis is a cache of the database, filled
on first use (`PoolNotLoaded`), and must run with ``maxmemory-policy noeviction``.

Lua numbers are IEEE doubles: integers are exact below 2^53 (9 * 10^15 micro-coins, far above the
10^9-coin limit on amounts), and the refill's products are split so that none exceeds that (see
``accrue`` in the script, which computes exactly what `lumen.billing.pools.accrue` computes).
Numbers are written into outbox entries with ``%d``, never ``tostring`` (which rounds to 14 digits).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.billing.outbox import OutboxDrainer, OutboxKeys
from lumen.billing.pools import PoolOverrides, PoolParams, PoolStateName
from lumen.billing.store import (
    NO_CONTEXT,
    START_CONTEXT,
    AdjustKind,
    Admission,
    AdmissionStatus,
    Change,
    Context,
    Movement,
    PoolNotLoaded,
    PoolStore,
    PoolView,
    Seed,
)

_SCRIPT = r"""
local pool, holds, exp, meta, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op = ARGV[1]
local H = 3600000

-- The ledger outbox. Every movement is appended to it by the script that makes it, as one JSON
-- array: [id, kind, amount, balance after, at, refilled at, carry, principal, request id, actor,
-- note]. The id is "<epoch>-<seq>": seq counts up in `meta`, and the epoch is a random token
-- created (by the client, on the -2 answer) whenever `meta` is missing, so after Redis lost its
-- data the new ids never repeat an old one. The principal and the caller's context arrive as JSON
-- in the last four arguments of an operation that moves coins.
local JOURNALING = {seed = true, settle = true, grant = true, refund = true, set = true, reset = true}
local epoch = false
if JOURNALING[op] then
  epoch = redis.call('HGET', meta, 'epoch')
end
local L = #ARGV - 3
local ctx_note = ARGV[L + 3]
local entries = {}
local function fmt(x) return string.format('%d', x) end
local function journal(kind, amount, after, t, rat, rcarry, rid, actor, note)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  table.insert(entries, '["' .. epoch .. '-' .. fmt(seq) .. '","' .. kind .. '",' .. fmt(amount) .. ',' ..
    fmt(after) .. ',' .. fmt(t) .. ',' .. fmt(rat) .. ',' .. fmt(rcarry) .. ',' .. ARGV[L] .. ',' ..
    rid .. ',' .. actor .. ',' .. note .. ']')
end
local function append_entries()
  if #entries > 0 then redis.call('RPUSH', outbox, unpack(entries)) end
end

if op == 'seed' then
  if redis.call('EXISTS', pool) == 1 then return {0} end
  local opens = ARGV[9] == '1'
  if opens and not epoch then return {-2} end  -- before any change: the client makes one, retries
  redis.call('DEL', holds, exp)  -- holds without their pool are stale: never count them
  redis.call('HSET', pool, 'bal', ARGV[2], 'at', ARGV[3], 'carry', ARGV[4], 'res', 0,
             'os', ARGV[5], 'om', ARGV[6], 'or', ARGV[7], 'ost', ARGV[8])
  if opens then
    local b = tonumber(ARGV[2])
    journal('start', b, b, tonumber(ARGV[3]), tonumber(ARGV[3]), tonumber(ARGV[4]),
            ARGV[L + 1], ARGV[L + 2], ARGV[L + 3])
    append_entries()
  end
  return {1}
end
if redis.call('EXISTS', pool) == 0 then return {-1} end
if JOURNALING[op] and not epoch then return {-2} end

if op == 'overrides' then
  redis.call('HSET', pool, 'os', ARGV[2], 'om', ARGV[3], 'or', ARGV[4], 'ost', ARGV[5])
  return {1}
end

local now = tonumber(ARGV[2])
local f = redis.call('HMGET', pool, 'bal', 'at', 'carry', 'res', 'os', 'om', 'or', 'ost')
local bal, at, carry, res = tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4])

-- Release expired holds.
local expired = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
for _, id in ipairs(expired) do
  local a = redis.call('HGET', holds, id)
  if a then res = res - tonumber(a); redis.call('HDEL', holds, id) end
  redis.call('ZREM', exp, id)
end

if op == 'release' or op == 'renew' then
  local a = redis.call('HGET', holds, ARGV[3])
  local found = 0
  if a then
    found = 1
    if op == 'release' then
      res = res - tonumber(a); redis.call('HDEL', holds, ARGV[3]); redis.call('ZREM', exp, ARGV[3])
    else
      redis.call('ZADD', exp, ARGV[4], ARGV[3])
    end
  end
  redis.call('HSET', pool, 'res', res)
  return {found}
end

-- Effective parameters: own setting, else the inherited ones the caller passed.
local function pick(own, inherited) if own ~= '' then return own end return inherited end
local state = pick(f[5], ARGV[3])
local mx = tonumber(pick(f[6], ARGV[4]))
local rate = tonumber(pick(f[7], ARGV[5]))
local starting = tonumber(pick(f[8], ARGV[6]))

-- Floor division, corrected for the rounding of a / b in doubles.
local function idiv(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1; r = r + b elseif r >= b then q = q + 1; r = r - b end
  return q, r
end

-- (elapsed * rate + carry) // H without forming elapsed * rate: elapsed = q*H + r, rate = rh*H + rl.
local function accrue()
  if now <= at then return 0, at, carry end
  local deficit = mx - bal
  if deficit <= 0 or rate == 0 then return 0, now, 0 end
  local q, r = idiv(now - at, H)
  local rh, rl = idiv(rate, H)
  local x, rem = idiv(r * rl + carry, H)
  local credit = q * rate + r * rh + x
  if credit >= deficit then return deficit, now, 0 end
  return credit, now, rem
end

local CODES = {blocked = 0, limited = 1, unlimited = 2}
local function codes(s) return CODES[s] or -1 end
local function num(s) if s == '' then return -1 end return tonumber(s) end

local function view(status)
  local credit, vat, vcarry = accrue()
  return {status, bal + credit, res, vcarry, vat, codes(state), mx, rate, starting,
          codes(f[5]), num(f[6]), num(f[7]), num(f[8])}
end

if op == 'view' then
  redis.call('HSET', pool, 'res', res)
  return view(1)
end

if op == 'reserve' then
  -- The admission rule of `lumen.billing.store.hold_size`.
  local soft, amount, minimum = ARGV[7] == '1', tonumber(ARGV[8]), ARGV[11]
  local status, held = 0, 0
  if state == 'blocked' then status = 3
  elseif state == 'unlimited' then status = 2
  else
    local credit = accrue()
    local avail = bal + credit - res
    status = 1
    if amount == 0 then held = 0
    elseif soft then
      if avail > 0 then held = amount else status = 0 end
    elseif avail >= amount then held = amount
    elseif minimum ~= '' and avail >= math.max(tonumber(minimum), 1) then held = avail
    else status = 0 end
    if status == 1 and held > 0 then
      redis.call('HSET', holds, ARGV[9], held)
      redis.call('ZADD', exp, ARGV[10], ARGV[9])
      res = res + held
    end
  end
  redis.call('HSET', pool, 'res', res)
  local out = view(status)
  table.insert(out, held)
  return out
end

-- Balance-changing operations: materialise the due refill first, then the movement.
local moves = {}
local function move(kind, amount)
  table.insert(moves, kind); table.insert(moves, amount); table.insert(moves, bal)
end
local function materialise()
  local credit
  credit, at, carry = accrue()
  if credit > 0 then bal = bal + credit; move('refill', credit) end
end
local charged, beyond = 0, 0
local usage = false

if op == 'settle' then
  -- The whole cost is charged: below zero is a debt, paid first by the next refills.
  local id, cost = ARGV[7], tonumber(ARGV[8])
  if ARGV[9] ~= '' then usage = ARGV[9] end
  local held = 0
  local a = redis.call('HGET', holds, id)
  if a then
    held = tonumber(a); res = res - held; redis.call('HDEL', holds, id); redis.call('ZREM', exp, id)
  end
  if cost > 0 and state ~= 'unlimited' then
    materialise()
    charged = cost
    bal = bal - cost
    move('charge', -cost)
    if cost > held then
      -- `beyond_hold_note`: the cause (a JSON string or null) and then the amounts.
      beyond = cost - held
      local text = 'cost ' .. fmt(cost) .. ', ' .. fmt(beyond) ..
        ' beyond the hold, owed as debt if the pool is short (micro-coins)'
      if ctx_note == 'null' then
        ctx_note = '"' .. text .. '"'
      else
        ctx_note = string.sub(ctx_note, 1, -2) .. '; ' .. text .. '"'
      end
    end
  end
elseif op == 'grant' or op == 'refund' then
  materialise()
  bal = bal + tonumber(ARGV[7])
  move(op, tonumber(ARGV[7]))
elseif op == 'set' or op == 'reset' then
  local target = tonumber(ARGV[7])
  if op == 'reset' then target = starting end
  local delta = target - bal
  if now > at then at = now end
  carry = 0
  bal = target
  move(op, delta)
else
  return redis.error_reply('unknown op ' .. op)
end

-- Every row of a change carries the refill clock after the change; refills are the system's.
for i = 1, #moves, 3 do
  if moves[i] == 'refill' then
    journal('refill', moves[i + 1], moves[i + 2], now, at, carry, 'null', '"system"', 'null')
  else
    journal(moves[i], moves[i + 1], moves[i + 2], now, at, carry, ARGV[L + 1], ARGV[L + 2], ctx_note)
  end
end
if usage then
  -- The request's usage record, in the same step as its charge: [id, "usage", record].
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  table.insert(entries, '["' .. epoch .. '-' .. fmt(seq) .. '","usage",' .. usage .. ']')
end
append_entries()
redis.call('HSET', pool, 'bal', bal, 'at', at, 'carry', carry, 'res', res)
local out = {1, bal, at, carry, charged, beyond}
for _, v in ipairs(moves) do table.insert(out, v) end
return out
"""

# Renews many holds (of any pools) in one call. KEYS: per hold, its pool's exp and holds keys.
# ARGV: now, the new expiry, then the hold ids. A hold whose expiry has passed stays expired (the
# next operation on its pool releases it), as the per-pool 'renew' decides.
_RENEW_MANY = r"""
local now, until_at = tonumber(ARGV[1]), ARGV[2]
local out = {}
for i = 3, #ARGV do
  local exp, holds, id = KEYS[2 * i - 5], KEYS[2 * i - 4], ARGV[i]
  local score = redis.call('ZSCORE', exp, id)
  if score and tonumber(score) > now and redis.call('HEXISTS', holds, id) == 1 then
    redis.call('ZADD', exp, until_at, id)
    table.insert(out, 1)
  else
    table.insert(out, 0)
  end
end
return out
"""
_RENEW_CHUNK = 500
"""Holds renewed per script call (a round renews every live hold of the process)."""

_EPOCH_ATTEMPTS = 3
_STATES: dict[int, PoolStateName] = {0: "blocked", 1: "limited", 2: "unlimited"}
_STATUS: dict[int, AdmissionStatus] = {0: "insufficient", 1: "ok", 2: "unlimited", 3: "blocked"}


def _opt(value: int | str | None) -> str:
    return "" if value is None else str(value)


def _json(value: str | None) -> str:
    return orjson.dumps(value).decode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_client(url: str, *, max_connections: int = 64, timeout: float = 10.0) -> Redis:
    """A client for `RedisPoolStore` whose pool waits (up to `timeout` s) for a free connection
    under a burst of requests, instead of failing with "Too many connections"."""
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout
    )
    return Redis(connection_pool=pool)


class RedisPoolStore(PoolStore):
    """Pools in Redis. `redis` is the caller's client (``redis.asyncio.Redis``); it is not closed
    here. `prefix` namespaces the keys (e.g. per deployment, or per test)."""

    journals = True

    def __init__(self, redis: Redis, *, prefix: str = "lumen:coins:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._outbox = OutboxKeys.under(prefix)
        self._script = redis.register_script(_SCRIPT)
        self._renew_many = redis.register_script(_RENEW_MANY)

    def outbox_drainer(self, engine: AsyncEngine, *, interval: float) -> OutboxDrainer:
        return OutboxDrainer(self._redis, engine, keys=self._outbox, interval=interval)

    def _keys(self, principal: str) -> list[str]:
        base = f"{self._prefix}{{{principal}}}"
        return [f"{base}:pool", f"{base}:holds", f"{base}:exp", self._outbox.meta, self._outbox.entries]

    def _hold_keys(self, principal: str) -> tuple[str, str]:
        """The keys `_RENEW_MANY` takes per hold: the pool's exp and holds."""
        base = f"{self._prefix}{{{principal}}}"
        return f"{base}:exp", f"{base}:holds"

    async def _call(self, principal: str, *args: int | str) -> Any:
        for _ in range(_EPOCH_ATTEMPTS):
            result = await self._script(keys=self._keys(principal), args=list(args))
            if not (isinstance(result, list) and result and result[0] < 0):
                return result
            if result[0] == -1:
                raise PoolNotLoaded(principal)
            # -2: the outbox has no epoch (Redis started empty); make one, then run the operation
            # again (the script changed nothing). HSETNX: of racing processes, the first one wins.
            await self._redis.hsetnx(self._outbox.meta, "epoch", os.urandom(8).hex())
        raise RuntimeError(f"the coin ledger outbox {self._outbox.meta} keeps losing its epoch")

    @staticmethod
    def _ledger_args(principal: str, ctx: Context) -> tuple[str, str, str, str]:
        # JSON, spliced as they are into the outbox entry by the script.
        return _json(principal), _json(ctx.request_id), _json(ctx.actor), _json(ctx.note)

    @staticmethod
    def _params_args(params: PoolParams) -> tuple[str, int, int, int]:
        return params.state, params.max_micro, params.refresh_micro, params.starting_micro

    @staticmethod
    def _view(r: list[Any]) -> PoolView:
        def own(i: int) -> int | None:
            return None if int(r[i]) < 0 else int(r[i])

        state = int(r[9])
        overrides = PoolOverrides(None if state < 0 else _STATES[state], own(10), own(11), own(12))
        params = PoolParams(_STATES[int(r[5])], int(r[6]), int(r[7]), int(r[8]))
        return PoolView(int(r[1]), int(r[2]), int(r[3]), int(r[4]), params, overrides)

    @staticmethod
    def _change(r: list[Any]) -> Change:
        moves = tuple(Movement(_text(r[i]), int(r[i + 1]), int(r[i + 2])) for i in range(6, len(r), 3))
        return Change(moves, int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))

    async def seed(self, principal: str, seed: Seed, *, opens: bool = False) -> bool:
        o = seed.overrides
        created = await self._call(
            principal,
            "seed",
            seed.balance_micro,
            seed.refilled_at,
            seed.carry,
            _opt(o.state),
            _opt(o.max_micro),
            _opt(o.refresh_micro),
            _opt(o.starting_micro),
            "1" if opens else "0",
            *self._ledger_args(principal, START_CONTEXT),
        )
        return int(created[0]) == 1

    async def reserve(
        self,
        principal: str,
        *,
        now: int,
        params: PoolParams,
        soft: bool,
        amount: int,
        hold_id: str,
        expires_at: int,
        minimum: int | None = None,
    ) -> Admission:
        r = await self._call(
            principal,
            "reserve",
            now,
            *self._params_args(params),
            "1" if soft else "0",
            amount,
            hold_id,
            expires_at,
            _opt(minimum),
        )
        return Admission(_STATUS[int(r[0])], self._view(r), int(r[13]))

    async def settle(
        self,
        principal: str,
        *,
        now: int,
        params: PoolParams,
        hold_id: str,
        cost: int,
        ctx: Context = NO_CONTEXT,
        usage: str | None = None,
    ) -> Change:
        r = await self._call(
            principal,
            "settle",
            now,
            *self._params_args(params),
            hold_id,
            cost,
            usage or "",
            *self._ledger_args(principal, ctx),
        )
        return self._change(r)

    async def release(self, principal: str, *, now: int, hold_id: str) -> None:
        await self._call(principal, "release", now, hold_id)

    async def renew(self, principal: str, *, now: int, hold_id: str, expires_at: int) -> bool:
        r = await self._call(principal, "renew", now, hold_id, expires_at)
        return int(r[0]) == 1

    async def renew_many(self, holds: Sequence[tuple[str, str]], *, now: int, expires_at: int) -> list[bool]:
        renewed: list[bool] = []
        for start in range(0, len(holds), _RENEW_CHUNK):
            chunk = holds[start : start + _RENEW_CHUNK]
            keys = [key for principal, _ in chunk for key in self._hold_keys(principal)]
            result = await self._renew_many(keys=keys, args=[now, expires_at, *(h for _, h in chunk)])
            renewed.extend(int(flag) == 1 for flag in result)
        return renewed

    async def adjust(
        self,
        principal: str,
        *,
        now: int,
        params: PoolParams,
        kind: AdjustKind,
        amount: int,
        ctx: Context = NO_CONTEXT,
    ) -> Change:
        r = await self._call(
            principal, kind, now, *self._params_args(params), amount, *self._ledger_args(principal, ctx)
        )
        return self._change(r)

    async def view(self, principal: str, *, now: int, params: PoolParams) -> PoolView:
        return self._view(await self._call(principal, "view", now, *self._params_args(params)))

    async def set_overrides(self, principal: str, overrides: PoolOverrides) -> None:
        o = overrides
        await self._call(
            principal,
            "overrides",
            _opt(o.state),
            _opt(o.max_micro),
            _opt(o.refresh_micro),
            _opt(o.starting_micro),
        )
