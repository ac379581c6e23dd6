"""MJML to client-ready HTML: mjml-python (MRML) compiles, premailer inlines the CSS.

Both steps run once per issue, offline:

* MRML gets ``fonts={}``: without it, it links Google Fonts stylesheets. ``disable_comments``
  drops template comments from the HTML (conditional ``<!--[if mso]>`` blocks are kept).
* premailer never touches the network: ``allow_network=False`` stops it loading ``<link>``
  stylesheets, and style blocks holding ``@import`` are excluded from inlining because
  cssutils would fetch the imported URL while parsing them (measured: it does, even with
  ``allow_network=False``).
* MJML's own reset block (``#outlook a``, ``table, td {border-collapse...}``, ``p {margin}``)
  is excluded from inlining as the official MJML does: inlined, it adds ~60 bytes to every
  table cell and pushes a long issue over Gmail's ~102 KB clipping limit. It stays in
  ``<head>`` for clients that read it. The template's ``mj-style`` *is* inlined.
* ``keep_style_tags``: ``@media`` rules (mobile layout, dark mode) only work from ``<style>``;
  ``strip_important=False``: those rules need ``!important`` to beat inline styles.
* premailer (lxml) drops a lowercase ``<!doctype html>``; it is put back.

Speed (issue 13): premailer caches cssutils' parse of a ``<style>`` block, but then walks
the parsed sheet and serialises every declaration again on each call -- about half of its
time on the sample issue. :class:`_Inliner` keeps the rules it derives from a block (plain
tuples of selector, declarations and specificity) per block text, so the template's CSS is
turned into rules once per process; the inlining itself (lxml, selectors, merging) is
premailer's, unchanged. Floated-image alignment, which parses every ``<img>`` style with
cssutils, only runs when the HTML mentions ``float`` at all (nothing else can trigger it).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

import cssutils  # type: ignore[import-untyped]  # premailer's CSS parser; no type hints
import mjml
from premailer import Premailer

DOCTYPE = "<!doctype html>"

_STYLE_OPEN = re.compile(r"<style\b([^>]*)>(.*?)</style>", re.S | re.I)
_POSITION = re.compile(r"\s*at position (\d+):(\d+)\s*$")


@dataclass(frozen=True)
class MjmlFailure(Exception):
    """MRML rejected the MJML: its message and, when known, the 1-based line and column."""

    message: str
    line: int | None
    column: int | None

    def __str__(self) -> str:
        return self.message


def compile_mjml(source: str) -> str:
    """MJML to HTML (no fonts fetched or linked, template comments dropped)."""
    try:
        return mjml.mjml2html(source, fonts={}, disable_comments=True)
    except ValueError as exc:
        raise _failure(source, str(exc)) from None


def _failure(source: str, message: str) -> MjmlFailure:
    """Turn MRML's ``... at position START:END`` (UTF-8 byte offsets) into line:column."""
    m = _POSITION.search(message)
    text = message[: m.start()] if m else message
    text = text.replace(" in root template", "")
    if m:
        offset = int(m.group(1))
        line, column = _line_column(source, offset)
        return MjmlFailure(text, line, column)
    guess = guess_position(source)
    if guess is not None:
        line, column = _line_column(source, guess, chars=True)
        return MjmlFailure(text, line, column)
    return MjmlFailure(text, None, None)


