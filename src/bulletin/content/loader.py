"""Load an issue folder: ``issue.yaml`` plus the Markdown and text files it references.

Every problem in the folder is collected and reported at once as a :class:`ContentError`, each
located at ``file:line`` and worded for the person writing the newsletter::

    issues/x/issue.yaml:14: section 3 (events), item 2: 'url' is not a valid URL (...)
    issues/x/issue.yaml:22: section 4 (news), item 1: unknown key 'tittle' (did you mean 'title'?)

How a pydantic error finds its line (the heart of this module)
--------------------------------------------------------------
1. PyYAML *composes* the file into a node tree (no Python objects yet); every node carries the
   mark (line, column) where it starts.
2. :class:`_Builder` walks that tree once and produces plain data for pydantic. Alongside, it
   fills ``lines``: a map from each *data path* to a 1-based line, e.g.
   ``("sections", 2, "items", 1, "url")`` → the line of that ``url:`` key. A sequence item maps
   to the line its item starts on; the root ``()`` to the document's first line. While walking
   it also reports duplicate keys (PyYAML would silently keep the last) and replaces
   ``{file: name.md}`` references with the file's text.
3. pydantic reports each error with a ``loc`` tuple. It is almost a data path, except that
   unions insert the name of the member being tried: the section type after a section index
   (``("sections", 2, "events", "items", ...)``), and ``"TermItem"`` or
   ``"function-after[...]"`` for list items that may be text or a term/text pair.
   :func:`_resolve` walks ``loc`` against the data and drops every part that is not a real key
   or index, which turns it into a data path.
4. The line is ``lines[path]``. A missing key has no entry, so we climb to the nearest ancestor
   that has one: the mapping where the key should have been written.

Scalars are handed to pydantic as the text written in the file (only nulls become ``None``),
so the schema decides types instead of YAML 1.1's guessing: ``time: 9:00`` stays ``"9:00"``
(not the sexagesimal integer 540), ``place: NO`` stays ``"NO"``, and ``date: 2014-13-01``
reaches the date validator instead of crashing PyYAML's date constructor. pydantic's lax mode
turns ``"2014-10-08"``, ``"3"`` and ``"true"`` into a date, an integer and a boolean where the
schema asks for them, so quoted and unquoted dates both work.

Hostile or broken files
-----------------------
An issue folder may come from anyone, and every bad one must be answered quickly, at its line.
So the files are read only if they are regular files (a named pipe would block, ``/dev/zero``
never ends) of at most :data:`FILE_MAX_BYTES`; the node tree is composed from parser events
without recursion, refusing YAML anchors and aliases (an alias "bomb" expands 9 lines into
10⁹ values) and stopping at :data:`YAML_MAX_DEPTH` levels and :data:`YAML_MAX_VALUES` values;
and an issue holding more than :data:`TEXT_MAX_CHARS` characters of text is refused before
validation and rendering. Every bound is far above what one email can hold.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import stat
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    NodeEvent,
    ScalarEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from bulletin.content import merge
from bulletin.content.model import (
    MARKDOWN_MAX_ELEMENTS,
    SECTION_TYPES,
    Issue,
    LoadedIssue,
    MarkdownBudget,
)
from bulletin.errors import ContentError, Location, Problem
from bulletin.workspace import Workspace

ISSUE_FILE = "issue.yaml"

FILE_MAX_BYTES = 256 * 1024
"""Largest issue.yaml or file it references: ten times the sample issue, and more than twice
what Gmail shows of one email (~102 KB of HTML)."""

TEXT_MAX_CHARS = 100_000
"""Most characters of text an issue may hold, its referenced files included. Every character
shown becomes at least a byte of HTML, so more text than this cannot fit under Gmail's ~102 KB
clipping limit; the bound also keeps Markdown parsing and rendering quick."""

YAML_MAX_DEPTH = 20
"""Most lists and mappings nested in one another in issue.yaml (an issue needs about 6)."""

YAML_MAX_VALUES = 5_000
"""Most values (texts, keys, list entries) in issue.yaml; the sample issue holds about 300."""

_GMAIL = "Gmail clips emails over ~102 KB"

DataPath = tuple[str | int, ...]
"""Keys and list indexes leading from the top of issue.yaml to a value."""

_NULL_TAG = "tag:yaml.org,2002:null"

# Stands in for the text of a referenced file that could not be read. That failure is already
# a problem, and any problem aborts the load, so this text never reaches a rendered issue; it
# only keeps pydantic from adding a second, misleading "must not be empty" for the same field.
_UNREADABLE = "(unreadable file)"

_BOUNDS = {
    "less_than_equal": "at most",
    "less_than": "less than",
    "greater_than_equal": "at least",
    "greater_than": "more than",
}

# Friendly wording for the schema's regular expressions (pydantic would print the pattern).
_PATTERN_HELP = {
    r"^[a-z0-9][a-z0-9-]*$": "must use only lowercase letters, digits and '-'",
    r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$": "must be a language code such as 'ro' or 'en-GB'",
    r"^[A-Za-z0-9_-]+$": "must be a template name made of letters, digits, '_' and '-'",
}


_WORKSPACE_DEFAULTS: dict[str, Callable[[Workspace], str]] = {
    "language": lambda ws: ws.config.newsletter.language,
}
"""Issue keys that may be left out of issue.yaml, with where their value comes from.

