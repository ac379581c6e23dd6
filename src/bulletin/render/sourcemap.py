"""Which template produced which lines of the generated MJML.

How it works: the template loader wraps every template's source in two comment markers,
``<!--bulletin:src NAME-->`` before its first character and ``<!--bulletin:end NAME-->``
after its last. The markers add no newline, so Jinja's line numbers in error messages stay
right. After Jinja has run, :func:`strip_markers` removes them (line numbers of the MJML do
not change either, since markers hold no newline) and records, for each stretch of output,
the innermost template that was executing. MRML errors and lint findings at an MJML line can
then be reported at the template that wrote it (:func:`locate`).

The mapping to a *line* of the template is a best effort: a template line that contains no
Jinja expression appears verbatim in the output, so the MJML line is looked up among the
template's lines; failing that, the template's first line of that stretch is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bulletin.render.types import SourceSpan

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
    lines = source.split("\n")
    for i in range(start - 1, len(lines)):
        if lines[i].strip() == wanted:
            return i + 1
    return start


@dataclass(frozen=True)
class Origin:
    """Where an MJML line most likely came from."""

    template: str
    line: int
    exact: bool
    """True when the MJML line was found verbatim in the template."""


def locate(
    spans: Sequence[SourceSpan],
    mjml: str,
    mjml_line: int,
    source_of: Callable[[str], str | None] | None = None,
) -> Origin | None:
    """The template (and best-guess line) that wrote line ``mjml_line`` of ``mjml``."""
    span = None
    for s in spans:
        if s.mjml_start <= mjml_line <= s.mjml_end:
            span = s  # later (inner) spans win over the enclosing layout's
    if span is None:
        return None
    lines = mjml.split("\n")
    text = lines[mjml_line - 1] if 0 < mjml_line <= len(lines) else ""
    source = source_of(span.template) if source_of else None
    if source is not None and text.strip():
        wanted = text.strip()
        matches = [i for i, s in enumerate(source.split("\n"), 1) if s.strip() == wanted]
        if matches:
            # The same line may occur several times (two <mj-column>s): take the one nearest
            # to where it would be if template and output advanced line by line.
            expected = span.template_line + (mjml_line - span.mjml_start)
            best = min(matches, key=lambda i: (abs(i - expected), i))
            return Origin(span.template, best, exact=True)
    return Origin(span.template, span.template_line, exact=False)
