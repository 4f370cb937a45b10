"""The cached resolver: no database read in the steady state, invalidation, races, the view."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.access import store
from lumen.access.config import AccessSettings, EntityAccess, ModelAccess
from lumen.access.policy import Status
from lumen.access.resolver import AccessResolver
from lumen.errors import AcknowledgementRequired, ModelNotAllowed, ModelNotFound
from tests.access.conftest import Model

MODELS = [
    Model("open"),
    Model("restricted", ModelAccess(access="blocked")),
    Model("med", ModelAccess(acknowledge=True, notice="n")),
    Model("gone", enabled=False),
]
GROUPS = {
    "lab": EntityAccess(allow=("restricted",)),
    "banned": EntityAccess(block=("open",)),
    "none": EntityAccess(),
}


class Statements:
    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        self.count += 1


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[Statements]:
    counter = Statements(engine)
    yield counter
    event.remove(engine.sync_engine, "before_cursor_execute", counter._seen)


def make(engine: AsyncEngine, **kwargs: Any) -> AccessResolver:
    return AccessResolver(engine=engine, models=MODELS, groups=GROUPS, settings=AccessSettings(), **kwargs)


async def test_no_database_read_in_the_steady_state(engine: AsyncEngine, statements: Statements) -> None:
    await store.set_rule(engine=engine, principal="user:1", rule=EntityAccess(block=("open",)))
    resolver = make(engine)
    await resolver.load()
    before = statements.count
    for _ in range(3):
        for i in range(1, 50):
            view = await resolver.resolve(f"user:{i}", ("lab",))
            assert view.decisions["restricted"].usable
        assert (await resolver.resolve("user:1")).decisions["open"].status is Status.HIDDEN
    assert statements.count == before
    assert resolver.loads == 0


async def test_without_a_snapshot_each_principal_is_read_once(
    engine: AsyncEngine, statements: Statements
) -> None:
    resolver = make(engine)
    for _ in range(3):
        await resolver.resolve("user:1")
        await resolver.resolve("user:2", ("lab",))
    assert resolver.loads == 2


async def test_invalidate_one_principal(engine: AsyncEngine) -> None:
    resolver = make(engine)
    await resolver.load()
    assert (await resolver.resolve("user:1")).decisions["open"].usable

    await store.set_rule(engine=engine, principal="user:1", rule=EntityAccess(block=("open",)))
    # Not seen before the invalidation: the cache is trusted...
    assert (await resolver.resolve("user:1")).decisions["open"].usable
    resolver.invalidate("user:2")
    assert (await resolver.resolve("user:1")).decisions["open"].usable
    # ...and seen right after it, with one read.
    resolver.invalidate("user:1")
    assert (await resolver.resolve("user:1")).decisions["open"].status is Status.HIDDEN
    assert (await resolver.resolve("user:1")).decisions["open"].status is Status.HIDDEN
    assert resolver.loads == 1


async def test_invalidate_everyone(engine: AsyncEngine) -> None:
    resolver = make(engine)
    await resolver.load()
    await resolver.resolve("user:1")
    await resolver.resolve("user:2")
    await store.set_rule(engine=engine, principal="user:2", rule=EntityAccess(allow=("restricted",)))
    resolver.invalidate()
    assert (await resolver.resolve("user:2")).decisions["restricted"].usable
    await resolver.resolve("user:1")
    await resolver.resolve("user:1")
    assert resolver.loads == 2
    resolver.invalidate("user:1")  # per-principal marks still work after a global one
    await resolver.resolve("user:1")
    assert resolver.loads == 3


async def test_config_changes_apply_at_once_without_reads(
    engine: AsyncEngine, statements: Statements
) -> None:
    resolver = make(engine)
    await resolver.load()
    assert (await resolver.resolve("user:1")).decisions["open"].usable
    before = statements.count
    resolver.configure(models=MODELS, groups=GROUPS, settings=AccessSettings(default="blocked"))
    assert (await resolver.resolve("user:1")).decisions["open"].status is Status.REFUSED
    resolver.configure(
        models=[Model("open", ModelAccess(access="allowed")), Model("new")],
        groups={},
        settings=AccessSettings(),
    )
    view = await resolver.resolve("user:1", ("lab",))
    assert list(view.decisions) == ["open", "new"]
    assert statements.count == before


async def test_principals_with_the_same_profile_share_decisions(engine: AsyncEngine) -> None:
    resolver = make(engine)
    await resolver.load()
    a = await resolver.resolve("user:1", ("lab", "none", "unknown-group"))
    b = await resolver.resolve("user:2", ["lab"])
    c = await resolver.resolve("user:3", ())
    assert a.decisions is b.decisions
    assert a.decisions is not c.decisions
    assert a is await resolver.resolve("user:1", ("lab", "none", "unknown-group"))


async def test_profile_cache_is_bounded(engine: AsyncEngine) -> None:
    resolver = make(engine, max_profiles=2)
    await resolver.load()
    for groups in [(), ("lab",), ("banned",), ("lab", "banned")]:
        await resolver.resolve("user:1", groups)
    assert len(resolver._profiles) == 2
    assert (await resolver.resolve("user:1", ("lab",))).decisions["restricted"].usable


class GatedLoads:
    """Replaces `store.load_principal`: reads the database at once, then (for gated calls) waits
    before returning, like a slow network."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = store.load_principal
        self.gates: list[asyncio.Event] = []
        self.gate_next = True
        monkeypatch.setattr(store, "load_principal", self)

    async def __call__(self, *, engine: AsyncEngine, principal: str) -> store.StoredAccess:
        result = await self.real(engine=engine, principal=principal)
        if self.gate_next:
            self.gate_next = False
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
        return result


