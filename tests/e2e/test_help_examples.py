"""Every code example on the Help and Connect pages, run for real against a live Lumen.

The examples are taken from the pages as a logged-in user gets them, so this instance's URL and
the user's model are already filled in; the only change is the user's real key in place of
`sk_your_api_key_here` (and in `LUMEN_API_KEY`, which the Connect examples read). Then each runs
unchanged: `sh` blocks with bash and the real `curl`, `python` blocks with this venv's python
and the `openai` package, `js` blocks with node and the `openai` npm package of tests/e2e/node.
Each must exit 0 and print a real answer of the `echo` model (which repeats the last message).

Every block is accounted for: a runnable block under a heading with no expectation here fails
the completeness test, so a new example cannot go untested. The Help page's error table is
checked the same way: each code it lists is provoked on a live Lumen and must come back with
the status the table gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lumen.portal.routes.help import KEY_PLACEHOLDER
from tests.fakes.upstream import FakeUpstream
from tests.portal.support import add_user, client, login, set_admin_password
from tests.support import CI, ECHO, RunningLumen, model, running_lumen, upstream

NODE_DIR = Path(__file__).parent / "node"
RUNNABLE = {"sh": "bash", "python": "python", "js": "node"}


# --- the pages and their code ---------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    heading: str
    code: str


class Blocks(HTMLParser):
    """The code blocks of a rendered page (`div.code-block`), each with the heading above it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.tables: list[list[list[str]]] = []
        self._heading: list[str] | None = None
        self._last_heading = ""
        self._lang: str | None = None
        self._code: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "div" and values.get("class") == "code-block":
            self._lang = values.get("data-lang") or ""
        elif tag == "code" and self._lang is not None:
            self._code = []
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self._last_heading = "".join(self._heading).strip()
            self._heading = None
        elif tag == "code" and self._code is not None and self._lang is not None:
            self.blocks.append(Block(self._lang, self._last_heading, "".join(self._code)))
            self._code, self._lang = None, None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        for part in (self._heading, self._code, self._cell):
            if part is not None:
                part.append(data)


def parse(html: str) -> Blocks:
    parser = Blocks()
    parser.feed(html)
    return parser


CONFIG: dict[str, Any] = {
    "models": [
        model("echo", ECHO, description="Repeats your last message"),
        model("org/echo-2", ECHO),
        model("echo-embed", ECHO, kind="embeddings"),
    ]
}


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    with running_lumen(tmp_path_factory.mktemp("help"), CONFIG) as running:
        set_admin_password(running)
        yield running


@pytest.fixture(scope="module")
def pages(lumen: RunningLumen) -> dict[str, Blocks]:
    """/help and /connect as the administrator (whose key is `lumen.key`) sees them."""
    with client(lumen) as browser:
        login(browser, "admin@localhost")
        found = {}
        for path in ("/help", "/connect"):
            response = browser.get(path)
            assert response.status_code == 200, response.text
            found[path] = parse(response.text)
    return found


# --- running a block ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    problem = None
    if executable is None:
        problem = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        problem = f"the openai npm package is not installed: run `npm ci` in {NODE_DIR}"
    if problem is not None:
        if CI:
            pytest.fail(f"{problem} (required under CI=true)")
        pytest.skip(problem)
    assert executable is not None
    return executable


