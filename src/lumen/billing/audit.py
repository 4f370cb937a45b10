"""`lumen audit`: recompute every balance from the ledger and compare it with ``coin_pools``;
with Redis, also compare every pool's live balance with the database.

The ledger writer keeps ``coin_pools.balance_micro`` equal to the sum of the principal's ledger
rows in every transaction, so any difference means the tables were changed outside Lumen, a
bug, or a damaged database. `audit` reads one consistent snapshot (one transaction) and is safe
to run while Lumen serves; it checks the database, the durable truth (movements still in a
process's write-behind buffer, or in the Redis outbox, are in neither table yet).

`audit_redis` checks the other half: that the database explains each live balance in Redis, that
is ``Redis balance - the pool's movements still in the outbox == coin_pools.balance_micro``. A
difference means a movement changed a balance without reaching the ledger (the gap the outbox
closes) or Redis lost its data under a drainer mid-write. It holds the outbox's drain lock while it
reads (drainers pause meanwhile; requests do not), so that no drain can land between its reads.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumen.billing.ledger import LedgerEntry
from lumen.billing.outbox import LOCK_POLL, OutboxKeys, movement_order, parse_outbox_entry
from lumen.store.tables import coin_ledger, coin_pools

AUDIT_LOCK_TTL = 60.0
"""Seconds `audit_redis` may hold the drain lock; an audit that takes longer is inconclusive."""
_CHUNK = 1000

# KEYS: the outbox's meta hash, then pool hashes. Returns epoch, seq, then each pool's balance
# (false for a pool that is gone), all as of one instant.
_SNAPSHOT = r"""
local out = {redis.call('HGET', KEYS[1], 'epoch'), redis.call('HGET', KEYS[1], 'seq') or '0'}
for i = 2, #KEYS do table.insert(out, redis.call('HGET', KEYS[i], 'bal')) end
return out
"""


@dataclass(frozen=True, slots=True)
class Discrepancy:
    principal: str
    pool_balance_micro: int | None  # None: ledger rows but no pool row
    ledger_sum_micro: int

    @property
    def difference_micro(self) -> int:
        """How much the pool's balance exceeds what the ledger explains."""
        return (self.pool_balance_micro or 0) - self.ledger_sum_micro

    def __str__(self) -> str:
        pool = "no pool row" if self.pool_balance_micro is None else f"balance {self.pool_balance_micro}"
        return (
            f"{self.principal}: {pool}, ledger sum {self.ledger_sum_micro} "
            f"(difference {self.difference_micro} micro-coins)"
        )


async def audit(engine: AsyncEngine) -> list[Discrepancy]:
    """Every principal whose pool balance differs from its ledger sum, sorted by principal."""
    sums = select(coin_ledger.c.principal, func.sum(coin_ledger.c.amount_micro)).group_by(
        coin_ledger.c.principal
    )
    async with engine.connect() as conn, conn.begin():
        await _repeatable_read(engine, conn)
        ledger = {p: int(total) for p, total in (await conn.execute(sums)).all()}
        pools = {
            p: int(balance)
            for p, balance in (
                await conn.execute(select(coin_pools.c.principal, coin_pools.c.balance_micro))
            ).all()
        }
    found: list[Discrepancy] = []
    for principal in sorted(ledger.keys() | pools.keys()):
        balance = pools.get(principal)
        total = ledger.get(principal, 0)
        if balance != total:  # also when there is no pool row (None)
            found.append(Discrepancy(principal, balance, total))
    return found


class AuditInconclusive(RuntimeError):
    """The audit could not read a consistent state (it lost the drain lock); run it again."""


@dataclass(frozen=True, slots=True)
class RedisDiscrepancy:
    principal: str
    redis_balance_micro: int
    outbox_micro: int  # the pool's movements still in the outbox (not in the database yet)
    pool_balance_micro: int | None  # None: no coin_pools row

    @property
    def difference_micro(self) -> int:
        """How much the live balance exceeds what the database (and the outbox) explain."""
        return self.redis_balance_micro - self.outbox_micro - (self.pool_balance_micro or 0)

    def __str__(self) -> str:
        pool = "no pool row" if self.pool_balance_micro is None else f"balance {self.pool_balance_micro}"
        return (
            f"{self.principal}: Redis balance {self.redis_balance_micro}, {self.outbox_micro} of it in the "
            f"outbox, database {pool} (difference {self.difference_micro} micro-coins)"
        )


@dataclass(frozen=True, slots=True)
class RedisAudit:
    pools: int  # pools in Redis that were compared
    outbox: int  # movements waiting in the outbox
    discrepancies: list[RedisDiscrepancy]


