"""The current database schema, as SQLAlchemy Core tables used by queries.

These definitions describe the schema *after* every migration in
:mod:`bulletin.store.migrations` has run; the migrations (not ``create_all``) build it.
A test compares the two, so a new migration must update this module as well.

Statuses are plain strings checked in Python rather than by CHECK constraints: SQLite cannot
alter a constraint without rebuilding the table, and later issues add statuses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

GLOBAL_STATUSES = ("active", "unsubscribed", "bounced", "complained", "blocked")
"""A subscriber's global status. Anything but ``active`` suppresses every list.

``unsubscribed`` is set by ``unsubscribe --all`` (a request to receive nothing at all), so an
import into a new list does not re-subscribe the address either.
"""

SUPPRESSED_STATUSES = ("unsubscribed", "bounced", "complained", "blocked")
"""Global statuses that stop all mail."""

LIST_STATUSES = ("subscribed", "unsubscribed")
"""A subscription's status on one list."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column stores)."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and read back timezone-aware.

    PostgreSQL stores ``timestamptz``. SQLite has no date type: the value is text in
    SQLAlchemy's usual ``YYYY-MM-DD HH:MM:SS.ffffff`` form (UTC), which sorts correctly. The
    last converted value is remembered because bulk writes stamp thousands of rows with the
    same time, and formatting it each time was a measurable share of an import.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True
    _memo: tuple[datetime, Any] | None = None

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(26))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        memo = self._memo
        if memo is not None and memo[0] is value:
            return memo[1]
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = value.astimezone(UTC)
        out: Any = utc
        if dialect.name == "sqlite":
            out = utc.strftime("%Y-%m-%d %H:%M:%S.%f")
        self._memo = (value, out)
        return out

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)
"""One row per applied migration; the highest version is the schema's version."""

lists = sa.Table(
    "lists",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("slug", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    # Public lists have a signup form and appear on the preferences page.
    sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
    # 'double': a sign-up is subscribed when the person confirms by mail; 'single': at once.
    sa.Column("opt_in", sa.String(8), nullable=False, server_default="double"),
    # The language of the list's public pages and mails ('' : newsletter.language).
    sa.Column("language", sa.String(35), nullable=False, server_default=""),
    # The consent text shown on the form ('' : the localised default naming the newsletter);
    # consent_version goes up by one each time it changes, and consents record which one.
    sa.Column("consent_text", sa.Text, nullable=False, server_default=""),
    sa.Column("consent_version", sa.Integer, nullable=False, server_default="1"),
)
"""Mailing lists: a short slug used on the command line, a display name, signup settings."""

OPT_IN_MODES = ("double", "single")
"""How a sign-up from a form becomes a subscription."""

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # The normalised address: domain lower-cased and in Unicode form, local part as written.
    sa.Column("email", sa.Text, nullable=False),
    # email lower-cased: addresses are unique regardless of case.
    sa.Column("email_key", sa.Text, nullable=False, unique=True),
    # The address with an IDNA (xn--) domain; NULL when the local part itself is non-ASCII.
    sa.Column("ascii_email", sa.Text, nullable=True),
    sa.Column("smtputf8", sa.Boolean, nullable=False, default=False),
    sa.Column("name", sa.Text, nullable=False, default=""),
    sa.Column("language", sa.String(35), nullable=False, default=""),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="active"),
    sa.Column("source", sa.Text, nullable=False, default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
"""Everyone the store knows about, including suppressed addresses (kept so they stay out)."""

subscriptions = sa.Table(
    "subscriptions",
    metadata,
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
    # How the subscription began; later changes (and their sources) are events.
    sa.Column("source", sa.Text, nullable=False, default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Recipients of a list are read in subscriber id order (the send engine resumes by id).
    sa.Index("ix_subscriptions_list_status", "list_id", "status", "subscriber_id"),
    # SQLite: rows live in the primary-key b-tree (one b-tree less to write per subscription).
    sqlite_with_rowid=False,
)
"""Who is on which list, and whether they are still subscribed to it."""

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="SET NULL"), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("source", sa.Text, nullable=False, default=""),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_events_subscriber", "subscriber_id", "id"),
)
"""What happened to a subscriber after each subscription began: updated, unsubscribed,
resubscribed, bounced, complained, blocked... The start of a subscription is not an event:
its ``subscriptions`` row keeps when and from where (``import x.csv``, ``cli``, ``web``), so a
million-row import does not also write a million events. ``list_id`` is NULL for events
about the address as a whole."""

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
    # form, preferences, cli, import (detail: the file and the tool it came from).
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    # What the person agreed to: the text as shown, and the list's version of it.
    sa.Column("consent_text", sa.Text, nullable=False),
    sa.Column("consent_version", sa.Integer, nullable=False),
    # When they gave it (signed up, opted in) and when they confirmed it (double opt-in).
    sa.Column("given_at", UTCDateTime, nullable=True),
    sa.Column("confirmed_at", UTCDateTime, nullable=True),
    # The client's address, only when the workspace opts in (privacy.store_ip).
    sa.Column("ip", sa.String(45), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_consents_subscriber", "subscriber_id", "list_id", "id"),
)
"""The consent behind each subscription: what an organisation must be able to show."""