The one place deciding them: ``language`` is ``newsletter.language`` from bulletin.toml.
"""


def list_issues(workspace: Workspace) -> list[str]:
    """Slugs of the folders under ``issues/`` that hold an issue.yaml, sorted."""
    if not workspace.issues_dir.is_dir():
        return []
    return sorted(p.name for p in workspace.issues_dir.iterdir() if (p / ISSUE_FILE).is_file())


def workspace_defaults(workspace: Workspace) -> dict[str, str]:
    """The values issue.yaml takes from the workspace for the keys it leaves out."""
    return {key: value(workspace) for key, value in _WORKSPACE_DEFAULTS.items()}


def load_issue(workspace: Workspace, issue_dir: Path) -> LoadedIssue:
    """Read, check and validate ``issue_dir/issue.yaml`` and the files it references.

    Raises :class:`ContentError` listing every problem found, each located at file:line.
    """
    yaml_path = issue_dir / ISSUE_FILE
    rel = workspace.relpath(yaml_path)
    slug = issue_dir.resolve().name

    def fail(problems: list[Problem]) -> ContentError:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        return ContentError(problems, summary=f"Issue '{slug}' cannot be loaded ({count}):")

    folder_hint = f"an issue is a folder under issues/ holding {ISSUE_FILE}"
    try:
        raw = _read_limited(yaml_path)
    except FileNotFoundError:
        missing = Problem(f"file not found; {folder_hint}", Location(rel), code="file")
        raise fail([missing]) from None
    except _NotRegular as exc:
        odd = Problem(
            f"not a regular file (it is {exc.what}); {folder_hint}", Location(rel), code="file"
        )
        raise fail([odd]) from None
    except _TooLarge as exc:
        big = Problem(
            f"the file is {_size(exc.size)}; an issue file may be at most "
            f"{_size(FILE_MAX_BYTES)} ({_GMAIL} anyway): shorten the issue or split it into two",
            Location(rel),
            code="size",
        )
        raise fail([big]) from None
    except OSError as exc:
        raise fail([Problem(f"cannot read: {exc.strerror}", Location(rel), code="file")]) from None

    text, bad_line = _decode(raw)
    if bad_line is not None:
        raise fail([_not_utf8(rel, bad_line)])
    root = _compose(text, rel)
    if isinstance(root, Problem):
        raise fail([root])
    if not isinstance(root, MappingNode):
        raise fail([_not_a_mapping(root, rel)])

    builder = _Builder(workspace, issue_dir, rel, text)
    data = builder.build_document(root)
    for key, value in workspace_defaults(workspace).items():
        if data.get(key) is None:
            data[key] = value
    # The plain-text version is read even when the schema fails, so its problems come too.
    text_override = None
    name = data.get("text_override")
    if isinstance(name, str) and name.strip():
        line = builder.lines[("text_override",)]
        text_override = builder.read_sibling(name, ("text_override",), line, counted=False)
    findings = list(builder.findings)
    if builder.chars > TEXT_MAX_CHARS:
        # Validating and rendering that much text would only take long to say the same.
        findings.append(
            _Finding(
                (),
                f"the issue holds more than {TEXT_MAX_CHARS:,} characters of text, more than "
                f"one email can show ({_GMAIL}): shorten the issue or split it into two",
                builder.lines[()],
                "size",
                location=Location(rel),
            )
        )
        raise fail(_unique(f.problem(data, rel) for f in findings))

    issue: Issue | None = None
    budget = MarkdownBudget()
    try:
        issue = Issue.model_validate(data, context={"markdown": budget})
    except ValidationError as exc:
        findings += _schema_findings(exc, data, builder.lines, builder.sources, rel)
    if budget.exceeded:
        findings.append(
            _Finding(
                (),
                f"the Markdown texts hold more than {MARKDOWN_MAX_ELEMENTS:,} elements "
                "(paragraphs, lines, list items, links, emphasis...), far more than one email "
                f"can show ({_GMAIL}): shorten the issue or split it into two",
                builder.lines[()],
                "size",
                location=Location(rel),
            )
        )

    if findings or issue is None:
        problems = _unique(f.problem(data, rel) for f in findings)
        problems.sort(key=lambda p: (p.location is None or p.location.path != rel, _line_of(p)))
        raise fail(problems)

    return LoadedIssue(
        slug=slug,
        path=rel,
        issue=issue,
        text_override=text_override,
        section_lines=tuple(builder.lines[("sections", i)] for i in range(len(issue.sections))),
    )


# --- Reading files ------------------------------------------------------------------------


class _NotRegular(Exception):
    """The path is a folder, a named pipe, a device or a socket."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _TooLarge(Exception):
    """The file is larger than FILE_MAX_BYTES."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def _read_limited(path: Path) -> bytes:
    """The bytes of a regular file of at most FILE_MAX_BYTES.

    Raises :class:`_NotRegular`, :class:`_TooLarge` or the OSError of opening or reading.
    """
    # Without O_NONBLOCK, opening a named pipe waits for a writer forever.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotRegular(next((what for test, what in _KINDS if test(info.st_mode)), "odd"))
        if info.st_size > FILE_MAX_BYTES:
            raise _TooLarge(info.st_size)
        chunks = []
        left = FILE_MAX_BYTES + 1  # one byte more tells a file that grew since fstat
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > FILE_MAX_BYTES:
        raise _TooLarge(len(data))
    return data


def _size(n: int) -> str:
    """A file size as a writer reads it: ``300 KB``, ``19.1 MB``."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    return f"{round(n / 1024)} KB"


