"""Receipts of provider webhooks: each event and each signed request is taken once.

A provider retries a delivery it thinks failed, and anybody who saw a request could send it
again. :func:`claim` inserts ``(provider, key)`` with ``ON CONFLICT DO NOTHING`` inside the
caller's transaction and says whether this call inserted it: on PostgreSQL a second
transaction inserting the same key waits for the first and then finds the row, on SQLite the
write lock serialises them, so of two processes given the same delivery at once exactly one
applies it. A receipt is kept until ``expires_at``; :func:`purge_expired` deletes the ones past it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from bulletin.store.schema import webhook_receipts

KEY_LENGTH = 200
"""Longest key stored (the column's size); callers hash anything longer."""


def claim(
    conn: Connection, provider: str, key: str, *, expires_at: datetime, now: datetime
) -> bool:
    """Record ``key`` for ``provider``; False when it was recorded before (a repeat)."""
    if len(key) > KEY_LENGTH:
        raise ValueError(f"receipt key longer than {KEY_LENGTH} characters")
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        webhook_receipts
    )
    result = conn.execute(
        insert.values(provider=provider, key=key, expires_at=expires_at, received_at=now)
        .on_conflict_do_nothing()
        .returning(webhook_receipts.c.key)
    )
    return result.first() is not None


def purge_expired(conn: Connection, now: datetime) -> int:
    """Delete the receipts whose time is over; how many went."""
    result = conn.execute(webhook_receipts.delete().where(webhook_receipts.c.expires_at < now))
    return int(result.rowcount or 0)