def _line_column(source: str, offset: int, *, chars: bool = False) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte (or character) offset."""
    prefix = (
        source[:offset] if chars else source.encode("utf-8")[:offset].decode("utf-8", "replace")
    )
    line = prefix.count("\n") + 1
    column = len(prefix) - (prefix.rfind("\n") + 1) + 1
    return line, column


_TAG = re.compile(
    r"""<(?:
        !--.*?--> |                                   # comment
        !\[CDATA\[.*?\]\]> |
        ![A-Za-z][^>]*> |                             # doctype
        /[A-Za-z][\w:.-]*\s*> |                       # closing tag
        [A-Za-z][\w:.-]*                              # opening tag name
          (?:\s+[^\s=/>"']+(?:\s*=\s*(?:"[^"]*"|'[^']*'))?)*
          \s*/?>
    )""",
    re.S | re.X,
)


def guess_position(source: str) -> int | None:
    """Where MJML is malformed, for MRML errors that carry no position.

    Finds the first ``<`` that starts no well-formed tag (a stray ``<``, an unquoted
    attribute value), else the innermost ``mj-*`` element left open. A heuristic: MRML's
    own position, when it gives one, always wins.
    """
    i = source.find("<")
    while i != -1:
        m = _TAG.match(source, i)
        if m is None:
            return i
        i = source.find("<", m.end())
    stack: list[tuple[str, int]] = []
    for m in re.finditer(r"<(/?)(mj-[\w-]+|mjml)\b[^>]*?(/?)>", source):
        closing, name, selfclosing = m.group(1), m.group(2), m.group(3)
        if selfclosing:
            continue
        if not closing:
            stack.append((name, m.start()))
        elif stack and stack[-1][0] == name:
            stack.pop()
        else:
            return m.start()
    if stack:
        return stack[-1][1]
    return None


PREMAILER_OPTIONS: dict[str, Any] = {
    "allow_network": False,
    "strip_important": False,
    "keep_style_tags": True,
    "disable_validation": True,
    "cssutils_logging_level": logging.CRITICAL,
    "disable_link_rewrites": True,
    "remove_classes": False,
    "exclude_pseudoclasses": True,
}
"""How premailer is configured (the reasons are in the module docstring)."""


class _Inliner(Premailer):  # type: ignore[misc]  # premailer has no type hints
    """premailer with the rules of each ``<style>`` block derived once per process, less
    the rules that cannot match anything in this document (see :class:`_Present`)."""

    def __init__(self, html: str, present: _Present, **options: Any) -> None:
        super().__init__(html, **options)
        self.present = present

    def _parse_style_rules(self, css_body: str, ruleset_index: int) -> tuple[list[Any], list[Any]]:
        rules, leftover = _style_rules(css_body, ruleset_index)
        # Fresh lists: premailer extends and sorts what it gets. A dropped rule would have
        # matched no element; the others keep their specificity, hence their order.
        return [r for r in rules if self.present.may_match(r[1])], list(leftover)


_TAG_NAME = re.compile(r"<([A-Za-z][^\s/>]*)")
# Selectors simple enough to know what they need: types, classes, ids and combinators.
_SIMPLE_SELECTOR = re.compile(r"[A-Za-z0-9_.#>+~ \t\r\n-]+")
_TYPE = re.compile(r"(?:^|[\s>+~])([A-Za-z][A-Za-z0-9_-]*)")


class _Present:
    """Which elements a document may hold, read from its text.

    Every selector costs premailer a search of the whole document (most of its time once
    the rules are cached); a rule whose selector names an element the document never
    opens (an ``h4``, a ``blockquote`` this issue has none of) cannot match and is skipped.
    The set over-approximates (tags inside comments count; lxml's implied ``html``,
    ``head``, ``body`` and ``p`` always count), and a selector with anything but type,
    class and id parts is always kept. Classes and ids are not looked at: finding them in
    the text costs about what their searches would save.
    """

    IMPLIED = frozenset({"html", "head", "body", "p"})

    def __init__(self, html: str) -> None:
        self.tags = self.IMPLIED | {m.group(1).lower() for m in _TAG_NAME.finditer(html)}

    def may_match(self, selector: str) -> bool:
        """False when ``selector`` needs an element the document never opens."""
        if not _SIMPLE_SELECTOR.fullmatch(selector):
            return True
        return all(name.lower() in self.tags for name in _TYPE.findall(selector))


@functools.lru_cache(maxsize=64)
def _style_rules(css_body: str, ruleset_index: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """premailer's own rules for a block (immutable tuples, safe to share between calls).

    The leftovers (``@media`` rules, pseudo-classes) are only tested for emptiness with
    ``keep_style_tags``: the block's text is what stays in the HTML.
    """
    rules, leftover = Premailer._parse_style_rules(_RULE_PARSER, css_body, ruleset_index)
    return tuple(rules), tuple(leftover)


_RULE_PARSER = Premailer(**PREMAILER_OPTIONS)


def inline_css(html: str) -> str:
    """Inline the template's CSS into ``style`` attributes, offline, keeping what clients need."""
    prepared = _STYLE_OPEN.sub(_mark_style, html)
    options = PREMAILER_OPTIONS
    if cssutils.log.getEffectiveLevel() == options["cssutils_logging_level"]:
        # Setting a logger's level clears every logger's cache (logging._clear_cache):
        # only when something has changed it since.
        options = {**options, "cssutils_logging_level": None}
    inliner = _Inliner(
        prepared, _Present(prepared), align_floating_images="float" in prepared, **options
    )
    out: str = inliner.transform(pretty_print=True)
    if not out.lstrip()[:9].lower() == "<!doctype":
        out = f"{DOCTYPE}\n{out}"
    return out


def _mark_style(m: re.Match[str]) -> str:
    attrs, body = m.group(1), m.group(2)
    skip = "#outlook a" in body or "@import" in body
    if skip and "data-premailer" not in attrs:
        return f'<style{attrs} data-premailer="ignore">{body}</style>'
    return m.group(0)