def _decode(raw: bytes) -> tuple[str, int | None]:
    """Decode UTF-8 (a leading BOM is dropped). Returns the text, or the line of the first bad
    byte."""
    # Strip the BOM ourselves rather than using "utf-8-sig": that codec reports error offsets
    # relative to the data after the BOM, which would shift the line count near the start.
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", raw[: exc.start].count(b"\n") + 1


def _not_utf8(rel: str, line: int, referenced_at: str = "") -> Problem:
    where = f" (referenced at {referenced_at})" if referenced_at else ""
    return Problem(
        f"not valid UTF-8 text: the first bad byte is on line {line}{where}; "
        "save the file as UTF-8",
        Location(rel, line),
        code="encoding",
    )


# --- YAML syntax ----------------------------------------------------------------------------


def _compose(text: str, rel: str) -> Node | Problem | None:
    """Parse the text into a YAML node tree (None when empty), or the located problem."""
    # libyaml parses ~10x faster and keeps the marks we need. Its error texts and positions
    # differ slightly, so a file that fails is parsed again by the pure-Python loader, whose
    # messages the error reporting below is written for. libyaml also accepts some tabs the
    # pure loader rejects, so text with a tab always takes the pure path (same verdicts).
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None and "\t" not in text:
        try:
            return _compose_bounded(fast(text), rel)
        except yaml.YAMLError:
            pass
    try:
        return _compose_bounded(yaml.SafeLoader(text), rel)
    except yaml.MarkedYAMLError as exc:
        return _syntax_problem(exc, text, rel)
    except yaml.reader.ReaderError as exc:
        # A control character (NUL, ESC...) that YAML refuses anywhere in the file.
        line = text.count("\n", 0, exc.position) + 1
        return Problem(
            f"character U+{exc.character:04X} is not allowed in YAML; remove it",
            Location(rel, line),
            code="yaml",
        )
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error is one of the above
        return Problem(f"YAML error: {exc}", Location(rel), code="yaml")


