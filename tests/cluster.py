"""Several real `lumen serve` processes sharing one database (and Redis), as replicas do."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import TEST_KEY, write_config

SECRET = "test-cluster-secret-0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass
class Cluster:
    urls: list[str]
    processes: list[subprocess.Popen[str]]
    logs: list[list[str]]
    env: dict[str, str]
    config_path: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lumen", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=self.env,
        )


@contextmanager
def lumen_cluster(
    tmp_path: Path, config: dict[str, Any], *, count: int, database_url: str, redis_url: str | None = None
) -> Iterator[Cluster]:
    """`count` processes on ephemeral ports, one config, one database, one server secret."""
    config_path = write_config(tmp_path / "cluster.yaml", config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")}
    env.update(LUMEN_DATABASE_URL=database_url, LUMEN_SECRET_KEY=SECRET, LUMEN_BOOTSTRAP_KEY=TEST_KEY)
    if redis_url is not None:
        env["LUMEN_REDIS_URL"] = redis_url
    processes: list[subprocess.Popen[str]] = []
    logs: list[list[str]] = []
    urls: list[str] = []
    try:
        for index in range(count):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lumen",
                    "serve",
                    "--config",
                    str(config_path),
                    "--port",
                    "0",
                    "--data-dir",
                    str(tmp_path / f"data-{index}"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            processes.append(process)
            lines: list[str] = []
            logs.append(lines)
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                found = re.search(r"running at (http://\S+)", line)
                if found:
                    urls.append(found.group(1))
                    break
            else:
                raise RuntimeError("a Lumen process exited during start-up:\n" + "".join(lines))
            threading.Thread(target=lambda s=process.stdout, sink=lines: sink.extend(s), daemon=True).start()
        for url in urls:
            assert httpx.get(url + "/healthz", timeout=10).status_code == 200
        yield Cluster(urls, processes, logs, env, config_path)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
