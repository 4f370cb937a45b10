"""deploy/compose: the compose file against the compose specification (the schema check-jsonschema
vendors), its Lumen services against Lumen's real settings and commands, and the stack's Lumen
part run for real against this machine's PostgreSQL and Redis. No Docker daemon runs here, so
the containers themselves are never started."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from lumen.settings import load_settings
from tests.deploy.support import (
    COMPOSE_DIR,
    compose_variables,
    interpolate,
    lumen_env_problem,
    parse_lumen_args,
)
from tests.deploy.test_dockerfile import final_stage, only
from tests.fakes.upstream import FakeUpstream

COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
LUMEN_SERVICES = ("migrate", "lumen")
# Values for every variable of .env.example, as an administrator would fill them in.
FILLED = {
    "POSTGRES_PASSWORD": "pg0123456789abcdef",
    "REDIS_PASSWORD": "rd0123456789abcdef",
    "LUMEN_SECRET_KEY": "0123456789abcdef0123456789abcdef0123456789abcdef",
    "LUMEN_METRICS_TOKEN": "metrics0123456789",
}


def documented_variables() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def compose(variables: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Docker Compose reads it: interpolated, then parsed (merge keys too)."""
    data: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), variables or FILLED))
    return data


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounted_config(service: dict[str, Any], container_path: str) -> Path:
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if target == container_path:
            return (COMPOSE_DIR / source).resolve()
    raise AssertionError(f"nothing is mounted at {container_path}")


def test_the_file_matches_the_compose_specification() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("depends_on:", "depends_onn:", 1))
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0


def test_every_variable_is_documented_and_required() -> None:
    text = COMPOSE_FILE.read_text()
    assert compose_variables(text) == set(documented_variables()) == set(FILLED)
    # Left empty, a secret stops `docker compose` with a message, instead of starting without it.
    for name in documented_variables():
        assert documented_variables()[name] == "", f"{name} has an example value someone would keep"
        with pytest.raises(KeyError, match=name):
            compose({**FILLED, name: ""})


def test_lumen_environment_names_real_settings() -> None:
    services = compose()["services"]
    for name in LUMEN_SERVICES:
        env = service_env(services[name])
        assert [lumen_env_problem(k) for k in env if lumen_env_problem(k)] == []
        config = mounted_config(services[name], "/etc/lumen/lumen.yaml")
        settings = load_settings(config, environ=env)
        # Each variable reached the setting it names.
        assert settings.database_url == env["LUMEN_DATABASE_URL"]
        assert settings.database_url.startswith("postgresql+asyncpg://lumen:")
        assert settings.server.redis_url is not None
        assert settings.server.redis_url.get_secret_value() == env["LUMEN_REDIS_URL"]
        assert settings.server.secret_key is not None
        assert settings.server.secret_key.get_secret_value() == FILLED["LUMEN_SECRET_KEY"]
        assert settings.server.metrics_token is not None