def _compose_bounded(loader: Any, rel: str) -> Node | Problem | None:
    """What ``yaml.compose`` does, from the parser's events and without recursion, but with
    the bounds of the module docstring: an anchor, an alias, too deep or too many values is a
    located problem, found as soon as the parser reaches it."""
    try:
        loader.get_event()  # stream start
        if loader.check_event(StreamEndEvent):
            return None
        document = loader.get_event()
        root: Node | None = None
        open_nodes: list[CollectionNode] = []
        keys: list[Node | None] = []  # per open node: a mapping key waiting for its value
        count = 0
        while not loader.check_event(DocumentEndEvent):
            event = loader.get_event()
            if not isinstance(event, NodeEvent):  # the end of a list or a mapping
                open_nodes.pop().end_mark = event.end_mark
                keys.pop()
                continue
            if isinstance(event, AliasEvent) or event.anchor is not None:
                return _anchor_problem(event, rel)
            count += 1
            if count > YAML_MAX_VALUES:
                return _located(
                    f"the issue holds more than {YAML_MAX_VALUES:,} values (texts, keys, list "
                    f"entries); that cannot fit in one email ({_GMAIL}): shorten the issue or "
                    "split it into two",
                    event,
                    rel,
                    "size",
                )
            node = _node(loader, event)
            if not open_nodes:
                root = node
            elif isinstance(open_nodes[-1], SequenceNode):
                open_nodes[-1].value.append(node)
            elif keys[-1] is None:
                keys[-1] = node
            else:
                open_nodes[-1].value.append((keys[-1], node))
                keys[-1] = None
            if isinstance(node, CollectionNode):
                open_nodes.append(node)
                keys.append(None)
                if len(open_nodes) > YAML_MAX_DEPTH:
                    return _located(
                        f"lists and mappings are nested more than {YAML_MAX_DEPTH} levels deep "
                        "here; an issue needs far fewer: look for stray '[', '{' or '- '",
                        event,
                        rel,
                        "yaml",
                    )
        loader.get_event()  # document end
        if not loader.check_event(StreamEndEvent):
            raise ComposerError(
                "expected a single document in the stream",
                document.start_mark,
                "but found another document",
                loader.get_event().start_mark,
            )
        return root
    finally:
        loader.dispose()


def _node(loader: Any, event: NodeEvent) -> Node:
    """The node for a scalar or the (still empty) node a list or mapping starts."""
    # Tags are resolved as PyYAML's composer does; only the null tag matters downstream.
    start: Any = event.start_mark  # libyaml's marks are another class with the same fields
    if isinstance(event, ScalarEvent):
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(ScalarNode, event.value, event.implicit)
        end: Any = event.end_mark
        return ScalarNode(tag, event.value, start, end, style=event.style)
    assert isinstance(event, CollectionStartEvent)
    kind = SequenceNode if isinstance(event, SequenceStartEvent) else MappingNode
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(kind, None, event.implicit)
    return kind(tag, [], start, None, flow_style=event.flow_style)


def _anchor_problem(event: NodeEvent, rel: str) -> Problem:
    """Anchors and aliases: an issue has no use for them, and aliases multiply data."""
    if isinstance(event, AliasEvent):
        what = f"'*{event.anchor}' is a YAML alias"
    else:
        what = f"'&{event.anchor}' marks a YAML anchor"
    return _located(
        f"{what}, which an issue does not use: write each value out in full (text that "
        "starts with '&' or '*' must be in quotes)",
        event,
        rel,
        "yaml.alias",
    )


