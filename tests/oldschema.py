"""Rows written into a store at the first schema, as bulletin 1 wrote them.

Upgrade tests need data in an old schema. The store's functions always speak the current
schema (they select columns later migrations add), so the old rows are written here in
plain SQL against the first schema's frozen columns -- like the migrations themselves,
this never changes.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bulletin.store.schema import UTCDateTime, utcnow


def add_list(conn: Connection, slug: str, name: str | None = None) -> int:
    """A list at schema 1; its id."""
    now = sa.bindparam("now", utcnow(), type_=UTCDateTime)
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO lists (slug, name, created_at)"
                " VALUES (:slug, :name, :now) RETURNING id"
            ).bindparams(now),
            {"slug": slug, "name": name or slug},
        ).scalar_one()
    )


def add_subscribers(conn: Connection, list_id: int, people: Iterable[tuple[str, str]]) -> list[int]:
    """(address as stored, name) subscribed to ``list_id`` at schema 1; their ids."""
    now = sa.bindparam("now", utcnow(), type_=UTCDateTime)
    ids = []
    for email, name in people:
        sid = conn.execute(
            sa.text(
                "INSERT INTO subscribers (email, email_key, ascii_email, smtputf8, name, language,"
                " attributes, status, source, created_at, updated_at) VALUES (:email, :key,"
                " :ascii, :utf8, :name, '', '{}', 'active', 'cli', :now, :now) RETURNING id"
            ).bindparams(now),
            {
                "email": email,
                "key": email.lower(),
                "ascii": email if email.isascii() else None,
                "utf8": not email.split("@")[0].isascii(),
                "name": name,
            },
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO subscriptions (subscriber_id, list_id, status, source, created_at,"
                " updated_at) VALUES (:sid, :lid, 'subscribed', 'cli', :now, :now)"
            ).bindparams(now),
            {"sid": sid, "lid": list_id},
        )
        ids.append(int(sid))
    return ids
