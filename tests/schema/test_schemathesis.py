"""Schemathesis against the OpenAPI documents of /v1 and the admin API, on a live Lumen with a
throwaway database (SQLite, then PostgreSQL): with an administrator's key, a user's key and no
key, generated valid and invalid requests must never get a 5xx, and every answer must be one the
document describes (status, content type, body schema).

Bounded and deterministic: `MAX_EXAMPLES` per operation and generation mode, derandomized (the
examples depend only on the schema and this file), no shrinking and no example database.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import make_url

from tests.support import ECHO, RunningLumen, model, running_lumen

MAX_EXAMPLES = 8
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def lumen(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    """Lumen on a throwaway database of each kind: PostgreSQL refuses input SQLite takes (NUL)."""
    models = [model("echo", ECHO), model("org/echo-2", ECHO), model("embed", ECHO, kind="embeddings")]
    config: dict[str, Any] = {"models": models}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(_postgres_database(request.getfixturevalue("pg_server")))
            config["server"] = {"database_url": url}
        yield stack.enter_context(running_lumen(tmp_path_factory.mktemp("schemathesis"), config))


@contextlib.contextmanager
def _postgres_database(server_url: str) -> Iterator[str]:
    name = f"lumen_schemathesis_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(server_url, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(server_url)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def keys(lumen: RunningLumen) -> dict[str, dict[str, str]]:
    admin = httpx.Client(base_url=lumen.url + "/api/admin", headers=lumen.auth)
    user = admin.post("/users", json={"email": "ada@example.edu"}).json()
    key = admin.post("/keys", json={"user_id": user["id"], "name": "schemathesis"}).json()["key"]
    return {"user": {"Authorization": f"Bearer {key}"}, "none": {}, "admin": lumen.auth}


def _run(document: dict[str, Any], base_url: str, headers: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_dict(document, config=SchemathesisConfig())
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                response = case.call(base_url=base_url, headers=headers, timeout=30)
                case.validate_response(response, checks=CHECKS)

            try:
                check()
            except Unsatisfiable:
                pass  # nothing invalid can be made for this operation (a path of one free string)
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


# Requests that reach a model: random model names would only ever meet the 404.
V1_EXAMPLES = {
    "/v1/chat/completions": {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "n": 2},
    "/v1/completions": {"model": "org/echo-2", "prompt": [1, 2, 3], "stream": True},
    "/v1/embeddings": {"model": "embed", "input": ["hi", "there"]},
}


def _with_examples(document: dict[str, Any]) -> dict[str, Any]:
    for path, body in V1_EXAMPLES.items():
        document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"] = body
    for path in ("/v1/models/{model_id}", "/v1/models/{model_id}/acknowledge"):
        for operation in document["paths"][path].values():
            operation["parameters"][0]["example"] = "echo"
    return document


# The administrator runs last: what it changes (a user disabled, a key revoked) must not hide
# anything from the other two.
@pytest.mark.parametrize("who", ["none", "user", "admin"])
def test_v1(lumen: RunningLumen, keys: dict[str, dict[str, str]], who: str) -> None:
    document = _with_examples(httpx.get(lumen.v1 + "/openapi.json").json())
    _run(document, lumen.url, keys[who])


@pytest.mark.parametrize("who", ["none", "user", "admin"])
def test_admin_api(lumen: RunningLumen, keys: dict[str, dict[str, str]], who: str) -> None:
    document = httpx.get(lumen.url + "/api/admin/openapi.json").json()
    _run(document, lumen.url + "/api/admin", keys[who])
