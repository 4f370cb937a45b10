"""`lumen access`, `lumen limits` and `lumen coins settings`: a user's or project's own policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from lumen.cli import main


@pytest.fixture
def lumen(tmp_path: Path) -> CliRunner:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "d")]
    runner.data = data  # type: ignore[attr-defined]
    created = runner.invoke(main, ["users", "create", "cora@example.edu", *data])
    assert created.exit_code == 0, created.output
    made = runner.invoke(main, ["projects", "create", "lab", "--owner", "cora@example.edu", *data])
    assert made.exit_code == 0, made.output
    return runner


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, [*args, *runner.data])  # type: ignore[attr-defined]


def test_an_access_rule_is_set_shown_and_removed(lumen: CliRunner) -> None:
    cora = ["--user", "cora@example.edu"]
    done = run(lumen, "access", "set", *cora, "--default", "blocked", "--allow", "gpt-*")
    assert done.exit_code == 0, done.output
    shown = yaml.safe_load(run(lumen, "access", "show", "--user", "cora@example.edu").output)
    assert shown["rule"] == {"default": "blocked", "allow": ["gpt-*"]}
    assert shown["principal"].startswith("user:")

    project = run(lumen, "access", "set", "--project", "lab", "--block", "big-model")
    assert project.exit_code == 0, project.output
    assert yaml.safe_load(run(lumen, "access", "show", "--project", "lab").output)["rule"] == {
        "block": ["big-model"]
    }

    removed = run(lumen, "access", "set", "--user", "cora@example.edu")
    assert removed.exit_code == 0 and "removed" in removed.output
    assert yaml.safe_load(run(lumen, "access", "show", "--user", "cora@example.edu").output)["rule"] == {}


def test_bad_access_input_is_refused_and_keeps_the_stored_rule(lumen: CliRunner) -> None:
    assert run(lumen, "access", "set", "--user", "cora@example.edu", "--allow", "a").exit_code == 0
    spaced = run(lumen, "access", "set", "--user", "cora@example.edu", "--allow", "two words")
    assert spaced.exit_code != 0 and "no spaces allowed" in spaced.output
    both = run(lumen, "access", "set", "--user", "cora@example.edu", "--project", "lab")
    assert both.exit_code != 0 and "exactly one of --user or --project" in both.output
    nobody = run(lumen, "access", "set", "--user", "nobody@example.edu")
    assert nobody.exit_code != 0
    kept = yaml.safe_load(run(lumen, "access", "show", "--user", "cora@example.edu").output)
    assert kept["rule"] == {"allow": ["a"]}


def test_rate_limits_are_set_from_flags_or_yaml_and_removed(lumen: CliRunner) -> None:
    cora = ["--user", "cora@example.edu"]
    flags = run(lumen, "limits", "set", *cora, "--rpm", "30", "--concurrent", "unlimited")
    assert flags.exit_code == 0, flags.output
    shown = yaml.safe_load(run(lumen, "limits", "show", "--user", "cora@example.edu").output)
    assert shown["limits"] == {"principal": {"rpm": 30, "concurrent": None}}

    document = '{"key": {"rpm": 5}, "models": {"big": {"tpm": 1000}}}'
    assert run(lumen, "limits", "set", "--project", "lab", "--yaml", document).exit_code == 0
    shown = yaml.safe_load(run(lumen, "limits", "show", "--project", "lab").output)
    assert shown["limits"] == {"key": {"rpm": 5}, "models": {"big": {"tpm": 1000}}}

    removed = run(lumen, "limits", "set", "--user", "cora@example.edu")
    assert removed.exit_code == 0 and "removed" in removed.output
    assert yaml.safe_load(run(lumen, "limits", "show", "--user", "cora@example.edu").output)["limits"] == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpm", "0"], "greater than or equal to 1"),
        (["--tpm", "many"], "valid integer"),
        (["--yaml", "key: [unclosed"], "not valid YAML"),
        (["--yaml", "{bogus: {rpm: 1}}"], "bogus"),
        (["--yaml", "{}", "--rpm", "1"], "not both"),
    ],
)
def test_bad_rate_limits_are_refused_and_keep_the_stored_ones(
    lumen: CliRunner, args: list[str], message: str
) -> None:
    assert run(lumen, "limits", "set", "--user", "cora@example.edu", "--rpm", "9").exit_code == 0
    refused = run(lumen, "limits", "set", "--user", "cora@example.edu", *args)
    assert refused.exit_code != 0 and message in refused.output
    kept = yaml.safe_load(run(lumen, "limits", "show", "--user", "cora@example.edu").output)
    assert kept["limits"] == {"principal": {"rpm": 9}}


def test_coin_settings_change_the_pool_and_can_be_inherited_again(lumen: CliRunner) -> None:
    def balance(result: Result) -> float:
        assert result.exit_code == 0, result.output
        return float(re.search(r"balance (\S+) coins", result.output).group(1))  # type: ignore[union-attr]

    shown = balance(run(lumen, "coins", "show", "--project", "lab"))
    # Settings move no coins: a balance above a new `max` stays (only the refill stops there).
    capped = balance(run(lumen, "coins", "settings", "--project", "lab", "--max", "2", "--refresh", "0"))
    assert capped == pytest.approx(shown, abs=0.01)
    reset = balance(run(lumen, "coins", "reset", "--project", "lab"))
    starting = balance(run(lumen, "coins", "settings", "--project", "lab", "--starting", "1.5", "--max", "2"))
    assert starting == pytest.approx(reset, abs=0.01)  # a new starting value applies at the next reset
    assert balance(run(lumen, "coins", "reset", "--project", "lab")) == pytest.approx(1.5, abs=0.01)

    assert run(lumen, "coins", "settings", "--project", "lab", "--state", "unlimited").exit_code == 0
    assert "unlimited" in run(lumen, "coins", "show", "--project", "lab").output
    assert run(lumen, "coins", "settings", "--project", "lab", "--inherit").exit_code == 0
    assert "unlimited" not in run(lumen, "coins", "show", "--project", "lab").output
    assert run(lumen, "audit").exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--max", "-1"],
        ["--max", "0.0000001"],
        ["--state", "bankrupt"],
        [],
        ["--inherit", "--max", "1"],
    ],
)
def test_bad_coin_settings_are_refused(lumen: CliRunner, args: list[str]) -> None:
    refused = run(lumen, "coins", "settings", "--user", "cora@example.edu", *args)
    assert refused.exit_code != 0, refused.output
