"""The portal's documentation pages (Help, Connect): Markdown files with Jinja placeholders.

A page is rendered in two steps. Jinja fills in this instance's facts (its `/v1` URL, the user's
models) as plain text, then markdown-it-py turns the result into HTML with raw HTML switched off,
so nothing in a source file or a filled-in value can become markup or script: `<` is always
text, and links with `javascript:`, `vbscript:`, `file:` or `data:` URLs are not made.

The rendered HTML is what the browser shows and what the tests run: every fenced code block
becomes `<div class="code-block" data-lang="…"><pre tabindex="0"><code class="language-…">`
(focusable, so a block that scrolls sideways can be scrolled by keyboard), and headings get ids
for the page's table of contents.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup

CONTENT_DIR = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class Heading:
    level: int
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    html: Markup
    """The body, without the title."""
    headings: tuple[Heading, ...]
    title: str = ""
    """The text of a leading `# Title`, which the page shows above its table of contents."""

    def contents(self, level: int = 2) -> list[Heading]:
        """The headings of one level, for an "On this page" list."""
        return [h for h in self.headings if h.level == level]


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _heading_ids(state: StateCore) -> None:
    """Takes a leading `# Title` out of the body, gives every other heading an id, and every
    table the text of the heading above it as a label."""
    if state.tokens[:1] and state.tokens[0].type == "heading_open" and state.tokens[0].tag == "h1":
        state.env["title"] = state.tokens[1].content
        del state.tokens[:3]
    taken: set[str] = set()
    headings: list[Heading] = state.env.setdefault("headings", [])
    last_heading = ""
    tokens = state.tokens
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            text = tokens[i + 1].content
            heading = Heading(int(token.tag[1]), _slug(text, taken), text)
            token.attrSet("id", heading.id)
            headings.append(heading)
            last_heading = text
        elif token.type == "table_open":
            token.meta["label"] = last_heading or "Table"


def _fence(self: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    token = tokens[idx]
    info = token.info.strip().split(maxsplit=1)
    lang = escapeHtml(info[0]) if info else ""
    code_class = f' class="language-{lang}"' if lang else ""
    return (
        f'<div class="code-block" data-lang="{lang}"><pre tabindex="0">'
        f"<code{code_class}>{escapeHtml(token.content)}</code></pre></div>\n"
    )


def _table_open(self: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    # A wide table scrolls inside its own box on a phone; the box is a labelled, focusable region
    # so it can be scrolled by keyboard too.
    label = escapeHtml(str(tokens[idx].meta.get("label", "Table")))
    return f'<div class="table-wrap" role="region" aria-label="{label}" tabindex="0"><table>\n'


def _table_close(self: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    return "</table></div>\n"


def markdown() -> MarkdownIt:
    """CommonMark plus tables, with raw HTML off (the renderer the portal's pages share)."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.core.ruler.push("heading_ids", _heading_ids)
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _fence)
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("table_close", _table_close)
    return md


_MD = markdown()


def render_markdown(text: str) -> Document:
    env: dict[str, Any] = {}
    html = _MD.render(text, env)
    return Document(
        Markup(html), tuple(env.get("headings", ())), env.get("title", "")
    )  # escaped by markdown-it


def _inline_code(value: object) -> str:
    """`value` as a Markdown code span whatever backticks it holds."""
    text = str(value)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _environment() -> jinja2.Environment:
    # No autoescaping here: the output is Markdown, which markdown-it escapes when it renders.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(CONTENT_DIR),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Code uses Jinja's `tojson` for names: a string literal valid in JSON, Python and JavaScript
    # alike, with quotes, `<`, `>` and `&` escaped.
    env.filters["code"] = _inline_code
    return env


_JINJA = _environment()


def render_page(name: str, **context: Any) -> Document:
    """Renders the content file `name` (e.g. `api-reference.md`) with `context` filled in."""
    return render_markdown(_JINJA.get_template(name).render(**context))
