"""Hot reload: the config file is checked for changes and re-applied without a restart.

A file that fails to load or validate leaves the running config as it is, and the reason is
logged; the next good edit is applied.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from lumen.settings import ConfigError, load_settings
from lumen.state import AppState

log = logging.getLogger(__name__)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


async def reload_once(state: AppState) -> bool:
    """Loads the config file again and applies it; False (and a log line) when it is bad."""
    assert state.config_path is not None
    try:
        settings = load_settings(state.config_path, overrides=state.overrides)
    except ConfigError as exc:
        log.error("config reload rejected, keeping the running config:\n%s", exc)
        return False
    await state.apply(settings)
    return True


async def watch_config(state: AppState) -> None:
    """Runs until cancelled."""
    assert state.config_path is not None
    seen = _signature(state.config_path)
    while True:
        await asyncio.sleep(state.settings.server.reload_interval)
        current = _signature(state.config_path)
        if current is not None and current != seen:
            seen = current
            await reload_once(state)
