"""Servers shared by the end-to-end client tests.

Starting Lumen takes a moment, so the e2e modules share one server per module (and per xdist
worker). `lumen` serves the same chat models as the root `echo_lumen` fixture (`echo` and
`org/echo-2`, both the echo engine) plus `echo-embed`, the echo engine as an embeddings model.
`proxied` is Lumen in front of `upstream`, a fake OpenAI-compatible server: model `m` is the
upstream's model `up`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support import ECHO, RunningLumen, model, running_lumen, upstream

ECHO_MODELS: dict[str, Any] = {
    "models": [
        model("echo", ECHO),
        model("org/echo-2", ECHO),
        model("echo-embed", ECHO, kind="embeddings"),
    ]
}


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    with running_lumen(tmp_path_factory.mktemp("lumen"), ECHO_MODELS) as running:
        yield running


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def fake_upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    """The module's fake upstream, reset to normal answers for each test."""
    upstream_server.mode = "ok"
    upstream_server.requests.clear()
    upstream_server.headers.clear()
    return upstream_server


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeUpstream
) -> Iterator[RunningLumen]:
    config = {"models": [model("m", upstream(upstream_server.url, upstream_model="up"))]}
    with running_lumen(tmp_path_factory.mktemp("proxied"), config) as running:
        yield running
