"""The `lumen` command."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import click

from lumen import __version__
from lumen.settings import ConfigError, Settings, load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lumen")
def main() -> None:
    """Lumen: an OpenAI-compatible AI gateway for research institutions."""


def _load(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, overrides={k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML config file (default: the embedded default with built-in models).",
)
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000; 0 picks a free one).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the database and generated secrets (default ./lumen-data).",
)
def serve(config: Path | None, host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Start the gateway."""
    import uvicorn

    from lumen.app import create_app
    from lumen.ops.logs import configure_logging

    overrides = {"server.host": host, "server.port": port, "server.data_dir": data_dir}
    settings = _load(config, **overrides)
    configure_logging(settings.server.log_level)
    sock = _bind(settings.server.host, settings.server.port)
    actual_port = sock.getsockname()[1]
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"port": actual_port})}
    )
    app = create_app(
        settings, config_path=config, overrides={k: v for k, v in overrides.items() if v is not None}
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=30,
            lifespan="on",
        )
    )
    _print_banner(settings)
    asyncio.run(server.serve(sockets=[sock]))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol must be given: asyncio turns on TCP_NODELAY for accepted connections only when
    # the socket says IPPROTO_TCP, and without it every response waits ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _print_banner(settings: Settings) -> None:
    from lumen.identity.bootstrap import KEY_FILE, load_or_create_bootstrap_key

    url = settings.public_url
    configured = settings.server.bootstrap_key
    key = (
        configured.get_secret_value()
        if configured
        else load_or_create_bootstrap_key(settings.server.data_dir)
    )
    where = "from server.bootstrap_key" if configured else f"stored in {settings.server.data_dir / KEY_FILE}"
    models = ", ".join(m.name for m in settings.models if m.enabled)
    click.echo(
        f"\nLumen {__version__} is running at {url}\n"
        f"  API base URL: {url}/v1\n"
        f"  API key:      {key}   ({where})\n"
        f"  Models:       {models}\n\n"
        f"Try it:\n"
        f"  curl {url}/v1/chat/completions \\\n"
        f'    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\\n'
        f'    -d \'{{"model": "{settings.models[0].name if settings.models else "echo"}", '
        f'"messages": [{{"role": "user", "content": "Hello!"}}]}}\'\n',
        err=False,
    )
    sys.stdout.flush()


@main.command("check-config")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def check_config(file: Path) -> None:
    """Validate a config file without starting."""
    settings = _load(file)
    click.echo(f"{file}: OK ({len(settings.models)} models: {', '.join(m.name for m in settings.models)})")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
def db_upgrade(config: Path | None, data_dir: Path | None) -> None:
    """Apply all database migrations."""
    from lumen.store.migrate import upgrade_database

    settings = _load(config, **{"server.data_dir": data_dir})
    settings.server.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(upgrade_database(settings.database_url))
    click.echo("database is up to date")
