"""The delivery ledger: which recipients of a send got the issue, and what the relay said.

A *send* is one issue sent to one set of lists; re-running the same ``bulletin send`` finds
it again (``issue_slug`` + ``lists``) and resumes. When it starts, its recipient set is
frozen into ``deliveries`` with one ``INSERT ... SELECT`` (deduplicated across lists,
suppressed addresses left out). Each row then moves through

    pending -> queued -> sending -> sent | deferred (retry at next_attempt_at) | failed
    (any open state) -> skipped (unsubscribed while the send ran)

and every transition is committed. :func:`claim` takes due rows for one run (``queued``:
its work, not yet allowed out); :func:`promote` lets a few at a time onto the wire
(``sending``), and that is committed before their messages leave. After a crash the rows
still ``sending`` are exactly the messages that may or may not have gone out:
:func:`acquire` returns them to ``pending`` and counts them as *in doubt* (they are sent
again with the same Message-ID); ``queued`` rows never left and go back without a word.

Functions take a connection inside a transaction opened by the caller; they never commit.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from bulletin.errors import BulletinError
from bulletin.store.schema import (
    DELIVERY_STATES,
    SUPPRESSED_STATUSES,
    deliveries,
    events,
    sends,
    subscribers,
    subscriptions,
    utcnow,
)
from bulletin.store.subscribers import get_list

STALE_AFTER = timedelta(seconds=60)
"""A running send whose heartbeat is older than this (on another host) is taken over."""

OPEN_STATES = ("pending", "queued", "sending", "deferred")
"""States of a recipient the send still has to deal with."""

_COVERING = ("pending", "queued", "sending", "sent", "deferred")
"""States in another send of the same issue that keep a subscriber out of a new one."""

_SUPPRESSING_EVENTS = ("unsubscribed", *SUPPRESSED_STATUSES)


class SendBusy(BulletinError):
    """Another process is running this send right now."""


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


def owner_name() -> str:
    """``host:pid`` of this process, stored on the sends it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
    conn: Connection, issue_slug: str, list_slug: str | None = None
) -> list[SendRow]:
    """Every send of an issue (those including ``list_slug`` only, if given), oldest first."""
    rows = conn.execute(
        sa.select(sends).where(sends.c.issue_slug == issue_slug).order_by(sends.c.id)
    ).all()
    found = [_send_from_row(r) for r in rows]
    if list_slug is not None:
        found = [s for s in found if list_slug in s.lists]
    return found


# --- who a new send goes to ---------------------------------------------------------------


