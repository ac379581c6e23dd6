"""Merge fields in content: ``{{ first_name }}`` in Markdown, subject and preheader.

Content is never evaluated as a template (an issue folder may come from anyone, and Jinja in
content would give it the templates' power). Instead bulletin reads exactly this small
language in every text of an issue:

* ``{{ first_name }}``, ``{{ name }}``, ``{{ email }}``, ``{{ attr.city }}`` (any subscriber
  attribute, by its key as imports write it: lowercase, ``_`` between words);
* each with an optional fallback for readers without the value:
  ``{{ first_name | default("cititorule") }}`` (single or double quotes);
* ``{{ "{{" }}`` for a literal ``{{`` (the one escape; ``}}`` alone needs none).

Any other ``{{ … }}`` is an error, located by the loader at file:line:col. What a field is
worth for one reader is decided in one place, :mod:`bulletin.render.values` (``first_name``
is the ``first_name`` attribute when set, else the first word of the name); the renderer
turns each field into a per-recipient slot of :mod:`bulletin.render.slots`, so the HTML,
the plain text and the subject are filled alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from bulletin.store import normalise

FIELDS = ("first_name", "name", "email")
"""The subscriber fields content may name (attributes are ``attr.<key>``)."""

LITERAL_OPEN = '{{ "{{" }}'
"""How content writes a literal ``{{``."""

_OPEN = "{{"
_EXPR = re.compile(
    r"""\{\{\s*
    (?:
      (?P<literal>"\{\{"|'\{\{')
    |
      (?P<field>[^\s|}]+)
      (?:\s*\|\s*default\(\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')\s*\))?
    )
    \s*\}\}""",
    re.VERBOSE,
)
_ATTR = re.compile(r"attr\.(\w+)")
_SUBSCRIBER_GET = re.compile(
    r"""subscriber\.get\(\s*['"](\w+)['"]\s*(?:,\s*['"]([^'"]*)['"]\s*)?\)"""
)


@dataclass(frozen=True)
class Field:
    """One merge field: the slot it fills (``first_name``, ``attr.city``) and its fallback."""

    name: str
    fallback: str = ""


Part = str | Field

M = TypeVar("M", bound=BaseModel)


class MergeFieldError(ValueError):
    """A ``{{ … }}`` that is not a merge field, at ``offset`` in the text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def parse(text: str) -> list[Part]:
    """Split ``text`` into literal text and merge fields.

    Raises :class:`MergeFieldError` at the first ``{{`` that is not a merge field.
    """
    parts: list[Part] = []
    literal: list[str] = []
    pos = 0
    while True:
        start = text.find(_OPEN, pos)
        if start < 0:
            literal.append(text[pos:])
            break
        literal.append(text[pos:start])
        m = _EXPR.match(text, start)
        if m is None:
            raise MergeFieldError(_unreadable(text, start), start)
        pos = m.end()
        if m.group("literal"):
            literal.append(_OPEN)
            continue
        field = _field(m.group("field"), start, m.group(0))
        fallback = m.group("dq") if m.group("dq") is not None else m.group("sq") or ""
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(Field(field, fallback))
    rest = "".join(literal)
    if rest or not parts:
        parts.append(rest)
    return [p for p in parts if p != ""] or [""]


def fields(text: str) -> list[Field]:
    """The merge fields of ``text`` (raises :class:`MergeFieldError` as :func:`parse`)."""
    if _OPEN not in text:
        return []
    return [p for p in parse(text) if isinstance(p, Field)]


def substitute(text: str, slot: Callable[[Field], str]) -> str:
    """``text`` with each merge field replaced by ``slot(field)`` and ``{{ "{{" }}`` by ``{{``."""
    if _OPEN not in text:
        return text
    return "".join(p if isinstance(p, str) else slot(p) for p in parse(text))


def substitute_all(model: M, slot: Callable[[Field], str]) -> M:
    """A copy of ``model`` (an issue, a section...) with :func:`substitute` applied to every
    text it holds, however deep (URLs are not text and stay as written)."""
    update: dict[str, Any] = {}
    for key in type(model).model_fields:
        value = getattr(model, key)
        new = _substitute_value(value, slot)
        if new is not value:
            update[key] = new
    return model.model_copy(update=update) if update else model


def _substitute_value(value: Any, slot: Callable[[Field], str]) -> Any:
    if isinstance(value, str):
        new = substitute(value, slot)
        return value if new == value else new
    if isinstance(value, BaseModel):
        return substitute_all(value, slot)
    if isinstance(value, list):
        items = [_substitute_value(v, slot) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _field(written: str, start: int, whole: str) -> str:
    if written in FIELDS:
        return written
    attr = _ATTR.fullmatch(written)
    if attr:
        key = attr.group(1)
        cleaned = normalise.attribute_key(key)
        if cleaned != key:
            raise MergeFieldError(
                f"attribute keys are lowercase words joined by '_': write "
                f"'{{{{ attr.{cleaned} }}}}', not '{whole}'",
                start,
            )
        return written
    raise MergeFieldError(_unknown(written, whole), start)


def _unknown(written: str, whole: str) -> str:
    known = ", ".join(f"{{{{ {f} }}}}" for f in FIELDS) + ", {{ attr.KEY }}"
    return f"'{whole}' is not a merge field; content can use {known}{_suggestion(whole)}"


def _unreadable(text: str, start: int) -> str:
    end = text.find("}}", start)
    shown = text[start : end + 2] if 0 <= end < start + 80 else text[start : start + 40] + "…"
    shown = shown.replace("\n", " ")
    return (
        f"'{shown}' is not a merge field (content is not a template); write "
        f'{{{{ first_name }}}} or {{{{ first_name | default("reader") }}}}, '
        f"or {LITERAL_OPEN} for a literal '{{{{'{_suggestion(shown)}"
    )


def _suggestion(written: str) -> str:
    """A template-style call (``subscriber.get('first_name', 'member')``) in content's words."""
    m = _SUBSCRIBER_GET.search(written)
    if m is None:
        return ""
    name = m.group(1)
    field = name if name in FIELDS else f"attr.{name}"
    fallback = f' | default("{m.group(2)}")' if m.group(2) else ""
    return f"; did you mean '{{{{ {field}{fallback} }}}}'?"
