"""Hostile Markdown rendered by a real CommonMark renderer (markdown-it-py, raw HTML allowed and
every link scheme let through, like the most permissive viewer) never yields markup or a
script link; and ordinary Markdown, code above all, reads as before."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from lumen.chat.safe_markdown import safe_inline, safe_markdown


def render(text: str) -> str:
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    return md.render(text)


HOSTILE = [
    "hello <script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<!-- comment --><iframe src=javascript:alert(1)></iframe>",
    "<a href='javascript:alert(1)'>x</a>",
    "- a\n  ```\n<script>alert(1)</script>",
    "  ```\nx\n```\n<script>alert(1)</script>\n```",
    "`a\nb` <img src=x onerror=alert(1)> `c`",
    "\\`<script>alert(1)</script>`",
    "| a | b |\n|---|---|\n| `x | <img src=x onerror=alert(1)> | y` |",
    "[x](javascript:alert(1)) [y](JaVaScRiPt:alert(1)) [w](javascript\\:alert(1))",
    "[z](jav&#x61;script:alert(1)) [v](&#106;avascript:alert(1)) [u](javascript&colon;alert(1))",
    "[x]: javascript:alert(1)\n\n[click][x]",
    "[a](< javascript:alert(1)>) [b](<java\tscript:alert(1)>) <javascript:alert(1)>",
    "[a](\njavascript:alert(1))",
    "[v](vbscript:msgbox(1)) ![i](javascript:alert(1))",
    "~~~ <img src=x onerror=alert(1)>\ncode\n~~~",
    "```\n```\n<script>alert(1)</script>",
    "> quote\n```\ncode\n> <script>alert(1)</script>",
    "1. item\n\n    <script>alert(1)</script>\n\n<div onclick=alert(1)>x</div>",
    "a\x00b\x1b<script>alert(1)</script>",
    "````\n```\n<b>in code</b>\n````\n<script>alert(1)</script>",
]


# What CommonMark itself produces; anything else came from raw HTML in the text.
MARKDOWN_TAGS = {
    "p", "code", "pre", "a", "img", "table", "thead", "tbody", "tr", "th", "td", "ul", "ol", "li",
    "blockquote", "em", "strong", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "br",
}  # fmt: skip


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in MARKDOWN_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"{tag} {name}")
            if name in ("href", "src") and value is not None:
                # What a browser does to a URL before it reads the scheme.
                url = re.sub(r"[\x00-\x20]", "", value).lower()
                if url.startswith(("javascript:", "vbscript:", "data:")):
                    self.problems.append(f"{tag} {name}={value}")

    def handle_comment(self, data: str) -> None:
        self.problems.append("<!--")


def _dangerous(rendered: str) -> list[str]:
    parser = _Elements()
    parser.feed(rendered)
    parser.close()
    return parser.problems


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_markdown_renders_without_markup_or_script_links(text: str) -> None:
    out = render(safe_markdown(text))
    assert _dangerous(out) == [], out


def test_the_check_sees_what_raw_text_would_do() -> None:
    # Without safe_markdown most of the corpus does produce markup or script links.
    raw = [text for text in HOSTILE if _dangerous(render(text))]
    assert len(raw) >= 15
    assert _dangerous(render("<b onclick=x>")) == ["<b>", "b onclick"]


def test_code_blocks_and_spans_keep_their_text() -> None:
    text = 'Use `List<int>` and `a && b`.\n\n```html\n<div class="x">&amp;</div>\n```\n\nDone.'
    out = safe_markdown(text)
    assert '```html\n<div class="x">&amp;</div>\n```' in out
    rendered = render(out)
    assert "<code>List&lt;int&gt;</code>" in rendered and "<code>a &amp;&amp; b</code>" in rendered
    assert '<code class="language-html">&lt;div class=&quot;x&quot;&gt;&amp;amp;&lt;/div&gt;' in rendered


def test_prose_renders_as_it_was_written() -> None:
    text = "# Heading\n\nIf a < b & c > d, see [docs](https://example.org/a?b=1&c=2) and **bold**.\n\n- one"
    rendered = render(safe_markdown(text))
    assert rendered == render(text)


def test_an_unclosed_fence_is_closed_so_it_cannot_swallow_what_follows() -> None:
    out = safe_markdown("```python\nprint(1)")
    assert out.endswith("\n```")
    assert render(out + "\n\n## Next").endswith("<h2>Next</h2>\n")


def test_a_fence_in_a_list_item_is_moved_to_the_margin() -> None:
    out = safe_markdown("1. Install:\n   ```sh\n   pip install x\n   ```\n2. Run it")
    assert out == "1. Install:\n```sh\n   pip install x\n```\n2. Run it"


def test_inline_text_is_one_safe_line() -> None:
    assert safe_inline("a\nb <b>`x`</b>") == "a b &lt;b>\\`x\\`&lt;/b>"
    assert "<" not in render(safe_inline("<script>alert(1)</script>")).replace("<p>", "").replace("</p>", "")