signups = sa.Table(
    "signups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("email_key", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("language", sa.String(35), nullable=False),
    sa.Column("consent_text", sa.Text, nullable=False),
    sa.Column("consent_version", sa.Integer, nullable=False),
    sa.Column("ip", sa.String(45), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The last confirmation mail (at most one per address and list a day).
    sa.Column("mailed_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("email_key", "list_id", name="uq_signups_email_list"),
    sa.Index("ix_signups_created", "created_at"),
)
"""Sign-ups waiting for the person to confirm by mail (double opt-in); purged after 30 days."""

blocked_domains = sa.Table(
    "blocked_domains",
    metadata,
    # Lower-case, in Unicode form (as subscribers' domains are stored).
    sa.Column("domain", sa.String(253), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
"""Domains no address of which is ever sent to or subscribed."""

webhook_receipts = sa.Table(
    "webhook_receipts",
    metadata,
    # ses, postmark, sendgrid, mailgun.
    sa.Column("provider", sa.String(16), primary_key=True),
    # "event <id>": an event applied (the provider's id, else a hash of the event);
    # "nonce <value>": a signed request seen (Mailgun's token, a signature's hash).
    sa.Column("key", sa.String(200), primary_key=True),
    # Past it the row may go: a nonce once its timestamp is stale anyway, an event once the
    # provider has long stopped retrying it.
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Index("ix_webhook_receipts_expires", "expires_at"),
)
"""What provider webhooks received: inserted in the transaction that applies the request, so
two processes given the same delivery at once apply it once (the second insert conflicts)."""

INBOUND_INTAKES = ("bounces", "unsubscribes")
"""What a fetched mailbox is read for (``bulletin bounces fetch``, ``unsubscribes fetch``)."""

inbound_messages = sa.Table(
    "inbound_messages",
    metadata,
    sa.Column("intake", sa.String(16), primary_key=True),
    # The reader's message key: the Message-ID, else a hash of the bytes (reports.message_key).
    sa.Column("message_key", sa.String(255), primary_key=True),
    sa.Column("processed_at", UTCDateTime, nullable=False),
)
"""Fetched messages already processed: written in the transaction that acts on a message,
before the message is moved or flagged on the server, so the primary key (not the server)
decides which run counts it when runs overlap or one was killed between the two steps."""

SEND_STATES = ("running", "paused", "interrupted", "waiting", "done")
"""A send's state: ``running`` (senders work on it), ``paused`` (the relay could not be
reached), ``interrupted`` (Ctrl-C), ``waiting`` (only deferred recipients are left, not yet
due), ``done``. Every state but ``done`` resumes when the same command runs again. The last
sender to stop records how the send stands; while others carry on it stays ``running``."""

DELIVERY_STATES = ("pending", "queued", "sending", "sent", "deferred", "failed", "skipped")
"""A recipient's state in a send: ``pending`` -> ``queued`` (claimed by a run, not yet allowed
out) -> ``sending`` (allowed on the wire) -> ``sent``, ``deferred`` (retry at
``next_attempt_at``) or ``failed``; ``skipped`` when they unsubscribed during the send. Plain
strings without a CHECK constraint, so a new state needs no migration."""

sends = sa.Table(
    "sends",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("issue_slug", sa.String(200), nullable=False),
    # The list slugs, sorted and comma-separated: with the issue, what names a send.
    sa.Column("lists", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    # SHA-256 of what the messages are made of; a resume with other content is refused.
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    # Why the send stopped (the relay's reply when it paused), for `bulletin status`.
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("total", sa.Integer, nullable=False, default=0),
    # Recipients found `sending` (allowed on the wire) after a crash and sent again with the
    # same Message-ID: at most that many people may have two copies.
    sa.Column("in_doubt", sa.Integer, nullable=False, default=0),
    sa.Column("runs", sa.Integer, nullable=False, default=0),
    sa.Column("active_seconds", sa.Float, nullable=False, default=0.0),
    # "host:pid" of the sender that started (or restarted) the send, and when; the senders
    # themselves, live or gone, are in `workers`.
    sa.Column("owner", sa.Text, nullable=False, default=""),
    sa.Column("heartbeat_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    # For a waiting send: when its next deferred recipient falls due.
    sa.Column("retry_at", UTCDateTime, nullable=True),
    # The rate limit of the whole send, shared by its senders (0: none): messages per second,
    # and per hour (granted blocks of slots are kept in `send_slots`).
    sa.Column("rate", sa.Float, nullable=False, default=0.0, server_default="0"),
    sa.Column("rate_hour", sa.Integer, nullable=False, default=0, server_default="0"),
    # The per-second schedule (GCRA's "theoretical arrival time"): the next free slot, in
    # database time. Each sender reserves a block of slots by moving it on.
    sa.Column("slot_next", UTCDateTime, nullable=True),
    sa.UniqueConstraint("issue_slug", "lists", name="uq_sends_issue_lists"),
)
"""One row per send of an issue to a set of lists (re-running the command resumes it)."""

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column(
        "send_id", sa.Integer, sa.ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # The list the recipient gets the issue through (its unsubscribe link names it).
    sa.Column("list_id", sa.Integer, nullable=False),
    # The address as frozen when the send started; the message goes there.
    sa.Column("email", sa.Text, nullable=False),
    # Set when the recipient is first claimed; a resend uses the same one.
    sa.Column("message_id", sa.Text, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("first_attempt_at", UTCDateTime, nullable=True),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("last_code", sa.Integer, nullable=True),
    sa.Column("last_reply", sa.Text, nullable=False, default=""),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The sender (a `workers` id) that holds the row while it is queued or sending -- only
    # it may change the row then (fencing) -- or that recorded its result.
    sa.Column("worker", sa.String(32), nullable=True),
    # Until when (database time) that sender's lease on a queued or sending row runs; after
    # it, any sender puts the row back to pending (counted in doubt if it was sending).
    sa.Column("lease_until", UTCDateTime, nullable=True),
    # Due work is found by state and time, pending rows in subscriber order (they have no
    # next_attempt_at); leased rows (queued, sending) by state too, a few per sender.
    sa.Index("ix_deliveries_state", "send_id", "state", "next_attempt_at", "subscriber_id"),
    # Erasing a subscriber cascades here; a send also looks up earlier sends of the issue.
    sa.Index("ix_deliveries_subscriber", "subscriber_id"),
    sqlite_with_rowid=False,
)
"""The ledger: one row per recipient of a send, its state committed at every transition."""

WORKER_STATES = ("running", "done", "waiting", "interrupted", "paused", "lost", "failed")
"""A sender's state: ``running`` while it works; how it stopped otherwise (``lost``: its
lease ran out while it was stopped or cut off, and it carried on as a new sender)."""

workers = sa.Table(
    "workers",
    metadata,
    # A random id (uuid4 hex), the fencing token on the deliveries rows it holds.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("send_id", sa.Integer, sa.ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    # Its leases' length: a heartbeat older than that means it may be stopped or gone.
    sa.Column("lease_seconds", sa.Float, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("stopped_at", UTCDateTime, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
    # Messages it got accepted, and its rate (messages/s) at its last heartbeat.
    sa.Column("sent", sa.Integer, nullable=False, default=0),
    sa.Column("rate", sa.Float, nullable=False, default=0.0),
    sa.Index("ix_workers_send", "send_id", "stopped_at"),
)
"""The senders of each send (one row per process, and per lease it lost): who works on a
send, from where, how fast, and when each was last heard of."""

send_slots = sa.Table(
    "send_slots",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("send_id", sa.Integer, sa.ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
    # The last slot of a block granted to a sender, and how many slots the block had.
    sa.Column("last_slot", UTCDateTime, nullable=False),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Index("ix_send_slots_send", "send_id", "last_slot"),
)
"""Blocks of send slots granted in the last hour, for a send's hourly limit (older ones are
deleted as new blocks are granted)."""
