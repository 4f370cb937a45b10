"""What the deployment tests share: the repository's paths, Lumen's real environment variables and
commands, and Docker's `.dockerignore` rules."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from lumen.cli import main as lumen_cli
from lumen.settings import ENV_PREFIX, ENV_SHORTCUTS, Settings, _apply_env

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
CHART = REPO / "deploy" / "helm" / "lumen"


def lumen_env_problem(name: str) -> str | None:
    """Why a LUMEN_* variable would be ignored or refused by Lumen; None when it sets a real setting.

    Lumen ignores a variable it does not read without a word (e.g. a misspelt shortcut, or a section
    it takes only from the file), so a deployment file with one would silently run on a default:
    this asks Lumen's own environment reader where the variable goes, and checks that it exists."""
    if not name.startswith(ENV_PREFIX):
        return None
    raw: dict[str, Any] = {}
    _apply_env(raw, {name: "x"})
    if not raw:
        shortcuts = ", ".join(sorted(ENV_SHORTCUTS))
        return f"{name} is not read by Lumen (shortcuts: {shortcuts}; else LUMEN_<SECTION>__<KEY>)"
    ((section, values),) = raw.items()
    ((key, _),) = values.items()
    fields = type(getattr(Settings(), section)).model_fields
    if key not in fields:
        return f"{name}: `{section}` has no setting `{key}`"
    return None


def parse_lumen_args(args: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Parses `lumen ARGS` as the real CLI would, without running it: the command's dotted name
    and its parameters. Raises click.UsageError for an unknown command or option."""
    command: click.Command = lumen_cli
    ctx: click.Context | None = None
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group):
        if not rest:
            raise click.UsageError(f"`lumen {' '.join(path)}` needs a subcommand")
        ctx = click.Context(command, info_name=" ".join(["lumen", *path]), parent=ctx)
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            raise click.UsageError(f"no such command: lumen {' '.join([*path, rest[0]])}")
        path.append(rest.pop(0))
        command = sub
    leaf = command.make_context(" ".join(["lumen", *path]), rest, parent=ctx)
    return " ".join(path), dict(leaf.params)


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over the chart's values.yaml: maps merge, the rest replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = merge_values(base[key], value)
        else:
            merged[key] = value
    return merged


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's variable syntax: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
    ${VAR?error}, and $$ for a literal $. A required variable that is missing raises KeyError."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = variables.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and empty:
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and empty:
            return arg
        return value or ""

    return re.sub(_VARIABLE, replace, text)


_VARIABLE = (
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def compose_variables(text: str) -> set[str]:
    """The names of the variables a compose file interpolates."""
    return set(re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


class DockerIgnore:
    """The rules of a `.dockerignore` as Docker's builder applies them (moby/patternmatcher): each
    line is a Go filepath.Match pattern, with `**` for any number of directories, relative to the
    context root; a pattern that matches a directory matches everything under it; `!` re-includes;
    the last matching line decides."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            pattern = pattern.strip("/")
            self.rules.append((negate, re.compile(_glob_to_regex(pattern))))

    def excluded(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        # The path itself and each of its parent directories.
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for negate, rule in self.rules:
            if any(rule.fullmatch(candidate) for candidate in candidates):
                excluded = not negate
        return excluded


def _glob_to_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
