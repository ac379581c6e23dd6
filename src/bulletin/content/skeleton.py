"""``bulletin new``: start an issue folder with a commented skeleton of every section type.

The skeleton is written from the schema (:mod:`bulletin.content.model`): each section class
owns its fields and their descriptions, so a new field or section type shows up here without
an edit. What the writer must replace carries :data:`PLACEHOLDER`; the file loads and renders
as it is (so the preview works at once), and ``bulletin check`` reports every placeholder
left, so ``check --strict`` (and a careful send) fails until all are filled.

Decisions:

* the number is the highest ``number:`` among the issues plus one (issues without one do not
  count), the date today unless given, ``language:`` written only when asked for (the
  workspace's ``newsletter.language`` applies otherwise);
* ``--from PREVIOUS`` keeps the previous issue's shape: its template, sender name and
  language, and each section's type, id and title (recurring headings such as "Evenimente"
  stay); every other text, link, image and list becomes one placeholder item, since last
  month's news is not this month's. Not kept: the header ``title`` (it usually holds the
  old number) and ``checks.allow_http`` (it names hosts of links that are gone).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, HttpUrl
from pydantic.fields import FieldInfo

from bulletin.content.loader import ISSUE_FILE, load_issue
from bulletin.content.model import SECTION_CLASSES, Issue, image_source
from bulletin.errors import BulletinError
from bulletin.store import normalise
from bulletin.workspace import Workspace

PLACEHOLDER = "[EDIT]"
"""Marks what ``bulletin new`` left for the writer; ``bulletin check`` reports each one."""

PLACEHOLDER_URL = "https://example.org/EDIT"
"""A link or image address to replace (the check reports it like :data:`PLACEHOLDER`)."""

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_NUMBER = re.compile(r"^number:\s*['\"]?([0-9]+)", re.M)
_INDENT = "  "


@dataclass(frozen=True)
class NewIssue:
    """What ``bulletin new`` created."""

    slug: str
    path: Path
    number: int
    date: dt.date
    based_on: str | None


def next_number(workspace: Workspace) -> int:
    """The highest ``number:`` written in any issue.yaml, plus one (1 for the first)."""
    numbers = [0]
    if workspace.issues_dir.is_dir():
        for path in workspace.issues_dir.glob(f"*/{ISSUE_FILE}"):
            try:
                # Read as text, not loaded: a half-written issue still holds its number.
                m = _NUMBER.search(path.read_text(encoding="utf-8", errors="replace")[:65536])
            except OSError:
                continue
            if m:
                numbers.append(int(m.group(1)))
    return max(numbers) + 1


def new_issue(
    workspace: Workspace,
    slug: str,
    *,
    subject: str | None = None,
    language: str | None = None,
    date: dt.date | None = None,
    previous: str | None = None,
) -> NewIssue:
    """Create ``issues/SLUG/issue.yaml``; refuse a bad slug or a folder already there."""
    if not SLUG.match(slug):
        raise BulletinError(
            f"'{slug}' cannot name an issue: use lowercase letters, digits and '-'.",
            hint="For example: bulletin new 2014-11-clusterpolisee-04",
        )
    folder = workspace.issues_dir / slug
    if folder.exists():
        raise BulletinError(
            f"{workspace.relpath(folder)} already exists; an issue is never overwritten.",
            hint="Choose another SLUG, or edit the issue that is there.",
        )
    if language is not None:
        try:
            language = normalise.clean_language(language) or None
        except normalise.InvalidField as exc:
            raise BulletinError(f"--language {language!r}: {exc.reason}.", hint=exc.hint) from None
    base = load_issue(workspace, workspace.issue_dir(previous)).issue if previous else None
    number = next_number(workspace)
    day = date or dt.date.today()
    text = skeleton(
        number=number,
        date=day,
        subject=subject,
        language=language,
        previous=base,
        newsletter=workspace.config.newsletter.name,
        check_command=f"bulletin check --strict {slug}",
    )
    folder.mkdir(parents=True)
    path = folder / ISSUE_FILE
    path.write_text(text, encoding="utf-8")
    return NewIssue(slug, path, number, day, previous)


def skeleton(
    *,
    number: int,
    date: dt.date,
    subject: str | None,
    language: str | None,
    previous: Issue | None,
    newsletter: str,
    check_command: str,
) -> str:
    """The text of a new issue.yaml."""
    lines = [
        f"# Issue {number} of {newsletter}. Replace every {PLACEHOLDER} and {PLACEHOLDER_URL};",
        f"# `{check_command}` lists those left. Merge fields such as",
        '# {{ first_name | default("reader") }} work in texts, subject and preheader.',
        f"subject: {_scalar(subject or f'{PLACEHOLDER} Subject of issue {number}')}",
        f"preheader: {_scalar(f'{PLACEHOLDER} One line shown after the subject in inboxes')}",
        f"number: {number}",
        f"date: {date.isoformat()}",
    ]
    kept: dict[str, Any] = {}
    if previous is not None:
        kept = previous.model_dump(
            include={"language", "template", "from_name"}, exclude_defaults=True
        )
    if language:
        kept["language"] = language
    for key in ("language", "template", "title", "from_name"):
        if key in kept:
            lines.append(f"{key}: {_scalar(kept[key])}")
    lines.append("sections:")
    if previous is not None:
        for section in previous.sections:
            keep = section.model_dump(include={"type", "id", "title"}, exclude_none=True)
            lines += _model_lines(
                type(section), _INDENT, keep=keep, comment=False, first="- ", day=date
            )
    else:
        text_section = next(c for c in SECTION_CLASSES if _type_of(c) == "text")
        lines += _model_lines(
            text_section, _INDENT, keep={"type": "text"}, comment=False, first="- ", day=date
        )
    lines += [
        "",
        "  # Every section type, with its fields. Copy one above this line, remove the '# '",
        "  # and fill it in; fields marked (optional) may be left out.",
    ]
    for cls in SECTION_CLASSES:
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines.append("  #")
        lines.append(f"  # {_type_of(cls)}: {doc}")
        body = _model_lines(
            cls, _INDENT, keep={"type": _type_of(cls)}, comment=True, first="- ", day=date
        )
        lines += [f"  # {line[2:]}" if line.startswith("  ") else f"# {line}" for line in body]
    return "\n".join(lines) + "\n"


def _type_of(cls: type[BaseModel]) -> str:
    return str(typing.get_args(cls.model_fields["type"].annotation)[0])


def _model_lines(
    model: type[BaseModel],
    indent: str,
    *,
    keep: dict[str, Any],
    comment: bool,
    first: str = "",
    day: dt.date,
) -> list[str]:
    """A mapping for ``model``: ``keep``'s values, then a placeholder for each field.

    Live (``comment`` false): only the required fields, so the issue stays short and valid.
    Commented: every field, its description after it, ``(optional)`` where it may be left.
    """
    lines: list[str] = []
    lead = first
    # "type" first: it says what the rest of the mapping is.
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] != "type")
    for name, info in fields:
        plain = name in ("type", "id")  # words YAML reads as they are
        if name in keep:
            value = str(keep[name]) if plain else _scalar(keep[name])
        elif plain or (not comment and not info.is_required()):
            continue
        else:
            value = None
        note = _note(info) if comment and not plain else ""
        prefix = indent + (lead or " " * len(first))
        lead = ""
        if value is not None:
            lines.append(f"{prefix}{name}: {value}{note}")
            continue
        inner = indent + " " * len(first)
        lines += _field_lines(prefix, name, info, inner, comment, note, day)
    return lines


def _field_lines(
    prefix: str, name: str, info: FieldInfo, inner: str, comment: bool, note: str, day: dt.date
) -> list[str]:
    kind, nested = _kind(info)
    description = info.description or name
    if nested is not None:
        first = "- " if kind == "list" else ""
        sub = _model_lines(nested, inner + _INDENT, keep={}, comment=comment, first=first, day=day)
        return [f"{prefix}{name}:{note}", *sub]
    if kind == "list":
        return [f"{prefix}{name}:{note}", f"{inner}{_INDENT}- {_scalar(_text(description))}"]
    if kind == "markdown":
        return [f"{prefix}{name}: |{note}", f"{inner}{_INDENT}{_text(description)}"]
    return [f"{prefix}{name}: {_example(kind, description, day)}{note}"]


def _kind(info: FieldInfo) -> tuple[str, type[BaseModel] | None]:
    """What a field holds: ``list``/``model`` (with its model), ``markdown``, ``url``,
    ``date``, ``bool``, ``int`` or ``text``."""
    annotation = _unwrap(info.annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        item = _unwrap(item)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "list", item
        return "list", None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    # An image's address is a file or a URL; the skeleton proposes a URL so that the
    # uncommented example renders (a missing file would stop it) and the check flags it.
    if annotation is HttpUrl or any(
        getattr(m, "func", None) is image_source for m in info.metadata
    ):
        return "url", None
    if annotation is dt.date or _all_days(annotation):
        return "date", None
    if annotation is bool:
        return "bool", None
    if annotation is int:
        return "int", None
    if "Markdown" in (info.description or ""):
        return "markdown", None
    return "text", None


def _all_days(annotation: Any) -> bool:
    """A union of day types (an event's day, or day and time)."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return False
    args = typing.get_args(annotation)
    return all(isinstance(a, type) and issubclass(a, dt.date) for a in args)


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _note(info: FieldInfo) -> str:
    optional = "" if info.is_required() else " (optional)"
    return f"  # {info.description or ''}{optional}".rstrip()


def _text(description: str) -> str:
    return f"{PLACEHOLDER} {description.rstrip('.')}"


def _example(kind: str, description: str, day: dt.date) -> str:
    if kind == "url":
        return PLACEHOLDER_URL
    if kind == "date":
        return day.isoformat()
    if kind == "bool":
        return "false"
    if kind == "int":
        return "600"
    return _scalar(_text(description))


def _scalar(value: Any) -> str:
    """A YAML scalar: JSON's double-quoted string is valid YAML and survives any text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)
