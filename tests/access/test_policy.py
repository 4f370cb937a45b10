"""The resolution order, as a table: every step, and each tie rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from lumen.access.config import DEFAULT_NOTICE, Access, AccessSettings, EntityAccess, ModelAccess, notice_hash
from lumen.access.policy import Decision, Status, Step, decide
from tests.access.conftest import Model

A, B, R, H = Status.ALLOWED, Status.NEEDS_ACK, Status.REFUSED, Status.HIDDEN
NOTICE = "Research use only."


def rule(**kwargs: Any) -> EntityAccess:
    return EntityAccess(**kwargs)


def allow(*names: str) -> EntityAccess:
    return EntityAccess(allow=names)


def block(*names: str) -> EntityAccess:
    return EntityAccess(block=names)


def default(value: Access) -> EntityAccess:
    return EntityAccess(default=value)


def M(name: str = "m", access: Access | None = None, ack: bool = False, enabled: bool = True) -> Model:
    notice = NOTICE if ack else ""
    return Model(name, ModelAccess(access=access, acknowledge=ack, notice=notice), enabled)


OFF, OWN, GRP, MOD = Step.DISABLED, Step.PRINCIPAL_RULE, Step.GROUP_RULE, Step.MODEL
OWN_DEF, GRP_DEF, GLOBAL = Step.PRINCIPAL_DEFAULT, Step.GROUP_DEFAULT, Step.GLOBAL_DEFAULT
CLOSED: Access = "blocked"


@dataclass(frozen=True)
class Case:
    id: str
    expected: Status
    step: Step
    m: Model = M()
    own: EntityAccess | None = None
    grp: dict[str, EntityAccess] = field(default_factory=dict)
    glob: Access = "allowed"
    acked: tuple[str, ...] = ()


ALLOWED, BLOCKED = default("allowed"), default("blocked")
V1 = (notice_hash(NOTICE),)

# One case a line: the table reads better than the formatter's layout would.
# fmt: off
CASES = [
    # step 6: the global default
    Case("global allowed", A, GLOBAL),
    Case("global blocked: visible, refused", R, GLOBAL, glob=CLOSED),
    # step 5: group defaults; allow beats block
    Case("group default allows over global block", A, GRP_DEF, grp={"g": ALLOWED}, glob=CLOSED),
    Case("group default blocks over global allow", R, GRP_DEF, grp={"g": BLOCKED}),
    Case("group defaults tie: allow wins", A, GRP_DEF, grp={"a": BLOCKED, "b": ALLOWED}, glob=CLOSED),
    Case("group without a default defers", R, GLOBAL, grp={"g": allow("x")}, glob=CLOSED),
    # step 4: the caller's own default
    Case("own default beats group default", R, OWN_DEF, own=BLOCKED, grp={"g": ALLOWED}),
    Case("own default allows over global block", A, OWN_DEF, own=ALLOWED, glob=CLOSED),
    # step 3: the model's own setting
    Case("model blocked beats own default", R, MOD, m=M(access="blocked"), own=ALLOWED),
    Case("model blocked beats group default", R, MOD, m=M(access="blocked"), grp={"g": ALLOWED}),
    Case("model allowed beats global block", A, MOD, m=M(access="allowed"), glob=CLOSED),
    Case("model allowed beats own default", A, MOD, m=M(access="allowed"), own=BLOCKED),
    # step 2: group rules; block beats allow; a block here hides
    Case("group rule opens a restricted model", A, GRP, m=M(access="blocked"), grp={"g": allow("m")}),
    Case("group rule closes an open model: hidden", H, GRP, m=M(access="allowed"), grp={"g": block("m")}),
    Case("group rules tie: block wins", H, GRP, grp={"a": allow("m"), "b": block("m")}),
    Case("group rule beats its own default", H, GRP, grp={"g": rule(default="allowed", block=("m",))}),
    Case("group rule beats another's default", A, GRP, grp={"a": BLOCKED, "b": allow("m")}, glob=CLOSED),
    # step 1: the caller's own rule
    Case("own allow beats group block", A, OWN, own=allow("m"), grp={"g": block("m")}),
    Case("own block beats group allow: hidden", H, OWN, own=block("m"), grp={"g": allow("m")}),
    Case("own allow beats model blocked", A, OWN, m=M(access="blocked"), own=allow("m")),
    Case("own default is not a rule", A, GRP, own=BLOCKED, grp={"g": allow("m")}),
    # step 0: disabled
    Case("disabled beats own allow", H, OFF, m=M(enabled=False), own=allow("m")),
    Case("disabled beats everything", H, OFF, m=M(access="allowed", enabled=False), grp={"g": allow("*")}),
    # patterns
    Case("pattern allows", A, GRP, m=M("gpt-4o", access="blocked"), grp={"g": allow("gpt-*")}),
    Case("pattern not matching defers", R, GLOBAL, m=M("llama"), own=allow("gpt-*"), glob=CLOSED),
    Case("name beats pattern: block", H, OWN, m=M("gpt-4o"), own=rule(allow=("gpt-*",), block=("gpt-4o",))),
    Case("name beats pattern: allow", A, OWN, m=M("gpt-4"), own=rule(block=("gpt-*",), allow=("gpt-4",))),
    Case("two patterns: block wins", H, GRP, m=M("gpt-4o"), grp={"g": rule(allow=("gpt*",), block=("*4o",))}),
    Case("star matches slashes", H, GRP, m=M("org/a/b"), grp={"g": block("org/*")}),
    Case("patterns are case-sensitive", A, GLOBAL, m=M("GPT-4o"), grp={"g": block("gpt-*")}),
    # acknowledgement comes after allow/block
    Case("needs acknowledgement", B, MOD, m=M(access="allowed", ack=True), glob=CLOSED),
    Case("acknowledged the current notice", A, MOD, m=M(access="allowed", ack=True), acked=V1),
    Case("acknowledged an older notice only", B, MOD, m=M(access="allowed", ack=True), acked=("0" * 64,)),
    Case("an allow rule does not skip it", B, OWN, m=M(ack=True), own=allow("m")),
    Case("acknowledge alone: defaults decide", R, GLOBAL, m=M(ack=True), glob=CLOSED),
    Case("refused before acknowledgement", R, MOD, m=M(access="blocked", ack=True), acked=V1),
    Case("hidden before acknowledgement", H, GRP, m=M(ack=True), grp={"g": block("m")}, acked=V1),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resolution_order(case: Case) -> None:
    decision = decide(case.m, case.own, case.grp, AccessSettings(default=case.glob), case.acked)
    assert (decision.status, decision.step) == (case.expected, case.step), decision.reason
    assert decision.model == case.m.name


def test_the_table_covers_every_step_and_status() -> None:
    assert {c.step for c in CASES} == set(Step)
    assert {c.expected for c in CASES} == set(Status)
    assert len(CASES) >= 20


def test_decision_carries_the_notice_only_when_not_blocked() -> None:
    settings = AccessSettings()
    needs = decide(M(ack=True), None, {}, settings)
    assert (needs.notice, needs.notice_hash, needs.acknowledged) == (NOTICE, notice_hash(NOTICE), False)
    assert needs.acknowledgement == "required" and needs.listed and not needs.usable and needs.visible
    done = decide(M(ack=True), None, {}, settings, {notice_hash(NOTICE)})
    assert done.acknowledgement == "acknowledged" and done.usable and done.notice == NOTICE
    refused = decide(M(access="blocked", ack=True), None, {}, settings)
    assert (
        refused.notice is None and refused.acknowledgement is None and not refused.listed and refused.visible
    )
    plain = decide(M(), None, {}, settings)
    assert plain.notice is None and plain.acknowledgement is None and plain.usable


def test_a_model_without_its_own_notice_uses_the_global_one() -> None:
    model = Model("m", ModelAccess(acknowledge=True))
    decision = decide(model, None, {}, AccessSettings())
    assert decision.notice == DEFAULT_NOTICE
    custom = decide(model, None, {}, AccessSettings(notice="Be careful."))
    assert custom.notice == "Be careful." and custom.notice_hash == notice_hash("Be careful.")


def test_reasons_name_the_rule_that_decided() -> None:
    def reason(**kwargs: Any) -> str:
        args: dict[str, Any] = {"principal_rule": None, "group_rules": {}, "global_access": AccessSettings()}
        args.update(kwargs)
        result: Decision = decide(Model("gpt-4o"), **args)
        return result.reason

    assert "'gpt-*'" in reason(principal_rule=rule(allow=("gpt-*",)))
    assert "group 'b'" in reason(group_rules={"a": rule(allow=("gpt-4o",)), "b": rule(block=("gpt-*",))})
    assert "group 'staff'" in reason(group_rules={"staff": rule(default="blocked")})
    assert "global default" in reason()
