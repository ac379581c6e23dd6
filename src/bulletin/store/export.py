"""Exporting a list as CSV that imports back unchanged.

Columns: ``email``, ``name``, ``language``, then every attribute (sorted by name). Statuses
are not exported as a column (the importer would take it for an attribute); choose which
members to export instead. Cells that a spreadsheet would evaluate as a formula (starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) get a leading ``'``, which the
importer removes again.

With ``consent``, four columns follow the base ones: ``consent_source``,
``consent_given_at``, ``consent_confirmed_at`` (ISO 8601, UTC) and ``consent_version``, from
the member's latest consent record for the list (empty when there is none). The importer
reads the two times back into the consent records of another workspace and leaves the
other two out, so such an export still imports back unchanged.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bulletin.store.csvfile import neutralise
from bulletin.store.schema import consents
from bulletin.store.subscribers import get_list, members

BASE_COLUMNS = ("email", "name", "language")
CONSENT_COLUMNS = (
    "consent_source",
    "consent_given_at",
    "consent_confirmed_at",
    "consent_version",
)


def _cell(value: Any) -> str:
    return neutralise(value if isinstance(value, str) else str(value))


def export_csv(
    conn: Connection,
    list_slug: str,
    out: TextIO,
    *,
    statuses: Sequence[str] = ("subscribed",),
    consent: bool = False,
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
    latest = _latest_consents(conn, list_slug) if consent else {}
    writer = csv.writer(out)
    writer.writerow([*BASE_COLUMNS, *(CONSENT_COLUMNS if consent else ()), *attribute_keys])
    written = 0
    for sub in members(conn, list_slug, wanted):
        row = [sub.email, sub.name, sub.language]
        if consent:
            row += latest.get(sub.id, ["", "", "", ""])
        row += [sub.attributes.get(k, "") for k in attribute_keys]
        writer.writerow([_cell(v) for v in row])
        written += 1
    return written


def _latest_consents(conn: Connection, list_slug: str) -> dict[int, list[str]]:
    """Each member's latest consent record for the list, as the export's four cells."""
    list_id = get_list(conn, list_slug).id
    out: dict[int, list[str]] = {}
    rows = conn.execute(
        sa.select(
            consents.c.subscriber_id,
            consents.c.source,
            consents.c.given_at,
            consents.c.confirmed_at,
            consents.c.consent_version,
        )
        .where(consents.c.list_id == list_id)
        .order_by(consents.c.id)
    )
    for r in rows:
        out[r.subscriber_id] = [
            r.source,
            r.given_at.isoformat() if r.given_at else "",
            r.confirmed_at.isoformat() if r.confirmed_at else "",
            str(r.consent_version),
        ]
    return out