def _located(message: str, event: NodeEvent, rel: str, code: str) -> Problem:
    mark = event.start_mark
    if mark is None:  # pragma: no cover - both parsers mark every event
        return Problem(message, Location(rel), code=code)
    return Problem(message, Location(rel, mark.line + 1, mark.column + 1), code=code)


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, rel: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:  # pragma: no cover - PyYAML always marks parse errors
        return Problem(f"YAML syntax error: {exc}", Location(rel), code="yaml")
    line, column = mark.line + 1, mark.column + 1
    problem = exc.problem or ""
    lines = text.splitlines()
    line_text = lines[mark.line] if mark.line < len(lines) else ""
    indent = line_text[: len(line_text) - len(line_text.lstrip(" \t"))]
    if "\t" in indent:
        return Problem(
            f"tab character at line {line}: YAML indentation must use spaces",
            Location(rel, line),
            code="yaml.tab",
        )
    if "'\\t'" in problem:
        return Problem(
            f"tab character at line {line}, column {column}: use spaces instead of tabs in YAML",
            Location(rel, line, column),
            code="yaml.tab",
        )
    message = f"YAML syntax error: {problem}"
    if exc.context:
        context_line = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message += f" ({exc.context}{context_line})"
    if problem == "mapping values are not allowed here":
        message += "; put text that contains ': ' in quotes"
    return Problem(message, Location(rel, line, column), code="yaml")


def _not_a_mapping(root: Node | None, rel: str) -> Problem:
    required = ", ".join(
        name
        for name, f in Issue.model_fields.items()
        if f.is_required() and name not in _WORKSPACE_DEFAULTS
    )
    if root is None:
        return Problem(
            f"the file is empty; an issue needs at least: {required}",
            Location(rel, 1),
            code="schema",
        )
    got = "a list" if isinstance(root, SequenceNode) else repr(_short(str(root.value)))
    return Problem(
        f"the top level must be a mapping of keys ({required}, ...), got {got}",
        Location(rel, root.start_mark.line + 1),
        code="schema",
    )


# --- From nodes to data, remembering lines --------------------------------------------------


@dataclass(frozen=True)
class _Finding:
    """A problem about the value at ``path``, worded relative to it.

    ``text`` follows the field's name: as a predicate ("'body' must not be empty") when
    ``predicate`` is true, else after a colon ("'title': expected text, got a list").
    A problem in another file (``location`` set) is reported there, worded on its own.
    """

    path: DataPath
    text: str
    line: int
    code: str = "schema"
    predicate: bool = True
    location: Location | None = None

    def problem(self, data: Any, rel: str) -> Problem:
        if self.location is not None:
            return Problem(self.text, self.location, code=self.code)
        where, field = _describe_path(self.path, data)
        if not field:
            body = self.text
        elif self.predicate:
            body = f"'{field}' {self.text}"
        else:
            body = f"'{field}': {self.text}"
        message = f"{where}: {body}" if where else body
        return Problem(message, Location(rel, self.line), code=self.code)