def test_the_database_and_redis_urls_point_at_their_services() -> None:
    data = compose()
    env = service_env(data["services"]["lumen"])
    postgres = service_env(data["services"]["postgres"])
    assert env["LUMEN_DATABASE_URL"] == (
        f"postgresql+asyncpg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    redis_command = data["services"]["redis"]["command"]
    password = redis_command[redis_command.index("--requirepass") + 1]
    assert env["LUMEN_REDIS_URL"] == f"redis://:{password}@redis:6379/0"
    # Lumen's coin balances and reservations live in Redis: never evicted.
    assert redis_command[redis_command.index("--maxmemory-policy") + 1] == "noeviction"


def test_commands_are_lumen_commands_on_the_mounted_config() -> None:
    services = compose()["services"]
    migrate, params = parse_lumen_args(services["migrate"]["command"])
    assert migrate == "db upgrade"
    assert str(params["config"]) == "/etc/lumen/lumen.yaml"
    serve, params = parse_lumen_args(services["lumen"]["command"])
    assert serve == "serve"
    assert params["host"] == "0.0.0.0"
    # The image's HEALTHCHECK probes the default port, which the published port maps.
    assert params["port"] is None
    assert services["lumen"]["ports"] == ["8000:8000"]
    assert mounted_config(services["lumen"], str(params["config"])).is_file()


def test_the_server_starts_after_the_migration_succeeded() -> None:
    services = compose()["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    depends = services["lumen"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]


def test_images_are_pinned_and_lumen_is_built_here() -> None:
    services = compose()["services"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image} is not pinned"
    for name in LUMEN_SERVICES:
        assert services[name]["build"]["context"] == "../.."
        assert (COMPOSE_DIR / "../../Dockerfile").is_file()
        assert services[name]["pull_policy"] == "build"


def test_the_config_passes_lumen_check_config() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")}
    env.update(service_env(compose()["services"]["lumen"]))
    done = subprocess.run(
        [sys.executable, "-m", "lumen", "check-config", str(COMPOSE_DIR / "lumen.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "qwen2.5-0.5b" in done.stdout


@pytest.fixture
def fake_ollama() -> Iterator[FakeUpstream]:
    server = FakeUpstream("qwen2.5:0.5b").start()
    yield server
    server.stop()


def test_the_lumen_services_run_against_postgresql_and_redis(
    tmp_path: Path, pg_url: str, redis_url: str, fake_ollama: FakeUpstream
) -> None:
    """The migrate service's command, then the lumen service's, with the compose environment; only
    the service host names are replaced by this machine's servers, and the address by a free port
    on loopback."""
    services = compose()["services"]
    prefix = f"lumen-deploy-test:{uuid.uuid4().hex}:"
    config = tmp_path / "lumen.yaml"
    config.write_text(
        (COMPOSE_DIR / "lumen.yaml").read_text().replace("http://ollama:11434/v1", fake_ollama.url)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")}
    env.update(service_env(services["lumen"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env.update(
        LUMEN_DATABASE_URL=pg_url,
        LUMEN_REDIS_URL=redis_url,
        LUMEN_SERVER__REDIS_PREFIX=prefix,
        LUMEN_SERVER__PUBLIC_URL=url,
        LUMEN_DATA_DIR=str(tmp_path / "data"),
    )

    def command(service: str) -> list[str]:
        args = [str(config) if a == "/etc/lumen/lumen.yaml" else a for a in services[service]["command"]]
        return [sys.executable, "-m", "lumen", *args]

    migrated = subprocess.run(command("migrate"), capture_output=True, text=True, env=env, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert "database is up to date" in migrated.stdout

    # Later options win.
    server = subprocess.Popen(
        [*command("lumen"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output: list[str] = []
    try:
        assert server.stdout is not None
        running = key = None
        for line in server.stdout:
            output.append(line)
            if found := re.search(r"running at (http://\S+)", line):
                running = found.group(1)
            if found := re.search(r"API key:\s+(sk_\S+)", line):
                key = found.group(1)
            if line.startswith("Try it:"):
                break
        assert running == url and key, "".join(output)
        assert httpx.get(url + "/readyz", timeout=10).status_code == 200
        for model in ("qwen2.5-0.5b", "echo"):
            answer = httpx.post(
                url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": model, "messages": [{"role": "user", "content": "Hello"}]},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        assert fake_ollama.requests[-1]["model"] == "qwen2.5:0.5b"
        metrics = httpx.get(
            url + "/metrics", headers={"Authorization": f"Bearer {FILLED['LUMEN_METRICS_TOKEN']}"}, timeout=10
        )
        assert metrics.status_code == 200

        # The image's health check, pointed at this server.
        (check,) = only(final_stage(), "HEALTHCHECK")
        argv = [sys.executable, *check.value[2:]]
        assert subprocess.run(argv, env={**env, "LUMEN_PORT": str(port)}, timeout=30).returncode == 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        client = redis.Redis.from_url(redis_url)
        for name in client.scan_iter(match=prefix + "*"):
            client.delete(name)
        client.close()
