"""Make untrusted Markdown (model output, user text) safe to render, keeping it readable.

The Markdown export is opened in viewers that render HTML, so no text from a conversation may
become markup or a script link there. Outside code, every ``<`` becomes ``&lt;`` (no HTML, no
autolinks, no ``<...>`` link destinations), every ``&`` that would start a character reference
becomes ``&amp;`` (no entity-encoded ``javascript:``), and ``javascript:``/``vbscript:`` get a
zero-width space after ``java``/``vb``, which is invisible but no URL scheme. Rendered, the text
looks exactly as before. Code keeps its text untouched, so ``<div>`` in a code block stays.

"Code" must mean what a CommonMark renderer thinks it means, or escaping would be skipped where
the renderer sees HTML. Fenced blocks are therefore re-emitted at the left margin (a fence in a
list item would otherwise end where the renderer's list item ends) and closed if left open; an
inline code span is trusted only when every backtick run of its paragraph pairs up within its
own line and the span holds no ``|`` (which splits GFM table cells). Otherwise the paragraph is
escaped whole: wrong only in looks, never in safety.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ESCAPE = re.compile(r"<|&(?=#|[A-Za-z][A-Za-z0-9]*;)")
_SCRIPT_SCHEME = re.compile(r"(?i)(java|vb)(script\s*\\?:)")


def _escape(text: str) -> str:
    text = _ESCAPE.sub(lambda m: "&lt;" if m.group() == "<" else "&amp;", text)
    return _SCRIPT_SCHEME.sub("\\1\u200b\\2", text)


def _run_end(line: str, start: int) -> int:
    end = start
    while end < len(line) and line[end] == "`":
        end += 1
    return end


def _code_spans(line: str) -> list[tuple[int, int]] | None:
    """The (start, end) of each code span, backticks included; None if any run is left unpaired."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(line):
        if line[i] == "\\":  # a backslash escape: an escaped backtick opens nothing
            i += 2
            continue
        if line[i] != "`":
            i += 1
            continue
        opened = _run_end(line, i)
        width, k, closed = opened - i, opened, None
        while k < len(line):
            if line[k] != "`":
                k += 1
                continue
            run = _run_end(line, k)
            if run - k == width:
                closed = run
                break
            k = run
        if closed is None or "|" in line[opened : closed - width]:
            return None
        spans.append((i, closed))
        i = closed
    return spans


def _escape_line(line: str, spans: list[tuple[int, int]]) -> str:
    parts: list[str] = []
    at = 0
    for start, end in spans:
        parts.append(_escape(line[at:start]))
        parts.append(line[start:end])
        at = end
    parts.append(_escape(line[at:]))
    return "".join(parts)


def _prose(lines: list[str]) -> list[str]:
    """Escape non-code lines, paragraph by paragraph (blank lines end a paragraph)."""
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        found = [_code_spans(line) for line in paragraph]
        if all(spans is not None for spans in found):
            out.extend(_escape_line(line, spans or []) for line, spans in zip(paragraph, found, strict=True))
        else:
            out.extend(_escape(line) for line in paragraph)
        paragraph.clear()

    for line in lines:
        if line.strip():
            paragraph.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return out


def safe_markdown(text: str) -> str:
    """`text` with no HTML and no script links when rendered; code blocks and spans kept verbatim."""
    text = _CONTROLS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None  # the fence that opened the current code block
    for line in text.split("\n"):
        if fence is None:
            match = _FENCE.match(line)
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                out.extend(_prose(prose))
                prose = []
                fence = match.group(1)
                # The info string (language) is rendered as an attribute: escape it like prose.
                out.append(fence + _escape(match.group(2)))
            else:
                prose.append(line)
            continue
        close = _CLOSE.match(line)
        if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence):
            out.append(close.group(1))
            fence = None
        else:
            out.append(line)
    out.extend(_prose(prose))
    if fence is not None:
        out.append(fence)
    return "\n".join(out)


def safe_inline(text: str) -> str:
    """A single line (a title, a file name) as safe Markdown text: no line breaks, no code, no HTML."""
    return _escape(" ".join(_CONTROLS.sub("", text).split())).replace("`", "\\`")
