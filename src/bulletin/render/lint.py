"""Lint the generated MJML, because the compiler does not.

mjml-python (MRML) validates nothing: an unknown ``mj-*`` tag is copied into the HTML as a
literal tag, an unknown attribute or a bad value is ignored without a word, and a component in
the wrong parent renders somewhere odd. This module knows the MJML 4 components, their
attributes and value types and where each may appear, and reports every deviation at the
generated MJML's line:column and, through :class:`~bulletin.render.types.SourceSpan`, at the
template line that produced it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

from bulletin.errors import Problem, Severity
from bulletin.render import sourcemap
from bulletin.render.mjml_spec import (
    ALL_BODY_ATTRS,
    ATTRIBUTES,
    ATTRIBUTES_CHILDREN,
    ENDING_TAGS,
    GLOBAL_ATTRS,
    KNOWN_TAGS,
    NOT_BODY,
    PARENTS,
    VOID_ELEMENTS,
    check_value,
)
from bulletin.render.types import SourceSpan

# "<" that cannot start a tag, comment or declaration: HTMLParser keeps it as text, MRML fails.
_BARE_LT = re.compile(r"<(?![A-Za-z/!?])")
_TAG_IN_COMMENT = re.compile(r"<(/?)([A-Za-z][\w:-]*)(?:\s[^<>]*?)?(/?)>")


# --- Locating findings ----------------------------------------------------------------------


SourceOf = Callable[[str], str | None]
"""Gives a template's text from its ``SourceSpan.template`` name (``None`` if unreadable)."""


def _located(
    message: str,
    line: int,
    column: int,
    sources: Sequence[SourceSpan],
    *,
    code: str,
    severity: Severity = "error",
    mjml: str,
    source_of: SourceOf | None = None,
) -> Problem:
    loc = sourcemap.location(sources, mjml, line, column, source_of)
    if loc.path != sourcemap.GENERATED_MJML:
        message = f"{message} (generated MJML line {line}:{column})"
    return Problem(message, loc, severity, code)


# --- The linter ---------------------------------------------------------------------------


@dataclass
class _Open:
    tag: str
    line: int
    column: int


def _is_mj(tag: str) -> bool:
    return tag == "mjml" or tag.startswith("mj-")


def _suggest(name: str, candidates: Iterable[str]) -> str:
    near = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


