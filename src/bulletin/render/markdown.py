"""Markdown (CommonMark via markdown-it-py) to email-safe HTML and to wrapped plain text.

Both outputs come from the same token stream, so the HTML and the plain-text alternative
say the same thing. Email constraints applied here:

* raw HTML in Markdown is not interpreted: it is shown as text (``html=False``);
* links and images must be absolute (``http``/``https``, ``mailto`` for links): a relative
  link would point nowhere in a mail client, so it is rendered as its text and reported;
* headings are demoted (``#`` becomes ``<h3>`` inside a section whose title is ``<h2>``) so
  the outline of the message stays h1 > h2 > h3;
* no inline styles: paragraph and list spacing come from the template's ``mj-style``
  (inlined later by premailer), which keeps the styling in one place.
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from markdown_it.token import Token
from markupsafe import Markup

from bulletin.content.model import MARKDOWN

Warn = Callable[[str], None]

WIDTH = 72
"""Plain-text line width (RFC 3676 recommends 72; 78 is the hard limit for readability)."""

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
IMAGE_SCHEMES = frozenset({"http", "https"})

_md = MARKDOWN  # the dialect the schema declares and the loader checks texts with


def _ignore(_: str) -> None:
    return None


def _is_absolute(url: str, schemes: frozenset[str]) -> bool:
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes:
        return False
    return parts.scheme.lower() == "mailto" or bool(parts.netloc)


def _parse(text: str, *, shift: int, warn: Warn) -> list[Token]:
    """Parse and apply the email rules (heading shift, absolute links) to the tokens."""
    tokens, warnings = _parse_cached(text, shift)
    for message in warnings:
        warn(message)
    return tokens


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str, shift: int) -> tuple[list[Token], tuple[str, ...]]:
    """Parsing is most of the rendering time, and each text is rendered twice (HTML and
    plain text) and again on every preview reload: cache the tokens, which the renderers
    only read, with the warnings to replay."""
    warnings: list[str] = []
    tokens = _md.parse(text)
    for tok in tokens:
        if tok.type in ("heading_open", "heading_close"):
            level = min(6, int(tok.tag[1]) + shift)
            tok.tag = f"h{level}"
        elif tok.type == "inline" and tok.children:
            tok.children = _check_links(_linkify(tok.children), warnings.append)
    return tokens, tuple(warnings)


# A bare http(s) URL in running text; trailing punctuation belongs to the sentence.
_BARE_URL = re.compile(r"(?<![\w/<])https?://[^\s<>\"'()\[\]]*[^\s<>\"'()\[\].,;:!?]")


def _linkify(children: list[Token]) -> list[Token]:
    """Turn bare ``https://...`` URLs in text into links, as mail clients would anyway.

    CommonMark only links ``<https://...>``; authors paste bare URLs, and a link that only
    some clients make clickable is a worse experience than one we make explicit.
    """
    out: list[Token] = []
    in_link = 0
    for child in children:
        if child.type == "link_open":
            in_link += 1
        elif child.type == "link_close":
            in_link -= 1
        if child.type != "text" or in_link or "://" not in child.content:
            out.append(child)
            continue
        pos = 0
        for m in _BARE_URL.finditer(child.content):
            if m.start() > pos:
                out.append(Token("text", "", 0, content=child.content[pos : m.start()]))
            url = m.group(0)
            out.append(Token("link_open", "a", 1, attrs={"href": _md.normalizeLink(url)}))
            out.append(Token("text", "", 0, content=url))
            out.append(Token("link_close", "a", -1))
            pos = m.end()
        if pos < len(child.content):
            out.append(Token("text", "", 0, content=child.content[pos:]))
    return out


def _check_links(children: list[Token], warn: Warn) -> list[Token]:
    """Drop links (keeping their text) and images (keeping their alt) that are not absolute."""
    out: list[Token] = []
    dropped_depth = 0
    for child in children:
        if child.type == "link_open":
            href = str(child.attrGet("href") or "")
            if not _is_absolute(href, LINK_SCHEMES):
                warn(
                    f"link to {href!r} is not an absolute URL; email needs the full address "
                    "(https://...), so it is shown as plain text"
                )
                dropped_depth += 1
                continue
        elif child.type == "link_close" and dropped_depth:
            # Links cannot nest in CommonMark, so the next close belongs to the dropped open.
            dropped_depth -= 1
            continue
        elif child.type == "image":
            src = str(child.attrGet("src") or "")
            if not _is_absolute(src, IMAGE_SCHEMES):
                warn(
                    f"image {src!r} is not an absolute https URL; mail clients cannot load "
                    "it, so only its description is shown"
                )
                alt = Token("text", "", 0, content=_plain_inline(child.children or []))
                out.append(alt)
                continue
        out.append(child)
    return out


@functools.lru_cache(maxsize=4096)
def _comparable(url: str) -> str:
    # Cached: normalising (punycode, percent-encoding) is costly, and a template asks
    # about the same few addresses for every item, then the text version again.
    # As the HTML holds them: percent-encoded, and a bare host with or without its "/".
    return _md.normalizeLink(url.strip()).rstrip("/")


def links_to(text: str | None, url: str) -> bool:
    """Whether the Markdown ``text`` already links to ``url`` (bare URLs count: they are
    linked too). A "read more" link to the same address would show it twice."""
    if not text:
        return False
    wanted = _comparable(url)
    tokens, _warnings = _parse_cached(text, 2)
    return any(
        child.type == "link_open" and _comparable(str(child.attrGet("href") or "")) == wanted
        for tok in tokens
        if tok.type == "inline"
        for child in tok.children or ()
    )


def to_html(text: str, *, shift: int = 2, inline: bool = False, warn: Warn = _ignore) -> Markup:
    """Render Markdown to HTML for an ``mj-text`` block (safe to insert unescaped).

    ``inline``: text that is a single paragraph loses its ``<p>`` wrapper (list items,
    captions), so it takes no paragraph margin.
    """
    tokens = _parse(text, shift=shift, warn=warn)
    if inline:
        blocks = [t for t in tokens if t.level == 0 and t.nesting >= 0]
        if len(blocks) == 1 and tokens[0].type == "paragraph_open":
            tokens = tokens[1:-1]
    return Markup(_md.renderer.render(tokens, _md.options, {}).strip())


def _plain_inline(children: Sequence[Token]) -> str:
    """Inline tokens as plain text: links become ``text <url>``, breaks become newlines."""
    out: list[str] = []
    link_stack: list[tuple[str, int]] = []
    for child in children:
        kind = child.type
        if kind in ("text", "code_inline"):
            out.append(child.content)
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "image":
            alt = _plain_inline(child.children or []) or child.content
            if alt:
                out.append(f"[{alt}]")
        elif kind == "link_open":
            link_stack.append((str(child.attrGet("href") or ""), len(out)))
        elif kind == "link_close" and link_stack:
            href, start = link_stack.pop()
            label = "".join(out[start:]).strip()
            shown = href[len("mailto:") :] if href.startswith("mailto:") else href
            if label in (href, shown) or label.rstrip("/") == _strip_scheme(href).rstrip("/"):
                del out[start:]
                out.append(f"<{shown}>")
            else:
                out.append(f" <{shown}>")
    return "".join(out)


def _strip_scheme(url: str) -> str:
    for prefix in ("https://", "http://"):
        if url.startswith(prefix):
            return url[len(prefix) :]
    return url


def wrap(text: str, *, first: str = "", rest: str | None = None, width: int = WIDTH) -> list[str]:
    """Wrap a paragraph at ``width`` without breaking words, hyphenated words or URLs.

    A word longer than the line (a long URL) gets a line of its own instead of being cut,
    so it stays clickable. Newlines in ``text`` (Markdown hard breaks) are kept.
    """
    rest = first if rest is None else rest
    lines: list[str] = []
    for i, part in enumerate(text.split("\n")):
        indent = first if i == 0 else rest
        wrapped = _wrap_part(part, indent, rest, width)
        lines.extend(wrapped or [indent.rstrip()])
    return lines


# Whitespace other than the plain space: tabs expand and odd spaces (no-break, thin...)
# count as blank when textwrap trims a line, so such text takes textwrap's own path.
_ODD_SPACE = re.compile(r"[^\S ]")


def _wrap_part(text: str, first: str, rest: str, width: int) -> list[str]:
    """The lines ``textwrap`` gives (no hyphen breaks, long words kept whole), faster.

    textwrap splits the text into words and runs of spaces and fills each line a chunk at
    a time; here a line is cut at the last word boundary within reach with one search,
    which is the same greedy choice (tests/test_render_speed.py compares the two).
    """
    if _ODD_SPACE.search(text):
        return textwrap.wrap(
            text,
            width=width,
            break_long_words=False,
            break_on_hyphens=False,
            initial_indent=first,
            subsequent_indent=rest,
        )
    lines: list[str] = []
    n = len(text)
    pos = 0
    while pos < n:
        indent = rest if lines else first
        if lines and text[pos] == " ":
            pos += len(text) - pos - len(text[pos:].lstrip(" "))  # a line starts at a word
            if pos == n:
                break
        end = pos + width - len(indent)
        if end >= n:
            cut = n
        elif end <= pos:
            cut = pos
        elif (text[end - 1] == " ") != (text[end] == " "):
            cut = end  # the reach ends between a word and spaces
        elif text[end] == " ":
            cut = pos + len(text[pos:end].rstrip(" "))  # inside spaces: before them
        else:
            cut = text.rfind(" ", pos, end) + 1 or pos  # inside a word: before it
        if cut == pos:
            # Nothing fits: the next word (or run of spaces) takes a line of its own.
            blank = text[pos] == " "
            cut = pos + 1
            while cut < n and (text[cut] == " ") == blank:
                cut += 1
        line = text[pos:cut].rstrip(" ")
        pos = cut
        if line:
            lines.append(indent + line)
    return lines


def underline(title: str, char: str, indent: str = "") -> list[str]:
    """A heading (wrapped if long) and its underline, the plain-text convention."""
    lines = wrap(title, first=indent)
    longest = max(len(line) for line in lines) - len(indent)
    return [*lines, indent + char * min(max(longest, 1), WIDTH - len(indent))]


HEADING_UNDERLINE = {1: "=", 2: "-", 3: "~", 4: "~", 5: "~", 6: "~"}
"""Setext-style underlines by heading level; the level a section title has in HTML."""


class TextWriter:
    """Accumulates plain-text blocks separated by single blank lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def block(self, lines: Sequence[str], *, tight: bool = False) -> None:
        """Append lines as one block; ``tight`` suppresses the blank line before it."""
        if not lines:
            return
        if self.lines and not tight and self.lines[-1] != "":
            self.lines.append("")
        self.lines.extend(lines)

    def heading(self, title: str, level: int) -> None:
        self.block(underline(title, HEADING_UNDERLINE.get(level, "~")))

    def paragraph(self, text: str, *, first: str = "", rest: str | None = None) -> None:
        self.block(wrap(text, first=first, rest=rest))

    def text(self) -> str:
        while self.lines and not self.lines[-1].strip():
            self.lines.pop()
        # "-- " keeps its space: that is what makes it a signature delimiter.
        return "\n".join(line if line == "-- " else line.rstrip() for line in self.lines) + "\n"


