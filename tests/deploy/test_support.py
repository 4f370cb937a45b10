"""The checks the deployment tests rely on must themselves tell wrong from right."""

from __future__ import annotations

import click
import pytest

from tests.deploy.support import compose_variables, interpolate, lumen_env_problem, parse_lumen_args


@pytest.mark.parametrize(
    "name", ["LUMEN_DATABASE_URL", "LUMEN_SERVER__REDIS_PREFIX", "LUMEN_ROUTING__MAX_ATTEMPTS"]
)
def test_real_variables_pass(name: str) -> None:
    assert lumen_env_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("LUMEN_DATABSE_URL", "not read by Lumen"),  # a misspelt shortcut: Lumen would ignore it
        ("LUMEN_SERVER__NO_SUCH_KEY", "has no setting"),
        ("LUMEN_BILLING__MODE", "not read by Lumen"),  # billing is read from the file only
    ],
)
def test_unreal_variables_are_named(name: str, problem: str) -> None:
    assert problem in (lumen_env_problem(name) or "")


def test_cli_parsing_refuses_what_lumen_refuses() -> None:
    assert parse_lumen_args(["db", "upgrade"]) == ("db upgrade", {"config": None, "data_dir": None})
    with pytest.raises(click.UsageError):
        parse_lumen_args(["serve", "--hots", "0.0.0.0"])
    with pytest.raises(click.UsageError):
        parse_lumen_args(["db", "migrate"])
    with pytest.raises(click.UsageError):
        parse_lumen_args(["db"])


def test_interpolation_follows_compose() -> None:
    text = "a=${A:?need A} b=${B:-dflt} c=$C d=$$HOME e=${E-x}"
    assert interpolate(text, {"A": "1", "C": "3", "E": ""}) == "a=1 b=dflt c=3 d=$HOME e="
    with pytest.raises(KeyError, match="need A"):
        interpolate(text, {"A": ""})
    assert compose_variables(text) == {"A", "B", "C", "E"}
