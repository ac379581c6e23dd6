"""Pending sign-ups (double opt-in), their confirmation, and the preferences page's changes.

A sign-up from a form is a ``signups`` row, one per address and list, until the person
confirms it from the mail (then it becomes a subscription with a consent record and the row
goes) or it is purged after :data:`PENDING_DAYS` days. Decisions, stated once:

* **One mail a day.** A row's ``mailed_at`` is claimed with one conditional UPDATE (older
  than :data:`MAIL_INTERVAL`, or never), so two forms posted at once by two serve processes
  send one mail between them, and nobody can use the form to mail-bomb an address.
* **Blocked is silent.** A blocked address, or an address at a blocked domain (or under one:
  blocking ``example.org`` blocks ``mail.example.org``), gets no row and no mail; the caller
  answers as it answers everybody.
* **An opt-out is sacred.** A form on a single opt-in list subscribes at once only an
  address with no opt-out behind it; one that unsubscribed, bounced or complained goes
  through the confirmation mail like on a double opt-in list, and only the confirmation --
  the person's own action -- subscribes it again (:func:`confirm`).
* **A token names one sign-up.** Confirmation tokens carry the row id and the time they were
  made; a row created after that time is another sign-up (SQLite may reuse a deleted id),
  so an old token never confirms it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from bulletin.store.consent import record_consent
from bulletin.store.normalise import NormalisedSubscriber
from bulletin.store.schema import (
    lists,
    signups,
    subscribers,
    subscriptions,
    utcnow,
)
from bulletin.store.subscribers import (
    MailingList,
    Subscriber,
    SubscriptionRefused,
    add_subscriber,
    find_list_by_id,
    get_subscriber_by_id,
    is_blocked,
    record_event,
    unsubscribe,
)

MAIL_INTERVAL = timedelta(hours=24)
"""At most one confirmation mail per address and list in this time."""

PENDING_DAYS = 30
"""Sign-ups not confirmed within this many days are purged."""


@dataclass(frozen=True)
class Pending:
    """A sign-up row as the confirmation mail needs it."""

    id: int
    list_id: int
    email: str
    name: str
    language: str
    consent_text: str
    consent_version: int
    ip: str | None
    created_at: datetime
    mailed_at: datetime | None


@dataclass(frozen=True)
class SignupOutcome:
    """What a form post did; the web page is the same whatever it is (no enumeration)."""

    action: Literal["mail", "subscribed", "nothing"]
    """``mail``: send the confirmation of ``pending`` now; ``subscribed``: single opt-in,
    done; ``nothing``: blocked, or a confirmation was mailed less than a day ago."""
    pending: Pending | None = None


def _pending(row: Any) -> Pending:
    return Pending(
        row.id,
        row.list_id,
        row.email,
        row.name,
        row.language,
        row.consent_text,
        row.consent_version,
        row.ip,
        row.created_at,
        row.mailed_at,
    )


def _opted_out(conn: Connection, email_key: str, list_id: int) -> bool:
    """Whether the address has an opt-out that only a confirmation may lift."""
    row = conn.execute(
        sa.select(subscribers.c.status, subscriptions.c.status.label("on_list"))
        .select_from(
            subscribers.outerjoin(
                subscriptions,
                sa.and_(
                    subscriptions.c.subscriber_id == subscribers.c.id,
                    subscriptions.c.list_id == list_id,
                ),
            )
        )
        .where(subscribers.c.email_key == email_key)
    ).first()
    return row is not None and (row.status != "active" or row.on_list == "unsubscribed")


def request(
    conn: Connection,
    the_list: MailingList,
    entry: NormalisedSubscriber,
    *,
    consent_text: str,
    ip: str | None,
    now: datetime | None = None,
) -> SignupOutcome:
    """Record a sign-up from a form for ``the_list``; say whether to mail a confirmation.

    ``consent_text`` is the text the form showed (stored with the list's current version);
    ``ip`` is stored only if the caller passes one (``privacy.store_ip``).
    """
    now = now or utcnow()
    address = entry.address
    if is_blocked(conn, address.key):
        return SignupOutcome("nothing")
    if the_list.opt_in == "single" and not _opted_out(conn, address.key, the_list.id):
        try:
            result = add_subscriber(
                conn,
                address.email,
                the_list.slug,
                name=entry.name or None,
                language=entry.language or None,
                source="form",
            )
        except SubscriptionRefused:  # pragma: no cover - _opted_out and is_blocked said no
            return SignupOutcome("nothing")
        if result.outcome != "already":
            record_consent(
                conn,
                result.subscriber.id,
                the_list.id,
                source="form",
                detail="single opt-in",
                consent_text=consent_text,
                consent_version=the_list.consent_version,
                given_at=now,
                ip=ip,
            )
        return SignupOutcome("subscribed")
    values = {
        "list_id": the_list.id,
        "email": address.email,
        "email_key": address.key,
        "name": entry.name or "",
        "language": entry.language or "",
        "consent_text": consent_text,
        "consent_version": the_list.consent_version,
        "ip": ip,
        "created_at": now,
        "mailed_at": None,
    }
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(signups)
    conn.execute(insert.values(**values).on_conflict_do_nothing())
    # Claim the day's one mail: only the statement that changes mailed_at may send it.
    claimed = conn.execute(
        signups.update()
        .where(
            signups.c.email_key == address.key,
            signups.c.list_id == the_list.id,
            sa.or_(signups.c.mailed_at.is_(None), signups.c.mailed_at <= now - MAIL_INTERVAL),
        )
        .values(
            mailed_at=now,
            # The latest form's words: the mail carries them and the confirmation keeps them.
            name=values["name"],
            language=values["language"],
            consent_text=consent_text,
            consent_version=the_list.consent_version,
            ip=ip,
        )
        .returning(*signups.c)
    ).first()
    if claimed is None:
        return SignupOutcome("nothing")
    return SignupOutcome("mail", _pending(claimed))


@dataclass(frozen=True)
class Confirmed:
    """A confirmed sign-up: who, on which list, and what it changed."""

    subscriber: Subscriber
    list: MailingList
    outcome: Literal["added", "resubscribed", "already"]


def confirm(
    conn: Connection,
    signup_id: int,
    issued_at: int,
    *,
    ip: str | None,
    now: datetime | None = None,
) -> Confirmed | None:
    """Turn a sign-up into a subscription with a consent record; None if it is not there.

    The person's own confirmed action: an address that unsubscribed, bounced or complained
    is subscribed again (and its history says so, source ``form``); a blocked one never is
    (None, and the sign-up goes). ``issued_at`` is the token's time: a row created after it
    is another sign-up.
    """
    now = now or utcnow()
    query = sa.select(signups).where(signups.c.id == signup_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None or row.created_at.timestamp() > issued_at + 1:
        return None
    if row.created_at < now - timedelta(days=PENDING_DAYS):
        return None
    conn.execute(signups.delete().where(signups.c.id == signup_id))
    the_list = find_list_by_id(conn, row.list_id)
    if the_list is None or is_blocked(conn, row.email_key):
        return None
    try:
        result = add_subscriber(
            conn,
            row.email,
            the_list.slug,
            name=row.name or None,
            language=row.language or None,
            source="form",
            resubscribe=True,
        )
    except SubscriptionRefused:
        return None
    record_consent(
        conn,
        result.subscriber.id,
        the_list.id,
        source="form",
        detail="double opt-in",
        consent_text=row.consent_text,
        consent_version=row.consent_version,
        given_at=row.created_at,
        confirmed_at=now,
        ip=ip,
    )
    return Confirmed(result.subscriber, the_list, result.outcome)


def find(conn: Connection, signup_id: int) -> Pending | None:
    """A pending sign-up by id, or None."""
    row = conn.execute(sa.select(signups).where(signups.c.id == signup_id)).first()
    return _pending(row) if row is not None else None


def purge(conn: Connection, *, now: datetime | None = None) -> int:
    """Delete sign-ups older than :data:`PENDING_DAYS` days; how many went."""
    cutoff = (now or utcnow()) - timedelta(days=PENDING_DAYS)
    return int(conn.execute(signups.delete().where(signups.c.created_at < cutoff)).rowcount or 0)


def count_pending(conn: Connection) -> int:
    """How many sign-ups wait for confirmation."""
    return int(conn.scalar(sa.select(sa.func.count()).select_from(signups)) or 0)


# --- the preferences page ---------------------------------------------------------------


@dataclass(frozen=True)
class ListChoice:
    """A public list on someone's preferences page, and whether they receive it."""

    list: MailingList
    subscribed: bool


@dataclass(frozen=True)
class Preferences:
    """What the preferences page shows a subscriber."""

    subscriber: Subscriber
    choices: list[ListChoice]
    suppressed: bool
    """Globally unsubscribed, bounced, complained or blocked: receives nothing."""


def preferences(conn: Connection, subscriber_id: int) -> Preferences | None:
    """A subscriber's public lists (and any private list they are on), or None if gone."""
    sub = get_subscriber_by_id(conn, subscriber_id)
    if sub is None:
        return None
    on = dict(
        conn.execute(
            sa.select(subscriptions.c.list_id, subscriptions.c.status).where(
                subscriptions.c.subscriber_id == subscriber_id
            )
        ).all()
    )
    rows = conn.execute(
        sa.select(lists.c.id)
        .where(sa.or_(lists.c.public.is_(True), lists.c.id.in_(list(on) or [-1])))
        .order_by(lists.c.name, lists.c.slug)
    ).all()
    choices = []
    for (list_id,) in rows:
        the_list = find_list_by_id(conn, list_id)
        assert the_list is not None
        # A private list is shown only while they receive it, so they can leave it.
        if not the_list.public and on.get(list_id) != "subscribed":
            continue
        subscribed = on.get(list_id) == "subscribed" and sub.status == "active"
        choices.append(ListChoice(the_list, subscribed))
    return Preferences(sub, choices, sub.status != "active")


@dataclass(frozen=True)
class PreferenceChanges:
    """What a preferences POST asks for."""

    wanted: frozenset[int]
    """List ids they want to receive (lists on the page not in here are left)."""
    name: str | None
    language: str | None
    leave_all: bool


def apply_preferences(
    conn: Connection,
    subscriber_id: int,
    changes: PreferenceChanges,
    *,
    consent_text: Any,
    ip: str | None,
) -> Preferences | None:
    """Apply a preferences POST: join or leave lists, change name and language, leave all.

    Joining a public list there is the person's own action: it subscribes (even after an
    unsubscribe, never when blocked) and records a consent with source ``preferences``
    (``consent_text(list)`` gives the text the page showed). Only lists the page shows can
    be changed; anything else in the request is ignored.
    """
    page = preferences(conn, subscriber_id)
    if page is None:
        return None
    sub = page.subscriber
    values: dict[str, Any] = {}
    if changes.name is not None and changes.name != sub.name:
        values["name"] = changes.name
    if changes.language is not None and changes.language != sub.language:
        values["language"] = changes.language
    if values:
        conn.execute(
            subscribers.update()
            .where(subscribers.c.id == sub.id)
            .values(updated_at=utcnow(), **values)
        )
        record_event(conn, sub.id, "updated", detail=", ".join(sorted(values)), source="web")
    if changes.leave_all:
        unsubscribe(conn, sub.id, None, "web", detail="preferences: all lists")
        return preferences(conn, subscriber_id)
    blocked = is_blocked(conn, sub.email)  # the address, or its domain since it subscribed
    for choice in page.choices:
        wanted = choice.list.id in changes.wanted
        if wanted and not choice.subscribed and choice.list.public and not blocked:
            result = add_subscriber(
                conn, sub.email, choice.list.slug, source="preferences", resubscribe=True
            )
            if result.outcome != "already":
                record_consent(
                    conn,
                    sub.id,
                    choice.list.id,
                    source="preferences",
                    consent_text=consent_text(choice.list),
                    consent_version=choice.list.consent_version,
                    confirmed_at=utcnow(),
                    ip=ip,
                )
        elif not wanted and choice.subscribed:
            unsubscribe(conn, sub.id, choice.list.slug, "web", detail="preferences")
    return preferences(conn, subscriber_id)
