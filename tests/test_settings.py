from __future__ import annotations

from pathlib import Path

import pytest

from lumen.settings import ConfigError, load_settings
from tests.support import write_config


def _load(tmp_path: Path, config: object, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "c.yaml"
    if isinstance(config, str):
        path.write_text(config)
    else:
        write_config(path, config)  # type: ignore[arg-type]
    return load_settings(path, environ=env or {})


GOOD_MODEL = {"name": "m", "endpoints": [{"url": "http://h:1/v1"}]}


def test_embedded_default_has_the_local_models() -> None:
    settings = load_settings(None, environ={})
    names = [m.name for m in settings.models]
    assert names == ["smollm2-135m-instruct", "all-minilm-l6-v2", "echo"]
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.database_url.endswith("lumen-data/lumen.db")


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"models": [{**GOOD_MODEL, "pricee": {}}]}, "models.0.pricee: unknown key"),
        (
            {"models": [{"name": "m", "endpoints": [{"type": "openai"}]}]},
            "models.0.endpoints.0: an `openai` endpoint needs `url`",
        ),
        ({"models": [{"name": "m", "endpoints": [{"url": "ftp://x"}]}]}, "must start with http"),
        ({"models": [{"name": "m", "endpoints": []}]}, "models.0.endpoints"),
        ({"models": [{"name": "m", "endpoints": [{"type": "local"}]}]}, "needs `engine`"),
        ({"models": [GOOD_MODEL, GOOD_MODEL]}, "declared twice"),
        ({"models": [{**GOOD_MODEL, "price": {"input": -1}}]}, "models.0.price.input"),
        ({"server": {"port": "eighty"}}, "server.port"),
        ({"routing": {"max_attempts": 0}}, "routing.max_attempts"),
        ({"servre": {}}, "servre: unknown key"),
        ({"models": [{"name": "m", "endpoints": [{"url": "http://u:p@h/v1", "api_key": "k"}]}]}, "not both"),
        ("models: [unclosed", "not valid YAML"),
        ("- a list", "top level must be a mapping"),
    ],
)
def test_bad_configs_name_the_bad_key(tmp_path: Path, config: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, config)
    assert fragment in str(info.value)
    assert str(tmp_path / "c.yaml") in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {"LUMEN_PORT": "9001", "LUMEN_ROUTING__MAX_ATTEMPTS": "5", "LUMEN_SERVER__LOG_LEVEL": "debug"}
    settings = _load(tmp_path, {"server": {"port": 8000}, "models": [GOOD_MODEL]}, env)
    assert settings.server.port == 9001  # type: ignore[attr-defined]
    assert settings.routing.max_attempts == 5  # type: ignore[attr-defined]
    assert settings.server.log_level == "debug"  # type: ignore[attr-defined]


def test_endpoint_secret_from_environment(tmp_path: Path) -> None:
    config = {"models": [{"name": "m", "endpoints": [{"url": "http://h/v1", "api_key_env": "MY_KEY"}]}]}
    settings = _load(tmp_path, config)
    endpoint = settings.models[0].endpoints[0]  # type: ignore[attr-defined]
    assert endpoint.resolved_api_key({"MY_KEY": "s3cret"}) == "s3cret"
    assert "s3cret" not in repr(settings)


def test_secret_is_never_in_repr(tmp_path: Path) -> None:
    config = {"models": [{"name": "m", "endpoints": [{"url": "http://h/v1", "api_key": "literal-secret"}]}]}
    settings = _load(tmp_path, config)
    assert "literal-secret" not in repr(settings)
    assert "literal-secret" not in settings.models[0].endpoints[0].label()  # type: ignore[attr-defined]


def test_an_empty_secret_in_the_environment_counts_as_unset() -> None:
    """`LUMEN_METRICS_TOKEN=` must not turn /metrics on with an empty token (anyone could read it)."""
    environ = {"LUMEN_METRICS_TOKEN": "", "LUMEN_REDIS_URL": "  ", "LUMEN_SECRET_KEY": ""}
    server = load_settings(None, environ=environ).server
    assert server.metrics_token is None and server.redis_url is None and server.secret_key is None
    assert load_settings(None, environ={"LUMEN_METRICS_TOKEN": "t0k"}).server.metrics_token is not None