async def test_concurrent_requests_share_one_read(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = GatedLoads(monkeypatch)
    resolver = make(engine)
    tasks = [asyncio.create_task(resolver.resolve("user:1")) for _ in range(5)]
    while not loads.gates:
        await asyncio.sleep(0)
    loads.gates[0].set()
    views = await asyncio.gather(*tasks)
    assert resolver.loads == 1
    assert all(v.decisions["open"].usable for v in views)


async def test_a_read_that_raced_with_a_change_is_not_trusted(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = GatedLoads(monkeypatch)
    resolver = make(engine)
    early = asyncio.create_task(resolver.resolve("user:1"))
    while not loads.gates:
        await asyncio.sleep(0)
    # The rule changes after the early read and before it returns.
    await store.set_rule(engine=engine, principal="user:1", rule=EntityAccess(block=("open",)))
    resolver.invalidate("user:1")
    # A request after the invalidation does not join the early read (joining would hang here).
    async with asyncio.timeout(10):
        late = await resolver.resolve("user:1")
    assert late.decisions["open"].status is Status.HIDDEN
    loads.gates[0].set()
    assert (await early).decisions["open"].usable  # the early request saw the old rule
    # The late-finishing early read did not overwrite the newer data.
    assert (await resolver.resolve("user:1")).decisions["open"].status is Status.HIDDEN
    assert resolver.loads == 2


async def test_a_stale_read_finishing_alone_is_read_again(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = GatedLoads(monkeypatch)
    resolver = make(engine)
    early = asyncio.create_task(resolver.resolve("user:1"))
    while not loads.gates:
        await asyncio.sleep(0)
    await store.set_rule(engine=engine, principal="user:1", rule=EntityAccess(block=("open",)))
    resolver.invalidate("user:1")
    loads.gates[0].set()
    await early
    assert (await resolver.resolve("user:1")).decisions["open"].status is Status.HIDDEN
    assert resolver.loads == 2


async def test_a_cancelled_request_does_not_cancel_the_read(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = GatedLoads(monkeypatch)
    resolver = make(engine)
    first = asyncio.create_task(resolver.resolve("user:1"))
    while not loads.gates:
        await asyncio.sleep(0)
    second = asyncio.create_task(resolver.resolve("user:1"))
    await asyncio.sleep(0)
    first.cancel()
    loads.gates[0].set()
    assert (await second).decisions["open"].usable
    assert first.cancelled()
    assert resolver.loads == 1


async def test_a_failed_read_is_retried(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store.load_principal
    calls = 0

    async def flaky(*, engine: AsyncEngine, principal: str) -> store.StoredAccess:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database unreachable")
        return await real(engine=engine, principal=principal)

    monkeypatch.setattr(store, "load_principal", flaky)
    resolver = make(engine)
    with pytest.raises(OSError):
        await resolver.resolve("user:1")
    assert (await resolver.resolve("user:1")).decisions["open"].usable


async def test_the_view_for_the_request_path(engine: AsyncEngine) -> None:
    resolver = make(engine)
    await resolver.load()
    view = await resolver.resolve("user:1", ("banned",))
    url = "https://lumen/models/med"
    with pytest.raises(ModelNotFound):
        view.require("open", acknowledge_url=url)  # blocked by the caller's group: hidden
    with pytest.raises(ModelNotFound):
        view.require("gone", acknowledge_url=url)
    with pytest.raises(ModelNotFound):
        view.require("no-such-model", acknowledge_url=url)
    with pytest.raises(ModelNotAllowed) as refused:
        view.require("restricted", acknowledge_url=url)
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        403,
        "model_not_allowed",
        "model",
    )
    with pytest.raises(AcknowledgementRequired):
        view.require("med", acknowledge_url=url)

    lab = await resolver.resolve("user:1", ("lab",))
    assert lab.require("restricted", acknowledge_url=url).usable
    with pytest.raises(ModelNotAllowed) as by_key:
        lab.require("restricted", acknowledge_url=url, key_models={"open"})
    assert "API key" in by_key.value.message
    assert lab.retrieve("med").status is Status.NEEDS_ACK  # GET /v1/models/med works before acknowledging


async def test_listing(engine: AsyncEngine) -> None:
    resolver = make(engine)
    await resolver.load()
    plain = await resolver.resolve("user:1")
    assert [d.model for d in plain.listed()] == ["open", "med"]
    assert [d.model for d in (await resolver.resolve("user:1", ("lab",))).listed()] == [
        "open",
        "restricted",
        "med",
    ]
    assert [d.model for d in (await resolver.resolve("user:1", ("banned",))).listed()] == ["med"]
    assert [d.model for d in plain.listed(key_models={"med", "restricted"})] == ["med"]
    assert plain.model_fields("open") == {"access": "allowed", "acknowledgement": None}
    assert plain.model_fields("med")["access"] == "acknowledgement_required"


async def test_views_per_principal_are_bounded(engine: AsyncEngine) -> None:
    resolver = make(engine)
    await resolver.load()
    for i in range(20):
        await resolver.resolve("user:1", (f"g{i}",))
    assert len(resolver._entries["user:1"].views) <= 8
