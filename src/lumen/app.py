"""Builds the ASGI app. Nothing happens at import time: the database, the upstream pool, the
models and the background tasks are created in the lifespan and closed there."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from lumen.access.resolver import AccessResolver
from lumen.actions import commands
from lumen.admin.api import build_admin_api
from lumen.api import openapi, v1
from lumen.api.errors import handle_http_exception, handle_lumen_error
from lumen.api.guard import ConnectionGuard
from lumen.api.messages import router as messages
from lumen.api.responses import router as responses
from lumen.billing.bank import CoinBank
from lumen.billing.memory import MemoryPoolStore
from lumen.billing.redis_store import RedisPoolStore, redis_client
from lumen.billing.store import PoolStore
from lumen.changes import Change, ChangeBus, ChangeLog, Heartbeat
from lumen.errors import LumenError
from lumen.gateway.admission import Gate
from lumen.gateway.pipeline import Pipeline
from lumen.identity.auth import KeyAuthenticator
from lumen.identity.secret import load_or_create_secret
from lumen.identity.setup import FirstStart, prepare_identity
from lumen.limits import HEADER_NAMES, Limiter, LimiterSettings
from lumen.ops import health, metrics
from lumen.ops.metrics import Metrics
from lumen.ops.request_id import RequestIdMiddleware
from lumen.ops.tracing import TracingMiddleware, start_tracing
from lumen.portal.app import Portal
from lumen.reload import watch_config
from lumen.settings import Settings, environment
from lumen.state import AppState, configure_access
from lumen.store.engine import create_engine, prepare_data_dir
from lumen.store.migrate import upgrade_database
from lumen.upstream.health import run_health_checks
from lumen.upstream.http import new_session
from lumen.upstream.registry import Registry
from lumen.usage.recorder import UsageRecorder

log = logging.getLogger(__name__)
KEY_USE_FLUSH_SECONDS = 5.0
SUBSCRIBE_WAIT_SECONDS = 2.0


def create_app(
    settings: Settings,
    *,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    on_ready: Callable[[AppState, FirstStart | None], None] | None = None,
) -> Starlette:
    """`config_path` turns on hot reload of that file; `overrides` are re-applied on each reload.
    `on_ready` is called once everything has started (the CLI prints its banner there)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state, first_start = await _start(settings, config_path, overrides or {})
        app.state.lumen = state
        tasks = [
            asyncio.create_task(run_health_checks(state.registry, lambda: state.settings.routing)),
            asyncio.create_task(_flush_key_use(state)),
            asyncio.create_task(_expire_access(state)),
            asyncio.create_task(state.changes.run()),
            asyncio.create_task(state.heartbeat.run(every_minute=lambda: _prune(state.engine))),
        ]
        with contextlib.suppress(TimeoutError):
            # Serve with pushed (or polled) invalidation from the first request when it starts quickly.
            await asyncio.wait_for(state.changes.wait_live(), SUBSCRIBE_WAIT_SECONDS)
        if config_path is not None and settings.server.reload_interval > 0:
            tasks.append(asyncio.create_task(watch_config(state)))
        # Everything built so far lives as long as the process: moving it out of the collector's
        # reach shortens the full collections that otherwise pause serving for tens of ms.
        gc.collect()
        gc.freeze()
        if on_ready is not None:
            on_ready(state, first_start)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await portal.aclose()
            await _stop(state)
            if tracer_provider is not None:
                # Exports what is still batched; a blocking HTTP call, so off the loop.
                await asyncio.to_thread(tracer_provider.shutdown)

    tracer_provider = start_tracing(settings.tracing) if settings.tracing.otlp_endpoint else None
    tracing = (
        [Middleware(TracingMiddleware, tracer=tracer_provider.get_tracer("lumen"))] if tracer_provider else []
    )
    # The guard is outermost, so it sees every exception (the tracing middleware's included) and
    # answers it itself: Starlette's own 500 handler would re-raise into uvicorn, which logs the
    # traceback a second time and closes the connection under a keep-alive client.
    guard = Middleware(ConnectionGuard, body_timeout=lambda: settings.server.request_body_timeout)
    app = Starlette(
        routes=[
            *v1.routes(),
            *messages.routes(),
            *responses.routes(),
            openapi.route(),
            *health.routes(),
            *metrics.routes(),
        ],
        middleware=[guard, *tracing, Middleware(RequestIdMiddleware), *_cors(settings)],
        exception_handlers={LumenError: handle_lumen_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )
    portal = Portal(lambda: app.state.lumen)
    app.mount("/api/admin", build_admin_api(lambda: app.state.lumen, session_auth=portal.admin_principal))
    if settings.portal.enabled:
        app.router.routes.append(portal.route())  # last: it takes every path the API does not
    return app


def _cors(settings: Settings) -> list[Middleware]:
    """Browser clients (openai-node in a page, web chat tools) need CORS, and need to read the
    rate-limit and request-id headers."""
    if not settings.server.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["x-request-id", "retry-after", "retry-after-ms", *sorted(HEADER_NAMES)],
            allow_credentials=False,
            max_age=600,
        )
    ]