class _Builder:
    """Turn a composed YAML tree into plain data, recording the line of every data path."""

    def __init__(self, workspace: Workspace, issue_dir: Path, rel: str, source: str) -> None:
        self.workspace = workspace
        self.source = source
        self.issue_dir = issue_dir
        self.rel = rel
        self.lines: dict[DataPath, int] = {}
        self.findings: list[_Finding] = []
        self.chars = 0
        """Characters of text seen so far, referenced files included (see TEXT_MAX_CHARS)."""
        self.sources: dict[DataPath, str] = {}
        """Workspace-relative file each ``{file: name.md}`` value was read from."""
        self._texts: dict[Path, str] = {}  # a file referenced several times is read once

    def build_document(self, root: MappingNode) -> dict[str, Any]:
        self.lines[()] = _line(root)
        data = self._build(root, ())
        assert isinstance(data, dict)
        return data

    def _build(self, node: Node, path: DataPath) -> Any:
        # Recursion is safe: the tree is a tree (no aliases) at most YAML_MAX_DEPTH deep.
        if isinstance(node, MappingNode):
            reference = _file_reference(node)
            if reference is not None:
                return self.read_sibling(reference, path, _line(node))
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = _line(item)
                items.append(self._build(item, (*path, index)))
            return items
        # Plain text for pydantic to type (see the module docstring); nulls are None.
        if node.tag == _NULL_TAG:
            return None
        self.chars += len(node.value)
        if "{{" in node.value:
            self._check_merge_fields(node, path)
        return node.value

    def _check_merge_fields(self, node: Node, path: DataPath) -> None:
        """Report a ``{{ … }}`` that is not a merge field at its line and column."""
        try:
            merge.fields(node.value)
        except merge.MergeFieldError as exc:
            # The value is the scalar after YAML's folding and escapes: find the same "{{"
            # (by its rank among the value's) in the text as written.
            rank = node.value.count("{{", 0, exc.offset)
            written = self.source[node.start_mark.index : node.end_mark.index]
            at = -1
            for _ in range(rank + 1):
                at = written.find("{{", at + 1)
                if at < 0:
                    break
            index = node.start_mark.index + at if at >= 0 else node.start_mark.index
            line, column = _position(self.source, index)
            self.findings.append(
                _Finding(
                    path,
                    exc.message,
                    line,
                    "merge-field",
                    location=Location(self.rel, line, column),
                )
            )

    def _mapping(self, node: MappingNode, path: DataPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = _line(key_node)
            if not isinstance(key_node, ScalarNode):
                self.findings.append(
                    _Finding(path, "a key must be plain text, not a list or mapping", line, "yaml")
                )
                continue
            key = str(key_node.value)
            if key in first_lines:
                # PyYAML keeps the last value without a word; a lost paragraph is worse.
                self.findings.append(
                    _Finding(
                        (*path, key),
                        f"appears twice in the same mapping (first at line {first_lines[key]}); "
                        "remove one of them: YAML would silently keep only the last",
                        line,
                        "yaml.duplicate-key",
                    )
                )
            else:
                first_lines[key] = line
            self.lines[(*path, key)] = line
            out[key] = self._build(value_node, (*path, key))
        return out

    def read_sibling(self, name: str, path: DataPath, line: int, *, counted: bool = True) -> str:
        """Text of a file named in issue.yaml at ``line``, or a finding if it cannot be read.

        The file must be inside the issue folder, exist, be a regular file of at most
        FILE_MAX_BYTES and be UTF-8. ``counted``: its text is issue text (TEXT_MAX_CHARS).
        """
        if self.chars > TEXT_MAX_CHARS:
            return _UNREADABLE  # the issue is refused for its size: reading more is useless
        folder = self.issue_dir.resolve()
        target = (self.issue_dir / name).resolve()
        if target in self._texts:
            return self._count(self._texts[target], path, target, counted)
        shown_folder = self.workspace.relpath(folder) + "/"
        problem = None
        code = "file"
        if not target.is_relative_to(folder):
            problem = f"file '{name}' is outside the issue folder; keep it in {shown_folder}"
        else:
            try:
                raw = _read_limited(target)
            except FileNotFoundError:
                problem = f"file '{name}' not found in {shown_folder}"
            except _NotRegular as exc:
                problem = (
                    f"file '{name}' is not a regular file (it is {exc.what}); save the text "
                    "in an ordinary file"
                )
            except _TooLarge as exc:
                kind = "a Markdown" if name.endswith(".md") else "a text"
                problem = (
                    f"file '{name}' is {_size(exc.size)}; {kind} file may be at most "
                    f"{_size(FILE_MAX_BYTES)} ({_GMAIL} anyway): shorten it"
                )
                code = "size"
            except OSError as exc:
                problem = f"cannot read file '{name}': {exc.strerror}"
        if problem:
            self.findings.append(_Finding(path, problem, line, code, predicate=False))
            return _UNREADABLE
        text, bad_line = _decode(raw)
        if bad_line is not None:
            location = _not_utf8(self.workspace.relpath(target), bad_line, f"{self.rel}:{line}")
            self.findings.append(
                _Finding(path, location.message, line, "encoding", location=location.location)
            )
            return _UNREADABLE
        self._texts[target] = text
        return self._count(text, path, target, counted)

    def _count(self, text: str, path: DataPath, target: Path, counted: bool) -> str:
        self.sources[path] = self.workspace.relpath(target)
        if counted:
            self.chars += len(text)
            try:
                merge.fields(text)
            except merge.MergeFieldError as exc:
                line, column = _position(text, exc.offset)
                where = Location(self.sources[path], line, column)
                self.findings.append(
                    _Finding(path, exc.message, line, "merge-field", location=where)
                )
        return text


def _file_reference(node: MappingNode) -> str | None:
    """The file name if ``node`` is ``{file: name.md}``, else None."""
    if len(node.value) != 1:
        return None
    key, value = node.value[0]
    if (
        isinstance(key, ScalarNode)
        and key.value == "file"
        and isinstance(value, ScalarNode)
        and value.tag != _NULL_TAG
        and str(value.value).endswith(".md")
    ):
        return str(value.value)
    return None


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``index`` in ``text``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


# --- From pydantic errors to findings -------------------------------------------------------


def _schema_findings(
    exc: ValidationError,
    data: dict[str, Any],
    lines: dict[DataPath, int],
    sources: dict[DataPath, str],
    rel: str,
) -> list[_Finding]:
    findings = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        path, meant = _resolve(err["loc"], data, missing=kind == "missing")
        if not meant:
            continue
        if kind == "markdown_depth":
            findings.append(_too_deep(err, path, lines, sources, rel))
        else:
            findings.append(_translate(err, kind, path, _value_at(data, path), data, lines))
    return findings


def _too_deep(
    err: ErrorDetails,
    path: DataPath,
    lines: dict[DataPath, int],
    sources: dict[DataPath, str],
    rel: str,
) -> _Finding:
    """Markdown nested too deeply: at its line in the Markdown file, if it came from one."""
    ctx = err.get("ctx") or {}
    line, limit = _line_for(path, lines), ctx.get("limit")
    hint = "look for stray '>', '-', '*', '_' or '['"
    source = sources.get(path)
    if source is None:
        text = f"{err['msg']} (its line {ctx.get('line')}); {hint}"
        return _Finding(path, text, line, "markdown.depth")
    where = Location(source, ctx.get("line"))
    text = (
        f"quotes, lists, links or emphasis are nested more than {limit} levels deep; "
        f"{hint} (referenced at {rel}:{line})"
    )
    return _Finding(path, text, line, "markdown.depth", location=where)


def _resolve(loc: tuple[str | int, ...], data: Any, *, missing: bool) -> tuple[DataPath, bool]:
    """Turn a pydantic ``loc`` into a data path, dropping union member names.

    Also says whether the error belongs to the union member the writer meant. A list item may
    be text or a term/text mapping, and pydantic reports a failure for each member; only the
    mapping member's errors matter for a mapping, only the text member's for anything else.
    """
    path: list[str | int] = []
    meant = True
    value = data
    for i, part in enumerate(loc):
        if i == 2 and loc[0] == "sections":
            continue  # the section type pydantic adds after the index: (sections, 2, events, ...)
        if isinstance(value, dict) and part in value:
            value = value[part]
            path.append(part)
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
            path.append(part)
        elif missing and i == len(loc) - 1:
            path.append(part)  # the key that should have been there
        else:
            meant = meant and _is_model_member(str(part)) == isinstance(value, dict)
    return tuple(path), meant


def _is_model_member(name: str) -> bool:
    """Union members are named by class ("TermItem") or by validator ("function-after[...]")."""
    return name.isidentifier() and name[0].isupper()


def _value_at(data: Any, path: DataPath) -> Any:
    value = data
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return None
    return value


def _line_for(path: DataPath, lines: dict[DataPath, int]) -> int:
    """The line of ``path``, or of its nearest ancestor (for a key that is missing)."""
    while path not in lines:
        path = path[:-1]
    return lines[path]


def _translate(
    err: ErrorDetails,
    kind: str,
    path: DataPath,
    value: Any,
    data: dict[str, Any],
    lines: dict[DataPath, int],
) -> _Finding:
    """Word one pydantic error for a newsletter writer."""
    line = _line_for(path, lines)
    ctx = err.get("ctx") or {}
    got = _describe(err.get("input"))

    def statement(text: str) -> _Finding:
        return _Finding(path, text, line, predicate=False)

    def predicate(text: str) -> _Finding:
        return _Finding(path, text, line)

    if kind == "missing":
        return predicate("is required")
    if kind == "extra_forbidden":
        key = str(path[-1])
        return _Finding(
            path[:-1], _unknown_key(key, path[:-1], data), line, "schema.unknown-key", False
        )
    if kind == "union_tag_invalid":
        return _Finding(
            path,
            f"unknown section type {value.get('type')!r} "
            f"(expected one of: {', '.join(SECTION_TYPES)})",
            _line_for((*path, "type"), lines),
            predicate=False,
        )
    if kind == "union_tag_not_found":
        return statement(f"'type' is required (one of: {', '.join(SECTION_TYPES)})")
    if kind.startswith("string_type"):
        return statement(f"expected text, got {got}")
    if kind.startswith("int_"):
        return statement(f"expected a whole number, got {got}")
    if kind.startswith("bool_"):
        return statement(f"expected true or false, got {got}")
    if kind.startswith("date_"):
        return statement(f"expected a date YYYY-MM-DD, got {got}")
    if kind.startswith("url_"):
        return predicate(
            f"is not a valid URL: got {got}, expected an absolute address starting with https://"
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return statement(f"expected a mapping (indented 'key: value' lines), got {got}")
    if kind == "list_type":
        return statement(f"expected a list (lines starting with '- '), got {got}")
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return predicate(f"needs at least {n} item{'s' if n != 1 else ''}")
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()), "?")
        return predicate(f"must be {_BOUNDS[kind]} {limit}, got {err.get('input')}")
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        help_text = _PATTERN_HELP.get(pattern, f"does not have the expected form {pattern}")
        return predicate(f"{help_text}, got {got}")
    if kind == "value_error":
        text = str(ctx.get("error", err["msg"]))
        # Cross-field checks name their key first ("'end' is before 'start'"): point at it.
        named = re.match(r"'(\w+)'", text)
        if named and (*path, named.group(1)) in lines:
            line = lines[(*path, named.group(1))]
        return _Finding(path, text, line)
    if kind == "literal_error":
        return statement(f"expected {ctx.get('expected', 'another value')}, got {got}")
    message = str(err["msg"])
    return statement(message[:1].lower() + message[1:])


