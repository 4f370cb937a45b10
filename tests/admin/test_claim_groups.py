"""A group a user is in through an identity-provider claim gives its pool everywhere alike: on
the request path, in the admin API and in the CLI."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from sqlalchemy import update

from lumen.cli import main
from lumen.store.engine import create_engine
from lumen.store.tables import users
from tests.support import ECHO, model, running_lumen, write_config

EMAIL = "ada@example.edu"
CLAIMS = {"affiliation": "faculty@example.edu;member@example.edu"}
CONFIG: dict[str, Any] = {
    "models": [model("echo", ECHO)],
    "billing": {"default_pool": {"max": 100, "refresh": 0}},
    "groups": [
        {
            "name": "faculty",
            "rules": [{"claim": "affiliation", "pattern": "faculty@.*"}],
            "pool": {"max": 500, "refresh": 0, "starting": 400},
        }
    ],
}


async def _store_claims(database_url: str) -> None:
    """What an OIDC login stores (`lumen.identity.oidc.login_user`)."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(users).where(users.c.email == EMAIL).values(claims=CLAIMS))
    finally:
        await engine.dispose()


def test_the_admin_api_sees_the_pool_the_gate_uses(tmp_path: Path) -> None:
    with running_lumen(tmp_path, CONFIG) as lumen:
        with httpx.Client(base_url=lumen.url + "/api/admin", headers=lumen.auth) as api:
            user_id = api.post("/users", json={"email": EMAIL}).json()["id"]
            key = api.post("/keys", json={"user_id": user_id}).json()["key"]
            lumen.run(_store_claims(lumen.state.settings.database_url))
            principal = lumen.run(lumen.state.authenticate(f"Bearer {key}"))
            assert principal.groups == ("faculty",)
            gate_pool = lumen.state.gate.pool_params(principal.groups)
            assert gate_pool.starting_micro == 400_000_000
            shown = api.get("/coins", params={"user_id": user_id}).json()
            assert shown["balance"] == "400"  # the group's starting balance, not the default's 100
            granted = api.post("/coins/grant", json={"user_id": user_id, "amount": "1"}).json()
            assert granted["balance"] == "401"


def test_the_cli_sees_the_pool_the_gate_uses(tmp_path: Path) -> None:
    args = ["--config", str(write_config(tmp_path / "lumen.yaml", CONFIG)), "--data-dir", str(tmp_path / "d")]
    runner = CliRunner()
    assert runner.invoke(main, ["users", "create", EMAIL, *args]).exit_code == 0
    asyncio.run(_store_claims(f"sqlite+aiosqlite:///{tmp_path / 'd' / 'lumen.db'}"))
    shown = runner.invoke(main, ["coins", "show", "--user", EMAIL, *args])
    assert shown.exit_code == 0, shown.output
    assert re.search(r"balance 400 coins, reserved 0; max 500, refresh 0/h", shown.output), shown.output