class _Linter(HTMLParser):
    """Walks the MJML with exact positions; every finding is collected, nothing raised."""

    def __init__(
        self, source: str, sources: Sequence[SourceSpan], source_of: SourceOf | None
    ) -> None:
        # Entities stay as written (no charref conversion) so that a bare "<" in text, which
        # MRML cannot parse, is told apart from a correct "&lt;".
        super().__init__(convert_charrefs=False)
        self.source = source
        self.sources = sources
        self.source_of = source_of
        self.problems: list[Problem] = []
        self.stack: list[_Open] = []
        # Inside an ending tag (mj-text...) the content is HTML, copied as it is, but MRML
        # still parses it: its elements must balance or MRML fails without a position.
        self.raw_until: _Open | None = None
        self.html_stack: list[_Open] = []
        self.classes_defined: set[str] = set()
        self.classes_used: list[tuple[str, int, int]] = []
        self.seen_root = False
        # Open elements of a stray HTML block: one report covers the block and its text.
        self.stray_depth = 0

    # Positions ---------------------------------------------------------------------------

    def _pos(self) -> tuple[int, int]:
        line, offset = self.getpos()
        return line, offset + 1

    @staticmethod
    def _advance(at: tuple[int, int], text: str) -> tuple[int, int]:
        """The position reached after ``text`` starting at ``at``."""
        line, column = at
        if "\n" in text:
            return line + text.count("\n"), len(text) - text.rfind("\n")
        return line, column + len(text)

    def _attr_pos(self, name: str) -> tuple[int, int]:
        """Position of attribute ``name`` inside the current start tag (the tag's if unknown)."""
        text = self.get_starttag_text() or ""
        m = re.search(rf"[\s/]({re.escape(name)})\s*(=|[\s/>])", text, re.IGNORECASE)
        if m is None:
            return self._pos()
        return self._advance(self._pos(), text[: m.start(1)])

    def report(
        self,
        message: str,
        at: tuple[int, int],
        code: str,
        severity: Severity = "error",
    ) -> None:
        self.problems.append(
            _located(
                message,
                at[0],
                at[1],
                self.sources,
                code=code,
                severity=severity,
                mjml=self.source,
                source_of=self.source_of,
            )
        )

    # Structure ---------------------------------------------------------------------------

    def _parent(self) -> str | None:
        return self.stack[-1].tag if self.stack else None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, self_closing: bool) -> None:
        at = self._pos()
        if self.raw_until is not None:
            self._raw_start(tag, at, self_closing=self_closing)
            return
        parent = self._parent()
        if not _is_mj(tag):
            if self.stray_depth == 0:
                where = f"<{parent}>" if parent else "the top level"
                self.report(
                    f"HTML <{tag}> directly in {where} is not MJML: MRML copies it unstyled; "
                    "put HTML inside <mj-text> or <mj-raw>",
                    at,
                    "mjml.stray-content",
                )
            if not self_closing and tag not in VOID_ELEMENTS:
                self.stray_depth += 1
            return
        self.stray_depth = 0
        in_attributes = any(o.tag == "mj-attributes" for o in self.stack)
        self._check_tag(tag, parent, at, in_attributes)
        if tag in KNOWN_TAGS and (in_attributes or tag not in ATTRIBUTES_CHILDREN):
            self._check_attributes(tag, attrs, in_attributes)
        if self_closing:
            return
        frame = _Open(tag, *at)
        self.stack.append(frame)
        if tag in ENDING_TAGS and not in_attributes:
            self.raw_until = frame
            self.html_stack = []

    def _raw_start(self, tag: str, at: tuple[int, int], *, self_closing: bool) -> None:
        assert self.raw_until is not None
        host = self.raw_until.tag
        if _is_mj(tag):
            self.report(
                f"<{tag}> inside <{host}> is not compiled: the content of <{host}> is HTML "
                f"and MRML copies <{tag}> into the email as a literal tag; close <{host}> first",
                at,
                "mjml.nesting",
            )
        if not self_closing and tag not in VOID_ELEMENTS:
            self.html_stack.append(_Open(tag, *at))

    def _raw_end(self, tag: str, at: tuple[int, int]) -> None:
        assert self.raw_until is not None
        if tag in VOID_ELEMENTS:
            return
        if not any(o.tag == tag for o in self.html_stack):
            self.report(
                f"</{tag}> inside <{self.raw_until.tag}> closes nothing: MRML stops at it "
                f'("unexpected token"); remove it or add the opening <{tag}>',
                at,
                "mjml.html-balance",
            )
            return
        while self.html_stack:
            top = self.html_stack.pop()
            if top.tag == tag:
                return
            self._unclosed_html(top, f"before </{tag}>")

    def _unclosed_html(self, top: _Open, where: str) -> None:
        assert self.raw_until is not None
        self.report(
            f"<{top.tag}> inside <{self.raw_until.tag}> is not closed {where}: MRML parses the "
            f'HTML and fails ("unexpected end of stream"); add </{top.tag}>',
            (top.line, top.column),
            "mjml.html-balance",
        )

    def _end_raw(self, closing: str) -> None:
        """Leave an ending tag's content, reporting its HTML elements left open."""
        for top in self.html_stack:
            self._unclosed_html(top, f"before </{closing}>")
        self.html_stack = []
        self.raw_until = None

    def handle_endtag(self, tag: str) -> None:
        at = self._pos()
        if self.raw_until is not None:
            if tag == self.raw_until.tag:
                self._end_raw(tag)
                self.stack.pop()
                return
            if not _is_mj(tag) or not any(o.tag == tag for o in self.stack):
                self._raw_end(tag, at)
                return
            # An enclosing component closes: this ending tag was never closed.
            self._end_raw(tag)
        if not _is_mj(tag):
            if self.stray_depth:
                self.stray_depth -= 1
            return
        self.stray_depth = 0
        if not any(o.tag == tag for o in self.stack):
            self.report(f"</{tag}> closes nothing: no <{tag}> is open", at, "mjml.unclosed")
            return
        while self.stack:
            top = self.stack.pop()
            if top.tag == tag:
                break
            self.report(
                f"<{top.tag}> is not closed before </{tag}>",
                (top.line, top.column),
                "mjml.unclosed",
            )

    def handle_comment(self, data: str) -> None:
        # MRML parses the HTML inside Outlook conditional comments (<!--[if mso]>...
        # <![endif]-->) of an ending tag, so their elements count towards the balance.
        if self.raw_until is None or not data.startswith("[if"):
            return
        start = data.find("]>")
        if start < 0:
            return
        origin = self._advance(self._pos(), "<!--" + data[: start + 2])
        inner = data[start + 2 :]
        for m in _TAG_IN_COMMENT.finditer(inner):
            at = self._advance(origin, inner[: m.start()])
            closing, name, self_closing = m.group(1), m.group(2).lower(), m.group(3)
            if closing:
                self._raw_end(name, at)
            else:
                self._raw_start(name, at, self_closing=bool(self_closing))

    def handle_data(self, data: str) -> None:
        bare = _BARE_LT.search(data)
        if bare is not None:
            self.report(
                "a bare '<' in text stops MRML (\"unable to parse next template\"); write &lt;",
                self._advance(self._pos(), data[: bare.start()]),
                "mjml.bare-lt",
            )
        if self.raw_until is not None or self.stray_depth or not data.strip():
            return
        parent = self._parent()
        if parent is None or parent not in KNOWN_TAGS or parent in ("mj-attributes", "mj-class"):
            return
        snippet = " ".join(data.split())[:40]
        lead = data[: len(data) - len(data.lstrip())]
        self.report(
            f"text {snippet!r} directly in <{parent}> is not MJML: MRML copies it unstyled; "
            "put it inside <mj-text>",
            self._advance(self._pos(), lead),
            "mjml.stray-content",
        )

    def close(self) -> None:
        super().close()
        if self.raw_until is not None:
            self._end_raw(self.raw_until.tag)
        for top in reversed(self.stack):
            self.report(f"<{top.tag}> is never closed", (top.line, top.column), "mjml.unclosed")
        self.stack.clear()
        for name, line, column in self.classes_used:
            if name not in self.classes_defined:
                self.report(
                    f"mj-class {name!r} is not defined in <mj-attributes>"
                    + _suggest(name, self.classes_defined),
                    (line, column),
                    "mjml.unknown-class",
                )

    # Checks ------------------------------------------------------------------------------

    def _check_tag(self, tag: str, parent: str | None, at: tuple[int, int], in_attrs: bool) -> None:
        if tag == "mj-html-attributes":
            self.report(
                "<mj-html-attributes> is not supported by MRML (mjml-python) and fails the "
                "build; set the attribute in the HTML of an <mj-text>/<mj-raw> instead",
                at,
                "mjml.unsupported",
            )
            return
        if tag not in KNOWN_TAGS:
            self.report(
                f"unknown MJML tag <{tag}>{_suggest(tag, KNOWN_TAGS)}: MRML copies it into "
                "the email as a literal tag",
                at,
                "mjml.unknown-tag",
            )
            return
        if tag == "mjml":
            if parent is not None:
                self.report("<mjml> must be the outermost tag", at, "mjml.nesting")
            self.seen_root = True
            return
        if in_attrs:
            # Inside <mj-attributes> tags name the component whose defaults they set.
            if parent == "mj-attributes" and tag in ("mjml", "mj-head", "mj-body", "mj-include"):
                self.report(f"<{tag}> cannot take defaults in <mj-attributes>", at, "mjml.nesting")
            return
        if tag in ATTRIBUTES_CHILDREN:
            self.report(f"<{tag}> belongs inside <mj-attributes>", at, "mjml.nesting")
            return
        if tag == "mj-include":
            return
        allowed = PARENTS.get(tag, frozenset())
        if parent is not None and parent not in KNOWN_TAGS:
            return  # already reported as an unknown tag
        if parent not in allowed:
            where = f"<{parent}>" if parent else "the top level"
            expected = " or ".join(f"<{p}>" for p in sorted(allowed))
            self.report(
                f"<{tag}> is not allowed in {where}; it belongs in {expected}",
                at,
                "mjml.nesting",
            )

    def _check_attributes(
        self, tag: str, attrs: list[tuple[str, str | None]], in_attrs: bool
    ) -> None:
        if tag not in KNOWN_TAGS or tag == "mj-html-attributes":
            return
        if in_attrs and tag == "mj-class":
            allowed: Mapping[str, str] = {"name": "string"}
            for name, value in attrs:
                if name == "name" and value:
                    self.classes_defined.add(value)
            extra: Iterable[str] = ALL_BODY_ATTRS
        elif in_attrs and tag == "mj-all":
            allowed, extra = {}, ALL_BODY_ATTRS
        else:
            allowed = ATTRIBUTES.get(tag, {})
            extra = GLOBAL_ATTRS if tag not in NOT_BODY else ()
        extra = frozenset(extra)
        for name, value in attrs:
            at = self._attr_pos(name)
            if name == "mj-class" and value and not in_attrs:
                line, column = at
                for cls in value.split():
                    self.classes_used.append((cls, line, column))
            if name in allowed:
                spec = allowed[name]
            elif name in extra:
                spec = self._spec_anywhere(name)
            else:
                self.report(
                    f"<{tag}> has no attribute {name!r}"
                    + _suggest(name, [*allowed, *(GLOBAL_ATTRS if extra else ())]),
                    at,
                    "mjml.unknown-attribute",
                )
                continue
            if value is None:
                self.report(
                    f'<{tag}> attribute {name!r} has no value; write {name}="…"',
                    at,
                    "mjml.invalid-value",
                )
                continue
            if tag == "mj-style" and name == "inline" and value == "inline":
                self.report(
                    '<mj-style inline="inline"> is not inlined by MRML (mjml-python): its '
                    "rules only land in the <style> block; use a plain <mj-style> (the CSS "
                    "inlining step applies it) or component attributes",
                    at,
                    "mjml.style-inline",
                    "warning",
                )
                continue
            if spec and "BULLETINSLOT" not in value:
                verdict = check_value(spec, value)
                if verdict is not None:
                    self.report(f'<{tag}> {name}="{value}": {verdict.reason}', at, verdict.code)

    @staticmethod
    def _spec_anywhere(name: str) -> str:
        """The type of an attribute named outside its component (mj-all, mj-class)."""
        for tag_attrs in ATTRIBUTES.values():
            if name in tag_attrs:
                return tag_attrs[name]
        return "string"


def lint_mjml(
    mjml: str, sources: Sequence[SourceSpan] = (), source_of: SourceOf | None = None
) -> list[Problem]:
    """Every problem MRML would swallow in ``mjml``, located in the templates via ``sources``.

    Errors: unknown ``mj-*`` tags, attributes and ``mj-class`` names; invalid values and
    units; wrong nesting; a unitless ``0`` in a multi-value shorthand; ``mj-html-attributes``;
    HTML or text outside ending tags; and, inside ending tags (``mj-text``, ``mj-raw``...),
    ``mj-*`` tags, unbalanced HTML elements and bare ``<``, which make MRML fail without
    saying where. Warning: ``mj-style inline="inline"``. With ``source_of`` (template name to
    text) findings point at the exact template line rather than an estimate.
    """
    linter = _Linter(mjml, sources, source_of)
    linter.feed(mjml)
    linter.close()
    if not linter.seen_root and mjml.strip():
        linter.problems.insert(
            0,
            _located(
                "the document has no <mjml> root tag", 1, 1, sources, code="mjml.nesting", mjml=mjml
            ),
        )
    return linter.problems
