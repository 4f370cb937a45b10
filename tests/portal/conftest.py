"""Fixtures of the portal tests: Lumen with the echo model, and the OIDC provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.portal.oidc_provider import oidc_provider
from tests.portal.support import set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

__all__ = ["oidc_provider"]


@pytest.fixture
def lumen(tmp_path: Path) -> Iterator[RunningLumen]:
    """Lumen on its defaults with the echo model; the administrator's password is `PASSWORD`."""
    with running_lumen(tmp_path, {"models": [model("echo", ECHO)]}) as running:
        set_admin_password(running)
        yield running
