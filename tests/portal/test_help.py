"""Help and Connect over HTTP: the instance's URL and the user's models filled in, safely; the
Markdown renderer allows no HTML. (tests/e2e/test_help_examples.py runs every example.)"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import httpx
import pytest

from lumen.portal.content import render_markdown
from tests.portal.support import HTML, add_user, client, login, parse, set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

ODD = "o'k\"<b>`x`"
"""A legal model name (no whitespace) full of quotes, markup and backticks."""


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    config = {
        "models": [
            model("careful", ECHO, access={"acknowledge": True}),
            model("echo", ECHO),
            model(ODD, ECHO),
            model("embed", ECHO, kind="embeddings"),
        ]
    }
    with running_lumen(tmp_path_factory.mktemp("help"), config) as running:
        set_admin_password(running)
        yield running


def code_blocks(html: str, lang: str) -> list[str]:
    return [unescape(code) for code in re.findall(rf'<code class="language-{lang}">(.*?)</code>', html, re.S)]


def test_help_is_filled_in_with_the_request_url_and_a_ready_model(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        login(browser, "admin@localhost")
        page = browser.get("/help")
    assert page.status_code == 200
    assert parse(page.text).inline_code == []
    python = code_blocks(page.text, "python")
    assert python and all(f'base_url="{lumen.v1}"' in code for code in python)
    # `careful` comes first but needs an acknowledgement: the examples use a model ready now.
    assert 'model="echo"' in python[0]
    assert any('model="embed"' in code for code in python)  # the embeddings example
    assert "your-lumen-instance" not in page.text
    assert 'href="/connect"' in page.text and 'id="error-responses"' in page.text
    # The table of contents links every section.
    for anchor in re.findall(r'<nav class="doc-toc".*?</nav>', page.text, re.S)[0].split('href="#')[1:]:
        assert f'id="{anchor.split(chr(34))[0]}"' in page.text


def test_the_configured_public_url_wins_and_a_forged_host_is_ignored(tmp_path: Path) -> None:
    config = {
        "models": [model("echo", ECHO)],
        "server": {"public_url": "https://ai.example.edu/lumen/"},
        "portal": {"secure_cookies": "never"},  # the test's browser speaks plain HTTP
    }
    (tmp_path / "public").mkdir()
    with running_lumen(tmp_path / "public", config) as lumen:
        set_admin_password(lumen)
        with client(lumen) as browser:
            login(browser, "admin@localhost")
            connect = browser.get("/connect").text
            assert "https://ai.example.edu/lumen/v1" in connect and lumen.url not in connect
    (tmp_path / "plain").mkdir()
    with running_lumen(tmp_path / "plain", {"models": [model("echo", ECHO)]}) as lumen:
        set_admin_password(lumen)
        with client(lumen) as browser:
            login(browser, "admin@localhost")
            forged = browser.get("/help", headers={"host": "evil_host.example.edu"}).text
            # Not a plain host name: the page falls back to server.public_url's default.
            assert "evil_host" not in forged and 'base_url="http://localhost:8000/v1"' in unescape(forged)
            other = browser.get("/help", headers={"host": "lumen.example.edu:8443"}).text
            assert 'base_url="http://lumen.example.edu:8443/v1"' in unescape(other)


def test_odd_model_names_stay_valid_code_and_plain_text(lumen: RunningLumen) -> None:
    with client(lumen) as browser:
        login(browser, "admin@localhost")
        page = browser.get("/connect", params={"model": ODD})
    assert "<b>" not in page.text
    python = code_blocks(page.text, "python")
    for code in python:
        tree = ast.parse(code)  # still valid Python, with the name as one string
        names = [n.value for n in ast.walk(tree) if isinstance(n, ast.keyword) and n.arg == "model"]
        assert [ast.literal_eval(n) for n in names] == [ODD]
    [curl] = [c for c in code_blocks(page.text, "sh") if "chat/completions" in c]
    body = re.search(r"-d '(.*)'", curl)
    assert body and json.loads(body.group(1))["model"] == ODD  # no quote ends the shell string
    assert "selected>o&#39;k&#34;&lt;b&gt;`x`</option>" in page.text


def test_connect_offers_the_users_chat_models(lumen: RunningLumen) -> None:
    add_user(lumen, "cy@example.edu")
    with client(lumen) as browser:
        login(browser, "cy@example.edu")
        default = browser.get("/connect").text
        options = re.findall(r'<option value="([^"]*)"', default)
        assert [unescape(o) for o in options] == ["careful", "echo", ODD]  # no embeddings model
        assert 'model="echo"' in code_blocks(default, "python")[0]
        chosen = browser.get("/connect", params={"model": "careful"}).text
        assert 'model="careful"' in code_blocks(chosen, "python")[0]
        for ignored in ("embed", "no-such-model"):
            assert (
                'model="echo"'
                in code_blocks(browser.get("/connect", params={"model": ignored}).text, "python")[0]
            )


def test_the_pages_need_a_login(lumen: RunningLumen) -> None:
    for path in ("/help", "/connect", "/profile", "/profile/keys"):
        response = httpx.get(lumen.url + path, headers=HTML)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "![x](data:text/html;base64,PHNjcmlwdD4=)",
        "<a href='javascript:alert(1)'>x</a>",
        "```\n</code></pre><script>alert(1)</script>\n```",
        "| a |\n|---|\n| <iframe src=x> |",
    ],
)
def test_the_renderer_makes_no_markup_from_text(hostile: str) -> None:
    html = str(render_markdown(hostile).html).lower()
    assert (
        "<script" not in html
        and "<img src=x" not in html
        and "<iframe" not in html
        and "<a href='" not in html
    )
    assert 'href="javascript:' not in html and 'src="data:text/html' not in html


def test_the_renderer_marks_code_and_headings() -> None:
    doc = render_markdown("# Title\n\n## Use it\n\n## Use it\n\n```python\nprint('<hi>')\n```\n")
    assert doc.title == "Title" and "<h1" not in doc.html  # the page shows the title itself
    assert [(h.level, h.id) for h in doc.headings] == [(2, "use-it"), (2, "use-it-2")]
    assert [h.text for h in doc.contents()] == ["Use it", "Use it"]
    assert (
        '<div class="code-block" data-lang="python"><pre tabindex="0"><code class="language-python">'
        "print(&#x27;&lt;hi&gt;&#x27;)\n</code></pre></div>"
        in doc.html
        or "print('&lt;hi&gt;')" in doc.html
    )
