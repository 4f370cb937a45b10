"""The Helm chart, linted and rendered by the real helm (see conftest.py), and the rendered
manifests checked against each other and against Lumen: probes on Lumen's real routes, commands
that the `lumen` CLI accepts, a config that loads with the environment the pods get.

No Kubernetes API server runs here, so the manifests are not validated by one (`helm install
--dry-run=server`, `kubectl apply --dry-run=server`): their structure is checked below instead."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lumen.ops import health
from lumen.settings import load_settings
from tests.deploy.support import CHART, lumen_env_problem, merge_values, parse_lumen_args

VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def run_helm(helm: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    # Helm keeps caches and its repository list under these: never in the real home.
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "KUBECONFIG": str(home / "kubeconfig")}  # fmt: skip
    return subprocess.run([helm, *args], capture_output=True, text=True, env=env, timeout=120)


def render(helm: str, home: Path, *args: str) -> list[dict[str, Any]]:
    done = run_helm(helm, "template", "rel", str(CHART), "--namespace", "lumen", *args, home=home)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def values_of(path: Path) -> dict[str, Any]:
    return merge_values(yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load(path.read_text()))


class Manifests:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        (doc,) = [d for d in self.of(kind) if d["metadata"]["name"] == name]
        return doc

    def secret_data(self, name: str) -> dict[str, str]:
        return dict(self.one("Secret", name)["stringData"])

    def pod_specs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
                yield doc, doc["spec"]["template"]["spec"]
            elif doc["kind"] == "Pod":
                yield doc, doc["spec"]


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="module", params=VALUES, ids=[p.stem for p in VALUES])
def rendered(request: pytest.FixtureRequest, helm: str, helm_home: Path) -> tuple[Manifests, dict[str, Any]]:
    path: Path = request.param
    return Manifests(render(helm, helm_home, "--values", str(path))), values_of(path)


def test_the_chart_lints_clean(helm: str, helm_home: Path) -> None:
    for path in VALUES:
        done = run_helm(helm, "lint", str(CHART), "--strict", "--values", str(path), home=helm_home)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout


def test_lint_catches_a_broken_template(helm: str, helm_home: Path, tmp_path: Path) -> None:
    """The lint above can fail: the same chart with one broken template does."""
    broken = tmp_path / "lumen"
    subprocess.run(["cp", "-r", str(CHART), str(broken)], check=True)
    service = broken / "templates" / "service.yaml"
    service.write_text(service.read_text().replace("{{ .Values.service.type }}", "{{ .Values.service.type "))
    done = run_helm(helm, "lint", str(broken), "--values", str(VALUES[0]), home=helm_home)
    assert done.returncode != 0


def test_every_manifest_is_well_formed(rendered: tuple[Manifests, dict[str, Any]]) -> None:
    manifests, _ = rendered
    seen = set()
    for doc in manifests.docs:
        assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), doc
        name = doc["metadata"]["name"]
        assert DNS_LABEL.match(name) and len(name) <= 63, name
        assert (doc["kind"], name) not in seen, f"{doc['kind']} {name} is rendered twice"
        seen.add((doc["kind"], name))
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"
    for doc, spec in manifests.pod_specs():
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert re.fullmatch(r"[^:\s]+:[^:\s]+", container["image"]), container["image"]
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= volumes, f"{doc['metadata']['name']}: {mounts - volumes} are not volumes"


def test_the_gateway_deployment(rendered: tuple[Manifests, dict[str, Any]]) -> None:
    manifests, values = rendered
    deployment = manifests.one("Deployment", "rel-lumen")
    assert deployment["spec"]["replicas"] == values["replicaCount"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    command, params = parse_lumen_args(container["args"])
    assert command == "serve"
    assert params["host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": params["port"]}

    routes = {getattr(route, "path", None) for route in health.routes()}
    probes = {
        kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in routes
        assert probe["port"] in ports


def test_pods_run_unprivileged(rendered: tuple[Manifests, dict[str, Any]]) -> None:
    manifests, _ = rendered
    for doc, spec in manifests.pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec.get("automountServiceAccountToken") is False
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # Lumen's root file system is read-only; it writes only to its data directory and /tmp.
    (container,) = manifests.one("Deployment", "rel-lumen")["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {env["LUMEN_DATA_DIR"], "/tmp"}


def pod_environment(
    manifests: Manifests, values: dict[str, Any], container: dict[str, Any]
) -> dict[str, str]:
    """The environment a Lumen container gets: its Secret (envFrom) and its own variables."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["secretRef"]["name"]
        if name == values["secrets"]["existingSecret"]:
            # Managed outside the chart: what docs/deploy.md says it must hold.
            env.update(LUMEN_SECRET_KEY="s" * 32, LUMEN_DATABASE_URL="postgresql+asyncpg://lumen:pw@db/lumen")
        else:
            env.update(manifests.secret_data(name))
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def test_the_config_loads_with_the_pods_environment(
    rendered: tuple[Manifests, dict[str, Any]], tmp_path: Path
) -> None:
    manifests, values = rendered
    pod = manifests.one("Deployment", "rel-lumen")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = pod_environment(manifests, values, container)
    assert [lumen_env_problem(k) for k in env if lumen_env_problem(k)] == []
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    _, params = parse_lumen_args(container["args"])
    assert str(params["config"]).startswith(mount["mountPath"] + "/")
    config_map = manifests.one("ConfigMap", volume["configMap"]["name"])
    path = tmp_path / Path(params["config"]).name
    path.write_text(config_map["data"][path.name])
    settings = load_settings(path, environ=env)
    assert [m.name for m in settings.models] == [m["name"] for m in values["config"]["models"]]
    assert settings.database_url == env["LUMEN_DATABASE_URL"]
    for model in settings.models:
        for endpoint in model.endpoints:
            if endpoint.api_key_env:
                assert endpoint.api_key_env in env, (
                    f"{model.name}: {endpoint.api_key_env} is not in the pods' env"
                )