async def audit_redis(
    engine: AsyncEngine, redis: Redis, *, prefix: str, lock_wait: float = AUDIT_LOCK_TTL
) -> RedisAudit:
    """Compare each pool in Redis (under `prefix`, the pool store's) with the database.

    Why it holds: under the drain lock only a drainer whose lock already expired can still commit,
    and only entries it peeked before the audit took the lock; an outbox entry counts as pending
    unless its id is in the ledger snapshot, so such a commit is seen consistently on both sides.
    A pool snapshot taken at counter value ``seq`` includes exactly the movements up to ``seq``.
    """
    keys = OutboxKeys.under(prefix)
    token = os.urandom(16).hex()
    async with asyncio.timeout(lock_wait):
        while not await redis.set(keys.lock, token, nx=True, px=int(AUDIT_LOCK_TTL * 1000)):
            await asyncio.sleep(LOCK_POLL)
    try:
        principals = await _redis_principals(redis, prefix)
        balances: dict[str, tuple[int, tuple[str | None, int]]] = {}
        snapshot = redis.register_script(_SNAPSHOT)
        for i in range(0, len(principals), _CHUNK):
            chunk = principals[i : i + _CHUNK]
            pool_keys = [f"{prefix}{{{p}}}:pool" for p in chunk]
            epoch, seq, *values = await snapshot(keys=[keys.meta, *pool_keys])
            mark = (None if epoch is None else _text(epoch), int(seq))
            for principal, value in zip(chunk, values, strict=True):
                if value is not None:
                    balances[principal] = (int(value), mark)
        raw = await redis.lrange(keys.entries, 0, -1)
        # Usage records ride in the outbox too; they move no coins.
        entries = [e for e in map(parse_outbox_entry, raw) if isinstance(e, LedgerEntry)]
        async with engine.connect() as conn, conn.begin():
            await _repeatable_read(engine, conn)
            stored = {
                p: int(b)
                for p, b in (
                    await conn.execute(select(coin_pools.c.principal, coin_pools.c.balance_micro))
                ).all()
            }
            ids = [e.movement_id for e in entries if e.movement_id is not None]
            written = await _ids_in_ledger(conn, ids)
        if _text(await redis.get(keys.lock)) != token:
            raise AuditInconclusive("the audit held the outbox drain lock too long; run it again")
    finally:
        await redis.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            1,
            keys.lock,
            token,
        )
    pending: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for e in entries:
        if e.movement_id not in written:
            epoch, seq = movement_order(e.movement_id or "")
            pending[e.principal].append((epoch, seq, e.amount_micro))
    found: list[RedisDiscrepancy] = []
    for principal in sorted(balances):
        balance, (epoch, seq) = balances[principal]
        # Movements made after this pool's snapshot are not in its balance.
        outbox = sum(a for ep, s, a in pending.get(principal, ()) if ep != epoch or s <= seq)
        row = stored.get(principal)
        if balance - outbox != (row or 0):
            found.append(RedisDiscrepancy(principal, balance, outbox, row))
    return RedisAudit(len(balances), len(entries), found)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _redis_principals(redis: Redis, prefix: str) -> list[str]:
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "{*}:pool"
    found = re.compile(re.escape(prefix) + r"\{(.*)\}:pool")
    principals = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        matched = found.fullmatch(_text(key))
        if matched:
            principals.append(matched.group(1))
    return sorted(set(principals))


async def _repeatable_read(engine: AsyncEngine, conn: AsyncConnection) -> None:
    if engine.dialect.name == "postgresql":
        # One snapshot for every read, so a drain between them cannot look like a discrepancy.
        await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


async def _ids_in_ledger(conn: AsyncConnection, ids: list[str]) -> set[str]:
    written: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        query = select(coin_ledger.c.movement_id).where(coin_ledger.c.movement_id.in_(ids[i : i + _CHUNK]))
        written.update(str(m) for m in (await conn.execute(query)).scalars())
    return written


@dataclass(frozen=True)
class FullAudit:
    """`lumen audit` and `GET /api/admin/audit`: the ledger, and with Redis the live balances."""

    discrepancies: list[object]
    live: RedisAudit | None  # None without Redis


async def audit_all(engine: AsyncEngine, *, redis_url: str | None, redis_prefix: str) -> FullAudit:
    """Every balance against its ledger; with Redis (`redis_url`), every live balance too, under
    the pool store's keys (`redis_prefix` + "coins:")."""
    from lumen.billing.redis_store import redis_client

    found: list[object] = list(await audit(engine))
    if redis_url is None:
        return FullAudit(found, None)
    client = redis_client(redis_url)
    try:
        live = await audit_redis(engine, client, prefix=redis_prefix + "coins:")
    finally:
        await client.aclose()
    return FullAudit([*found, *live.discrepancies], live)
