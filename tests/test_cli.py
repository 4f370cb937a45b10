from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from lumen.cli import main
from tests.support import ECHO, model, write_config

LUMEN = [sys.executable, "-m", "lumen"]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "check-config", "db"):
        assert re.search(rf"^\s+{command}\s", result.output, re.MULTILINE), command
    serve_help = CliRunner().invoke(main, ["serve", "--help"]).output
    for option in ("--config", "--host", "--port", "--data-dir"):
        assert option in serve_help


def test_check_config(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.yaml", {"models": [model("echo", ECHO)]})
    bad = write_config(tmp_path / "bad.yaml", {"models": [{"name": "x", "endpoints": [{"type": "local"}]}]})
    ok = CliRunner().invoke(main, ["check-config", str(good)])
    assert ok.exit_code == 0 and "OK" in ok.output
    failed = CliRunner().invoke(main, ["check-config", str(bad)])
    assert failed.exit_code != 0
    assert "models.0.endpoints.0" in failed.output and "engine" in failed.output


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "lumen.db").exists()


LOW_OPEN_FILE_LIMIT = 256


def _low_open_file_limit() -> None:
    """Starts the server as a shell with a small `ulimit -n` would."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_OPEN_FILE_LIMIT, hard))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    config = write_config(tmp_path / "lumen.yaml", {"models": [model("echo", ECHO)]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")}
    process = subprocess.Popen(
        [*LUMEN, "serve", "--config", str(config), "--port", "0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_low_open_file_limit,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("    -d "):
                break
        yield process, lines
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_serve_prints_a_working_url_key_and_curl_command(
    served: tuple[subprocess.Popen[str], list[str]], tmp_path: Path
) -> None:
    process, lines = served
    banner = "".join(lines)
    url = re.search(r"running at (http://\S+)", banner)
    key = re.search(r"API key:\s+(sk_\S+)", banner)
    assert url and key, banner
    # The first start created an administrator and this key for them; only a hash is stored.
    assert "Administrator: admin@localhost" in banner
    assert key.group(1) not in (tmp_path / "data" / "lumen.db").read_bytes().decode("latin-1")
    assert oct((tmp_path / "data" / "secret-key").stat().st_mode & 0o777) == "0o600"
    command = banner[banner.index("curl ") :].replace("\\\n", " ")
    result = subprocess.run(
        shlex.split(command) + ["-s", "--retry", "5", "--retry-connrefused"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    answer = orjson.loads(result.stdout)
    assert answer["choices"][0]["message"]["content"] == "Hello!"
    assert answer["model"] == "echo"
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is a clean exit.
    assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    assert process.stdout is not None
    rest = process.stdout.read()
    assert "Traceback" not in rest and '"level":"error"' not in rest, rest
    assert "Application shutdown complete" in rest


def test_serve_reports_a_bad_config_and_exits(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: x, endpoints: [{url: nope}]}]")
    result = subprocess.run(
        [*LUMEN, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "models.0.endpoints.0" in result.stderr and "http://" in result.stderr


def test_listening_socket_declares_tcp_so_responses_are_not_delayed() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only for sockets whose protocol is
    IPPROTO_TCP; without it each response's body waits for the client's delayed ACK."""
    import socket

    from lumen.cli.serve import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_coins_grant_show_and_audit(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    runner = CliRunner()
    assert runner.invoke(main, ["users", "create", "cora@example.edu", *data]).exit_code == 0
    before = runner.invoke(main, ["coins", "show", "--user", "cora@example.edu", *data])
    assert before.exit_code == 0, before.output
    granted = runner.invoke(main, ["coins", "grant", "2.5", "--user", "cora@example.edu", *data])
    assert granted.exit_code == 0, granted.output

    def balance(output: str) -> float:
        return float(re.search(r"balance (\S+) coins", output).group(1))  # type: ignore[union-attr]

    # A grant may lift a pool above its `max`; only the refill stops there.
    assert balance(granted.output) == pytest.approx(balance(before.output) + 2.5, abs=0.01)
    reset = runner.invoke(main, ["coins", "set", "7", "--user", "cora@example.edu", *data])
    assert balance(reset.output) == pytest.approx(7.0, abs=0.01)  # plus the refill since
    audit = runner.invoke(main, ["audit", *data])
    assert audit.exit_code == 0 and "no discrepancies" in audit.output
    missing = runner.invoke(main, ["coins", "grant", "1", "--user", "nobody@example.edu", *data])
    assert missing.exit_code != 0


def test_serve_raises_its_open_file_limit_to_the_hard_limit(
    served: tuple[subprocess.Popen[str], list[str]],
) -> None:
    """1,000 open streams need 2,000 sockets: a soft limit of 256 (or 1,024) would refuse them."""
    import resource

    process, _ = served
    limits = Path(f"/proc/{process.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\S+)\s+(\S+)", limits).groups()  # type: ignore[union-attr]
    assert hard == str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    assert soft == hard and int(soft) > LOW_OPEN_FILE_LIMIT


def test_cli_changes_are_audited_and_name_who_ran_them(tmp_path: Path) -> None:
    """Every revocation is audited, the CLI's too; coin movements name the person on the ledger."""
    import asyncio
    import getpass

    from sqlalchemy import select

    from lumen.admin import audit_log
    from lumen.store.engine import create_engine
    from lumen.store.tables import coin_ledger as ledger

    data = ["--data-dir", str(tmp_path / "d")]
    runner = CliRunner()
    assert runner.invoke(main, ["users", "create", "cora@example.edu", *data]).exit_code == 0
    created = runner.invoke(main, ["keys", "create", "--user", "cora@example.edu", *data])
    key_id = re.search(r"created key (key_\S+)", created.output).group(1)  # type: ignore[union-attr]
    for command in (["keys", "revoke", key_id], ["coins", "grant", "2", "--user", "cora@example.edu"]):
        result = runner.invoke(main, [*command, *data])
        assert result.exit_code == 0, result.output

    async def stored() -> tuple[list[audit_log.AuditEntry], list[str | None]]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'd' / 'lumen.db'}")
        try:
            entries = await audit_log.entries(engine=engine)
            async with engine.connect() as conn:
                actors = (
                    await conn.execute(select(ledger.c.actor).where(ledger.c.kind == "grant"))
                ).scalars()
                return entries, list(actors)
        finally:
            await engine.dispose()

    entries, grant_actors = asyncio.run(stored())
    me = f"cli:{getpass.getuser()}"
    assert [(e.action, e.target, e.actor, e.face) for e in reversed(entries)] == [
        ("key.revoke", f"key:{key_id}", me, "cli"),
        ("coins.grant", "user:1", me, "cli"),
    ]
    assert grant_actors == [me]