def _eligible(issue_slug: str, slugs: Iterable[str], ids: Sequence[int]) -> sa.Select[Any]:
    """Subscribed, globally active members of the lists, one row per subscriber.

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
            ~sa.exists(earlier_list),
            ~sa.exists(other),
        )
    )


def count_eligible(conn: Connection, issue_slug: str, slugs: Sequence[str]) -> tuple[int, int]:
    """``(recipients, covered)``: who a new send to the lists would go to, and how many
    members it leaves out because another send of the issue (to other lists) reached them."""
    ids = list(list_ids(conn, slugs).values())
    eligible = _eligible(issue_slug, slugs, ids).subquery()
    n = int(conn.scalar(sa.select(sa.func.count()).select_from(eligible)) or 0)
    members = (
        sa.select(subscribers.c.id)
        .select_from(subscriptions.join(subscribers))
        .where(
            subscriptions.c.list_id.in_(ids),
            subscriptions.c.status == "subscribed",
            subscribers.c.status == "active",
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
        for r in rows:
            yield EligibleRecipient(
                r.subscriber_id, r.list_id, r.email, r.name, dict(r.attributes or {})
            )
        after = rows[-1].subscriber_id


def iter_eligible(
    conn: Connection, issue_slug: str, slugs: Sequence[str], *, page: int = 1000
) -> Iterator[EligibleRecipient]:
    """The recipients of a new send to the lists, by subscriber id, read in pages."""
    ids = list(list_ids(conn, slugs).values())
    base = _eligible(issue_slug, slugs, ids).add_columns(
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
    owner: str,
) -> SendRow:
    """Create a send and freeze its recipients into the ledger (one INSERT ... SELECT)."""
    now = utcnow()
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
            runs=1,
            active_seconds=0.0,
            owner=owner,
            heartbeat_at=now,
            created_at=now,
            started_at=now,
        )
    ).inserted_primary_key
    assert pk is not None
    send_id = int(pk[0])
    eligible = _eligible(issue_slug, list_slugs, ids).subquery()
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
    return get_send(conn, send_id)


# --- running a send -----------------------------------------------------------------------


def _alive(owner: str, now: datetime, heartbeat: datetime | None) -> bool:
    """Whether the process named ``owner`` may still be running its send."""
    host, _, pid_text = owner.rpartition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return False  # a send this very process left running (an earlier run in tests)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # someone else's process with that pid: fall back to the heartbeat
        else:
            # The pid is alive; a stale heartbeat means the pid was reused.
            return heartbeat is not None and now - heartbeat < STALE_AFTER
    return heartbeat is not None and now - heartbeat < STALE_AFTER


def check_not_running(send: SendRow, owner: str) -> None:
    """Raise :class:`SendBusy` when a live process other than ``owner`` runs ``send``."""
    if (
        send.state == "running"
        and send.owner
        and send.owner != owner
        and _alive(send.owner, utcnow(), send.heartbeat_at)
    ):
        host, _, pid = send.owner.rpartition(":")
        raise SendBusy(
            f"This send is already running (process {pid} on {host}).",
            hint="Wait for it to finish, or stop it with Ctrl-C; then run the command again.",
        )


def acquire(conn: Connection, send: SendRow, owner: str) -> int:
    """Take a send over to run it; returns how many recipients were in doubt.

    Refused (:class:`SendBusy`) while another live process runs it. Rows left in
    ``sending`` by a crash go back to ``pending`` (they will be sent again with the same
    Message-ID) and are added to the send's in-doubt count; rows left ``queued`` never
    left and simply go back.
    """
    now = utcnow()
    check_not_running(get_send(conn, send.id), owner)
    in_doubt = conn.execute(
        deliveries.update()
        .where(deliveries.c.send_id == send.id, deliveries.c.state == "sending")
        .values(state="pending", next_attempt_at=None, updated_at=now)
    ).rowcount
    conn.execute(
        deliveries.update()
        .where(deliveries.c.send_id == send.id, deliveries.c.state == "queued")
        .values(state="pending", next_attempt_at=None, updated_at=now)
    )
    conn.execute(
        sends.update()
        .where(sends.c.id == send.id)
        .values(
            state="running",
            note="",
            owner=owner,
            heartbeat_at=now,
            in_doubt=sends.c.in_doubt + in_doubt,
            runs=sends.c.runs + 1,
            started_at=sa.func.coalesce(sends.c.started_at, now),
            retry_at=None,
        )
    )
    return int(in_doubt)


def heartbeat(conn: Connection, send_id: int, owner: str) -> None:
    """Tell other processes this send is still being run by ``owner``."""
    conn.execute(
        sends.update()
        .where(sends.c.id == send_id, sends.c.owner == owner)
        .values(heartbeat_at=utcnow())
    )


def _claimable(send_id: int, ids: Sequence[int], wanted: Sequence[int]) -> sa.Select[Any]:
    subscribed = sa.exists(
        sa.select(sa.literal(1))
        .select_from(subscriptions)
        .where(
            subscriptions.c.subscriber_id == deliveries.c.subscriber_id,
            subscriptions.c.list_id.in_(ids),
            subscriptions.c.status == "subscribed",
        )
    )
    return (
        sa.select(
            deliveries.c.subscriber_id,
            deliveries.c.list_id,
            deliveries.c.email,
            deliveries.c.message_id,
            deliveries.c.state,
            deliveries.c.attempts,
            deliveries.c.first_attempt_at,
            subscribers.c.name,
            subscribers.c.attributes,
            sa.and_(subscribers.c.status == "active", subscribed).label("eligible"),
        )
        .select_from(deliveries.join(subscribers))
        .where(deliveries.c.send_id == send_id, deliveries.c.subscriber_id.in_(wanted))
    )


def due_queries(send_id: int, limit: int) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The two queries that find due work: deferred rows whose time has come, pending rows.

    Only ids are selected so each is answered from the index on (send_id, state,
    next_attempt_at) alone -- whose entries end with the primary key's subscriber_id, so
    pending rows (next_attempt_at IS NULL) come out in subscriber order without a sort.
    Asked for more columns, SQLite prefers walking the primary key, which late in a big
    send passes over every row already sent.
    """
    deferred = (
        sa.select(deliveries.c.subscriber_id)
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.state == "deferred",
            deliveries.c.next_attempt_at <= utcnow(),
        )
        .order_by(deliveries.c.next_attempt_at)
        .limit(limit)
    )
    pending = (
        sa.select(deliveries.c.subscriber_id)
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.state == "pending",
            deliveries.c.next_attempt_at.is_(None),
        )
        .order_by(deliveries.c.subscriber_id)
        .limit(limit)
    )
    return deferred, pending


