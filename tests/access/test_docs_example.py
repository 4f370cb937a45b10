"""The worked example of docs/access.md is what the policy does: its config, its callers and its
table of answers are read from the page and checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lumen.access.config import AccessSettings, EntityAccess, ModelAccess, notice_hash
from lumen.access.policy import Status, Step, decide
from lumen.settings import Settings
from tests.access.conftest import Model

DOC = Path(__file__).resolve().parents[2] / "docs" / "access.md"

ANSWERS = {
    "allowed": Status.ALLOWED,
    "needs acknowledgement": Status.NEEDS_ACK,
    "refused: 403": Status.REFUSED,
    "hidden: 404": Status.HIDDEN,
}
STEPS = {
    "disabled": Step.DISABLED,
    "caller's rule": Step.PRINCIPAL_RULE,
    "group rule": Step.GROUP_RULE,
    "model setting": Step.MODEL,
    "caller's default": Step.PRINCIPAL_DEFAULT,
    "group default": Step.GROUP_DEFAULT,
    "global default": Step.GLOBAL_DEFAULT,
}


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _example_config() -> dict[str, Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", _text(), flags=re.S)
    config: dict[str, Any] = yaml.safe_load(next(b for b in blocks if "groups:" in b))
    return config


def _table(header: str) -> list[list[str]]:
    lines = _text().splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _none(cell: str) -> bool:
    return cell in ("–", "-", "")


def _cases() -> list[tuple[str, str, str, str, str]]:
    rows = _table("| # | caller | model | answer | decided by |")
    return [(n, caller, model, answer, by) for n, caller, model, answer, by in rows]


def test_the_example_has_at_least_twenty_rows_and_uses_every_step() -> None:
    cases = _cases()
    assert len(cases) >= 20
    used = {STEPS[by.split(" (")[0]] for *_, by in cases}
    assert used == set(Step)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_example_row(case: tuple[str, str, str, str, str]) -> None:
    _, caller_name, model_name, answer, decided_by = case
    config = _example_config()
    settings = AccessSettings.model_validate(config["access"])
    models = {
        m["name"]: Model(m["name"], ModelAccess.model_validate(m.get("access", {})), m.get("enabled", True))
        for m in config["models"]
    }
    groups = {g["name"]: EntityAccess.model_validate(g.get("access", {})) for g in config["groups"]}
    callers = {row[0]: row for row in _table("| caller | principal | groups | own rule | acknowledged |")}

    _, _, group_cell, rule_cell, acked_cell = callers[caller_name]
    in_groups = {} if _none(group_cell) else {g.strip(): groups[g.strip()] for g in group_cell.split(",")}
    own = (
        None
        if _none(rule_cell)
        else EntityAccess.model_validate(yaml.safe_load("{" + rule_cell.strip("`") + "}"))
    )
    acked_models = set() if _none(acked_cell) else {m.strip() for m in acked_cell.split(",")}
    model = models[model_name]
    notice = model.access.effective_notice(settings)
    acked = [notice_hash(notice)] if model_name in acked_models and notice is not None else []

    decision = decide(model, own, in_groups, settings, acked)
    assert decision.status is ANSWERS[answer], decision.reason
    assert decision.step is STEPS[decided_by.split(" (")[0]], decision.reason


def test_the_example_config_is_otherwise_a_valid_lumen_config() -> None:
    # The access sections are checked above; the rest must load as the real config does.
    config = _example_config()
    config.pop("access")
    for section in (*config["models"], *config["groups"]):
        section.pop("access", None)
    Settings.model_validate(config)
