"""Which template produced which lines of the generated MJML.

How it works: the template loader wraps every template's source in two comment markers,
``<!--bulletin:src NAME-->`` before its first character and ``<!--bulletin:end NAME-->``
after its last. The markers add no newline, so Jinja's line numbers in error messages stay
right. After Jinja has run, :func:`strip_markers` removes them (line numbers of the MJML do
not change either, since markers hold no newline) and records, for each stretch of output,
the innermost template that was executing. MRML errors and lint findings at an MJML line can
then be reported at the template that wrote it (:func:`locate`).

The mapping to a *line* of the template is a best effort: a template line appears in the
output verbatim, or with its ``{{ ... }}`` replaced, so the MJML line is looked up among the
template's lines; failing that, it is estimated from the stretch's first line. This module is
the one place that maps a generated-MJML line to a template line: MJML compile errors, lint
findings and check findings all go through :func:`locate`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bulletin.errors import Location
from bulletin.render.types import SourceSpan

GENERATED_MJML = "generated MJML"
"""Location path of a finding that no template line can be found for."""

OPEN = "<!--bulletin:src {}-->"
CLOSE = "<!--bulletin:end {}-->"
_MARKER = re.compile(r"<!--bulletin:(src|end) ([^>]*?)-->")


def wrap_source(name: str, source: str) -> str:
    """Template source with its markers (no newline added: line numbers are unchanged)."""
    return OPEN.format(name) + source + CLOSE.format(name)


def strip_markers(
    marked: str, source_of: Callable[[str], str | None] | None = None
) -> tuple[str, tuple[SourceSpan, ...]]:
    """Remove markers; return the clean text and the template of each stretch of lines.

    ``source_of(name)`` gives a template's source (without markers), used to find the
    template line a stretch starts at; without it every span starts at line 1.
    """
    pieces: list[str] = []
    spans: list[SourceSpan] = []
    stack: list[str] = []
    line = 1
    pos = 0

    def flush(segment: str) -> None:
        nonlocal line
        start_line = line
        line += segment.count("\n")
        if not stack or not segment.strip():
            return
        # Skip leading blank lines so a span begins at its first real line.
        lead = segment[: len(segment) - len(segment.lstrip())]
        first = start_line + lead.count("\n")
        last = line if segment.rstrip() == segment else line - _trailing_newlines(segment)
        name = stack[-1]
        first_text = segment.lstrip().split("\n", 1)[0]
        tline = _find_line(source_of(name) if source_of else None, first_text)
        if spans and spans[-1].template == name and spans[-1].mjml_end >= first - 1:
            prev = spans[-1]
            spans[-1] = SourceSpan(
                prev.mjml_start, max(prev.mjml_end, last), name, prev.template_line
            )
        else:
            spans.append(SourceSpan(first, max(first, last), name, tline))

    for m in _MARKER.finditer(marked):
        segment = marked[pos : m.start()]
        pieces.append(segment)
        flush(segment)
        kind, name = m.group(1), m.group(2)
        if kind == "src":
            stack.append(name)
        elif name in stack:
            # Pop to the matching open marker: a template that {% extends %} another never
            # prints its closing marker, so the stack may hold it.
            while stack and stack.pop() != name:
                pass
        pos = m.end()
    tail = marked[pos:]
    pieces.append(tail)
    flush(tail)
    return "".join(pieces), tuple(spans)


def _trailing_newlines(segment: str) -> int:
    stripped = segment.rstrip()
    return segment[len(stripped) :].count("\n")


def _find_line(source: str | None, text: str, start: int = 1) -> int:
    """1-based line of ``source`` whose stripped text equals ``text`` (from ``start``), or 1."""
    if source is None:
        return 1
    wanted = text.strip()
    if not wanted:
        return start
    if start == 1:
        return _first_lines(source).get(wanted, start)
    lines = source.split("\n")
    for i in range(start - 1, len(lines)):
        if lines[i].strip() == wanted:
            return i + 1
    return start


@functools.lru_cache(maxsize=256)
def _first_lines(source: str) -> dict[str, int]:
    """Each stripped line of a template and the first line (1-based) it occurs on.

    Kept per template text: every stretch of output looks its first line up in it, on
    every render (the preview renders again on each edit).
    """
    first: dict[str, int] = {}
    for number, line in enumerate(source.split("\n"), 1):
        first.setdefault(line.strip(), number)
    return first


@dataclass(frozen=True)
class Origin:
    """Where an MJML line most likely came from."""

    template: str
    line: int
    exact: bool
    """True when the template line was found printing the MJML line (verbatim, or with
    ``{{ ... }}`` matching anything); False for an estimate from the span's start."""


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}")


def _template_pattern(template_line: str) -> re.Pattern[str] | None:
    """A template line as a pattern over its output: each ``{{ ... }}`` matches anything."""
    text = template_line.strip()
    if not text or "{{" not in text:
        return None
    parts = _JINJA.split(text)
    if not "".join(parts).strip():
        return None  # nothing but Jinja: it would match any line
    return re.compile(".*?".join(re.escape(p) for p in parts), re.DOTALL)


def _find_printing_line(template: str, wanted: str, first: int, estimate: int) -> int | None:
    """The template line that prints ``wanted``: verbatim first, else around ``{{ }}``."""
    exact: list[int] = []
    fuzzy: list[int] = []
    for number, text in enumerate(template.split("\n"), 1):
        if text.strip() == wanted:
            exact.append(number)
        else:
            pattern = _template_pattern(text)
            if pattern is not None and pattern.fullmatch(wanted):
                fuzzy.append(number)
    for candidates in (exact, fuzzy):
        if candidates:
            # The same line may occur several times (two <mj-column>s), and lines before the
            # span's start belong to earlier output: prefer those after it, nearest to where
            # the line would be if template and output advanced line by line.
            after = [n for n in candidates if n >= first] or candidates
            return min(after, key=lambda n: (abs(n - estimate), n))
    return None


def locate(
    spans: Sequence[SourceSpan],
    mjml: str,
    mjml_line: int,
    source_of: Callable[[str], str | None] | None = None,
) -> Origin | None:
    """The template (and line) that wrote line ``mjml_line`` of ``mjml``, if any did.

    The innermost span covering the line names the template. Its line is the one printing
    the MJML line, found with ``source_of`` (a template's text by span name); failing that,
    an estimate from the span's first line (Jinja block lines print nothing, so it drifts).
    """
    best: SourceSpan | None = None
    for span in spans:
        if span.mjml_start <= mjml_line <= span.mjml_end:
            size = span.mjml_end - span.mjml_start
            if best is None or size < best.mjml_end - best.mjml_start:
                best = span
    if best is None:
        return None
    estimate = best.template_line + (mjml_line - best.mjml_start)
    source = source_of(best.template) if source_of is not None else None
    if source is not None:
        lines = mjml.split("\n")
        wanted = lines[mjml_line - 1].strip() if 0 < mjml_line <= len(lines) else ""
        if wanted:
            found = _find_printing_line(source, wanted, best.template_line, estimate)
            if found is not None:
                return Origin(best.template, found, exact=True)
    return Origin(best.template, estimate, exact=False)


def location(
    spans: Sequence[SourceSpan],
    mjml: str,
    mjml_line: int,
    column: int | None = None,
    source_of: Callable[[str], str | None] | None = None,
) -> Location:
    """:func:`locate` as a :class:`Location`: the template line, else the generated MJML."""
    origin = locate(spans, mjml, mjml_line, source_of)
    if origin is None:
        return Location(GENERATED_MJML, mjml_line, column)
    return Location(origin.template, origin.line)