def _due(conn: Connection, send_id: int, limit: int) -> list[int]:
    """Subscriber ids of up to ``limit`` due recipients: deferred ones first."""
    deferred, pending = due_queries(send_id, limit)
    found = list(conn.scalars(deferred))
    if len(found) < limit:
        found += conn.scalars(pending.limit(limit - len(found)))
    return found


def claim(
    conn: Connection,
    send_id: int,
    ids: Sequence[int],
    limit: int,
    message_id_for: Callable[[str], str],
) -> Batch:
    """Claim up to ``limit`` due recipients.

    Deferred recipients whose retry time has come go first, then pending ones in
    subscriber order. The suppression list is read here, for this batch: whoever
    unsubscribed (from these lists or everything), bounced, complained or was blocked since
    the send started becomes ``skipped``. The rest become ``queued``, with their Message-ID
    fixed the first time; none may leave before :func:`promote` made it ``sending``.
    """
    now = utcnow()
    due = _due(conn, send_id, limit)
    exhausted = len(due) < limit
    if not due:
        return Batch([], 0, exhausted)
    rows = {r.subscriber_id: r for r in conn.execute(_claimable(send_id, ids, due))}
    claimed: list[Claimed] = []
    skipped: list[int] = []
    for subscriber_id in due:
        r = rows.get(subscriber_id)
        if r is None:
            continue  # erased since (the delete cascades to the ledger)
        if not r.eligible:
            skipped.append(subscriber_id)
            continue
        claimed.append(
            Claimed(
                subscriber_id,
                r.list_id,
                r.email,
                r.message_id or message_id_for(r.email),
                r.state,
                r.attempts,
                r.first_attempt_at,
                r.name,
                dict(r.attributes or {}),
            )
        )
    if skipped:
        skip(conn, send_id, skipped)
    if claimed:
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.send_id == send_id,
                deliveries.c.subscriber_id == sa.bindparam("b_id"),
            )
            .values(state="queued", message_id=sa.bindparam("b_mid"), updated_at=now),
            [{"b_id": c.subscriber_id, "b_mid": c.message_id} for c in claimed],
        )
    return Batch(claimed, len(skipped), exhausted)


def promote(conn: Connection, send_id: int, subscriber_ids: Iterable[int]) -> set[int]:
    """Let claimed recipients' messages leave: ``queued`` -> ``sending``; the ids promoted.

    The caller commits before any of these messages leaves, so after a crash the rows in
    ``sending`` are the only ones that may have gone out. A row no longer ``queued`` (the
    subscriber was erased since) is not promoted, and its message must not leave.
    """
    ids = list(subscriber_ids)
    if not ids:
        return set()
    rows = conn.execute(
        deliveries.update()
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.subscriber_id.in_(ids),
            deliveries.c.state == "queued",
        )
        .values(state="sending", updated_at=utcnow())
        .returning(deliveries.c.subscriber_id)
    )
    return {int(r[0]) for r in rows}