def run_block(block: Block, lumen: RunningLumen, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Runs one block as the user would, with the real key in place of the placeholder."""
    code = block.code.replace(KEY_PLACEHOLDER, lumen.key)
    name = f"example-{uuid.uuid4().hex[:8]}"
    # No OPENAI_* variables from the environment: the examples must work as written.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["LUMEN_API_KEY"] = lumen.key
    if block.lang == "sh":
        if shutil.which("curl") is None:
            if CI:
                pytest.fail("curl is required under CI=true")
            pytest.skip("curl is not installed")
        script = tmp_path / f"{name}.sh"
        command = ["bash", "-e", str(script)]
    elif block.lang == "python":
        script = tmp_path / f"{name}.py"
        command = [sys.executable, str(script)]
    else:
        node = request.getfixturevalue("node")
        # ESM resolves `import "openai"` from the script's folder: lend it the pinned install.
        link = tmp_path / "node_modules"
        if not link.exists():
            link.symlink_to(NODE_DIR / "node_modules", target_is_directory=True)
        script = tmp_path / f"{name}.mjs"
        command = [node, str(script)]
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, (
        f"{block.heading} ({block.lang}) failed:\n{code}\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


Check = Callable[[str, RunningLumen], None]


def prints(expected: str) -> Check:
    def check(out: str, lumen: RunningLumen) -> None:
        assert out == expected

    return check


def answers(content: str) -> Check:
    """A chat completion of the echo model, as curl prints it."""

    def check(out: str, lumen: RunningLumen) -> None:
        answer = json.loads(out)
        assert answer["object"] == "chat.completion" and answer["model"] == "echo"
        assert answer["choices"][0]["message"]["content"] == content
        assert answer["usage"]["total_tokens"] > 0

    return check


def lists_models(out: str, lumen: RunningLumen) -> None:
    listing = json.loads(out)
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["echo", "org/echo-2", "echo-embed"]


def prints_model_ids(out: str, lumen: RunningLumen) -> None:
    assert out == "['echo', 'org/echo-2', 'echo-embed']\n"


def prints_the_key(out: str, lumen: RunningLumen) -> None:
    assert out == lumen.key


def prints_two_vectors(out: str, lumen: RunningLumen) -> None:
    assert re.fullmatch(r"2 vectors of \d+ numbers\n", out), out


HELP: dict[str, Check] = {
    "List models": lists_models,
    "Basic request (curl)": answers("Explain quantum entanglement in plain English"),
    "Python (openai SDK)": prints("Explain quantum entanglement in plain English\n"),
    "Python — multi-turn conversation": prints(
        "What is a transformer model?\nHow does the attention mechanism work?\n"
    ),
    # Both forms: the stream helper's events and `stream=True` chunks.
    "Python — streaming responses": prints("Write a short poem about data science\n"),
    "Python — system prompt": prints("Summarize recent advances in protein folding\n"),
    "Node.js (openai SDK)": prints("Explain quantum entanglement in plain English\n"),
    "Node.js — streaming": prints("Write a haiku about machine learning"),
    "Embeddings": prints_two_vectors,
    "Using Lumen as a drop-in replacement for OpenAI": prints_model_ids,
}
CONNECT: dict[str, Check] = {
    # The `export` line, then what the shell holds: the key, exactly.
    "Keep your key in an environment variable": prints_the_key,
    "curl": answers("Hello from curl"),
    "Python": prints("Hello from Python\n"),
    "Python, streaming": prints("Hello from a Python stream\n"),
    "Node.js": prints("Hello from Node.js\n"),
    "Node.js, streaming": prints("Hello from a Node.js stream\n"),
    "Programs that read OpenAI's variables": lists_models,
}
EXTRA = {("/connect", "Keep your key in an environment variable"): '\nprintf %s "$LUMEN_API_KEY"\n'}


def _params(path: str, table: dict[str, Check]) -> list[Any]:
    params = []
    for heading in table:
        marks = [pytest.mark.node] if heading.startswith("Node.js") else []
        params.append(pytest.param(path, heading, id=f"{path[1:]}: {heading}", marks=marks))
    return params


@pytest.mark.parametrize(("path", "heading"), _params("/help", HELP) + _params("/connect", CONNECT))
def test_example_runs_and_answers(
    path: str,
    heading: str,
    pages: dict[str, Blocks],
    lumen: RunningLumen,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    check = (HELP if path == "/help" else CONNECT)[heading]
    blocks = [b for b in pages[path].blocks if b.heading == heading and b.lang in RUNNABLE]
    assert blocks, f"no runnable example under {heading!r} on {path}"
    for block in blocks:
        extra = EXTRA.get((path, heading), "")
        out = run_block(Block(block.lang, block.heading, block.code + extra), lumen, tmp_path, request)
        check(out, lumen)


def test_every_runnable_example_is_checked(pages: dict[str, Blocks]) -> None:
    for path, table in (("/help", HELP), ("/connect", CONNECT)):
        headings = {b.heading for b in pages[path].blocks if b.lang in RUNNABLE}
        assert headings == set(table), path


def test_the_pages_are_filled_in_for_this_instance(pages: dict[str, Blocks], lumen: RunningLumen) -> None:
    for path, page in pages.items():
        text = "\n".join(b.code for b in page.blocks)
        assert "your-lumen-instance" not in text and "gpt-4o" not in text, path
        assert lumen.v1 in text
        for block in page.blocks:
            if block.lang in RUNNABLE:
                # The only thing left to fill in is the key (or nothing: the variable is read).
                assert KEY_PLACEHOLDER in block.code or "LUMEN_API_KEY" in block.code, block
            if block.lang == "json":
                json.loads(block.code)
            if block.lang == "text" and block.code.startswith("http"):
                assert block.code == lumen.v1 + "\n"
    streaming = [b.code for b in pages["/help"].blocks if b.heading == "Python — streaming responses"]
    assert len(streaming) == 2 and all("text_stream" not in code for code in streaming)


def test_the_continue_settings_are_valid_yaml(pages: dict[str, Blocks], lumen: RunningLumen) -> None:
    [block] = [b for b in pages["/connect"].blocks if b.lang == "yaml"]
    settings = yaml.safe_load(block.code)
    assert settings["schema"] == "v1" and settings["name"] == "Lumen"
    assert [m["model"] for m in settings["models"]] == ["echo", "org/echo-2"]  # chat models only
    assert {m["apiBase"] for m in settings["models"]} == {lumen.v1}
    assert {m["provider"] for m in settings["models"]} == {"openai"}
    assert {m["apiKey"] for m in settings["models"]} == {KEY_PLACEHOLDER}


def test_a_key_copied_from_the_keys_page_runs_the_connect_examples(
    pages: dict[str, Blocks], lumen: RunningLumen, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Not only the administrator's bootstrap key: a key made in the portal by a new user."""
    add_user(lumen, "new@example.edu")
    with client(lumen) as browser:
        login(browser, "new@example.edu")
        page = browser.get("/profile/keys").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        created = browser.post("/profile/keys", data={"csrf_token": token.group(1), "name": "e2e"})
    found = re.search(r'id="new-key"[^>]*value="(sk_[^"]+)"', created.text)
    assert found
    as_new_user = RunningLumen(lumen.url, found.group(1), lumen.app, lumen.config_path, lumen.loop)
    [python] = [b for b in pages["/connect"].blocks if b.heading == "Python"]
    assert run_block(python, as_new_user, tmp_path, request) == "Hello from Python\n"


# --- the error table ------------------------------------------------------------------------


class Garbage(BaseHTTPRequestHandler):
    """An "OpenAI-compatible" backend whose answers are not JSON."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = b"this is not JSON"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    """A Lumen with a model for every error the table lists."""
    failing, hanging = FakeUpstream("failing").start(), FakeUpstream("hanging").start()
    failing.mode, hanging.mode = "status", "hang"
    garbage = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=garbage.serve_forever, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    rude = socket.create_server(("127.0.0.1", 0))  # accepts, then hangs up without an answer
    threading.Thread(target=_hang_up_on_everyone, args=(rude,), daemon=True).start()
    config: dict[str, Any] = {
        "server": {"max_body_bytes": 4096},
        "routing": {"health_interval": 0, "failure_backoff": 3600, "max_backoff": 3600},
        "rate_limits": {"default": {"models": {"limited": {"rpm": 1}}}},
        "models": [
            model("echo", ECHO),
            model("closed", ECHO, access="blocked"),
            model("careful", ECHO, access={"acknowledge": True}),
            model("pricey", ECHO, price={"input": 1_000_000_000}),
            model("limited", ECHO),
            model("failing", upstream(failing.url)),
            model("refused", upstream(nowhere)),
            model("hangup", upstream(f"http://127.0.0.1:{rude.getsockname()[1]}/v1")),
            model("garbled", upstream(f"http://127.0.0.1:{garbage.server_address[1]}/v1")),
            model("slow", upstream(hanging.url), timeouts={"request": 0.3, "first_token": 0.3}),
        ],
    }
    try:
        with running_lumen(tmp_path_factory.mktemp("faulty"), config) as running:
            yield running
    finally:
        failing.stop()
        hanging.stop()
        garbage.shutdown()
        closed.close()
        rude.close()


def _hang_up_on_everyone(server: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            connection, _ = server.accept()
            connection.recv(65536)
            connection.close()


def _chat(lumen: RunningLumen, name: str, key: str | None = None) -> httpx.Response:
    return httpx.post(
        lumen.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {key or lumen.key}"},
        json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


def _disabled_account(lumen: RunningLumen) -> httpx.Response:
    admin = {"Authorization": f"Bearer {lumen.key}"}
    user = httpx.post(lumen.url + "/api/admin/users", headers=admin, json={"email": "off@example.edu"}).json()
    key = httpx.post(lumen.url + "/api/admin/keys", headers=admin, json={"user_id": user["id"]}).json()["key"]
    assert _chat(lumen, "echo", key).status_code == 200
    httpx.patch(lumen.url + f"/api/admin/users/{user['id']}", headers=admin, json={"disabled": True})
    return _chat(lumen, "echo", key)


def _twice(lumen: RunningLumen, name: str) -> httpx.Response:
    _chat(lumen, name)
    return _chat(lumen, name)


PROVOKE: dict[str, Callable[[RunningLumen], httpx.Response]] = {
    "invalid_json": lambda lumen: httpx.post(
        lumen.v1 + "/chat/completions", headers=lumen.auth, content=b"{not json"
    ),
    "invalid_value": lambda lumen: httpx.post(
        lumen.v1 + "/chat/completions", headers=lumen.auth, json={"model": "echo"}
    ),
    "invalid_api_key": lambda lumen: _chat(lumen, "echo", "sk_" + "x" * 43),
    "model_not_allowed": lambda lumen: _chat(lumen, "closed"),
    "acknowledgement_required": lambda lumen: _chat(lumen, "careful"),
    "account_disabled": _disabled_account,
    "model_not_found": lambda lumen: _chat(lumen, "no-such-model"),
    "request_too_large": lambda lumen: httpx.post(
        lumen.v1 + "/chat/completions",
        headers=lumen.auth,
        json={"model": "echo", "messages": [{"role": "user", "content": "x" * 5000}]},
    ),
    "rate_limit_exceeded": lambda lumen: _twice(lumen, "limited"),
    "insufficient_quota": lambda lumen: _chat(lumen, "pricey"),
    "upstream_error": lambda lumen: _chat(lumen, "failing"),
    # Reached, but it hung up: a backend that cannot be reached at all is `model_unavailable`.
    "upstream_connection_error": lambda lumen: _chat(lumen, "hangup"),
    "upstream_protocol_error": lambda lumen: _chat(lumen, "garbled"),
    # Unreachable from the first call on (and known to be down after it).
    "model_unavailable": lambda lumen: _chat(lumen, "refused"),
    "upstream_timeout": lambda lumen: _chat(lumen, "slow"),
}


def error_table(pages: dict[str, Blocks]) -> list[tuple[int, str]]:
    [table] = [t for t in pages["/help"].tables if t and t[0][:2] == ["HTTP status", "Code"]]
    documented = []
    for status, codes, _meaning in table[1:]:
        documented += [(int(status), code.strip()) for code in codes.split(",")]
    return documented


def test_the_error_table_lists_what_can_be_provoked(pages: dict[str, Blocks]) -> None:
    assert sorted(code for _, code in error_table(pages)) == sorted(PROVOKE)


def test_every_documented_error_is_what_lumen_answers(pages: dict[str, Blocks], faulty: RunningLumen) -> None:
    for status, code in error_table(pages):
        response = PROVOKE[code](faulty)
        error = response.json()["error"]
        assert (response.status_code, error["code"]) == (status, code), error
        assert error["message"] and "x-request-id" in response.headers
        if code in ("rate_limit_exceeded", "model_unavailable"):
            assert int(response.headers["retry-after"]) >= 1  # as the page says
