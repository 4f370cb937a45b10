"""The `lumen` command."""

from __future__ import annotations

import click

from lumen import __version__
from lumen.cli import admin, coins, policy, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lumen")
def main() -> None:
    """Lumen: an OpenAI-compatible AI gateway for research institutions."""


for command in (*serve.COMMANDS, *admin.COMMANDS, *coins.COMMANDS, *policy.COMMANDS):
    main.add_command(command)