def skip(
    conn: Connection,
    send_id: int,
    subscriber_ids: Iterable[int],
    reason: str = "unsubscribed during the send",
) -> None:
    """Mark recipients ``skipped``: they stopped wanting mail before theirs left."""
    ids = list(subscriber_ids)
    if ids:
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.send_id == send_id,
                deliveries.c.subscriber_id.in_(ids),
                deliveries.c.state.in_(OPEN_STATES),
            )
            .values(state="skipped", last_code=None, last_reply=reason, updated_at=utcnow())
        )


def release(conn: Connection, send_id: int, subscriber_ids: Iterable[int]) -> None:
    """Return claimed recipients whose messages never left to ``pending``."""
    ids = list(subscriber_ids)
    if ids:
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.send_id == send_id,
                deliveries.c.subscriber_id.in_(ids),
                deliveries.c.state.in_(("queued", "sending")),
            )
            .values(state="pending", next_attempt_at=None, updated_at=utcnow())
        )


def record(conn: Connection, send_id: int, outcomes: Sequence[Outcome]) -> None:
    """Record what happened to promoted recipients (only rows still ``sending`` change)."""
    if not outcomes:
        return
    now = utcnow()
    conn.execute(
        deliveries.update()
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.subscriber_id == sa.bindparam("b_id"),
            deliveries.c.state == "sending",
        )
        .values(
            state=sa.bindparam("b_state"),
            attempts=sa.bindparam("b_attempts"),
            last_code=sa.bindparam("b_code"),
            last_reply=sa.bindparam("b_reply"),
            first_attempt_at=sa.bindparam("b_first", type_=deliveries.c.first_attempt_at.type),
            next_attempt_at=sa.bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
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
        )
    )
    return {r.subscriber_id for r in rows}


def last_event_id(conn: Connection) -> int:
    """The newest entry in the subscribers' history (0 when there is none)."""
    return int(conn.scalar(sa.select(sa.func.max(events.c.id))) or 0)


def suppressed_since(conn: Connection, after_event: int) -> tuple[int, set[int]]:
    """Subscribers who unsubscribed or were suppressed after history entry ``after_event``.

    Returns the newest entry id seen and the subscriber ids. The history is append-only
    with increasing ids, so this reads only what is new: cheap enough to poll every second.
    """
    # Within one transaction the database is a snapshot: nothing between reading the top id
    # and the rows below it can be missed.
    top = last_event_id(conn)
    rows = conn.execute(
        sa.select(events.c.subscriber_id).where(
            events.c.id > after_event,
            events.c.id <= top,
            events.c.kind.in_(_SUPPRESSING_EVENTS),
        )
    ).all()
    return top, {r.subscriber_id for r in rows}


def finish(
    conn: Connection,
    send_id: int,
    state: str,
    *,
    note: str = "",
    retry_at: datetime | None = None,
    active_seconds: float = 0.0,
) -> None:
    """Record how a run of the send ended and release it."""
    now = utcnow()
    conn.execute(
        sends.update()
        .where(sends.c.id == send_id)
        .values(
            state=state,
            note=note,
            retry_at=retry_at,
            owner="",
            heartbeat_at=now,
            active_seconds=sends.c.active_seconds + active_seconds,
            finished_at=now if state == "done" else None,
        )
    )


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


def sent_since(conn: Connection, send_id: int, since: datetime) -> list[datetime]:
    """When each message of the send accepted after ``since`` was recorded (hourly limits)."""
    return list(
        conn.scalars(
            sa.select(deliveries.c.updated_at)
            .where(
                deliveries.c.send_id == send_id,
                deliveries.c.state == "sent",
                deliveries.c.updated_at > since,
            )
            .order_by(deliveries.c.updated_at)
        )
    )


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
