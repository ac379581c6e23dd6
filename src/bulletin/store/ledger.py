"""The delivery ledger: which recipients of a send got the issue, and what the relay said.

A *send* is one issue sent to one set of lists; re-running the same ``bulletin send`` finds
it again (``issue_slug`` + ``lists``) and resumes it, or joins it while other senders work
on it. When it starts, its recipient set is frozen into ``deliveries`` with one
``INSERT ... SELECT`` (deduplicated across lists, suppressed addresses left out). Each row
then moves through

    pending -> queued -> sending -> sent | deferred (retry at next_attempt_at) | failed
    (any open state) -> skipped (unsubscribed while the send ran)

and every transition is committed.

Several senders (processes, on one machine or many) share a send. Each registers in
``workers`` and takes rows as a **lease**: :func:`claim` makes due rows ``queued`` with the
sender's id (``worker``) and an end (``lease_until``, in database time: see
:func:`database_now`); only rows in a claimable state are taken, with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL (SQLite's write lock lets one sender claim at a time). Every later
change of a leased row -- :func:`promote` to ``sending``, :func:`record`, :func:`release`,
:func:`skip` -- is fenced: ``WHERE worker = <this sender>``, so a sender that lost its
lease changes nothing. :func:`beat` renews a sender's leases while it works;
:func:`expire` puts rows whose lease ran out back to ``pending`` for any sender to take:
``queued`` ones silently, ``sending`` ones (whose message may have left) counted as *in
doubt* and sent again with the same Message-ID. A sender of this machine whose process is
gone loses its leases at once; on other machines only the end of the lease counts.

The send's rate limit is shared the same way: :func:`reserve_slots` hands out blocks of
slots from one schedule kept on the send's row.

Functions take a connection inside a transaction opened by the caller; they never commit.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from bulletin.errors import BulletinError
from bulletin.store.schema import (
    DELIVERY_STATES,
    SUPPRESSED_STATUSES,
    deliveries,
    events,
    send_slots,
    sends,
    subscribers,
    subscriptions,
    utcnow,
    workers,
)
from bulletin.store.subscribers import blocked_domain_set, domain_blocked, get_list

OPEN_STATES = ("pending", "queued", "sending", "deferred")
"""States of a recipient the send still has to deal with."""

_COVERING = ("pending", "queued", "sending", "sent", "deferred")
"""States in another send of the same issue that keep a subscriber out of a new one."""

_LEASED = ("queued", "sending")
"""States in which a row is held by one sender (its ``worker``) until its lease ends."""

_SUPPRESSING_EVENTS = ("unsubscribed", *SUPPRESSED_STATUSES)

HOUR = timedelta(hours=1)

RECIPIENT_TABLES = (subscribers, subscriptions)
"""What deciding who a send goes to reads (see :func:`refresh_statistics`)."""


class SendBusy(BulletinError):
    """Other senders are running this send right now (and this one was told not to join)."""


@dataclass(frozen=True)
class SendRow:
    """A send as stored: what it is, where it stands, and how it went."""

    id: int
    issue_slug: str
    lists: tuple[str, ...]
    subject: str
    fingerprint: str
    state: str
    note: str
    total: int
    in_doubt: int
    runs: int
    active_seconds: float
    owner: str
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    retry_at: datetime | None
    rate: float = 0.0
    """The send's rate limit for all its senders together, messages per second (0: none)."""
    rate_hour: int = 0


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One sender of a send: a process, from when it joined until it stopped."""

    id: str
    send_id: int
    host: str
    pid: int
    lease_seconds: float
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    state: str
    note: str
    sent: int
    rate: float


@dataclass(frozen=True)
class Joined:
    """What :func:`register_worker` found: the senders already live, a rate it changed."""

    senders: list[WorkerRow]
    """The other live senders when this one joined, oldest first (empty: it started it)."""
    rate_was: tuple[float, int] | None = None
    """The send's rate limits before this sender set its own, when they differed."""


@dataclass(frozen=True)
class Conclusion:
    """How a send stands after one of its senders stopped (:func:`stop_worker`)."""

    state: str
    """``done``, ``running`` (others carry on), or how the last sender left it."""
    counts: dict[str, int]
    others: list[WorkerRow]
    retry_at: datetime | None = None


@dataclass(frozen=True)
class Slots:
    """A block of send slots (:func:`reserve_slots`), in database time."""

    now: datetime
    """The database's clock when they were granted."""
    slots: list[datetime]
    """Empty: the send has no rate limit."""
    interval: float
    """Seconds between two slots (0 with only an hourly limit)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A recipient claimed for sending: the ledger row and the subscriber's current data."""

    subscriber_id: int
    list_id: int
    email: str
    message_id: str
    was: str
    """The state before the claim: ``pending`` or ``deferred``."""
    attempts: int
    first_attempt_at: datetime | None
    name: str
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Batch:
    """What :func:`claim` got: the recipients to send to now, and who was skipped."""

    claimed: list[Claimed]
    skipped: int
    exhausted: bool
    """Fewer recipients were due than asked for: nothing more is due right now."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A state transition to record for one claimed recipient."""

    subscriber_id: int
    state: str
    attempts: int
    code: int | None = None
    reply: str = ""
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One recipient's line in ``bulletin status``."""

    subscriber_id: int
    email: str
    state: str
    attempts: int
    last_code: int | None
    last_reply: str
    next_attempt_at: datetime | None
    message_id: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EligibleRecipient:
    """Someone a new send of the issue would go to (the dry run walks these)."""

    subscriber_id: int
    list_id: int
    email: str
    name: str
    attributes: Mapping[str, Any]


def lists_key(slugs: Iterable[str]) -> str:
    """How a send names its lists: the slugs sorted, without repeats, comma-separated."""
    return ",".join(sorted(set(slugs)))


