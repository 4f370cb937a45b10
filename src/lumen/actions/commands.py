"""Coin commands for a running server that keeps the balances in its memory (no Redis).

Such a server is the only place its balances are right: a `lumen coins grant` written to the
database behind its back would be overwritten by the server's next write and never seen by its
requests. So while one runs, the CLI hands it the command instead:

1. the CLI inserts the command into `coin_commands` (`pending`) and announces it on the change
   bus (`Change.COINS`, the command's id), which the server reads within one poll of the change log;
2. the server claims it (`pending` → `running`, one UPDATE, so only one process executes it),
   carries it out with its own bank (`LocalCoins`) and answers with the pool as it is then
   (`done`) or with the error (`failed`);
3. the CLI waits for the answer and prints that pool: the balance the server uses.

Whether such a server runs is told by its heartbeat (`lumen.changes.local_server_runs`). A command
that no server claims within `CLAIM_SECONDS` is cancelled (nothing was changed) and the CLI says
so. Answered commands are pruned after an hour (`prune`, called with the heartbeat).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.actions.coins import CoinCommand
from lumen.actions.context import CoinDesk
from lumen.billing.pools import PoolOverrides, PoolParams
from lumen.billing.store import PoolView
from lumen.changes import KEEP_SECONDS, Change, ChangeBus
from lumen.errors import LumenError
from lumen.store.tables import coin_commands

log = logging.getLogger(__name__)
CLAIM_SECONDS = 10.0
"""How long the CLI waits for a running server to take a command (it polls every 0.5 s)."""
ANSWER_SECONDS = 30.0
"""How long the CLI waits for the answer to a command the server took."""
WAIT_STEP_SECONDS = 0.05


class CommandFailed(LumenError):
    """The server refused or failed a coin command; the message is the server's."""

    status = 400
    type = "invalid_request_error"


class ServerDidNotAnswer(LumenError):
    status = 503
    code = "server_did_not_answer"


# --- the CLI's side -------------------------------------------------------------------------------


class ServerCoins:
    """A `CoinDesk` that hands each command to the running server and waits for its answer."""

    def __init__(
        self,
        engine: AsyncEngine,
        changes: ChangeBus,
        *,
        claim_seconds: float = CLAIM_SECONDS,
        answer_seconds: float = ANSWER_SECONDS,
    ) -> None:
        self._engine = engine
        self._changes = changes
        self._claim_seconds = claim_seconds
        self._answer_seconds = answer_seconds

    async def run(self, command: CoinCommand, actor: str) -> PoolView:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(coin_commands).values(
                    created_at=datetime.now(UTC),
                    principal=command.principal,
                    action=command.action,
                    amount_micro=command.amount_micro,
                    overrides=asdict(command.overrides) if command.overrides is not None else None,
                    note=command.note,
                    actor=actor,
                    state="pending",
                )
            )
        key = result.inserted_primary_key
        assert key is not None
        command_id = int(key[0])
        await self._changes.publish(Change.COINS, str(command_id))
        state, answer = await self._wait(command_id, ("running", "done", "failed"), self._claim_seconds)
        if state == "pending" and await self._cancel(command_id):
            raise ServerDidNotAnswer(
                "The running Lumen server did not take the command; nothing was changed. "
                "Is it stopping? Try again, or stop it and run the command then."
            )
        state, answer = await self._wait(command_id, ("done", "failed"), self._answer_seconds)
        if state == "done" and answer is not None:
            return view_from_json(answer)
        if state == "failed" and answer is not None:
            raise CommandFailed(
                str(answer.get("message")), code=answer.get("code"), param=answer.get("param")
            )
        raise ServerDidNotAnswer(
            "The running Lumen server took the command but did not answer in time; "
            "see whether it was applied with `lumen coins show`."
        )

    async def _wait(
        self, command_id: int, states: tuple[str, ...], seconds: float
    ) -> tuple[str, dict[str, Any] | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        query = select(coin_commands.c.state, coin_commands.c.answer).where(coin_commands.c.id == command_id)
        while True:
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).one()
            if row.state in states or loop.time() >= deadline:
                return str(row.state), row.answer
            await asyncio.sleep(WAIT_STEP_SECONDS)

    async def _cancel(self, command_id: int) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(coin_commands)
                .where(coin_commands.c.id == command_id, coin_commands.c.state == "pending")
                .values(state="cancelled", answered_at=datetime.now(UTC))
            )
        return bool(result.rowcount)


# --- the server's side ----------------------------------------------------------------------------


async def execute(engine: AsyncEngine, command_id: int, desk: CoinDesk) -> bool:
    """Claims and carries out one command with the server's own bank; False when another process
    claimed it first or the CLI cancelled it."""
    async with engine.begin() as conn:
        claimed = await conn.execute(
            update(coin_commands)
            .where(coin_commands.c.id == command_id, coin_commands.c.state == "pending")
            .values(state="running")
        )
        if not claimed.rowcount:
            return False
        row = (await conn.execute(select(coin_commands).where(coin_commands.c.id == command_id))).one()
    overrides = PoolOverrides(**row.overrides) if row.overrides is not None else None
    command = CoinCommand(row.principal, row.action, row.amount_micro, overrides, row.note)
    try:
        state, answer = "done", view_to_json(await desk.run(command, row.actor))
    except LumenError as exc:
        state, answer = "failed", {"message": exc.message, "code": exc.code, "param": exc.param}
    except Exception:
        # The command must not stay `running`: the CLI would wait for nothing.
        log.exception("coin command %d failed", command_id)
        state, answer = "failed", {"message": "The server could not carry out the command; see its log."}
    async with engine.begin() as conn:
        await conn.execute(
            update(coin_commands)
            .where(coin_commands.c.id == command_id)
            .values(state=state, answer=answer, answered_at=datetime.now(UTC))
        )
    return True


def view_to_json(view: PoolView) -> dict[str, Any]:
    return asdict(view)


def view_from_json(data: dict[str, Any]) -> PoolView:
    return PoolView(
        balance_micro=int(data["balance_micro"]),
        reserved_micro=int(data["reserved_micro"]),
        carry=int(data["carry"]),
        refilled_at=int(data["refilled_at"]),
        params=PoolParams(**data["params"]),
        overrides=PoolOverrides(**data["overrides"]),
    )


async def prune(engine: AsyncEngine) -> None:
    """Deletes the commands older than `KEEP_SECONDS` (answered long ago, or abandoned)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=KEEP_SECONDS)
    async with engine.begin() as conn:
        await conn.execute(delete(coin_commands).where(coin_commands.c.created_at < cutoff))
