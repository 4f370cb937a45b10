"""Lumen in process with an echo model and a tool-calling model, and an openai SDK client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from lumen.identity import store
from tests.inprocess import InProcess, in_process
from tests.responses.tools import ToolBackend
from tests.support import ECHO, model

CONFIG: dict[str, Any] = {
    "models": [model("echo", ECHO), model("tools", ECHO)],
    "billing": {"default_pool": {"max": 1000, "refresh": 0}},
}


@dataclass
class Lumen:
    app: InProcess
    tools: ToolBackend

    def client(self, key: str | None = None) -> openai.AsyncOpenAI:
        transport = httpx.ASGITransport(app=self.app.app)
        return openai.AsyncOpenAI(
            api_key=key or self.app.key,
            base_url="http://lumen/v1",
            http_client=httpx.AsyncClient(transport=transport, base_url="http://lumen"),
            max_retries=0,
        )

    async def other_user_key(self) -> str:
        state = self.app.state
        user = await store.create_user(engine=state.engine, email="other@example.edu")
        _, plain = await store.create_key(
            engine=state.engine, secret=state.authenticator.secret, owner_kind="user", owner_id=user.id
        )
        return plain

    async def project_key(self) -> str:
        """A key of a project whose owner is the user of the test key."""
        state = self.app.state
        principal = await state.authenticate(f"Bearer {self.app.key}")
        owner_id = int(principal.id.split(":")[1])
        project = await store.create_project(engine=state.engine, name="lab", owner_id=owner_id)
        _, plain = await store.create_key(
            engine=state.engine, secret=state.authenticator.secret, owner_kind="project", owner_id=project.id
        )
        return plain


@pytest.fixture
async def lumen(tmp_path: Path) -> AsyncIterator[Lumen]:
    async with in_process(tmp_path, CONFIG) as app:
        tools = ToolBackend()
        tool_model = app.state.registry.get("tools")
        assert tool_model is not None
        for endpoint in tool_model.endpoints:
            endpoint.backend = tools
        yield Lumen(app, tools)