def _unknown_key(key: str, parent: DataPath, data: dict[str, Any]) -> str:
    """'unknown key' with the closest allowed key, or the list of allowed keys."""
    allowed = _fields_at(parent, data)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    if allowed:
        return f"unknown key {key!r} (allowed here: {', '.join(allowed)})"
    return f"unknown key {key!r}"


def _fields_at(path: DataPath, data: dict[str, Any]) -> list[str]:
    """Field names of the model that validates the mapping at ``path`` (for suggestions)."""
    candidates: list[type[BaseModel]] = [Issue]
    value: Any = data
    for part in path:
        if isinstance(part, str):
            model = _pick_model(candidates, value)
            if model is None or part not in model.model_fields:
                return []
            candidates = list(_models_in(model.model_fields[part].annotation))
        value = _value_at(value, (part,))
    model = _pick_model(candidates, value)
    return list(model.model_fields) if model else []


def _models_in(annotation: Any) -> typing.Iterator[type[BaseModel]]:
    """Every model class inside a type (through lists, unions, Optional and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _pick_model(candidates: list[type[BaseModel]], value: Any) -> type[BaseModel] | None:
    """The candidate validating ``value``: the only one, or the section of its ``type``."""
    if len(candidates) == 1:
        return candidates[0]
    if isinstance(value, dict):
        for model in candidates:
            field = model.model_fields.get("type")
            if field and value.get("type") in typing.get_args(field.annotation):
                return model
    return None


# --- Wording --------------------------------------------------------------------------------


def _describe_path(path: DataPath, data: Any) -> tuple[str, str]:
    """Split a path into where it is and the field, e.g. ("section 3 (events), item 2", "url")."""
    where: list[str] = []
    rest = list(path)
    if len(rest) >= 2 and rest[0] == "sections" and isinstance(rest[1], int):
        section = _value_at(data, tuple(rest[:2]))
        label = f"section {rest[1] + 1}"
        if isinstance(section, dict) and isinstance(section.get("type"), str):
            label += f" ({section['type']})"
        where.append(label)
        rest = rest[2:]
        if len(rest) >= 2 and rest[0] == "items" and isinstance(rest[1], int):
            where.append(f"item {rest[1] + 1}")
            rest = rest[2:]
    field = ".".join(f"[{p + 1}]" if isinstance(p, int) else p for p in rest).replace(".[", "[")
    return ", ".join(where), field


def _describe(value: Any) -> str:
    """A value as a writer would recognise it in their YAML."""
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(_short(value))
    if isinstance(value, dict):
        if list(value) == ["file"]:
            return "a mapping ({file: ...} must name a .md file)"
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unique(problems: typing.Iterable[Problem]) -> list[Problem]:
    out: list[Problem] = []
    for p in problems:
        if p not in out:
            out.append(p)
    return out


def _line_of(problem: Problem) -> int:
    return (problem.location.line or 0) if problem.location else 0
