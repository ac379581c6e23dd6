"""Exporting a list as CSV that imports back unchanged.

Columns: ``email``, ``name``, ``language``, then every attribute (sorted by name). Statuses
are not exported as a column (the importer would take it for an attribute); choose which
members to export instead. Cells that a spreadsheet would evaluate as a formula (starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) get a leading ``'``, which the
importer removes again.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any, TextIO

from sqlalchemy.engine import Connection

from bulletin.store.csvfile import neutralise
from bulletin.store.subscribers import members

BASE_COLUMNS = ("email", "name", "language")


def _cell(value: Any) -> str:
    return neutralise(value if isinstance(value, str) else str(value))


def export_csv(
    conn: Connection,
    list_slug: str,
    out: TextIO,
    *,
    statuses: Sequence[str] = ("subscribed",),
) -> int:
    """Write the list's members in ``statuses`` (or ``all``) to ``out``; return how many.

    Call inside one transaction: the attribute columns are collected in a first pass over the
    members and the rows written in a second, and both must see the same snapshot.
    """
    wanted = tuple(statuses)
    keys: set[str] = set()
    for sub in members(conn, list_slug, wanted):
        keys.update(sub.attributes)
    attribute_keys = sorted(keys)
    writer = csv.writer(out)
    writer.writerow([*BASE_COLUMNS, *attribute_keys])
    written = 0
    for sub in members(conn, list_slug, wanted):
        row = [sub.email, sub.name, sub.language]
        row += [sub.attributes.get(k, "") for k in attribute_keys]
        writer.writerow([_cell(v) for v in row])
        written += 1
    return written
