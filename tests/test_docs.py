"""Documentation that is derived from code must match it."""

from __future__ import annotations

from pathlib import Path

from lumen.config_reference import BEGIN, END, SECTIONS, render

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_settings_reference_is_up_to_date() -> None:
    text = (DOCS / "configuration.md").read_text()
    generated = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert generated == render(), (
        "docs/configuration.md is out of date: regenerate it with "
        "`python -c 'from lumen.config_reference import render; print(render())'`"
    )


def test_every_setting_is_described() -> None:
    undocumented = [
        f"{path}.{name}"
        for path, model in SECTIONS
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undocumented == []


def test_readme_opens_with_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text().splitlines()
    fence = readme.index("```sh")
    commands = readme[fence + 1 : readme.index("```", fence + 1)]
    assert [line.split()[0] for line in commands] == ["scripts/start", "scripts/test"]
    assert all(line.startswith("#") or not line.strip() for line in readme[:fence])
