"""The first administrator's portal password, and `lumen users set-password`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from lumen.cli import main
from lumen.identity.passwords import check_login
from lumen.identity.setup import prepare_identity
from lumen.settings import load_settings
from lumen.store.engine import create_engine
from lumen.store.migrate import upgrade_database


async def _first_start(tmp_path: Path, **portal: object) -> tuple[str | None, bool]:
    settings = load_settings(None, environ={}, overrides={"server.data_dir": str(tmp_path)})
    if portal:
        settings = settings.model_copy(update={"portal": settings.portal.model_copy(update=portal)})
    url = f"sqlite+aiosqlite:///{tmp_path / 'lumen.db'}"
    await upgrade_database(url)
    engine = create_engine(url)
    try:
        first = await prepare_identity(settings, engine=engine, secret=b"k" * 32)
        assert first is not None and first.admin.email == "admin@localhost"
        works = (
            first.password is not None
            and (await check_login(engine=engine, email="admin@localhost", password=first.password))
            is not None
        )
        again = await prepare_identity(settings, engine=engine, secret=b"k" * 32)
        assert again is None  # printed once: later starts say nothing
        return first.password, works
    finally:
        await engine.dispose()


async def test_the_first_administrator_gets_a_working_password(tmp_path: Path) -> None:
    password, works = await _first_start(tmp_path)
    assert password and works


async def test_no_password_without_local_login(tmp_path: Path) -> None:
    assert await _first_start(tmp_path, local_login=False) == (None, False)


def test_set_password_from_stdin_and_prompt(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    runner = CliRunner()
    assert runner.invoke(main, ["users", "create", "cora@example.edu", *data]).exit_code == 0

    piped = runner.invoke(
        main,
        ["users", "set-password", "cora@example.edu", "--password-stdin", *data],
        input="a long passphrase\n",
    )
    assert piped.exit_code == 0, piped.output
    assert "password set for cora@example.edu" in piped.output and "a long passphrase" not in piped.output

    prompted = runner.invoke(
        main,
        ["users", "set-password", "cora@example.edu", *data],
        input="another passphrase\nanother passphrase\n",
    )
    assert prompted.exit_code == 0, prompted.output

    short = runner.invoke(
        main, ["users", "set-password", "cora@example.edu", "--password-stdin", *data], input="short\n"
    )
    assert short.exit_code != 0 and "at least 10 characters" in short.output
    unknown = runner.invoke(
        main,
        ["users", "set-password", "nobody@example.edu", "--password-stdin", *data],
        input="a long passphrase\n",
    )
    assert unknown.exit_code != 0 and "No user with the email" in unknown.output

    async def check(password: str) -> bool:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'd' / 'lumen.db'}")
        try:
            return await check_login(engine=engine, email="cora@example.edu", password=password) is not None
        finally:
            await engine.dispose()

    assert asyncio.run(check("another passphrase")) and not asyncio.run(check("a long passphrase"))
