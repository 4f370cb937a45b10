"""Running Lumen for real in tests: uvicorn on an ephemeral port, in a thread of the test process,
so tests can use any HTTP client or SDK against it and still look at its state."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from lumen.app import create_app
from lumen.cli.serve import proxy_options, server_config
from lumen.settings import Settings, load_settings
from lumen.state import AppState

TEST_KEY = "sk_test_0123456789abcdefghijklmnopqrstuvwxyz"
CI = os.environ.get("CI") == "true"


@dataclass
class RunningLumen:
    url: str
    key: str
    app: Any
    config_path: Path | None
    loop: asyncio.AbstractEventLoop

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.lumen
        return state

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Runs a coroutine on the server's event loop (to inspect or flush its state)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def running_lumen(
    tmp_path: Path, config: dict[str, Any] | None = None, *, reload: bool = False, as_cli: bool = False
) -> Iterator[RunningLumen]:
    """Lumen serving `config` (the embedded default when None) until the block ends; `as_cli`
    runs uvicorn as `lumen serve` does (its HTTP protocol and options, on an asyncio loop)."""
    data_dir = tmp_path / "data"
    overrides = {"server.data_dir": str(data_dir), "server.bootstrap_key": TEST_KEY}
    config_path = None
    if config is not None:
        config = {**config, "server": {**config.get("server", {}), "reload_interval": 0.05 if reload else 0}}
        config_path = write_config(tmp_path / "lumen.yaml", config)
    settings: Settings = load_settings(config_path, environ={}, overrides=overrides)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # see lumen.cli._bind
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings, config_path=config_path if reload else None, overrides=overrides)
    if as_cli:
        server = uvicorn.Server(server_config(app, settings))
    else:
        server = uvicorn.Server(
            uvicorn.Config(
                app, log_level="warning", lifespan="on", loop="asyncio", http="h11", **proxy_options(settings)
            )
        )
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve(sockets=[sock]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("Lumen did not start")
        time.sleep(0.01)
    try:
        yield RunningLumen(f"http://127.0.0.1:{port}", TEST_KEY, app, config_path, loop)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        loop.close()


def model(name: str, *endpoints: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpoints": list(endpoints), **extra}


def upstream(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "openai", "url": url, **extra}


ECHO = {"type": "local", "engine": "echo"}
