"""One Lumen-like process for `test_processes`: its own CoinBank, Redis connection and engine.

Usage: python -m tests.billing.coin_worker DATABASE_URL REDIS_URL PREFIX FIRST COUNT
Prints "ready", waits for the key PREFIX + "go", makes COUNT concurrent requests of 1 coin each
against project:7 (a 10-coin pool), then prints the number admitted.
"""

from __future__ import annotations

import asyncio
import sys

from lumen.billing.bank import CoinBank
from lumen.billing.pools import MICRO, PoolParams
from lumen.billing.redis_store import RedisPoolStore, redis_client
from lumen.errors import InsufficientQuota
from lumen.store.engine import create_engine

PARAMS = PoolParams("limited", 10 * MICRO, 0, 10 * MICRO)


async def main(database_url: str, redis_url: str, prefix: str, first: int, count: int) -> None:
    engine = create_engine(database_url)
    client = redis_client(redis_url)
    bank = CoinBank(RedisPoolStore(client, prefix=prefix), engine, flush_interval=0.05)
    await bank.start()

    async def request(i: int) -> bool:
        try:
            r = await bank.reserve("project:7", MICRO, request_id=f"req-{i}", params=PARAMS)
        except InsufficientQuota:
            return False
        await asyncio.sleep(0.001)
        await bank.settle(r, MICRO)
        return True

    try:
        print("ready", flush=True)
        while not await client.exists(prefix + "go"):
            await asyncio.sleep(0.002)
        results = await asyncio.gather(*(request(i) for i in range(first, first + count)))
    finally:
        await bank.aclose()
        await client.aclose()
        await engine.dispose()
    print(sum(results), flush=True)


if __name__ == "__main__":
    db, redis_url, prefix, first, count = sys.argv[1:]
    asyncio.run(main(db, redis_url, prefix, int(first), int(count)))