def list_ids(conn: Connection, slugs: Sequence[str]) -> dict[str, int]:
    """The ids of the named lists (:class:`UnknownList` for a slug that does not exist)."""
    return {slug: get_list(conn, slug).id for slug in dict.fromkeys(slugs)}


def _send_from_row(row: Row[Any]) -> SendRow:
    return SendRow(
        id=row.id,
        issue_slug=row.issue_slug,
        lists=tuple(s for s in row.lists.split(",") if s),
        subject=row.subject,
        fingerprint=row.fingerprint,
        state=row.state,
        note=row.note,
        total=row.total,
        in_doubt=row.in_doubt,
        runs=row.runs,
        active_seconds=row.active_seconds,
        owner=row.owner,
        heartbeat_at=row.heartbeat_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        retry_at=row.retry_at,
        rate=row.rate,
        rate_hour=row.rate_hour,
    )


def find_send(conn: Connection, issue_slug: str, slugs: Iterable[str]) -> SendRow | None:
    """The send of this issue to exactly these lists, or None."""
    row = conn.execute(
        sa.select(sends).where(sends.c.issue_slug == issue_slug, sends.c.lists == lists_key(slugs))
    ).first()
    return _send_from_row(row) if row else None


def get_send(conn: Connection, send_id: int) -> SendRow:
    """The send with this id."""
    row = conn.execute(sa.select(sends).where(sends.c.id == send_id)).one()
    return _send_from_row(row)


def sends_of_issue(
    conn: Connection, issue_slug: str | None, list_slug: str | None = None
) -> list[SendRow]:
    """Every send of an issue (of every issue if None; those including ``list_slug`` only,
    if given), oldest first."""
    query = sa.select(sends).order_by(sends.c.id)
    if issue_slug is not None:
        query = query.where(sends.c.issue_slug == issue_slug)
    rows = conn.execute(query).all()
    found = [_send_from_row(r) for r in rows]
    if list_slug is not None:
        found = [s for s in found if list_slug in s.lists]
    return found


def sent_issues(conn: Connection) -> set[str]:
    """The slugs of the issues whose send has started (their mail is out, or on its way)."""
    return set(
        conn.scalars(
            sa.select(sends.c.issue_slug).where(sends.c.started_at.is_not(None)).distinct()
        )
    )


# --- who a new send goes to ---------------------------------------------------------------


def _eligible(
    issue_slug: str, slugs: Iterable[str], ids: Sequence[int], blocked: AbstractSet[str]
) -> sa.Select[Any]:
    """Who a new send goes to: subscribed, active, not at a blocked domain; once each.

    Someone on several of the lists gets the issue once, through the list with the lowest
    id. Someone who already got (or is getting) this issue from another send of it -- to
    other lists -- is left out, so adding a list later does not mail them twice. The send
    to these very lists is never "another send": a second process that counts after the
    first one froze the recipients must find the send running, not everyone covered.
    """
    other = (
        sa.select(sa.literal(1))
        .select_from(deliveries.join(sends))
        .where(
            deliveries.c.subscriber_id == subscribers.c.id,
            sends.c.issue_slug == issue_slug,
            sends.c.lists != lists_key(slugs),
            deliveries.c.state.in_(_COVERING),
        )
    )
    # One row per subscriber without GROUP BY: the subscription through the lowest list id
    # is the one with no lower subscribed one beside it. Portable (PostgreSQL refuses the
    # subscriber's columns next to a grouped subscription column) and, with the list's
    # index in subscriber order, SQLite pages it as an index range scan.
    lower = sa.alias(subscriptions, "lower")
    earlier_list = (
        sa.select(sa.literal(1))
        .select_from(lower)
        .where(
            lower.c.subscriber_id == subscriptions.c.subscriber_id,
            lower.c.list_id.in_(ids),
            lower.c.status == "subscribed",
            lower.c.list_id < subscriptions.c.list_id,
        )
    )
    return (
        sa.select(
            subscriptions.c.subscriber_id.label("subscriber_id"),
            subscriptions.c.list_id.label("list_id"),
            subscribers.c.email,
        )
        .select_from(subscriptions.join(subscribers))
        .where(
            subscriptions.c.list_id.in_(ids),
            subscriptions.c.status == "subscribed",
            subscribers.c.status == "active",
            ~domain_blocked(subscribers.c.email_key, blocked),
            ~sa.exists(earlier_list),
            ~sa.exists(other),
        )
    )


def count_eligible(conn: Connection, issue_slug: str, slugs: Sequence[str]) -> tuple[int, int]:
    """``(recipients, covered)``: who a new send to the lists would go to, and how many
    members it leaves out because another send of the issue (to other lists) reached them."""
    ids = list(list_ids(conn, slugs).values())
    blocked = blocked_domain_set(conn)
    eligible = _eligible(issue_slug, slugs, ids, blocked).subquery()
    n = int(conn.scalar(sa.select(sa.func.count()).select_from(eligible)) or 0)
    members = (
        sa.select(subscribers.c.id)
        .select_from(subscriptions.join(subscribers))
        .where(
            subscriptions.c.list_id.in_(ids),
            subscriptions.c.status == "subscribed",
            subscribers.c.status == "active",
            ~domain_blocked(subscribers.c.email_key, blocked),
        )
        .distinct()
        .subquery()
    )
    total = int(conn.scalar(sa.select(sa.func.count()).select_from(members)) or 0)
    return n, total - n


def _pages(
    conn: Connection, base: sa.Select[Any], key: sa.ColumnElement[int], page: int
) -> Iterator[EligibleRecipient]:
    """Rows of ``base`` ordered by ``key`` (a subscriber id), read ``page`` at a time.

    Keyset paging (``key > last``) keeps memory flat and every page an index range scan,
    however far into a million-recipient list the reader is.
    """
    after = 0
    while True:
        rows = conn.execute(base.where(key > after).order_by(key).limit(page)).all()
        if not rows:
            return
        # Unpacked as tuples: Row attribute access costs more than the rest of the reading.
        for subscriber_id, list_id, email, name, attributes in rows:
            yield EligibleRecipient(subscriber_id, list_id, email, name, dict(attributes or {}))
        after = rows[-1][0]


