"""Numbered schema migrations, applied in order by :func:`bulletin.store.db.migrate`.

Adding one is a small, obvious step:

1. write ``def _m2_something(conn: Connection) -> None`` below, with its own frozen table
   definitions (never import the current ones from :mod:`bulletin.store.schema`, which keep
   changing; a migration must build the same thing forever; a foreign key needs a stub of
   the referenced table, e.g. ``sa.Table("subscribers", md, sa.Column("id", sa.Integer,
   primary_key=True))``, in the migration's own MetaData);
2. append ``Migration(2, "what it adds", _m2_something)`` to :data:`MIGRATIONS`;
3. update :mod:`bulletin.store.schema` to match (a test compares them) and add an upgrade test.

Each migration runs inside one transaction together with its ``schema_version`` row, so a
failure leaves the database at the previous version. Never edit a released migration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bulletin.store.schema import UTCDateTime


@dataclass(frozen=True)
class Migration:
    """One schema step: its version number, a one-line description and the function."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _m1_initial(conn: Connection) -> None:
    """Lists, subscribers, subscriptions and the events history."""
    md = sa.MetaData()
    sa.Table(
        "lists",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    sa.Table(
        "subscribers",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("email_key", sa.Text, nullable=False, unique=True),
        sa.Column("ascii_email", sa.Text, nullable=True),
        sa.Column("smtputf8", sa.Boolean, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    sa.Table(
        "subscriptions",
        md,
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Index("ix_subscriptions_list_status", "list_id", "status", "subscriber_id"),
        sqlite_with_rowid=False,
    )
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Index("ix_events_subscriber", "subscriber_id", "id"),
    )
    md.create_all(conn)


def _m2_ledger(conn: Connection) -> None:
    """The delivery ledger: one ``sends`` row per send, one ``deliveries`` row per recipient."""
    md = sa.MetaData()
    sa.Table("subscribers", md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "sends",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issue_slug", sa.String(200), nullable=False),
        sa.Column("lists", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("in_doubt", sa.Integer, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("active_seconds", sa.Float, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("retry_at", UTCDateTime, nullable=True),
        sa.UniqueConstraint("issue_slug", "lists", name="uq_sends_issue_lists"),
    )
    sa.Table(
        "deliveries",
        md,
        sa.Column(
            "send_id",
            sa.Integer,
            sa.ForeignKey("sends.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("list_id", sa.Integer, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_attempt_at", UTCDateTime, nullable=True),
        sa.Column("next_attempt_at", UTCDateTime, nullable=True),
        sa.Column("last_code", sa.Integer, nullable=True),
        sa.Column("last_reply", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Index("ix_deliveries_state", "send_id", "state", "next_attempt_at"),
        sa.Index("ix_deliveries_subscriber", "subscriber_id"),
        sqlite_with_rowid=False,
    )
    md.create_all(conn)


def _m3_senders(conn: Connection) -> None:
    """Several senders on one send: leases on ledger rows, a workers table, a shared rate."""
    md = sa.MetaData()
    sa.Table("sends", md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "workers",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "send_id", sa.Integer, sa.ForeignKey("sends.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("lease_seconds", sa.Float, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("stopped_at", UTCDateTime, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("sent", sa.Integer, nullable=False),
        sa.Column("rate", sa.Float, nullable=False),
        sa.Index("ix_workers_send", "send_id", "stopped_at"),
    )
    sa.Table(
        "send_slots",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "send_id", sa.Integer, sa.ForeignKey("sends.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("last_slot", UTCDateTime, nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Index("ix_send_slots_send", "send_id", "last_slot"),
    )
    md.create_all(conn)
    # Plain ALTER TABLE: both engines add a nullable column, or one with a constant default,
    # without rewriting the table, however many rows the ledger holds.
    timestamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "VARCHAR(26)"
    for statement in (
        "ALTER TABLE sends ADD COLUMN rate FLOAT DEFAULT 0 NOT NULL",
        "ALTER TABLE sends ADD COLUMN rate_hour INTEGER DEFAULT 0 NOT NULL",
        f"ALTER TABLE sends ADD COLUMN slot_next {timestamp}",
        "ALTER TABLE deliveries ADD COLUMN worker VARCHAR(32)",
        f"ALTER TABLE deliveries ADD COLUMN lease_until {timestamp}",
        # Pending rows in subscriber order straight from the index on PostgreSQL too, whose
        # index entries do not end with the primary key as SQLite's do.
        "DROP INDEX ix_deliveries_state",
        "CREATE INDEX ix_deliveries_state "
        "ON deliveries (send_id, state, next_attempt_at, subscriber_id)",
    ):
        conn.exec_driver_sql(statement)


def _m4_lifecycle(conn: Connection) -> None:
    """Subscriber lifecycle: list settings, consent records, pending sign-ups, blocked domains."""
    md = sa.MetaData()
    sa.Table("lists", md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("subscribers", md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "consents",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("consent_text", sa.Text, nullable=False),
        sa.Column("consent_version", sa.Integer, nullable=False),
        sa.Column("given_at", UTCDateTime, nullable=True),
        sa.Column("confirmed_at", UTCDateTime, nullable=True),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Index("ix_consents_subscriber", "subscriber_id", "list_id", "id"),
    )
    sa.Table(
        "signups",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("email_key", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("consent_text", sa.Text, nullable=False),
        sa.Column("consent_version", sa.Integer, nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("mailed_at", UTCDateTime, nullable=True),
        sa.UniqueConstraint("email_key", "list_id", name="uq_signups_email_list"),
        sa.Index("ix_signups_created", "created_at"),
    )
    sa.Table(
        "blocked_domains",
        md,
        sa.Column("domain", sa.String(253), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    md.create_all(conn)
    false = "false" if conn.dialect.name == "postgresql" else "0"
    for statement in (
        "ALTER TABLE lists ADD COLUMN description TEXT DEFAULT '' NOT NULL",
        f"ALTER TABLE lists ADD COLUMN public BOOLEAN DEFAULT {false} NOT NULL",
        "ALTER TABLE lists ADD COLUMN opt_in VARCHAR(8) DEFAULT 'double' NOT NULL",
        "ALTER TABLE lists ADD COLUMN language VARCHAR(35) DEFAULT '' NOT NULL",
        "ALTER TABLE lists ADD COLUMN consent_text TEXT DEFAULT '' NOT NULL",
        "ALTER TABLE lists ADD COLUMN consent_version INTEGER DEFAULT 1 NOT NULL",
    ):
        conn.exec_driver_sql(statement)


def _m5_webhooks(conn: Connection) -> None:
    """Provider webhooks: what was received, so a retried or replayed delivery counts once."""
    md = sa.MetaData()
    sa.Table(
        "webhook_receipts",
        md,
        sa.Column("provider", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Index("ix_webhook_receipts_expires", "expires_at"),
    )
    md.create_all(conn)


def _m6_inbound(conn: Connection) -> None:
    """Fetched inbound messages already processed (bounces and unsubscribes over IMAP)."""
    md = sa.MetaData()
    sa.Table(
        "inbound_messages",
        md,
        sa.Column("intake", sa.String(16), primary_key=True),
        sa.Column("message_key", sa.String(255), primary_key=True),
        sa.Column("processed_at", UTCDateTime, nullable=False),
    )
    md.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "lists, subscribers, subscriptions, events", _m1_initial),
    Migration(2, "delivery ledger: sends, deliveries", _m2_ledger),
    Migration(3, "several senders: leases, workers, a shared rate", _m3_senders),
    Migration(4, "subscriber lifecycle: list settings, consents, sign-ups", _m4_lifecycle),
    Migration(5, "provider webhooks: receipts of events and request nonces", _m5_webhooks),
    Migration(6, "fetched inbound messages already processed", _m6_inbound),
)
"""Every migration in order; versions are 1, 2, 3... without gaps."""