async def _start(
    settings: Settings, config_path: Path | None, overrides: Mapping[str, Any]
) -> tuple[AppState, FirstStart | None]:
    data_dir = settings.server.data_dir
    prepare_data_dir(data_dir)
    configured = settings.server.secret_key
    secret = configured.get_secret_value().encode() if configured else load_or_create_secret(data_dir)
    await upgrade_database(settings.database_url)
    engine = create_engine(settings.database_url)
    first_start = await prepare_identity(settings, engine=engine, secret=secret)
    recorder = UsageRecorder(engine)
    await recorder.start()
    session = new_session()
    registry = Registry(session, environment())
    registry.apply(settings)
    bank = CoinBank.from_settings(settings.billing, pool_store(settings), engine, recorder=recorder)
    await bank.start()
    access = AccessResolver(engine=engine, on_change=lambda p: state.changes.publish(Change.ACCESS, p))
    configure_access(access, settings)
    await access.load()
    metrics_of_state = Metrics(lambda: state)
    gate = Gate(Limiter.from_settings(limiter_settings(settings)), access, bank, lambda: state.settings)
    state = AppState(
        settings=settings,
        registry=registry,
        pipeline=Pipeline(
            registry=registry,
            settings=lambda: state.settings,
            gate=gate,
            bank=bank,
            recorder=recorder,
            observe=metrics_of_state.observe,
        ),
        gate=gate,
        bank=bank,
        access=access,
        metrics=metrics_of_state,
        authenticator=KeyAuthenticator(
            engine=engine,
            secret=secret,
            groups=lambda: state.settings.groups,
            admins=lambda: state.settings.admins,
            ttl=lambda: state.cache_seconds(),
        ),
        recorder=recorder,
        engine=engine,
        session=session,
        config_path=config_path,
        overrides=overrides,
    )
    redis_url = settings.server.redis_url
    state.changes = ChangeBus(
        state.apply_change,
        redis=Redis.from_url(redis_url.get_secret_value()) if redis_url is not None else None,
        channel=settings.server.redis_prefix + "changes",
        log=ChangeLog(engine),
    )
    await state.gate.reload_limit_overrides(engine)
    # Before the first request: from now on `lumen` commands see this process (without Redis,
    # they hand it their coin commands and wait for it to apply their changes).
    state.heartbeat = Heartbeat(engine, state.changes.origin, local_state=redis_url is None)
    await state.heartbeat.beat()
    return state, first_start


async def _prune(engine: AsyncEngine) -> None:
    await ChangeLog(engine).prune()
    await commands.prune(engine)


def limiter_settings(settings: Settings) -> LimiterSettings:
    """With `server.redis_url` several processes serve, so the limits live in that Redis unless
    `rate_limits` names a Redis of its own."""
    limits = settings.rate_limits
    if settings.server.redis_url is None or limits.redis_url is not None:
        return limits
    return limits.model_copy(
        update={
            "backend": "redis",
            "redis_url": settings.server.redis_url,
            "key_prefix": settings.server.redis_prefix + "rl:",
        }
    )


def pool_store(settings: Settings) -> PoolStore:
    """Coin balances in this process, or in Redis when several processes share them."""
    if settings.server.redis_url is None:
        return MemoryPoolStore()
    client = redis_client(settings.server.redis_url.get_secret_value())
    return RedisPoolStore(client, prefix=settings.server.redis_prefix + "coins:")


async def _expire_access(state: AppState) -> None:
    """Drops the cached access decisions and rate-limit overrides as often as the cached keys
    expire: the bound for changes that did not arrive by push."""
    loop = asyncio.get_running_loop()
    dropped_at = loop.time()
    while True:
        # Wakes at the short interval even while changes arrive by push, so that when the
        # channel is lost the short bound applies at once, not after a long sleep.
        await asyncio.sleep(max(state.settings.server.auth_cache_seconds, 0.05))
        if loop.time() - dropped_at < state.cache_seconds():
            continue
        dropped_at = loop.time()
        state.access.invalidate()
        try:
            await state.gate.reload_limit_overrides(state.engine)
        except SQLAlchemyError:
            log.exception("could not reload the rate-limit overrides; keeping the last ones")


async def _flush_key_use(state: AppState) -> None:
    """Writes keys' `last_used_at` every few seconds instead of on every request."""
    try:
        while True:
            await asyncio.sleep(KEY_USE_FLUSH_SECONDS)
            await state.authenticator.flush_last_used()
    finally:
        await state.authenticator.flush_last_used()


async def _stop(state: AppState) -> None:
    with contextlib.suppress(SQLAlchemyError):
        await state.heartbeat.stop()
    await state.changes.aclose()
    await state.pipeline.aclose()
    await state.gate.aclose()
    await state.bank.aclose()
    await state.recorder.aclose()
    backends = {id(e.backend): e.backend for e in state.registry.endpoints()}
    for backend in backends.values():
        await backend.aclose()
    await state.session.close()
    await state.engine.dispose()