def iter_eligible(
    conn: Connection, issue_slug: str, slugs: Sequence[str], *, page: int = 1000
) -> Iterator[EligibleRecipient]:
    """The recipients of a new send to the lists, by subscriber id, read in pages."""
    ids = list(list_ids(conn, slugs).values())
    base = _eligible(issue_slug, slugs, ids, blocked_domain_set(conn)).add_columns(
        subscribers.c.name, subscribers.c.attributes
    )
    return _pages(conn, base, subscriptions.c.subscriber_id, page)


def iter_open(conn: Connection, send_id: int, *, page: int = 1000) -> Iterator[EligibleRecipient]:
    """The recipients a send has still to deal with, by subscriber id, read in pages."""
    base = (
        sa.select(
            deliveries.c.subscriber_id,
            deliveries.c.list_id,
            deliveries.c.email,
            subscribers.c.name,
            subscribers.c.attributes,
        )
        .select_from(deliveries.join(subscribers))
        .where(deliveries.c.send_id == send_id, deliveries.c.state.in_(OPEN_STATES))
    )
    return _pages(conn, base, deliveries.c.subscriber_id, page)


def create_send(
    conn: Connection,
    *,
    issue_slug: str,
    list_slugs: Sequence[str],
    ids: Sequence[int],
    subject: str,
    fingerprint: str,
    now: datetime | None = None,
    rate: float = 0.0,
    rate_hour: int = 0,
) -> SendRow:
    """Create a send and freeze its recipients into the ledger (one INSERT ... SELECT).

    It has no sender yet: :func:`register_worker` adds the one that runs it.
    """
    now = now or utcnow()
    host, pid = _here()
    pk = conn.execute(
        sends.insert().values(
            issue_slug=issue_slug,
            lists=lists_key(list_slugs),
            subject=subject,
            fingerprint=fingerprint,
            state="running",
            note="",
            total=0,
            in_doubt=0,
            runs=0,
            active_seconds=0.0,
            owner=f"{host}:{pid}",
            heartbeat_at=now,
            created_at=now,
            started_at=now,
            rate=rate,
            rate_hour=rate_hour,
        )
    ).inserted_primary_key
    assert pk is not None
    send_id = int(pk[0])
    refresh_statistics(conn, *RECIPIENT_TABLES)
    # The blocklist as it stands in this transaction; one blocked meanwhile is caught when
    # its message is about to leave (promote's check).
    eligible = _eligible(issue_slug, list_slugs, ids, blocked_domain_set(conn)).subquery()
    frozen = sa.select(
        sa.literal(send_id, sa.Integer),
        eligible.c.subscriber_id,
        eligible.c.list_id,
        eligible.c.email,
        sa.literal("pending", sa.String),
        sa.literal(0, sa.Integer),
        sa.literal("", sa.Text),
        sa.literal(now, deliveries.c.updated_at.type),
    )
    conn.execute(
        deliveries.insert().from_select(
            [
                "send_id",
                "subscriber_id",
                "list_id",
                "email",
                "state",
                "attempts",
                "last_reply",
                "updated_at",
            ],
            frozen,
        )
    )
    total = int(
        conn.scalar(
            sa.select(sa.func.count())
            .select_from(deliveries)
            .where(deliveries.c.send_id == send_id)
        )
        or 0
    )
    conn.execute(sends.update().where(sends.c.id == send_id).values(total=total))
    # The rows just frozen are the ones every claim, promotion and result will look up.
    refresh_statistics(conn, deliveries, force=True)
    return get_send(conn, send_id)


def refresh_statistics(conn: Connection, *tables: sa.Table, force: bool = False) -> None:
    """Give PostgreSQL's planner statistics of ``tables`` if theirs are missing or stale.

    Right after a bulk import (or the freezing of a send) the planner has none until
    autovacuum comes round, up to a minute later, and plans as if the tables were tiny:
    nested loops over every row, minutes for the recipients of a 50,000-member list, where
    a plan with statistics takes tens of milliseconds. ANALYZE reads a sample of a fixed
    size (a fraction of a second on a million rows); skipped while the statistics are
    fresh, and on SQLite, whose planner does not need them here.
    """
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        if not force:
            # From the catalog, which a bulk import updates at once (the activity counters
            # lag by up to a second): never analyzed, or grown a lot since; or, by the
            # counters, much changed since.
            row = conn.execute(
                sa.text(
                    "SELECT c.reltuples, c.relpages,"
                    " pg_relation_size(c.oid) / current_setting('block_size')::int AS pages,"
                    " coalesce(s.n_mod_since_analyze, 0) AS changed,"
                    " coalesce(s.n_live_tup, 0) AS live"
                    " FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
                    " WHERE c.oid = to_regclass(:name)"
                ),
                {"name": table.name},
            ).first()
            stale = (
                row is None
                or row.reltuples < 0
                or row.pages > 2 * row.relpages + 8
                or (row.changed > 1000 and row.changed > row.live / 10)
            )
            if not stale:
                continue
        conn.exec_driver_sql(f"ANALYZE {table.name}")


# --- the database's clock -------------------------------------------------------------------


def database_now(conn: Connection, *, hold_limit: float | None = None) -> datetime:
    """The database's clock, in which leases and rate slots are granted and expire.

    PostgreSQL's ``clock_timestamp()``, so that senders on machines whose clocks disagree
    agree on when a lease runs out; SQLite serves one machine, whose clock it is. With
    ``hold_limit`` (seconds), PostgreSQL ends this session should it sit idle inside the
    current transaction for longer: a sender stopped (SIGSTOP, a laptop asleep) in the middle
    of a transaction must not keep the rows it locked from the other senders.
    """
    if conn.dialect.name != "postgresql":
        return utcnow()
    clock = sa.func.clock_timestamp(type_=sa.DateTime(timezone=True))
    if hold_limit is None:
        value = conn.scalar(sa.select(clock))
    else:
        limit = f"{max(1, round(hold_limit * 1000))}ms"
        # set_config(..., true) is SET LOCAL: it ends with this transaction.
        guard = sa.func.set_config("idle_in_transaction_session_timeout", limit, True)
        value = conn.execute(sa.select(clock, guard)).scalar_one()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