def test_databases_in_the_chart_are_the_ones_lumen_uses(rendered: tuple[Manifests, dict[str, Any]]) -> None:
    manifests, values = rendered
    if values["secrets"]["existingSecret"]:
        # Nothing holds a secret of its own: the existing Secret is the only source.
        assert manifests.of("Secret") == []
        return
    secret = manifests.secret_data("rel-lumen")
    if values["postgresql"]["enabled"]:
        service = manifests.one("Service", "rel-lumen-postgresql")
        auth = values["postgresql"]["auth"]
        port = service["spec"]["ports"][0]["port"]
        assert secret["LUMEN_DATABASE_URL"] == (
            f"postgresql+asyncpg://{auth['username']}:{auth['password']}@rel-lumen-postgresql:{port}/{auth['database']}"
        )
        statefulset = manifests.one("StatefulSet", "rel-lumen-postgresql")
        labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    else:
        assert secret["LUMEN_DATABASE_URL"] == values["externalDatabase"]["url"]
    if values["redis"]["enabled"]:
        service = manifests.one("Service", "rel-lumen-redis")
        assert (
            secret["LUMEN_REDIS_URL"]
            == f"redis://:{values['redis']['auth']['password']}@rel-lumen-redis:6379/0"
        )
        (container,) = manifests.one("Deployment", "rel-lumen-redis")["spec"]["template"]["spec"][
            "containers"
        ]
        assert container["args"][container["args"].index("--maxmemory-policy") + 1] == "noeviction"
    elif values["externalRedis"]["url"]:
        assert secret["LUMEN_REDIS_URL"] == values["externalRedis"]["url"]
    else:
        assert "LUMEN_REDIS_URL" not in secret


