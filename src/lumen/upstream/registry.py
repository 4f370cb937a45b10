"""The models Lumen serves, held in memory, swapped whole on a config reload.

A reload builds a new set of `Model`s but reuses each `Endpoint` whose identity is unchanged, so
loaded local models, in-flight counts and health survive it. Backends no longer referenced are
closed once nothing uses them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from lumen.settings import ModelSettings, Settings
from lumen.upstream.base import Backend
from lumen.upstream.endpoint import Endpoint
from lumen.upstream.factory import build_backend, endpoint_identity

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Model:
    settings: ModelSettings
    endpoints: tuple[Endpoint, ...]

    @property
    def name(self) -> str:
        return self.settings.name


class Registry:
    def __init__(self, session: aiohttp.ClientSession, environ: Mapping[str, str]) -> None:
        self._session = session
        self._environ = environ
        self._models: dict[str, Model] = {}
        self._endpoints: dict[tuple[object, ...], Endpoint] = {}

    def get(self, name: str) -> Model | None:
        model = self._models.get(name)
        return model if model is not None and model.settings.enabled else None

    def models(self) -> list[Model]:
        return [m for m in self._models.values() if m.settings.enabled]

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    def apply(self, settings: Settings) -> list[Backend]:
        """Installs the models of `settings`; returns the backends that are no longer used."""
        endpoints: dict[tuple[object, ...], Endpoint] = {}
        models: dict[str, Model] = {}
        for model_settings in settings.models:
            built = []
            for endpoint_settings in model_settings.endpoints:
                identity = (
                    *endpoint_identity(endpoint_settings, settings.local, self._environ),
                    model_settings.name,
                    endpoint_settings.upstream_model,
                )
                endpoint = endpoints.get(identity) or self._endpoints.get(identity)
                upstream_model = endpoint_settings.upstream_model or model_settings.name
                if endpoint is None:
                    backend = self._shared_backend(identity[:-2], endpoints) or build_backend(
                        endpoint_settings, session=self._session, local=settings.local, environ=self._environ
                    )
                    endpoint = Endpoint(endpoint_settings, backend, upstream_model)
                else:
                    endpoint.settings = endpoint_settings  # weight and flags may have changed
                endpoints[identity] = endpoint
                built.append(endpoint)
            models[model_settings.name] = Model(model_settings, tuple(built))
        kept = {id(e.backend) for e in endpoints.values()}
        retired = {id(e.backend): e.backend for e in self._endpoints.values() if id(e.backend) not in kept}
        self._models, self._endpoints = models, endpoints
        return list(retired.values())

    def _shared_backend(
        self, backend_identity: tuple[object, ...], pending: dict[tuple[object, ...], Endpoint]
    ) -> Backend | None:
        """A backend already built for the same engine or server, for another model or name."""
        for identity, endpoint in (*self._endpoints.items(), *pending.items()):
            if identity[:-2] == backend_identity:
                return endpoint.backend
        return None
