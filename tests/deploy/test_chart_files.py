"""The chart's plain files, checked without helm: they parse, every value a template reads is
declared (and documented) in values.yaml, and values.yaml satisfies the chart's own schema."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.support import CHART, merge_values

VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
TEMPLATES = sorted((CHART / "templates").rglob("*"))


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "lumen"
    assert "dependencies" not in chart, "a dependency would be downloaded at install time"
    assert not (CHART / "charts").exists()
    pyproject = (CHART.parents[2] / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject, "appVersion is the Lumen version"


def referenced_values() -> set[str]:
    paths = set()
    for template in TEMPLATES:
        if template.is_file():
            paths |= set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", template.read_text()))
    return {p.lstrip(".") for p in paths}


def test_every_value_a_template_reads_is_declared() -> None:
    referenced = referenced_values()
    assert {"replicaCount", "secrets.secretKey", "postgresql.auth.password"} <= referenced
    undeclared = []
    for path in sorted(referenced):
        node: Any = VALUES
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                undeclared.append(path)
                break
            node = node[part]
    assert undeclared == []


def test_every_top_level_value_is_documented() -> None:
    """A comment in the lines right above a key (keys of one group share it) or on its first child."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for index, line in enumerate(lines):
        if not re.match(r"^[A-Za-z]\w*:", line):
            continue
        above = list(itertools.takewhile(str.strip, reversed(lines[:index])))
        below = lines[index + 1] if index + 1 < len(lines) else ""
        if not any(a.startswith("#") for a in above) and not below.lstrip().startswith("#"):
            undocumented.append(line)
    assert undocumented == []


def test_values_satisfy_the_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)
    for path in sorted((CHART / "ci").glob("*.yaml")):
        jsonschema.validate(merge_values(VALUES, yaml.safe_load(path.read_text())), SCHEMA)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("postgresql", "auth", "password"), "p@ss/word"),
        (("secrets", "bootstrapKey"), "not-a-key"),
        (("externalDatabase", "url"), "mysql://db/lumen"),
        (("replicaCount",), "two"),
    ],
)
def test_the_schema_refuses_bad_values(path: tuple[str, ...], bad: Any) -> None:
    values = json.loads(json.dumps(VALUES))
    node = values
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, SCHEMA)


def test_templates_are_templates() -> None:
    names = {t.relative_to(CHART / "templates").as_posix() for t in TEMPLATES if t.is_file()}
    assert {"deployment.yaml", "migrations.yaml", "configmap.yaml", "secret.yaml", "NOTES.txt"} <= names
    assert all(re.search(r"\.(yaml|tpl|txt)$", name) for name in names), names
