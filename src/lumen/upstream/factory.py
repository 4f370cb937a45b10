"""Building a backend from an endpoint's settings."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from lumen.settings import EndpointSettings, LocalSettings
from lumen.upstream.base import Backend
from lumen.upstream.http import OpenAIBackend


def endpoint_identity(
    settings: EndpointSettings, local: LocalSettings, environ: Mapping[str, str]
) -> tuple[object, ...]:
    """Two endpoints with the same identity share one backend, also across config reloads, so a
    reload keeps loaded local models, in-flight counts and health."""
    if settings.type == "local":
        return ("local", settings.engine, str(settings.model_path), local.threads, local.context)
    return ("openai", settings.url, settings.resolved_api_key(environ))


def build_backend(
    settings: EndpointSettings,
    *,
    session: aiohttp.ClientSession,
    local: LocalSettings,
    environ: Mapping[str, str],
) -> Backend:
    if settings.type == "openai":
        assert settings.url is not None  # guaranteed by EndpointSettings validation
        return OpenAIBackend(session, settings.url, settings.resolved_api_key(environ))
    if settings.engine == "echo":
        from lumen.upstream.local.echo import EchoBackend

        return EchoBackend()
    if settings.engine == "llama_cpp":
        from lumen.upstream.local.llama import LlamaCppBackend

        path = str(settings.model_path) if settings.model_path else None
        return LlamaCppBackend(path, threads=local.threads, context=local.context)
    from lumen.upstream.local.minilm import MiniLMBackend

    return MiniLMBackend(threads=local.threads)
