"""Round trips of rules and acknowledgements, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.access import store
from lumen.access.config import EntityAccess, notice_hash
from lumen.store.tables import model_access_rules, model_acknowledgements
from tests.access.conftest import people

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


async def _count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_rule_round_trip(engine: AsyncEngine) -> None:
    assert await store.get_rule(engine=engine, principal="user:1") is None
    rule = EntityAccess(default="blocked", allow=("gpt-*", "llama-3.3-70b"), block=("gpt-4o",))
    await store.set_rule(engine=engine, principal="user:1", rule=rule, actor="user:9", at=T0)
    assert await store.get_rule(engine=engine, principal="user:1") == rule
    async with engine.connect() as conn:
        row = (await conn.execute(select(model_access_rules))).one()
    assert (row.updated_at, row.updated_by) == (T0, "user:9")

    replaced = EntityAccess(allow=("qwen3-32b",))
    await store.set_rule(engine=engine, principal="user:1", rule=replaced)
    await store.set_rule(engine=engine, principal="project:4", rule=EntityAccess(default="allowed"))
    assert await store.all_rules(engine=engine) == {
        "user:1": replaced,
        "project:4": EntityAccess(default="allowed"),
    }


async def test_an_empty_rule_is_no_rule(engine: AsyncEngine) -> None:
    await store.set_rule(engine=engine, principal="user:1", rule=EntityAccess(allow=("a",)))
    await store.set_rule(engine=engine, principal="user:1", rule=EntityAccess())
    assert await _count(engine, model_access_rules) == 0
    await store.set_rule(engine=engine, principal="user:1", rule=EntityAccess(block=("a",)))
    assert await store.delete_rule(engine=engine, principal="user:1") is True
    assert await store.delete_rule(engine=engine, principal="user:1") is False
    assert await store.get_rule(engine=engine, principal="user:1") is None


async def test_set_model_rule_edits_one_entry(engine: AsyncEngine) -> None:
    p = "project:3"
    assert await store.set_model_rule(
        engine=engine, principal=p, model="a", access="allowed"
    ) == EntityAccess(allow=("a",))
    await store.set_rule(
        engine=engine, principal=p, rule=EntityAccess(default="blocked", allow=("a", "b"), block=("c",))
    )
    moved = await store.set_model_rule(
        engine=engine, principal=p, model="a", access="blocked", actor="user:1"
    )
    assert moved == EntityAccess(default="blocked", allow=("b",), block=("c", "a"))
    assert await store.get_rule(engine=engine, principal=p) == moved
    await store.set_model_rule(engine=engine, principal=p, model="b", access=None)
    await store.set_model_rule(engine=engine, principal=p, model="c", access=None)
    last = await store.set_model_rule(engine=engine, principal=p, model="a", access=None)
    assert last == EntityAccess(default="blocked")
    await store.set_rule(engine=engine, principal=p, rule=EntityAccess(allow=("x",)))
    assert await store.set_model_rule(engine=engine, principal=p, model="x", access=None) is None
    assert await _count(engine, model_access_rules) == 0


async def test_concurrent_model_rule_edits_are_all_kept(engine: AsyncEngine) -> None:
    async with asyncio.timeout(60):
        await asyncio.gather(
            *(
                store.set_model_rule(engine=engine, principal="user:1", model=f"m{i}", access="allowed")
                for i in range(8)
            )
        )
    rule = await store.get_rule(engine=engine, principal="user:1")
    assert rule is not None and sorted(rule.allow) == [f"m{i}" for i in range(8)]


async def test_acknowledgement_round_trip_and_idempotence(engine: AsyncEngine) -> None:
    notice = "Research use only.\nNo patient data."
    ack, created = await store.record_acknowledgement(
        engine=engine, principal="user:1", model="med", notice=notice, actor="user:1", via="api", at=T0
    )
    assert created
    assert ack == store.Acknowledgement(
        principal="user:1",
        model="med",
        notice_hash=notice_hash(notice),
        notice=notice,
        acknowledged_at=T0,
        acknowledged_by="user:1",
        via="api",
    )
    assert ack.acknowledged_at.tzinfo is not None
    again, created_again = await store.record_acknowledgement(
        engine=engine,
        principal="user:1",
        model="med",
        notice=notice,
        actor="user:1",
        via="web",
        at=T0 + timedelta(1),
    )
    assert (again, created_again) == (ack, False)  # the first record is kept
    assert await _count(engine, model_acknowledgements) == 1


async def test_acknowledgements_keep_history_per_notice(engine: AsyncEngine) -> None:
    local = timezone(timedelta(hours=-6))
    for i, (model, notice) in enumerate([("med", "v1"), ("med", "v2"), ("other", "v1")]):
        await store.record_acknowledgement(
            engine=engine,
            principal="project:1",
            model=model,
            notice=notice,
            actor="user:2",
            via="web",
            at=(T0 + timedelta(minutes=i)).astimezone(local),
        )
    await store.record_acknowledgement(
        engine=engine, principal="user:2", model="med", notice="v2", actor="user:2", via="web", at=T0
    )
    acks = await store.acknowledgements(engine=engine, principal="project:1")
    assert [(a.model, a.notice) for a in acks] == [("med", "v1"), ("med", "v2"), ("other", "v1")]
    assert acks[1].acknowledged_at == T0 + timedelta(minutes=1) and acks[1].acknowledged_at.tzinfo == UTC
    med = await store.acknowledgements(engine=engine, principal="project:1", model="med")
    assert [a.notice_hash for a in med] == [notice_hash("v1"), notice_hash("v2")]


async def test_load_principal_and_load_all(engine: AsyncEngine) -> None:
    assert await store.load_principal(engine=engine, principal="user:1") == store.StoredAccess()
    await store.set_rule(engine=engine, principal="user:1", rule=EntityAccess(block=("x",)))
    await store.set_rule(engine=engine, principal="user:3", rule=EntityAccess(default="allowed"))
    ack, _ = await store.record_acknowledgement(
        engine=engine, principal="user:1", model="m", notice="n", actor="user:1", via="web"
    )
    ack2, _ = await store.record_acknowledgement(
        engine=engine, principal="project:2", model="m", notice="n", actor="user:1", via="web"
    )
    one = await store.load_principal(engine=engine, principal="user:1")
    assert one == store.StoredAccess(rule=EntityAccess(block=("x",)), acknowledgements=(ack,))
    assert await store.load_all(engine=engine) == {
        "user:1": one,
        "user:3": store.StoredAccess(rule=EntityAccess(default="allowed")),
        "project:2": store.StoredAccess(acknowledgements=(ack2,)),
    }


async def test_can_acknowledge(engine: AsyncEngine) -> None:
    await people(engine)

    async def can(principal: str, actor: str) -> bool:
        return await store.can_acknowledge(engine=engine, principal=principal, actor=actor)

    assert await can("user:1", "user:1")
    assert not await can("user:1", "user:2")
    assert await can("project:1", "user:2")  # manager
    assert await can("project:1", "user:3")  # owner
    assert not await can("project:1", "user:1")
    assert not await can("project:1", "project:1")  # a key of the project is not a person
    assert not await can("project:99", "user:2")


async def test_a_damaged_rule_blocks_everything(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            model_access_rules.insert(),
            [
                {
                    "principal": "user:1",
                    "default_access": "graylist",
                    "allow": ["a"],
                    "block": [],
                    "updated_at": T0,
                }
            ],
        )
    assert await store.get_rule(engine=engine, principal="user:1") == store.UNREADABLE_RULE


@pytest.mark.parametrize("bad", ["user", "user:", "user:x", "group:1", "1", "bootstrap", "user:-1"])
def test_parse_principal_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not a principal"):
        store.parse_principal(bad)


def test_parse_principal() -> None:
    assert store.parse_principal("user:12") == ("user", 12)
    assert store.parse_principal("project:3") == ("project", 3)


async def test_writes_refuse_a_bad_principal(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError):
        await store.set_rule(engine=engine, principal="alice", rule=EntityAccess(allow=("a",)))
    with pytest.raises(ValueError):
        await store.record_acknowledgement(
            engine=engine, principal="user:1", model="m", notice="n", actor="alice", via="web"
        )