# --- senders ------------------------------------------------------------------------------


def new_worker_id() -> str:
    """A fresh sender id: the fencing token on the ledger rows it will hold."""
    return uuid.uuid4().hex


def _worker_from_row(row: Row[Any]) -> WorkerRow:
    return WorkerRow(
        id=row.id,
        send_id=row.send_id,
        host=row.host,
        pid=row.pid,
        lease_seconds=row.lease_seconds,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        stopped_at=row.stopped_at,
        state=row.state,
        note=row.note,
        sent=row.sent,
        rate=row.rate,
    )


def workers_of(conn: Connection, send_id: int) -> list[WorkerRow]:
    """Every sender a send has had, oldest first."""
    rows = conn.execute(
        sa.select(workers)
        .where(workers.c.send_id == send_id)
        .order_by(workers.c.started_at, workers.c.id)
    )
    return [_worker_from_row(r) for r in rows]


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) S ...": the state follows the last parenthesis.
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _here() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _gone_here(w: WorkerRow) -> bool:
    """A sender of this machine whose process has ended: it sends nothing any more.

    Only this machine can tell. A process elsewhere is presumed able to wake up and carry on
    until its lease has run out, whatever its heartbeat says.
    """
    host, pid = _here()
    return w.host == host and w.pid != pid and _process_gone(w.pid)


def bury_dead(conn: Connection, send_id: int, now: datetime) -> int:
    """Mark the send's senders whose process ended on this machine as stopped; how many.

    Their leases then end at once (:func:`expire`) instead of when they run out.
    """
    found = [
        w.id
        for w in workers_of(conn, send_id)
        if w.stopped_at is None and w.state == "running" and _gone_here(w)
    ]
    return _mark_stopped(conn, found, now, "its process ended without stopping")


