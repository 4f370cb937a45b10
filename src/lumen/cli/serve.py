"""`lumen serve`, `lumen check-config`, `lumen db upgrade`."""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lumen import __version__
from lumen.cli.common import config_option, data_dir_option, load, with_database
from lumen.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

    from lumen.identity.setup import FirstStart


@click.command()
@config_option
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000; 0 picks a free one).")
@click.option(
    "--workers", type=click.IntRange(1, 64), help="Worker processes (default 1); more than one needs Redis."
)
@data_dir_option
def serve(
    config: Path | None, host: str | None, port: int | None, workers: int | None, data_dir: Path | None
) -> None:
    """Start the gateway."""
    from lumen.ops.logs import configure_logging

    overrides = {
        "server.host": host,
        "server.port": port,
        "server.workers": workers,
        "server.data_dir": data_dir,
    }
    settings = load(config, **overrides)
    configure_logging(settings.server.log_level)
    _raise_open_file_limit()
    count = settings.server.workers
    if count > 1 and settings.server.redis_url is None:
        raise click.ClickException(
            f"{count} workers need server.redis_url (LUMEN_REDIS_URL): rate limits, coin budgets and "
            "revocations must be shared between them"
        )
    host = settings.server.host
    # With workers, this socket only holds the port (bound, not listening, so the kernel never
    # queues a connection on it); each worker listens on a socket of its own on the same port.
    sock = _bind(host, settings.server.port, listen=count == 1, reuse_port=count > 1)
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"port": port})})
    given = {k: v for k, v in overrides.items() if v is not None}
    if count == 1:
        _serve(settings, config, given, sock, banner=True)
        return
    import asyncio

    from lumen.cli.workers import supervise
    from lumen.store.engine import prepare_data_dir
    from lumen.store.migrate import upgrade_database

    # Once, before forking: the workers then find the database current and start at once.
    prepare_data_dir(settings.server.data_dir)
    asyncio.run(upgrade_database(settings.database_url))

    def worker(index: int) -> None:
        sock.close()
        # SO_REUSEPORT: the kernel spreads new connections evenly over the workers' sockets. One
        # shared socket would let whichever worker wakes first take every keep-alive connection
        # (measured: one worker doing 99% of the work at 16 clients, docs/performance.md).
        own = _bind(host, port, reuse_port=True)
        _serve(settings, config, given, own, banner=index == 0)

    sys.exit(supervise(count, worker))


def _serve(
    settings: Settings,
    config: Path | None,
    overrides: Mapping[str, object],
    sock: socket.socket,
    *,
    banner: bool,
) -> None:
    """One serving process on the bound socket: the only one, or one of the workers."""
    import uvicorn

    from lumen.app import create_app

    def ready(state: object, first_start: FirstStart | None) -> None:
        # With several workers, one prints the banner; the first-start secrets come from whichever
        # worker created the administrator.
        if banner or first_start is not None:
            _print_banner(settings, first_start)

    app = create_app(settings, config_path=config, overrides=overrides, on_ready=ready)
    server = uvicorn.Server(server_config(app, settings))
    # Server.run, not asyncio.run(server.serve()): only run() installs the uvloop event loop.
    server.run(sockets=[sock])


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """How `lumen serve` runs uvicorn (the tests of connection handling run the same)."""
    import uvicorn

    from lumen.cli.http_protocol import with_header_timeout

    return uvicorn.Config(
        app,
        loop="uvloop",
        http=with_header_timeout(settings.server.request_header_timeout),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        lifespan="on",
        **proxy_options(settings),
    )


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's handling of X-Forwarded-For and X-Forwarded-Proto, from `server.trusted_proxies`.

    Only a connection from a listed proxy may name the client; the client is then the right-most
    address of X-Forwarded-For that is not a listed proxy (what the nearest trusted proxy saw;
    everything left of it the client may have written itself). Without the setting the headers
    are ignored: uvicorn's own default would trust any process on 127.0.0.1 to name the client,
    and the login throttle counts failures per client address.
    """
    trusted = [str(network) for network in settings.server.trusted_proxies]
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted}


def _raise_open_file_limit() -> None:
    """Each open stream holds two sockets (the client's and the upstream's); the usual soft limit
    of 1,024 open files would refuse connections at about 500 streams. The hard limit is what the
    administrator allows, so take all of it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # a container may forbid it; Lumen then serves within the soft limit


def _bind(host: str, port: int, *, listen: bool = True, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol must be given: asyncio turns on TCP_NODELAY for accepted connections only when
    # the socket says IPPROTO_TCP, and without it every response waits ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    if listen:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _print_banner(settings: Settings, first_start: FirstStart | None) -> None:
    url = settings.public_url
    models = ", ".join(m.name for m in settings.models if m.enabled)
    lines = [
        f"\nLumen {__version__} is running at {url}",
        f"  API base URL: {url}/v1",
        f"  Models:       {models}",
    ]
    if first_start is not None:
        lines.append(f"  Administrator: {first_start.admin.email} (created now)")
    if first_start is not None and first_start.password is not None:
        lines.append(
            f"  Portal login: {url}/login   {first_start.admin.email} / {first_start.password}"
            "   (shown only this once; change it with `lumen users set-password`)"
        )
    if first_start is not None and first_start.key is not None:
        key = first_start.key
        lines.append(f"  API key:      {key}   (for {first_start.admin.email}; shown only this once)")
    else:
        key = "sk_..."
        lines.append("  API keys:     lumen keys create --user EMAIL   (prints a new key)")
    example = settings.models[0].name if settings.models else "echo"
    lines += [
        "\nTry it:",
        f"  curl {url}/v1/chat/completions \\",
        f'    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\',
        f'    -d \'{{"model": "{example}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'\n',
    ]
    click.echo("\n".join(lines))
    sys.stdout.flush()


@click.command("check-config")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def check_config(file: Path) -> None:
    """Validate a config file without starting."""
    settings = load(file)
    click.echo(f"{file}: OK ({len(settings.models)} models: {', '.join(m.name for m in settings.models)})")


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@config_option
@data_dir_option
def db_upgrade(config: Path | None, data_dir: Path | None) -> None:
    """Apply all database migrations."""

    async def nothing(engine: object) -> None:
        return None

    with_database(load(config, **{"server.data_dir": data_dir}), nothing)
    click.echo("database is up to date")


COMMANDS = [serve, check_config, db]
