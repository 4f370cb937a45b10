"""The Dockerfile, parsed with BuildKit's own parser (the `dockerfile` package), and its health
check run for real. No Docker daemon runs here, so the image itself is never built by the tests."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.support import REPO, DockerIgnore, lumen_env_problem, parse_lumen_args
from tests.support import ECHO, model, running_lumen

COMMANDS = dockerfile.parse_file(os.fspath(REPO / "Dockerfile"))
IGNORE = DockerIgnore((REPO / ".dockerignore").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONSTRAINTS = REPO / "requirements" / "constraints.txt"


def stages() -> list[list[dockerfile.Command]]:
    """The instructions of each build stage, in order (global ARGs before the first FROM dropped)."""
    result: list[list[dockerfile.Command]] = []
    for command in COMMANDS:
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def final_stage() -> list[dockerfile.Command]:
    return stages()[-1]


def global_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for command in COMMANDS:
        if command.cmd == "FROM":
            break
        if command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            args[name] = default
    return args


def only(stage: list[dockerfile.Command], cmd: str) -> list[dockerfile.Command]:
    return [c for c in stage if c.cmd == cmd]


def pinned() -> dict[str, str]:
    versions = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            versions[canonicalize_name(name)] = version.strip()
    return versions


def test_every_stage_is_python_311_slim() -> None:
    args = global_args()
    names = set()
    for stage in stages():
        image, *alias = stage[0].value
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
        if alias:
            names.add(alias[1])
    assert len(stages()) >= 2, "multi-stage: the compilers and pip stay in the build stage"
    # The final stage takes only the finished virtualenv from the build stage.
    copies = only(final_stage(), "COPY")
    assert copies and all(any(f.startswith("--from=") for f in c.flags) for c in copies)
    assert {f.split("=", 1)[1] for c in copies for f in c.flags} <= names


def test_the_server_runs_as_an_unprivileged_user() -> None:
    users = only(final_stage(), "USER")
    assert users, "the final stage sets no USER: the server would run as root"
    user = users[-1].value[0]
    uid = user.partition(":")[0]
    assert uid not in ("root", "0")
    # The user exists in the image with that uid, and owns the data directory.
    created = " ".join(c.value[0] for c in only(final_stage(), "RUN"))
    assert re.search(rf"useradd [^&;]*--uid {uid}\b", created), "USER names a uid no RUN creates"
    env = dict(zip(*[iter(only(final_stage(), "ENV")[-1].value)] * 2, strict=True))
    assert re.search(rf"chown [^&;]*{re.escape(env['LUMEN_DATA_DIR'])}", created)
    # Nothing after USER switches back to root.
    assert final_stage().index(users[-1]) > max(final_stage().index(c) for c in only(final_stage(), "RUN"))


def test_environment_names_real_settings() -> None:
    for command in COMMANDS:
        if command.cmd == "ENV":
            for name in command.value[::2]:
                assert lumen_env_problem(name) is None, lumen_env_problem(name)


def test_entrypoint_serves_lumen_on_all_interfaces() -> None:
    (entrypoint,) = only(final_stage(), "ENTRYPOINT")
    (cmd,) = only(final_stage(), "CMD")
    assert entrypoint.json and cmd.json, "exec form, so that the server gets SIGTERM itself"
    assert list(entrypoint.value) == ["lumen"]
    assert PYPROJECT["project"]["scripts"]["lumen"] == "lumen.cli:main"
    command, params = parse_lumen_args(cmd.value)
    assert command == "serve"
    assert params["host"] == "0.0.0.0"
    assert params["port"] is None, (
        "the port comes from LUMEN_PORT (default 8000), as the health check expects"
    )
    (expose,) = only(final_stage(), "EXPOSE")
    assert expose.value == ("8000",)


def test_every_pip_install_is_pinned_by_the_constraints() -> None:
    installs = []
    for command in COMMANDS:
        if command.cmd != "RUN":
            continue
        for segment in re.split(r"&&|;|\|\|", command.value[0]):
            if re.search(r"\bpip install\b", segment):
                installs.append(segment.strip())
    assert len(installs) >= 2
    for segment in installs:
        words = shlex.split(segment)
        arguments = words[words.index("install") + 1 :]
        packages = [
            w
            for i, w in enumerate(arguments)
            if not w.startswith("-") and (i == 0 or arguments[i - 1] != "-c")
        ]
        if "-c" in words:
            assert words[words.index("-c") + 1] == "requirements/constraints.txt", segment
            # What is installed from the index by name must be in the constraints file.
            for name in packages:
                if not name.startswith("."):
                    assert canonicalize_name(Requirement(name).name) in pinned(), segment
        else:
            # Only pip itself is installed without the constraints file, at an exact version.
            assert packages == ["pip==26.3"], segment


def test_the_local_extra_is_a_build_argument() -> None:
    (build_arg,) = [c for c in stages()[0] if c.cmd == "ARG" and c.value[0].startswith("WITH_LOCAL_MODELS=")]
    assert build_arg.value[0] == "WITH_LOCAL_MODELS=false", "the default image skips the llama.cpp build"
    assert "local" in PYPROJECT["project"]["optional-dependencies"]
    script = " ".join(c.value[0] for c in only(stages()[0], "RUN"))
    assert 'extras="[local]"' in script


def test_every_copy_source_is_in_the_build_context() -> None:
    copied = 0
    for command in COMMANDS:
        if command.cmd != "COPY" or any(f.startswith("--from=") for f in command.flags):
            continue
        for source in command.value[:-1]:
            path = REPO / source
            assert path.exists(), f"COPY {source}: no such file in the repository"
            assert not IGNORE.excluded(source), f"COPY {source}: excluded by .dockerignore"
            copied += 1
    assert copied >= 4
    # Every file the installed package needs (package-data included: migrations, templates).
    package_files = [
        p.relative_to(REPO).as_posix()
        for p in (REPO / "src" / "lumen").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert "src/lumen/store/migrations/env.py" in package_files
    missing = [p for p in package_files if IGNORE.excluded(p)]
    assert missing == []


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    for path in [".git/config", ".venv/bin/python", "lumen-data/lumen.db", "lumen-data/secret-key",
                 "tests/e2e/node/node_modules/openai/package.json", "deploy/compose/.env",
                 "src/lumen/__pycache__/app.cpython-311.pyc", "src/lumen.egg-info/PKG-INFO"]:  # fmt: skip
        assert IGNORE.excluded(path), f"{path} would be sent to the builder"


def test_dockerignore_rules_follow_docker() -> None:
    """The checks above are only as good as this reading of the .dockerignore rules."""
    rules = DockerIgnore("*\n!src\nsrc/**/*.pyc\n!src/keep.pyc\n")
    assert rules.excluded("README.md")
    assert not rules.excluded("src/lumen/app.py")
    assert rules.excluded("src/lumen/app.pyc")
    assert not rules.excluded("src/keep.pyc")
    assert DockerIgnore("docs\n").excluded("docs/api.md")
    assert not DockerIgnore("docs\n").excluded("src/docs.py")


def test_the_constraints_pin_everything_the_image_installs() -> None:
    """`pip install -c` pins only what the file lists: a runtime dependency missing from it would
    be resolved to whatever version is newest on the day the image is built."""
    versions = pinned()
    seen: set[str] = set()
    todo = [("lumen", frozenset({"local"}))]
    unpinned = []
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen:
            continue
        seen.add(key)
        if key != "lumen" and key not in versions:
            unpinned.append(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(e) for e in environments):
                todo.append((requirement.name, frozenset(requirement.extras)))
    assert unpinned == []
    assert "uvloop" in seen and "llama-cpp-python" in seen, "the walk must reach extras' dependencies"


def test_healthcheck_passes_on_a_live_lumen_and_fails_without_one(tmp_path: Path) -> None:
    (check,) = only(final_stage(), "HEALTHCHECK")
    kind, *argv = check.value
    assert kind == "CMD" and check.json
    assert "/healthz" in " ".join(argv)
    assert argv[0] == "python"
    argv[0] = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")}

    with running_lumen(tmp_path, {"models": [model("echo", ECHO)]}) as lumen:
        port = lumen.url.rsplit(":", 1)[1]
        ok = subprocess.run(argv, env={**env, "LUMEN_PORT": port}, capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = str(closed.getsockname()[1])
    failed = subprocess.run(argv, env={**env, "LUMEN_PORT": port}, capture_output=True, timeout=30)
    assert failed.returncode != 0
