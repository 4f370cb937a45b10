"""`lumen audit`: recompute every balance from the ledger and compare it with ``coin_pools``.

The ledger writer keeps ``coin_pools.balance_micro`` equal to the sum of the principal's ledger
rows in every transaction, so any difference means the tables were changed outside Lumen, a
bug, or a damaged database. The audit reads one consistent snapshot (one transaction) and is safe
to run while Lumen serves; it checks the database, the durable truth (movements still in a
process's write-behind buffer are in neither table yet).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.store.tables import coin_ledger, coin_pools


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
        if engine.dialect.name == "postgresql":
            # One snapshot for both reads, so a flush between them cannot look like a discrepancy.
            await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
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