def _mark_stopped(conn: Connection, ids: Sequence[str], now: datetime, note: str) -> int:
    """Mark other senders stopped (``failed``), skipping any whose row is locked right now.

    Never waiting for a sender's row keeps the lock order of every transaction the same
    (rows of senders and recipients skipped if busy, then the send's row): no deadlock.
    """
    if not ids:
        return 0
    free = (
        sa.select(workers.c.id)
        .where(workers.c.id.in_(ids), workers.c.stopped_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    done = conn.execute(
        workers.update()
        .where(workers.c.id.in_(_ids_once(free)))
        .values(stopped_at=now, state="failed", note=note)
        .returning(workers.c.id)
    ).all()
    return len(done)


def live_workers(conn: Connection, send_id: int, now: datetime) -> list[WorkerRow]:
    """The senders working on a send now: not stopped, heard of within their lease."""
    rows = conn.execute(
        sa.select(workers)
        .where(workers.c.send_id == send_id, workers.c.stopped_at.is_(None))
        .order_by(workers.c.started_at, workers.c.id)
    )
    found = [_worker_from_row(r) for r in rows]
    return [
        w
        for w in found
        if w.heartbeat_at + timedelta(seconds=w.lease_seconds) > now and not _gone_here(w)
    ]


def busy(live: Sequence[WorkerRow]) -> SendBusy:
    """The refusal to run a send that ``live`` senders run (oldest first) right now."""
    first = live[0]
    others = f" and {len(live) - 1} more" if len(live) > 1 else ""
    return SendBusy(
        f"This send is already running (process {first.pid} on {first.host}{others}).",
        hint="Run the same command without --no-join to help it along, or wait for it to finish.",
    )


def register_worker(
    conn: Connection,
    send: SendRow,
    worker_id: str,
    *,
    now: datetime,
    lease_seconds: float,
    rate: float,
    rate_hour: int,
    join: bool = True,
) -> Joined:
    """Add a sender to a send (the one that starts it, or one that joins it).

    Senders of this machine whose process is gone are marked stopped first. With other
    senders live, ``join`` False refuses (:class:`SendBusy`); otherwise this one joins them.
    Without any, this one (re)starts the send: ``running``, owned by it. The rate limits
    given here become the send's, for every sender (``Joined.rate_was`` says what they were
    when they change).
    """
    bury_dead(conn, send.id, now)
    live = live_workers(conn, send.id, now)
    if live and not join:
        raise busy(live)
    host, pid = _here()
    conn.execute(
        workers.insert().values(
            id=worker_id,
            send_id=send.id,
            host=host,
            pid=pid,
            lease_seconds=lease_seconds,
            started_at=now,
            heartbeat_at=now,
            stopped_at=None,
            state="running",
            note="",
            sent=0,
            rate=0.0,
        )
    )
    values: dict[str, Any] = {"runs": sends.c.runs + 1, "rate": rate, "rate_hour": rate_hour}
    if not live and send.state != "done":
        values.update(
            state="running",
            note="",
            owner=f"{host}:{pid}",
            heartbeat_at=now,
            started_at=sa.func.coalesce(sends.c.started_at, now),
            retry_at=None,
        )
    conn.execute(sends.update().where(sends.c.id == send.id).values(**values))
    changed = (send.rate, send.rate_hour) != (rate, rate_hour)
    return Joined(
        senders=[*live],
        rate_was=(send.rate, send.rate_hour) if changed and send.runs > 0 else None,
    )


def beat(
    conn: Connection,
    send_id: int,
    worker_id: str,
    *,
    now: datetime,
    lease_seconds: float,
    sent: int,
    rate: float,
) -> set[int] | None:
    """A sender's heartbeat: renew its leases; the recipients whose lease it still holds.

    Only leases that have not run out are renewed: a row whose lease ran out may already be
    another sender's. None when this sender was marked stopped meanwhile (taken for dead),
    so holds nothing any more.
    """
    alive = conn.execute(
        workers.update()
        .where(workers.c.id == worker_id, workers.c.stopped_at.is_(None))
        .values(heartbeat_at=now, sent=sent, rate=rate)
    ).rowcount
    if not alive:
        return None
    rows = conn.execute(
        deliveries.update()
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.state.in_(_LEASED),
            deliveries.c.worker == worker_id,
            deliveries.c.lease_until > now,
        )
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .returning(deliveries.c.subscriber_id)
    )
    return {int(r[0]) for r in rows}


def _leased_rows(send_id: int, state: str, *, expired: datetime, locking: bool) -> sa.Select[Any]:
    """Rows in ``state`` whose lease ran out (or whose sender is known to be stopped)."""
    holder_live = sa.exists(
        sa.select(sa.literal(1))
        .select_from(workers)
        .where(workers.c.id == deliveries.c.worker, workers.c.stopped_at.is_(None))
    )
    query = sa.select(deliveries.c.subscriber_id).where(
        deliveries.c.send_id == send_id,
        deliveries.c.state == state,
        sa.or_(deliveries.c.lease_until < expired, ~holder_live),
    )
    # SKIP LOCKED: a row locked right now is being changed by its holder (or another
    # sender's expiry); never wait for it -- the holder may be a process stopped mid-commit.
    return query.with_for_update(skip_locked=True) if locking else query


def expire(conn: Connection, send_id: int, now: datetime) -> int:
    """Put rows whose lease ran out back to ``pending``; how many of them were in doubt.

    ``queued`` rows never left and go back silently. ``sending`` rows may have reached the
    relay before their sender stopped: they are counted in the send's in-doubt figure, and
    sent again with the same Message-ID. A sender of this machine whose process is gone
    loses its leases at once; elsewhere only the lease's end counts.
    """
    bury_dead(conn, send_id, now)
    in_doubt = 0
    for state in ("sending", "queued"):
        lapsed = _leased_rows(send_id, state, expired=now, locking=True)
        # Counted from RETURNING: Python's sqlite3 gives no rowcount for a WITH statement.
        back = conn.execute(
            deliveries.update()
            .where(
                deliveries.c.send_id == send_id,
                deliveries.c.subscriber_id.in_(_once(lapsed)),  # locked, state checked
            )
            .values(
                state="pending", worker=None, lease_until=None, next_attempt_at=None, updated_at=now
            )
            .returning(deliveries.c.subscriber_id)
        ).all()
        if state == "sending":
            in_doubt = len(back)
    if in_doubt:
        conn.execute(
            sends.update().where(sends.c.id == send_id).values(in_doubt=sends.c.in_doubt + in_doubt)
        )
    return in_doubt


def stop_worker(
    conn: Connection,
    send_id: int,
    worker_id: str,
    state: str,
    *,
    now: datetime,
    note: str = "",
    sent: int = 0,
    rate: float = 0.0,
    active_seconds: float = 0.0,
) -> Conclusion:
    """A sender stops: record how, and how the send stands if it was the last one.

    The send's row is locked first, so that of two last senders stopping at once the second
    sees the first one stopped and concludes. No open recipient left: the send is ``done``,
    whoever stops. Others still live: it stays ``running``. Otherwise it takes ``state``
    (``interrupted``, ``paused``; ``waiting`` with the next retry's time when only deferred
    recipients are left).
    """
    # Senders not heard of within their lease, and not stopped: whoever concludes the send
    # says they are gone (one that wakes finds itself stopped and starts anew).
    quiet = [
        w.id
        for w in workers_of(conn, send_id)
        if w.stopped_at is None
        and w.id != worker_id
        and w.heartbeat_at + timedelta(seconds=w.lease_seconds) <= now
    ]
    conn.execute(sa.select(sends.c.id).where(sends.c.id == send_id).with_for_update()).one()
    conn.execute(
        workers.update()
        .where(workers.c.id == worker_id)
        .values(
            stopped_at=sa.func.coalesce(workers.c.stopped_at, now),
            heartbeat_at=now,
            state=state,
            note=note,
            sent=sent,
            rate=rate,
        )
    )
    found = counts(conn, send_id)
    left = sum(found[s] for s in OPEN_STATES)
    others = live_workers(conn, send_id, now)
    values: dict[str, Any] = {"active_seconds": sends.c.active_seconds + active_seconds}
    retry_at = None
    if not others:
        _mark_stopped(conn, quiet, now, "not heard of since its lease ran out")
    if left == 0:
        values.update(
            state="done",
            note="",
            retry_at=None,
            owner="",
            finished_at=sa.func.coalesce(sends.c.finished_at, now),
        )
        final = "done"
    elif others:
        final = "running"
    else:
        if state in ("waiting", "done"):
            # Not only deferred recipients are left after all: the send stopped part-way.
            busy = found["pending"] or found["queued"] or found["sending"]
            state = "interrupted" if busy else "waiting"
        if state == "waiting":
            retry_at = next_retry(conn, send_id)
        final = state
        values.update(state=state, note=note, retry_at=retry_at, owner="", heartbeat_at=now)
    conn.execute(sends.update().where(sends.c.id == send_id).values(**values))
    return Conclusion(final, found, others, retry_at)


# --- claiming and recording -----------------------------------------------------------------


def _claimable(send_id: int, ids: Sequence[int], wanted: Sequence[int]) -> sa.Select[Any]:
    return (
        sa.select(
            deliveries.c.subscriber_id,
            subscribers.c.name,
            subscribers.c.attributes,
            _eligible_now(ids, wanted).label("eligible"),
        )
        .select_from(deliveries.join(subscribers))
        .where(deliveries.c.send_id == send_id, deliveries.c.subscriber_id.in_(wanted))
    )


def _eligible_now(ids: Sequence[int], wanted: Sequence[int]) -> sa.ColumnElement[bool]:
    """For a ledger row among ``wanted``: its subscriber is active and subscribed to one of
    the lists now.

    The subquery names ``wanted`` itself so that both engines answer it from the
    subscriptions' primary key, a few rows; as a correlated EXISTS PostgreSQL would walk
    the whole list's subscriptions for every promotion.
    """
    person = subscribers.alias("person")
    current = (
        sa.select(subscriptions.c.subscriber_id)
        .join(person, person.c.id == subscriptions.c.subscriber_id)
        .where(
            subscriptions.c.subscriber_id.in_(wanted),
            subscriptions.c.list_id.in_(ids),
            subscriptions.c.status == "subscribed",
            person.c.status == "active",
            ~domain_blocked(person.c.email_key),
        )
    )
    return deliveries.c.subscriber_id.in_(current)


def due_queries(send_id: int, limit: int, now: datetime) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The two queries that find due work: deferred rows whose time has come, pending rows.

    Only ids are selected so each is answered from the index on (send_id, state,
    next_attempt_at, subscriber_id) alone: pending rows (next_attempt_at IS NULL) come out in
    subscriber order without a sort, on SQLite and PostgreSQL. Rows another sender is
    claiming right now are skipped (``FOR UPDATE SKIP LOCKED``; SQLite's write lock lets one
    sender claim at a time anyway).
    """
    deferred = (
        sa.select(deliveries.c.subscriber_id)
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.state == "deferred",
            deliveries.c.next_attempt_at <= now,
        )
        .order_by(deliveries.c.next_attempt_at, deliveries.c.subscriber_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    pending = (
        sa.select(deliveries.c.subscriber_id)
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.state == "pending",
            deliveries.c.next_attempt_at.is_(None),
        )
        # next_attempt_at is NULL throughout; naming it lets PostgreSQL read the index in order.
        .order_by(deliveries.c.next_attempt_at, deliveries.c.subscriber_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return deferred, pending


def _ids_once(query: sa.Select[Any]) -> sa.Select[Any]:
    """:func:`_once` for a query of sender ids."""
    picked = query.cte("picked_workers").prefix_with("MATERIALIZED")
    return sa.select(picked.c.id)


def _once(query: sa.Select[Any]) -> sa.Select[Any]:
    """``query``'s ids, picked once for the whole statement that uses them.

    An ``IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` may be run again by PostgreSQL for
    each row it looks at, each time skipping the rows the last run locked: more than ``n``
    rows change. A materialised common table expression is evaluated exactly once.
    """
    picked = query.cte("picked").prefix_with("MATERIALIZED")
    return sa.select(picked.c.subscriber_id)


def claim(
    conn: Connection,
    send_id: int,
    worker_id: str,
    ids: Sequence[int],
    limit: int,
    message_id_for: Callable[[str], str],
    *,
    now: datetime,
    lease_seconds: float,
) -> Batch:
    """Lease up to ``limit`` due recipients to a sender: ``queued``, held until the lease ends.

    Deferred recipients whose retry time has come go first, then pending ones in
    subscriber order; each claim takes only rows in those states, so two senders never
    claim the same row. Whoever unsubscribed (from these lists or everything), bounced,
    complained or was blocked since the send started becomes ``skipped``. The rest get their
    Message-ID fixed the first time; none may leave before :func:`promote` made it
    ``sending``.
    """
    until = now + timedelta(seconds=lease_seconds)
    taken: list[Row[Any]] = []
    for state, due in zip(("deferred", "pending"), due_queries(send_id, limit, now), strict=True):
        want = limit - len(taken)
        if want <= 0:
            break
        rows = conn.execute(
            deliveries.update()
            .where(
                deliveries.c.send_id == send_id,
                # No second test of the state here: the picked rows are locked with their
                # state checked (FOR UPDATE rechecks the latest version; SQLite has one
                # writer), and one would lead PostgreSQL, without statistics of the rows
                # just frozen, to walk every pending row for each claim.
                deliveries.c.subscriber_id.in_(_once(due.limit(want))),
            )
            .values(state="queued", worker=worker_id, lease_until=until, updated_at=now)
            .returning(
                deliveries.c.subscriber_id,
                deliveries.c.list_id,
                deliveries.c.email,
                deliveries.c.message_id,
                deliveries.c.attempts,
                deliveries.c.first_attempt_at,
                deliveries.c.next_attempt_at,
                sa.literal(state, sa.String).label("was"),
            )
        ).all()
        # RETURNING gives no order: the claim order is retries by due time, then by id.
        taken += sorted(rows, key=lambda r: (r.next_attempt_at or now, r.subscriber_id))
    exhausted = len(taken) < limit
    if not taken:
        return Batch([], 0, exhausted)
    details = {
        r.subscriber_id: r
        for r in conn.execute(_claimable(send_id, ids, [r.subscriber_id for r in taken]))
    }
    claimed: list[Claimed] = []
    skipped: list[int] = []
    new_ids: list[dict[str, Any]] = []
    for r in taken:
        d = details.get(r.subscriber_id)
        if d is None or not d.eligible:
            skipped.append(r.subscriber_id)
            continue
        message_id = r.message_id
        if message_id is None:
            message_id = message_id_for(r.email)
            new_ids.append({"b_id": r.subscriber_id, "b_mid": message_id})
        claimed.append(
            Claimed(
                r.subscriber_id,
                r.list_id,
                r.email,
                message_id,
                r.was,
                r.attempts,
                r.first_attempt_at,
                d.name,
                dict(d.attributes or {}),
            )
        )
    if skipped:
        skip(conn, send_id, worker_id, skipped, now=now)
    if new_ids:
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.send_id == send_id,
                deliveries.c.subscriber_id == sa.bindparam("b_id"),
                deliveries.c.worker == worker_id,
            )
            .values(message_id=sa.bindparam("b_mid")),
            new_ids,
        )
    return Batch(claimed, len(skipped), exhausted)


def elsewhere(conn: Connection, send_id: int, worker_id: str) -> tuple[int, datetime | None]:
    """Rows other senders hold (queued or sending): how many, and when the first lease ends."""
    n, first = conn.execute(
        sa.select(sa.func.count(), sa.func.min(deliveries.c.lease_until)).where(
            deliveries.c.send_id == send_id,
            deliveries.c.state.in_(_LEASED),
            sa.or_(deliveries.c.worker.is_(None), deliveries.c.worker != worker_id),
        )
    ).one()
    return int(n), first


def promote(
    conn: Connection,
    send_id: int,
    worker_id: str,
    subscriber_ids: Iterable[int],
    ids: Sequence[int],
    *,
    now: datetime,
) -> tuple[set[int], set[int]]:
    """Let claimed recipients' messages leave: ``queued`` -> ``sending``; ``(promoted, skipped)``.

    Only rows this sender still holds, with a lease that has not run out, and only for
    people still subscribed and active *now*: an unsubscribe committed before this statement
    is honoured whatever order history ids were committed in. Those who left are
    ``skipped``. The caller commits before any of these messages leaves, so after a crash
    the rows in ``sending`` are the only ones that may have gone out. A row in neither set
    is no longer this sender's (its lease ran out, or the subscriber was erased): its
    message must not leave.
    """
    wanted = list(subscriber_ids)
    if not wanted:
        return set(), set()
    mine = (
        deliveries.c.send_id == send_id,
        deliveries.c.subscriber_id.in_(wanted),
        deliveries.c.worker == worker_id,
        deliveries.c.state == "queued",
        deliveries.c.lease_until > now,
    )
    eligible = _eligible_now(ids, wanted)
    rows = conn.execute(
        deliveries.update()
        .where(*mine, eligible)
        .values(state="sending", updated_at=now)
        .returning(deliveries.c.subscriber_id)
    )
    promoted = {int(r[0]) for r in rows}
    skipped: set[int] = set()
    if len(promoted) < len(wanted):
        rows = conn.execute(
            deliveries.update()
            .where(*mine, ~eligible)
            .values(
                state="skipped",
                last_code=None,
                last_reply=_LEFT,
                lease_until=None,
                updated_at=now,
            )
            .returning(deliveries.c.subscriber_id)
        )
        skipped = {int(r[0]) for r in rows}
    return promoted, skipped


_LEFT = "unsubscribed during the send"


def skip(
    conn: Connection,
    send_id: int,
    worker_id: str,
    subscriber_ids: Iterable[int],
    reason: str = _LEFT,
    *,
    now: datetime,
) -> None:
    """Mark claimed recipients ``skipped``: they stopped wanting mail before theirs left."""
    wanted = list(subscriber_ids)
    if wanted:
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.send_id == send_id,
                deliveries.c.subscriber_id.in_(wanted),
                deliveries.c.worker == worker_id,
                deliveries.c.state.in_(_LEASED),
            )
            .values(
                state="skipped", last_code=None, last_reply=reason, lease_until=None, updated_at=now
            )
        )


def release(
    conn: Connection,
    send_id: int,
    worker_id: str,
    subscriber_ids: Iterable[int],
    *,
    now: datetime,
) -> None:
    """Return claimed recipients whose messages never left to ``pending``."""
    wanted = list(subscriber_ids)
    if wanted:
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.send_id == send_id,
                deliveries.c.subscriber_id.in_(wanted),
                deliveries.c.worker == worker_id,
                deliveries.c.state.in_(_LEASED),
            )
            .values(
                state="pending",
                worker=None,
                lease_until=None,
                next_attempt_at=None,
                updated_at=now,
            )
        )


def record(
    conn: Connection,
    send_id: int,
    worker_id: str,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
) -> None:
    """Record what happened to promoted recipients.

    Fenced: only rows still ``sending`` and held by this sender change. A sender whose
    lease ran out changes nothing; the row's new holder sends the message again, with the
    same Message-ID.
    """
    if not outcomes:
        return
    conn.execute(
        deliveries.update()
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.subscriber_id == sa.bindparam("b_id"),
            deliveries.c.worker == worker_id,
            deliveries.c.state == "sending",
        )
        .values(
            state=sa.bindparam("b_state"),
            attempts=sa.bindparam("b_attempts"),
            last_code=sa.bindparam("b_code"),
            last_reply=sa.bindparam("b_reply"),
            first_attempt_at=sa.bindparam("b_first", type_=deliveries.c.first_attempt_at.type),
            next_attempt_at=sa.bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
            lease_until=None,
            updated_at=now,
        ),
        [
            {
                "b_id": o.subscriber_id,
                "b_state": o.state,
                "b_attempts": o.attempts,
                "b_code": o.code,
                "b_reply": o.reply,
                "b_first": o.first_attempt_at,
                "b_next": o.next_attempt_at,
            }
            for o in outcomes
        ],
    )


def still_eligible(conn: Connection, subscriber_ids: Iterable[int], ids: Sequence[int]) -> set[int]:
    """Which of these subscribers are still active and subscribed to one of the lists."""
    wanted = list(subscriber_ids)
    if not wanted:
        return set()
    rows = conn.execute(
        sa.select(subscriptions.c.subscriber_id)
        .select_from(subscriptions.join(subscribers))
        .where(
            subscriptions.c.subscriber_id.in_(wanted),
            subscriptions.c.list_id.in_(ids),
            subscriptions.c.status == "subscribed",
            subscribers.c.status == "active",
            ~domain_blocked(subscribers.c.email_key),
        )
    )
    return {r.subscriber_id for r in rows}


def last_event_id(conn: Connection) -> int:
    """The newest entry in the subscribers' history (0 when there is none)."""
    return int(conn.scalar(sa.select(sa.func.max(events.c.id))) or 0)


def suppressed_since(conn: Connection, after_event: int) -> tuple[int, set[int]]:
    """Subscribers who unsubscribed or were suppressed after history entry ``after_event``.

    Returns the newest entry id seen and the subscriber ids: cheap enough to poll every
    second. An optimisation only: on PostgreSQL ids are taken when a transaction writes and
    need not commit in that order, so an entry may appear below one already seen; what
    keeps such a person's message in is :func:`promote`'s own check.
    """
    top = last_event_id(conn)
    rows = conn.execute(
        sa.select(events.c.subscriber_id).where(
            events.c.id > after_event,
            events.c.id <= top,
            events.c.kind.in_(_SUPPRESSING_EVENTS),
        )
    ).all()
    return top, {r.subscriber_id for r in rows}


# --- the shared rate --------------------------------------------------------------------------


def reserve_slots(
    conn: Connection, send_id: int, *, seconds: float = 0.5, hold_limit: float | None = None
) -> Slots:
    """Reserve the next block of send slots of a send's shared rate (GCRA over the database).

    One short write transaction: the send's row is locked, and its schedule (``slot_next``,
    the next free slot in database time) moves on by the block, ``size / rate``. The block
    is this sender's share of ``seconds`` of the rate (the rate divided among the live
    senders), its slots spaced at that share's pace (``live / rate``): blocks of several
    senders run side by side, at most one per live sender at a time, so together they keep
    to the rate, and no sender is handed slots faster than its share (which it might not
    keep up with). For an hourly limit, the blocks granted in the hour before this one
    starts are counted, and it starts when it fits: so at most ``rate_hour`` slots fall in
    any hour, over all senders. Slots a sender does not use are lost -- the send gets
    slower, never faster.
    """
    row = conn.execute(
        sa.select(sends.c.rate, sends.c.rate_hour, sends.c.slot_next)
        .where(sends.c.id == send_id)
        .with_for_update()
    ).one()
    # Read after the lock: the slots are relative to this instant.
    now = database_now(conn, hold_limit=hold_limit)
    rate, rate_hour = float(row.rate), int(row.rate_hour)
    if not rate and not rate_hour:
        return Slots(now, [], 0.0)
    live = max(1, len(live_workers(conn, send_id, now)))
    per_second = rate or rate_hour / 3600
    size = max(1, math.ceil(per_second * seconds / live))
    if rate_hour:
        size = min(size, rate_hour)
    step = timedelta(seconds=1 / rate) if rate else timedelta(0)
    interval = step * live  # this sender's pace: its share of the rate
    start = max(row.slot_next or now, now)
    if rate_hour:
        conn.execute(
            send_slots.delete().where(
                send_slots.c.send_id == send_id, send_slots.c.last_slot <= now - HOUR
            )
        )
        blocks = conn.execute(
            sa.select(send_slots.c.last_slot, send_slots.c.slots)
            .where(send_slots.c.send_id == send_id, send_slots.c.last_slot > start - HOUR)
            .order_by(send_slots.c.last_slot)
        ).all()
        held = sum(b.slots for b in blocks)
        for b in blocks:
            if held + size <= rate_hour:
                break
            # Wait until this block is an hour old: its slots no longer count.
            held -= b.slots
            start = max(start, b.last_slot + HOUR)
        conn.execute(
            send_slots.insert().values(
                send_id=send_id, last_slot=start + interval * (size - 1), slots=size
            )
        )
    conn.execute(sends.update().where(sends.c.id == send_id).values(slot_next=start + step * size))
    return Slots(now, [start + interval * i for i in range(size)], interval.total_seconds())


def set_rate(conn: Connection, send_id: int, rate: float, rate_hour: int) -> None:
    """Change a running send's rate limits, for every sender from its next block of slots."""
    conn.execute(sends.update().where(sends.c.id == send_id).values(rate=rate, rate_hour=rate_hour))


# --- reading a send -----------------------------------------------------------------------


def counts(conn: Connection, send_id: int) -> dict[str, int]:
    """How many recipients of the send are in each state (every state present, maybe 0)."""
    out = dict.fromkeys(DELIVERY_STATES, 0)
    for state, n in conn.execute(
        sa.select(deliveries.c.state, sa.func.count())
        .where(deliveries.c.send_id == send_id)
        .group_by(deliveries.c.state)
    ):
        out[state] = int(n)
    return out


def next_retry(conn: Connection, send_id: int) -> datetime | None:
    """When the send's earliest deferred recipient falls due, or None if none is deferred."""
    value: datetime | None = conn.scalar(
        sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
            deliveries.c.send_id == send_id, deliveries.c.state == "deferred"
        )
    )
    return value


def delivery_rows(
    conn: Connection, send_id: int, states: Sequence[str] | None = None, limit: int | None = None
) -> Iterator[DeliveryRow]:
    """The send's recipients (in ``states`` only, if given), by address."""
    query = sa.select(
        deliveries.c.subscriber_id,
        deliveries.c.email,
        deliveries.c.state,
        deliveries.c.attempts,
        deliveries.c.last_code,
        deliveries.c.last_reply,
        deliveries.c.next_attempt_at,
        deliveries.c.message_id,
        deliveries.c.updated_at,
    ).where(deliveries.c.send_id == send_id)
    if states is not None:
        query = query.where(deliveries.c.state.in_(states))
    query = query.order_by(deliveries.c.email, deliveries.c.subscriber_id)
    if limit is not None:
        query = query.limit(limit)
    for r in conn.execute(query):
        yield DeliveryRow(
            r.subscriber_id,
            r.email,
            r.state,
            r.attempts,
            r.last_code,
            r.last_reply,
            r.next_attempt_at,
            r.message_id,
            r.updated_at,
        )