def test_the_service_selects_only_gateway_pods(rendered: tuple[Manifests, dict[str, Any]]) -> None:
    manifests, _ = rendered
    selector = manifests.one("Service", "rel-lumen")["spec"]["selector"]
    selected = [
        doc["metadata"]["name"]
        for doc in manifests.docs
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
        and selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert selected == ["rel-lumen"]


def test_the_migration_job_is_a_hook_before_upgrades(rendered: tuple[Manifests, dict[str, Any]]) -> None:
    manifests, values = rendered
    job = manifests.one("Job", "rel-lumen-migrations")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert "pre-upgrade" in hooks
    # Before the pods at install, except that the in-chart PostgreSQL is only created by the install.
    assert ("post-install" if values["postgresql"]["enabled"] else "pre-install") in hooks
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert parse_lumen_args(container["args"])[0] == "db upgrade"
    assert spec["restartPolicy"] == "Never"
    assert "serviceAccountName" not in spec, "the chart's ServiceAccount does not exist before the install"
    (source,) = container["envFrom"]
    name = source["secretRef"]["name"]
    if values["secrets"]["existingSecret"]:
        assert name == values["secrets"]["existingSecret"]
        return
    # A hook Secret of its own, created before the Job, with the database the pods use.
    secret = manifests.one("Secret", name)
    annotations = secret["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == job["metadata"]["annotations"]["helm.sh/hook"]
    assert int(annotations["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert (
        secret["stringData"]["LUMEN_DATABASE_URL"] == manifests.secret_data("rel-lumen")["LUMEN_DATABASE_URL"]
    )


def test_replicas_come_with_a_disruption_budget(rendered: tuple[Manifests, dict[str, Any]]) -> None:
    manifests, values = rendered
    budgets = manifests.of("PodDisruptionBudget")
    if values["replicaCount"] > 1:
        (budget,) = budgets
        selector = manifests.one("Deployment", "rel-lumen")["spec"]["selector"]["matchLabels"]
        assert budget["spec"]["selector"]["matchLabels"] == selector
    else:
        assert budgets == []


def test_the_service_monitor_uses_the_metrics_token(rendered: tuple[Manifests, dict[str, Any]]) -> None:
    manifests, values = rendered
    monitors = manifests.of("ServiceMonitor")
    if not values["metrics"]["serviceMonitor"]["enabled"]:
        assert monitors == []
        return
    (monitor,) = monitors
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["key"] == "LUMEN_METRICS_TOKEN"
    assert (
        manifests.secret_data(credentials["name"])["LUMEN_METRICS_TOKEN"] == values["secrets"]["metricsToken"]
    )
    service = manifests.one("Service", "rel-lumen")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "secrets.secretKey is required"),
        (["--set", "secrets.secretKey=x"], "postgresql.auth.password is required"),
        (
            [
                "--set",
                "secrets.secretKey=x",
                "--set",
                "postgresql.auth.password=p",
                "--set",
                "redis.enabled=false",
            ],
            "replicaCount > 1 needs Redis",
        ),
        (
            ["--values", str(CHART / "ci/in-chart-values.yaml"), "--set", "postgresql.auth.password=p@ss"],
            "pattern",
        ),
        (
            [
                "--values",
                str(CHART / "ci/in-chart-values.yaml"),
                "--set",
                "externalDatabase.url=postgresql://db/x",
            ],
            "either postgresql.enabled=true or externalDatabase.url",
        ),
        (
            ["--values", str(CHART / "ci/in-chart-values.yaml"), "--set", "secrets.bootstrapKey=sk_short"],
            "pattern",
        ),
    ],
    ids=[
        "no-secret-key",
        "no-db-password",
        "replicas-without-redis",
        "bad-password",
        "two-databases",
        "bad-key",
    ],
)
def test_unusable_values_are_refused_with_a_reason(
    helm: str, helm_home: Path, arguments: list[str], message: str
) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), *arguments, home=helm_home)
    assert done.returncode != 0
    assert message in done.stderr


def test_notes_tell_how_to_reach_lumen(helm: str, helm_home: Path) -> None:
    done = run_helm(
        helm, "install", "rel", str(CHART), "--dry-run=client", "--values", str(VALUES[-1]), home=helm_home
    )
    assert done.returncode == 0, done.stderr
    notes = done.stdout[done.stdout.index("NOTES:") :]
    assert "port-forward service/rel-lumen" in notes
    command = re.search(r"exec deployment/rel-lumen -- (lumen .+)", notes)
    assert command is not None
    assert parse_lumen_args(command.group(1).split()[1:])[0] == "keys create"
