"""`/healthz` (the process is alive) and `/readyz` (it can serve: database and a backend up)."""

from __future__ import annotations

import orjson
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lumen.state import app_state


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = app_state(request)
    checks: dict[str, str] = {}
    try:
        async with state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"failing: {type(exc).__name__}"
    up = [e for e in state.registry.endpoints() if e.is_up()]
    checks["backends"] = f"{len(up)} of {len(state.registry.endpoints())} up" if up else "none up"
    ready = checks["database"] == "ok" and bool(up)
    return _json({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)


def routes() -> list[BaseRoute]:
    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
