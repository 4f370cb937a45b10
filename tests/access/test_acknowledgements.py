"""The acknowledgement lifecycle: needed → recorded → allowed; a changed notice asks again; a
manager's acknowledgement covers the project."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.access import store
from lumen.access.config import AccessSettings, EntityAccess, ModelAccess, notice_hash
from lumen.access.policy import Status
from lumen.access.resolver import AccessResolver
from lumen.errors import (
    AcknowledgementRequired,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    PermissionDenied,
)
from tests.access.conftest import Model, people

V1 = "MedGemma is a research model. Do not send patient data."
V2 = "MedGemma is a research model. Do not send patient data or use it for diagnosis."
URL = "https://lumen.example.edu/models/med"


def models(notice: str = V1) -> list[Model]:
    return [
        Model("med", ModelAccess(access="allowed", acknowledge=True, notice=notice)),
        Model("open"),
        Model("closed", ModelAccess(access="blocked", acknowledge=True, notice=notice)),
        Model("secret", ModelAccess(acknowledge=True, notice=notice)),
    ]


GROUPS = {"outsiders": EntityAccess(block=("secret",))}


@pytest.fixture
async def resolver(engine: AsyncEngine) -> AccessResolver:
    await people(engine)
    resolver = AccessResolver(engine=engine, models=models(), groups=GROUPS, settings=AccessSettings())
    await resolver.load()
    return resolver


async def test_user_lifecycle(resolver: AccessResolver, engine: AsyncEngine) -> None:
    view = await resolver.resolve("user:1")
    assert view.get("med") is not None and view.decisions["med"].status is Status.NEEDS_ACK
    with pytest.raises(AcknowledgementRequired) as refused:
        view.require("med", acknowledge_url=URL)
    assert (refused.value.status, refused.value.code) == (403, "acknowledgement_required")
    assert URL in refused.value.message
    assert view.model_fields("med") == {
        "access": "acknowledgement_required",
        "acknowledgement": {
            "required": True,
            "acknowledged": False,
            "acknowledged_at": None,
            "notice": V1,
            "notice_hash": notice_hash(V1),
        },
    }

    ack = await resolver.acknowledge("user:1", "med", actor="user:1", via="api", notice_hash=notice_hash(V1))
    assert (ack.principal, ack.acknowledged_by, ack.via, ack.notice) == ("user:1", "user:1", "api", V1)

    view = await resolver.resolve("user:1")
    assert view.require("med", acknowledge_url=URL).status is Status.ALLOWED
    fields = view.model_fields("med")
    assert fields["access"] == "allowed"
    assert fields["acknowledgement"]["acknowledged"] is True
    assert fields["acknowledgement"]["acknowledged_at"] == int(ack.acknowledged_at.timestamp())
    # Someone else is not covered.
    assert (await resolver.resolve("user:4")).decisions["med"].status is Status.NEEDS_ACK


async def test_a_changed_notice_asks_again(resolver: AccessResolver, engine: AsyncEngine) -> None:
    await resolver.acknowledge("user:1", "med", actor="user:1", via="web")
    assert (await resolver.resolve("user:1")).decisions["med"].usable

    resolver.configure(models=models(V2), groups=GROUPS, settings=AccessSettings())
    view = await resolver.resolve("user:1")
    assert view.decisions["med"].status is Status.NEEDS_ACK
    assert view.decisions["med"].notice == V2
    # Showing the old notice and acknowledging it after the change is refused.
    with pytest.raises(InvalidRequest) as stale:
        await resolver.acknowledge("user:1", "med", actor="user:1", via="api", notice_hash=notice_hash(V1))
    assert stale.value.code == "notice_changed"

    await resolver.acknowledge("user:1", "med", actor="user:1", via="web", notice_hash=notice_hash(V2))
    assert (await resolver.resolve("user:1")).decisions["med"].usable
    history = await store.acknowledgements(engine=engine, principal="user:1", model="med")
    assert [a.notice for a in history] == [V1, V2]

    # Going back to the old text needs no new acknowledgement: it was acknowledged once.
    resolver.configure(models=models(V1), groups=GROUPS, settings=AccessSettings())
    assert (await resolver.resolve("user:1")).decisions["med"].usable


async def test_a_managers_acknowledgement_covers_the_project(resolver: AccessResolver) -> None:
    with pytest.raises(PermissionDenied):
        await resolver.acknowledge("project:1", "med", actor="user:1", via="web")  # not a manager
    with pytest.raises(PermissionDenied):
        await resolver.acknowledge("project:1", "med", actor="project:1", via="api")  # a key, not a person
    # A manager's own acknowledgement is theirs, not the project's.
    await resolver.acknowledge("user:2", "med", actor="user:2", via="web")
    assert (await resolver.resolve("project:1")).decisions["med"].status is Status.NEEDS_ACK

    ack = await resolver.acknowledge("project:1", "med", actor="user:2", via="web")
    assert (ack.principal, ack.acknowledged_by) == ("project:1", "user:2")
    # Every key of the project is the same principal.
    assert (await resolver.resolve("project:1")).require("med", acknowledge_url=URL).usable
    # The owner acknowledging again changes nothing.
    again = await resolver.acknowledge("project:1", "med", actor="user:3", via="api")
    assert again == ack


async def test_an_admin_may_acknowledge_for_a_project_but_not_for_a_user(resolver: AccessResolver) -> None:
    await resolver.acknowledge("project:1", "med", actor="user:4", via="web", actor_is_admin=True)
    assert (await resolver.resolve("project:1")).decisions["med"].usable
    with pytest.raises(PermissionDenied):
        await resolver.acknowledge("user:1", "med", actor="user:4", via="web", actor_is_admin=True)


async def test_only_models_that_need_it_can_be_acknowledged(resolver: AccessResolver) -> None:
    with pytest.raises(InvalidRequest) as not_needed:
        await resolver.acknowledge("user:1", "open", actor="user:1", via="api")
    assert not_needed.value.code == "acknowledgement_not_needed"
    with pytest.raises(ModelNotAllowed):
        await resolver.acknowledge("user:1", "closed", actor="user:1", via="api")
    with pytest.raises(ModelNotFound):
        await resolver.acknowledge("user:1", "secret", actor="user:1", via="api", groups=("outsiders",))
    with pytest.raises(ModelNotFound):
        await resolver.acknowledge("user:1", "nonexistent", actor="user:1", via="api")


async def test_on_change_hears_of_new_acknowledgements_only(engine: AsyncEngine) -> None:
    await people(engine)
    changed: list[str] = []

    async def publish(principal: str) -> None:
        changed.append(principal)

    resolver = AccessResolver(engine=engine, models=models(), on_change=publish)
    await resolver.acknowledge("user:1", "med", actor="user:1", via="web")
    await resolver.acknowledge("user:1", "med", actor="user:1", via="web")
    assert changed == ["user:1"]


async def test_another_process_sees_the_acknowledgement_after_invalidate(
    resolver: AccessResolver, engine: AsyncEngine
) -> None:
    other = AccessResolver(engine=engine, models=models())
    await other.load()
    assert (await other.resolve("user:1")).decisions["med"].status is Status.NEEDS_ACK
    await resolver.acknowledge("user:1", "med", actor="user:1", via="web")
    other.invalidate("user:1")  # what the cross-process message does
    assert (await other.resolve("user:1")).decisions["med"].usable
