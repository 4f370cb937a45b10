"""The first start prints a portal login that works as printed, next to the API key."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from lumen.settings import load_settings
from tests.portal.support import HTML, parse
from tests.support import ECHO, model, write_config


def test_the_printed_password_logs_the_administrator_in(tmp_path: Path) -> None:
    config = write_config(tmp_path / "lumen.yaml", {"models": [model("echo", ECHO)]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lumen",
            "serve",
            "--config",
            str(config),
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        banner = ""
        for line in process.stdout:
            banner += line
            if line.startswith("    -d "):
                break
        url = re.search(r"running at (http://\S+)", banner)
        login = re.search(r"Portal login: (http://\S+)/login\s+(\S+) / (\S+)\s", banner)
        assert url and login and re.search(r"API key:\s+sk_", banner), banner
        assert login.group(1) == url.group(1) and login.group(2) == "admin@localhost"
        with httpx.Client(base_url=url.group(1), headers=HTML) as browser:
            form = parse(browser.get("/login").text).fields
            answer = browser.post(
                "/login",
                data={"csrf_token": form["csrf_token"], "email": login.group(2), "password": login.group(3)},
            )
            assert answer.status_code == 303
            assert "admin@localhost" in browser.get("/").text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_portal_settings_from_the_environment() -> None:
    settings = load_settings(
        None, environ={"LUMEN_PORTAL__SECURE_COOKIES": "always", "LUMEN_PORTAL__INSTANCE_NAME": "Campus AI"}
    )
    assert settings.portal.secure_cookies == "always" and settings.portal.instance_name == "Campus AI"
