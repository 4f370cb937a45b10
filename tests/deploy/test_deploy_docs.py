"""docs/deploy.md names only real things: Lumen commands the CLI accepts, environment variables
Lumen reads, settings and chart values that exist, files that are in the repository."""

from __future__ import annotations

import re
from typing import Any

import click
import pytest
import yaml

from lumen.settings import Settings
from tests.deploy.support import CHART, REPO, lumen_env_problem, parse_lumen_args

DOC = (REPO / "docs" / "deploy.md").read_text()
CODE = re.findall(r"`([^`\n]+)`", DOC) + re.findall(r"```[a-z]*\n(.*?)```", DOC, flags=re.S)
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())


def lumen_commands() -> list[str]:
    commands = []
    for code in CODE:
        for line in code.replace("\\\n", " ").splitlines():
            commands += re.findall(
                r"(?<![\w/.-])lumen ((?:serve|db|keys|users|projects|coins|audit|check-config)\b[^`#&|]*)",
                line,
            )
    return [c.strip() for c in commands]


def test_lumen_commands_are_accepted_by_the_cli() -> None:
    commands = lumen_commands()
    assert {c.split()[0] for c in commands} >= {"serve", "db", "keys"}
    for command in commands:
        try:
            parse_lumen_args(command.split())
        except click.MissingParameter:
            # The prose names a command (`lumen check-config`) without invoking it.
            assert not any(arg.startswith("-") for arg in command.split()), command
        except click.ClickException as exc:
            pytest.fail(f"`lumen {command}`: {exc}")


def test_environment_variables_are_read_by_lumen() -> None:
    names = set(re.findall(r"\bLUMEN_[A-Z_]*[A-Z]\b", DOC))
    assert {"LUMEN_SECRET_KEY", "LUMEN_DATABASE_URL", "LUMEN_REDIS_URL"} <= names
    assert [lumen_env_problem(n) for n in sorted(names) if lumen_env_problem(n)] == []


def _resolves(root: Any, dotted: str) -> bool:
    node = root
    for part in dotted.split("."):
        fields = getattr(type(node), "model_fields", None)
        if fields is not None:
            if part not in fields:
                return False
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def test_settings_and_chart_values_exist() -> None:
    dotted = set()
    for code in CODE:
        dotted |= set(re.findall(r"(?<![\w/.-])([a-z][A-Za-z_]*(?:\.[a-zA-Z_][A-Za-z_]*)+)(?:=|\b)", code))
    settings, values = Settings(), 0
    checked_settings = 0
    for name in sorted(dotted):
        head = name.split(".")[0]
        if head in Settings.model_fields:
            assert _resolves(settings, name), f"{name} is not a Lumen setting"
            checked_settings += 1
        elif head in VALUES:
            assert _resolves(VALUES, name.removesuffix(".*")), f"{name} is not a value of the chart"
            values += 1
    assert checked_settings >= 3 and values >= 8


def test_named_files_exist() -> None:
    paths = set(re.findall(r"`((?:[\w.-]+/)+[\w.-]*)`", DOC)) | {"Dockerfile"}
    paths = {p for p in paths if not p.startswith(("/", "http", "registry."))}
    assert {"deploy/compose/", "deploy/helm/lumen/"} <= paths
    missing = [p for p in sorted(paths) if not ((REPO / p).exists() or (REPO / "src" / "lumen" / p).exists())]
    assert missing == []


def test_links_to_other_pages_exist() -> None:
    for target in re.findall(r"\]\(([\w-]+\.md)(?:#[\w-]+)?\)", DOC):
        assert (REPO / "docs" / target).is_file(), target
