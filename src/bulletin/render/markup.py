"""Lint the final HTML for what Outlook and spam filters trip over, which MJML lets through.

The MJML lint (:mod:`bulletin.render.lint`) checks components; these traps are in the HTML a
template writes inside ``mj-text`` and in the styles premailer inlined, so they are looked
for in the message as sent. Outlook for Windows renders with Word, which:

* ignores ``margin`` on ``<table>``: spacing set so collapses (``markup.table-margin``);
* ignores ``display:block`` on inline elements: a ``<b>`` meant as its own line runs into
  the next word (``markup.display-block``);
* does not inherit ``font-family`` into a nested table: its text falls back to Times New
  Roman unless the table or an element between it and the text names a font
  (``markup.nested-font``);
* shows ``display:none`` content unless ``mso-hide:all`` is set too (``markup.hidden-mso``).

And spam filters count text coloured like its background, or hidden text that carries a
colour at all, as an attempt to hide words from the reader (``markup.hidden-colour``): hidden
text is hidden by ``display:none`` and ``opacity``, never by colour.

Only inline styles and attributes are read: after premailer every rule outside ``@media``
is inline, and ``@media`` rules are for clients that do support CSS. Content of
``<!--[if mso]>`` comments is Outlook's own markup and is not looked at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_INLINE = frozenset(
    {"a", "b", "strong", "em", "i", "u", "span", "small", "font", "sup", "sub", "code", "label"}
)
_NO_TEXT = frozenset({"style", "script", "title", "head"})


@dataclass(frozen=True)
class MarkupFinding:
    """One trap: its code, what is wrong, and a snippet to find its source by."""

    code: str
    message: str
    needle: str
    """The element's ``class="..."`` attribute when it has one (templates write it), else
    its tag as ``<tag``."""


def parse_style(style: str | None) -> dict[str, str]:
    """An inline ``style`` attribute as lower-case property -> value."""
    found: dict[str, str] = {}
    for part in (style or "").split(";"):
        name, sep, value = part.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip().lower()
    return found


def _colour(value: str | None) -> str | None:
    """A colour as ``#rrggbb`` when written as hex or a few names; else None."""
    if not value:
        return None
    text = value.strip().lower().split()[0] if value.strip() else ""
    text = {"white": "#ffffff", "black": "#000000"}.get(text, text)
    if re.fullmatch(r"#[0-9a-f]{3}", text):
        return "#" + "".join(c * 2 for c in text[1:])
    return text if re.fullmatch(r"#[0-9a-f]{6}", text) else None


@dataclass
class _Element:
    tag: str
    attrs: dict[str, str | None]
    style: dict[str, str]
    background: str | None
    """The colour behind this element (its own, else the nearest ancestor's)."""
    hidden: bool
    """Hidden itself or inside a hidden element."""
    has_font: bool = False
    text: list[str] = field(default_factory=list)

    @property
    def needle(self) -> str:
        cls = self.attrs.get("class")
        return f'class="{cls}"' if cls else f"<{self.tag}"


def _is_hidden(style: dict[str, str]) -> bool:
    return (
        style.get("display", "").startswith("none")
        or style.get("opacity", "").strip() in ("0", "0.0")
        or style.get("max-height", "").strip() in ("0", "0px")
    )


def _zero_or_auto(margin: str) -> bool:
    return all(re.fullmatch(r"0(px|em|%)?|auto|!important", v) for v in margin.split())


class _Linter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[_Element] = []
        self.findings: list[MarkupFinding] = []
        self._seen: set[tuple[str, str]] = set()

    def _report(self, code: str, message: str, needle: str) -> None:
        # One finding per trap and element class: a template writes it once per event.
        if (code, needle) not in self._seen:
            self._seen.add((code, needle))
            self.findings.append(MarkupFinding(code, message, needle))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        style = parse_style(values.get("style"))
        parent = self.stack[-1] if self.stack else None
        background = (
            _colour(style.get("background-color"))
            or _colour(style.get("background"))
            or _colour(values.get("bgcolor"))
            or (parent.background if parent else "#ffffff")
        )
        element = _Element(
            tag,
            values,
            style,
            background,
            hidden=_is_hidden(style) or bool(parent and parent.hidden),
            has_font="font-family" in style or (tag == "font" and bool(values.get("face"))),
        )
        self._check(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.stack and self.stack[-1].tag == tag:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def _check(self, el: _Element) -> None:
        style = el.style
        margin = " ".join(v for k, v in style.items() if k.startswith("margin"))
        if el.tag == "table" and margin and not _zero_or_auto(margin):
            self._report(
                "markup.table-margin",
                f"a <table> is spaced with margin ({margin}), which Outlook ignores; pad the "
                "cells around it instead",
                el.needle,
            )
        if el.tag in _INLINE and style.get("display", "").startswith("block"):
            self._report(
                "markup.display-block",
                f"<{el.tag}> relies on display:block to stand on its own line, which Outlook "
                "ignores; break the line with <br> (or give it its own cell)",
                el.needle,
            )
        if style.get("display", "").startswith("none") and "mso-hide" not in style:
            self._report(
                "markup.hidden-mso",
                f"<{el.tag}> is hidden with display:none alone, which Outlook does not always "
                "honour; add mso-hide:all",
                el.needle,
            )
        colour = _colour(style.get("color"))
        if colour is not None and el.hidden and _is_hidden(style):
            self._report(
                "markup.hidden-colour",
                f"hidden <{el.tag}> text is coloured ({colour}); spam filters take coloured "
                "hidden text for words hidden from the reader. Hide it with display:none, "
                "mso-hide:all, max-height:0 and opacity:0 and set no colour",
                el.needle,
            )
        elif colour is not None and colour == el.background:
            self._report(
                "markup.hidden-colour",
                f"<{el.tag}> text is coloured like its background ({colour}): invisible to "
                "readers and a spam signal",
                el.needle,
            )

    def handle_data(self, data: str) -> None:
        if not data.strip() or not self.stack:
            return
        if any(el.tag in _NO_TEXT for el in self.stack):
            return
        tables = [i for i, el in enumerate(self.stack) if el.tag == "table"]
        if not tables:
            return
        inner = tables[-1]
        # A font on the table itself counts (mj-table writes it there); one outside does not.
        if not any(el.has_font for el in self.stack[inner:]):
            holder = self.stack[-1]
            for el in reversed(self.stack[inner + 1 :]):
                if el.tag == "td":
                    holder = el
                    break
            self._report(
                "markup.nested-font",
                f"text in a nested table ({data.strip()[:40]!r}) names no font between "
                "itself and its table; Outlook shows it in Times New Roman. Set "
                "font-family on its cell",
                holder.needle,
            )


def lint_html(html: str) -> list[MarkupFinding]:
    """Every Outlook and hidden-text trap in a message's HTML, once per element class."""
    linter = _Linter()
    linter.feed(html)
    linter.close()
    return linter.findings