def to_text(
    text: str,
    out: TextWriter,
    *,
    shift: int = 2,
    indent: str = "",
    marker: str = "",
    tight: bool = False,
    warn: Warn = _ignore,
) -> None:
    """Render Markdown as wrapped plain text into ``out``, every line prefixed by ``indent``.

    Lists get ``*`` or ``1.`` markers with hanging indents, block quotes ``> ``, headings an
    underline, and code blocks keep their lines unwrapped. ``marker`` (e.g. ``"* "``) starts
    the first line, the text hanging after it, for a list the caller draws itself; ``tight``
    puts the first block right after the previous one without a blank line.
    """
    tokens = _parse(text, shift=shift, warn=warn)
    text_indent = indent + " " * len(marker)  # where the next paragraph's lines start
    first_prefix: str | None = indent + marker if marker else None
    first_block_tight = tight
    saved: list[str] = []  # text_indent to restore when a list item or quote closes
    lists: list[_ListState] = []
    item_marker: str | None = None  # marker waiting for the first paragraph of a list item
    hidden = False  # markdown-it hides the paragraphs of tight lists
    heading_level = 0
    for tok in tokens:
        kind = tok.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            number = int(tok.attrGet("start") or 1) if kind == "ordered_list_open" else None
            lists.append(_ListState(number, text_indent, nested=len(lists) > 0))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            text_indent = lists.pop().indent
        elif kind == "list_item_open":
            state = lists[-1]
            if state.number is None:
                item_marker = "* "
            else:
                item_marker = f"{state.number}. "
                state.number += 1
            state.items += 1
            saved.append(text_indent)
            text_indent = state.indent + " " * len(item_marker)
        elif kind == "list_item_close":
            item_marker = None
            text_indent = saved.pop()
        elif kind == "blockquote_open":
            saved.append(text_indent)
            text_indent += "> "
        elif kind == "blockquote_close":
            text_indent = saved.pop()
        elif kind == "paragraph_open":
            hidden = tok.hidden
        elif kind == "heading_open":
            heading_level = int(tok.tag[1])
        elif kind == "hr":
            out.block([text_indent + "* * *"])
        elif kind in ("code_block", "fence"):
            body = tok.content.rstrip("\n").split("\n")
            out.block([f"{text_indent}    {line}".rstrip() for line in body])
        elif kind == "inline":
            content = _plain_inline(tok.children or [])
            if heading_level:
                char = HEADING_UNDERLINE.get(heading_level, "~")
                out.block(underline(content.strip(), char, text_indent))
                heading_level = 0
                continue
            first = text_indent
            close = False
            if lists:
                state = lists[-1]
                close = hidden and (state.items > 1 or state.nested)
                if item_marker is not None:
                    first = state.indent + item_marker
                    item_marker = None
            elif first_prefix is not None:
                first = first_prefix
                first_prefix = None
            close = close or first_block_tight
            first_block_tight = False
            out.block(wrap(content, first=first, rest=text_indent), tight=close)


class _ListState:
    """An open list while walking tokens: its next number (None: bullets) and indent."""

    def __init__(self, number: int | None, indent: str, *, nested: bool) -> None:
        self.number = number
        self.indent = indent
        self.nested = nested
        self.items = 0
