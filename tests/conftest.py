from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support import ECHO, RunningLumen, model, running_lumen


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def fake2() -> Iterator[FakeUpstream]:
    server = FakeUpstream("fake2").start()
    yield server
    server.stop()


@pytest.fixture
def echo_lumen(tmp_path: Path) -> Iterator[RunningLumen]:
    """Lumen with only the deterministic echo model."""
    with running_lumen(tmp_path, {"models": [model("echo", ECHO), model("org/echo-2", ECHO)]}) as lumen:
        yield lumen
