"""Subscribers, lists, subscriptions, suppression and history.

Functions take a :class:`~sqlalchemy.engine.Connection` inside a transaction opened by the
caller (``bulletin.store.db.write_transaction`` for changes), so several calls commit or roll
back together. Every change appends to the ``events`` history that ``subscribers show``
prints.

Rules that every path honours:

* a subscriber whose global status is not ``active`` (unsubscribed from everything, bounced,
  complained, blocked) receives nothing from any list;
* an address that unsubscribed, bounced or complained is never re-subscribed unless the caller
  says ``resubscribe=True``; ``blocked`` is never lifted by a subscribe;
* an address at a blocked domain (``blocked_domains``), or under one (blocking
  ``example.org`` blocks ``mail.example.org``), counts as blocked everywhere: it is never
  sent to and never subscribed. :func:`is_blocked` answers for one address and
  :func:`domain_blocked` is the same rule as a SQL condition; nothing else decides it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bulletin.errors import BulletinError
from bulletin.store.consent import Consent, consents_of
from bulletin.store.normalise import (
    AddressValidator,
    InvalidAddress,
    InvalidField,
    address_domain,
    address_key,
    clean_language,
    clean_name,
    clean_value,
    normalise_subscriber,
)
from bulletin.store.schema import (
    GLOBAL_STATUSES,
    OPT_IN_MODES,
    SUPPRESSED_STATUSES,
    blocked_domains,
    consents,
    events,
    inbound_messages,
    lists,
    subscribers,
    subscriptions,
    utcnow,
)

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\Z")

EffectiveStatus = Literal["subscribed", "unsubscribed", "bounced", "complained", "blocked"]
EFFECTIVE_STATUSES: tuple[EffectiveStatus, ...] = (
    "subscribed",
    "unsubscribed",
    "bounced",
    "complained",
    "blocked",
)
"""What a subscription amounts to: ``subscribed`` receives mail, the others do not."""


class UnknownList(BulletinError):
    """A list slug that does not exist."""


class UnknownSubscriber(BulletinError):
    """An address that is not in the store."""


class SubscriptionRefused(BulletinError):
    """Subscribing would override an unsubscribe, a bounce, a complaint or a block."""


@dataclass(frozen=True)
class MailingList:
    """A list: ``slug`` on the command line, ``name`` for people, and its signup settings."""

    id: int
    slug: str
    name: str
    created_at: datetime
    description: str = ""
    public: bool = False
    """Has a signup form and appears on the preferences page."""
    opt_in: str = "double"
    """``double``: a form sign-up is subscribed once confirmed by mail; ``single``: at once."""
    language: str = ""
    """The language of the list's public pages and mails (``""``: newsletter.language)."""
    consent_text: str = ""
    """The list's own consent text (``""``: the localised default naming the newsletter)."""
    consent_version: int = 1
    """Goes up by one each time the consent text changes; consent records name it."""


@dataclass(frozen=True)
class ListSettings:
    """What ``lists create`` and ``lists edit`` set; None leaves a setting as it is."""

    name: str | None = None
    description: str | None = None
    public: bool | None = None
    opt_in: str | None = None
    language: str | None = None
    consent_text: str | None = None


@dataclass(frozen=True)
class Subscriber:
    """One address and what we know about it."""

    id: int
    email: str
    email_key: str
    ascii_email: str | None
    smtputf8: bool
    name: str
    language: str
    attributes: dict[str, Any]
    status: str
    source: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Membership:
    """A subscriber's subscription to one list."""

    list_slug: str
    list_name: str
    status: str
    effective: EffectiveStatus
    source: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class HistoryEvent:
    """One entry of a subscriber's history."""

    at: datetime
    kind: str
    list_slug: str | None
    detail: str
    source: str


@dataclass(frozen=True)
class SubscriberDetails:
    """Everything ``subscribers show`` prints."""

    subscriber: Subscriber
    memberships: list[Membership]
    history: list[HistoryEvent]
    consents: list[Consent] = field(default_factory=list)
    """Every consent record, oldest first (:func:`bulletin.store.consent.consents_of`)."""


@dataclass(frozen=True)
class ListCounts:
    """A list and how many of its members are in each effective status."""

    slug: str
    name: str
    counts: dict[EffectiveStatus, int] = field(default_factory=dict)
    public: bool = False
    opt_in: str = "double"

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class RecipientRow:
    """Someone who should receive a list's next issue (what the send engine reads)."""

    id: int
    email: str
    ascii_email: str | None
    smtputf8: bool
    name: str
    language: str
    attributes: dict[str, Any]


# --- lists ------------------------------------------------------------------------------


def check_slug(slug: str) -> str:
    """Return ``slug`` if it is a valid list slug, else raise a BulletinError saying why."""
    if not _SLUG.match(slug):
        raise BulletinError(
            f"{slug!r} is not a valid list slug.",
            hint="Use lower-case letters, digits and dashes, e.g. `newsletter-ro` "
            "(at most 64 characters).",
        )
    return slug


def _list_from_row(row: Row[Any]) -> MailingList:
    return MailingList(
        row.id,
        row.slug,
        row.name,
        row.created_at,
        description=row.description,
        public=bool(row.public),
        opt_in=row.opt_in,
        language=row.language,
        consent_text=row.consent_text,
        consent_version=row.consent_version,
    )


def find_list(conn: Connection, slug: str) -> MailingList | None:
    """The list with this slug, or None."""
    row = conn.execute(sa.select(lists).where(lists.c.slug == slug)).first()
    return _list_from_row(row) if row else None


def find_list_by_id(conn: Connection, list_id: int) -> MailingList | None:
    """The list with this id (an unsubscribe token carries it), or None if it was deleted."""
    row = conn.execute(sa.select(lists).where(lists.c.id == list_id)).first()
    return _list_from_row(row) if row else None


def get_list(conn: Connection, slug: str) -> MailingList:
    """The list with this slug; :class:`UnknownList` (with the known slugs) if there is none."""
    found = find_list(conn, slug)
    if found is None:
        known = list(conn.scalars(sa.select(lists.c.slug).order_by(lists.c.slug)))
        hint = f"Create it with `bulletin lists create {slug}`"
        hint += f"; known lists: {', '.join(known)}." if known else "; there are no lists yet."
        raise UnknownList(f"List {slug!r} does not exist.", hint=hint)
    return found


def create_list(
    conn: Connection,
    slug: str,
    name: str | None = None,
    settings: ListSettings | None = None,
) -> MailingList:
    """Create a list; an existing slug is an error.

    ``settings`` (its ``name`` wins over ``name``) sets the signup settings; by default a
    list is private, double opt-in, in the newsletter's language, with the default consent
    text.
    """
    check_slug(slug)
    if find_list(conn, slug) is not None:
        raise BulletinError(f"List {slug!r} already exists.", hint="See `bulletin lists`.")
    settings = settings or ListSettings()
    values = _list_values(slug, settings, name=settings.name or name or slug)
    now = utcnow()
    conn.execute(lists.insert().values(slug=slug, created_at=now, **values))
    created = find_list(conn, slug)
    assert created is not None
    return created


def edit_list(conn: Connection, slug: str, settings: ListSettings) -> MailingList:
    """Change a list's name and signup settings; a new consent text bumps its version.

    The version goes up only when the text really changes (setting the same text again is
    no change), so consent records keep pointing at the words people saw.
    """
    current = get_list(conn, slug)
    values = _list_values(slug, settings, name=settings.name)
    changed = {k: v for k, v in values.items() if getattr(current, k) != v}
    if "consent_text" in changed:
        changed["consent_version"] = current.consent_version + 1
    if changed:
        conn.execute(lists.update().where(lists.c.id == current.id).values(**changed))
    edited = find_list(conn, slug)
    assert edited is not None
    return edited


def _list_values(slug: str, settings: ListSettings, *, name: str | None) -> dict[str, Any]:
    """The columns ``settings`` sets, cleaned by the store's rules (BulletinError if refused)."""
    values: dict[str, Any] = {}
    try:
        # A list's name is shown like a subscriber's: the same rule for what it may hold.
        if name is not None:
            values["name"] = clean_name(name)[0] or slug
        if settings.description is not None:
            values["description"] = clean_name(settings.description)[0]
        if settings.language is not None:
            values["language"] = clean_language(settings.language)
        if settings.consent_text is not None:
            # Line breaks are kept: a consent text may be a short paragraph or two.
            values["consent_text"] = clean_value(settings.consent_text, "consent_text")[0]
    except InvalidField as exc:
        raise BulletinError(f"List {slug!r}: {exc}.", hint=exc.hint) from None
    if settings.public is not None:
        values["public"] = settings.public
    if settings.opt_in is not None:
        if settings.opt_in not in OPT_IN_MODES:
            raise BulletinError(
                f"List {slug!r}: opt-in {settings.opt_in!r} is not one of "
                f"{', '.join(OPT_IN_MODES)}."
            )
        values["opt_in"] = settings.opt_in
    return values


def _effective(
    list_status: sa.ColumnElement[Any],
    global_status: sa.ColumnElement[Any],
    blocked: AbstractSet[str] | None = None,
) -> Any:
    # An active address at a blocked domain is blocked (the rule of is_blocked).
    return sa.case(
        (list_status == "unsubscribed", "unsubscribed"),
        (global_status != "active", global_status),
        (domain_blocked(subscribers.c.email_key, blocked), "blocked"),
        else_="subscribed",
    )


def list_counts(conn: Connection) -> list[ListCounts]:
    """Every list with member counts by effective status, by slug."""
    blocked = blocked_domain_set(conn)
    effective = _effective(subscriptions.c.status, subscribers.c.status, blocked).label("effective")
    rows = conn.execute(
        sa.select(lists.c.id, effective, sa.func.count())
        .select_from(subscriptions.join(subscribers).join(lists))
        .group_by(lists.c.id, effective)
    ).all()
    counts: dict[int, dict[EffectiveStatus, int]] = {}
    for list_id, status, n in rows:
        counts.setdefault(list_id, {})[status] = n
    result = []
    for row in conn.execute(sa.select(lists).order_by(lists.c.slug)):
        by_status = {s: counts.get(row.id, {}).get(s, 0) for s in EFFECTIVE_STATUSES}
        result.append(ListCounts(row.slug, row.name, by_status, bool(row.public), row.opt_in))
    return result


# --- the blocklist ----------------------------------------------------------------------


class _DomainOf(FunctionElement[str]):
    """The domain of an ``email_key`` in SQL: what follows its (only) ``@``."""

    type = sa.Text()
    name = "domain_of"
    inherit_cache = True


@compiles(_DomainOf)
def _domain_of_sqlite(element: _DomainOf, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"substr({arg}, instr({arg}, '@') + 1)"


@compiles(_DomainOf, "postgresql")
def _domain_of_postgresql(element: _DomainOf, compiler: SQLCompiler, **kw: Any) -> str:
    return f"split_part({compiler.process(element.clauses, **kw)}, '@', 2)"


class _Under(FunctionElement[bool]):
    """SQL: ``domain`` is ``blocked`` or a subdomain of it (``mail.example.org`` is under
    ``example.org``; ``notexample.org`` is not)."""

    type = sa.Boolean()
    name = "domain_under"
    inherit_cache = True


@compiles(_Under)
def _under_sqlite(element: _Under, compiler: SQLCompiler, **kw: Any) -> str:
    domain, blocked = (compiler.process(c, **kw) for c in element.clauses)
    return f"({domain} = {blocked} OR substr({domain}, -length({blocked}) - 1) = '.' || {blocked})"


@compiles(_Under, "postgresql")
def _under_postgresql(element: _Under, compiler: SQLCompiler, **kw: Any) -> str:
    domain, blocked = (compiler.process(c, **kw) for c in element.clauses)
    return f"({domain} = {blocked} OR right({domain}, length({blocked}) + 1) = '.' || {blocked})"


class _Tail(FunctionElement[str]):
    """SQL: the last ``n`` characters of a text, then the ``width`` characters before them."""

    type = sa.Text()
    name = "tail"
    inherit_cache = False

    def __init__(self, text: sa.ColumnElement[str], n: int, width: int = 0) -> None:
        self.n, self.width = n, width
        super().__init__(text)


@compiles(_Tail)
def _tail_sqlite(element: _Tail, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.process(element.clauses, **kw)
    if element.width:
        return f"substr({text}, -{element.n + element.width}, {element.width})"
    return f"substr({text}, -{element.n})"


@compiles(_Tail, "postgresql")
def _tail_postgresql(element: _Tail, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.process(element.clauses, **kw)
    if element.width:
        return f"left(right({text}, {element.n + element.width}), {element.width})"
    return f"right({text}, {element.n})"


def domain_blocked(
    email_key: sa.ColumnElement[str], domains: AbstractSet[str] | None = None
) -> sa.ColumnElement[bool]:
    """SQL: the address ``email_key`` is at (or under) a blocked domain: the rule of
    :func:`is_blocked` for queries (sends, counts, exports).

    Stored addresses have exactly one ``@`` (the validator refuses quoted local parts), and
    their domain is lower-case Unicode as ``blocked_domains`` keeps it. Two forms:

    * ``domains`` given (the blocklist as :func:`blocked_domain_set` read it, in the same
      transaction): the key's last characters compared with the blocked domains of each
      length, then the character before them (``@`` or ``.``). A few string operations a
      row however long the blocklist, none when it is empty: for queries over a whole list
      (the send's freeze of a million recipients).
    * ``None``: a correlated EXISTS over ``blocked_domains``, two comparisons per blocked
      domain a row, always current: for a handful of rows (a batch about to leave).
    """
    if domains is not None:
        if not domains:
            return sa.false()
        by_length: dict[int, list[str]] = {}
        for d in domains:
            by_length.setdefault(len(d), []).append(d)
        return sa.or_(
            *(
                sa.and_(
                    _Tail(email_key, n).in_(sorted(same)),
                    _Tail(email_key, n, 1).in_(["@", "."]),
                )
                for n, same in sorted(by_length.items())
            )
        )
    return sa.exists(
        sa.select(sa.literal(1))
        .select_from(blocked_domains)
        .where(_Under(_DomainOf(email_key), blocked_domains.c.domain))
    )


def domain_of(email_key: str) -> str:
    """The domain of a stored address key, as ``blocked_domains`` keeps domains."""
    return email_key.rpartition("@")[2]


def blocking_domain(domain: str, blocked: AbstractSet[str]) -> str | None:
    """The entry of ``blocked`` that blocks ``domain`` (itself or a parent), or None."""
    while True:
        if domain in blocked:
            return domain
        _, dot, rest = domain.partition(".")
        if not dot:
            return None
        domain = rest


def domain_is_blocked(conn: Connection, email_key: str) -> bool:
    """Whether the domain of this address key (or a parent domain) is on the blocklist."""
    domain = domain_of(email_key)
    labels = domain.split(".")
    candidates = [".".join(labels[i:]) for i in range(len(labels))]
    found = conn.scalar(
        sa.select(blocked_domains.c.domain).where(blocked_domains.c.domain.in_(candidates)).limit(1)
    )
    return found is not None


def blocked_domain_set(conn: Connection) -> frozenset[str]:
    """Every blocked domain, for a bulk caller (an import) to test with :func:`blocking_domain`."""
    return frozenset(conn.scalars(sa.select(blocked_domains.c.domain)))


def is_blocked(conn: Connection, email: str) -> bool:
    """Whether ``email`` is blocked: the address itself, or its domain.

    The one check for every way in (import, ``subscribers add``, a signup form) and the
    rule behind :func:`domain_blocked`, which sends and counts use. A blocked address is
    never subscribed and never sent to; only an officer lifts a domain block.
    """
    key = address_key(email)
    if domain_is_blocked(conn, key):
        return True
    status = conn.scalar(sa.select(subscribers.c.status).where(subscribers.c.email_key == key))
    return status == "blocked"


@dataclass(frozen=True)
class BlockedDomain:
    """A domain on the blocklist, and how many stored addresses are at it."""

    domain: str
    source: str
    created_at: datetime
    addresses: int


def _domain_or_error(text: str) -> str:
    try:
        return address_domain(text)
    except InvalidAddress as exc:
        raise BulletinError(
            f"{text.strip()!r} {exc}.", hint="Write a domain as @example.org."
        ) from None


def _at_domain(domain: str) -> sa.ColumnElement[bool]:
    # The rule of domain_blocked for one domain (a LIKE on the key's end would also match
    # "x@notexample.org" for "example.org").
    return _Under(_DomainOf(subscribers.c.email_key), sa.literal(domain, sa.Text))


def _domain_event(conn: Connection, domain: str, kind: str, source: str) -> None:
    """One history event for every stored address at (or under) ``domain``."""
    conn.execute(
        events.insert().from_select(
            ["subscriber_id", "kind", "detail", "source", "at"],
            sa.select(
                subscribers.c.id,
                sa.literal(kind, sa.String),
                sa.literal(f"domain {domain}", sa.Text),
                sa.literal(source, sa.Text),
                sa.literal(utcnow(), events.c.at.type),
            ).where(_at_domain(domain)),
        )
    )


def block_domain(conn: Connection, text: str, source: str) -> tuple[str, bool]:
    """Put a domain on the blocklist; ``(domain, newly blocked)``.

    Every stored address at the domain gets a ``blocked`` event, so its history says why it
    receives nothing (and a running send's watch for suppressions sees it at once).
    """
    domain = _domain_or_error(text)
    if conn.scalar(sa.select(blocked_domains.c.domain).where(blocked_domains.c.domain == domain)):
        return domain, False
    conn.execute(blocked_domains.insert().values(domain=domain, source=source, created_at=utcnow()))
    _domain_event(conn, domain, "blocked", source)
    return domain, True


def unblock_domain(conn: Connection, text: str, source: str) -> tuple[str, bool]:
    """Take a domain off the blocklist; ``(domain, was blocked)``.

    Addresses that are blocked themselves, or unsubscribed, bounced or complained, stay so:
    only the domain's block is lifted.
    """
    domain = _domain_or_error(text)
    gone = conn.execute(blocked_domains.delete().where(blocked_domains.c.domain == domain))
    if not gone.rowcount:
        return domain, False
    _domain_event(conn, domain, "unblocked", source)
    return domain, True


def list_blocked_domains(conn: Connection) -> list[BlockedDomain]:
    """The blocked domains with how many stored addresses each holds, by domain."""
    rows = conn.execute(sa.select(blocked_domains).order_by(blocked_domains.c.domain)).all()
    return [
        BlockedDomain(
            r.domain,
            r.source,
            r.created_at,
            int(
                conn.scalar(
                    sa.select(sa.func.count()).select_from(subscribers).where(_at_domain(r.domain))
                )
                or 0
            ),
        )
        for r in rows
    ]


# --- subscribers ------------------------------------------------------------------------


def _subscriber_from_row(row: Row[Any]) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        email_key=row.email_key,
        ascii_email=row.ascii_email,
        smtputf8=bool(row.smtputf8),
        name=row.name,
        language=row.language,
        attributes=dict(row.attributes or {}),
        status=row.status,
        source=row.source,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def find_subscriber(conn: Connection, email: str) -> Subscriber | None:
    """The subscriber with this address (any case, any spelling of the domain), or None."""
    row = conn.execute(
        sa.select(subscribers).where(subscribers.c.email_key == address_key(email))
    ).first()
    return _subscriber_from_row(row) if row else None


def get_subscriber(conn: Connection, email: str) -> Subscriber:
    """The subscriber with this address; :class:`UnknownSubscriber` if there is none."""
    found = find_subscriber(conn, email)
    if found is None:
        raise UnknownSubscriber(
            f"{email} is not in the subscriber store.",
            hint="Add it with `bulletin subscribers add EMAIL --list SLUG`.",
        )
    return found


def get_subscriber_by_id(conn: Connection, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id (the unsubscribe token carries it), or None."""
    row = conn.execute(sa.select(subscribers).where(subscribers.c.id == subscriber_id)).first()
    return _subscriber_from_row(row) if row else None


def record_event(
    conn: Connection,
    subscriber_id: int,
    kind: str,
    *,
    list_id: int | None = None,
    detail: str = "",
    source: str = "",
    at: datetime | None = None,
) -> None:
    """Append one entry to a subscriber's history.

    ``at`` (default: now) dates an event that happened earlier, e.g. a bounce imported later.
    """
    conn.execute(
        events.insert().values(
            subscriber_id=subscriber_id,
            list_id=list_id,
            kind=kind,
            detail=detail,
            source=source,
            at=at or utcnow(),
        )
    )


def has_event_from(conn: Connection, subscriber_id: int, source: str) -> bool:
    """Whether the subscriber's history holds an event from ``source`` (e.g. one report)."""
    found = conn.scalar(
        sa.select(events.c.id)
        .where(events.c.subscriber_id == subscriber_id, events.c.source == source)
        .limit(1)
    )
    return found is not None


def claim_inbound_message(conn: Connection, intake: str, key: str) -> bool:
    """Record that the fetched message ``key`` is processed for ``intake``; False if it was.

    The primary key decides between runs that overlap: on PostgreSQL a second transaction
    inserting the same key waits for the first and then inserts nothing; SQLite's write lock
    serialises them. Call it in the transaction that acts on the message.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        inbound_messages
    )
    statement = insert.values(intake=intake, message_key=key, processed_at=utcnow())
    # RETURNING, not rowcount: psycopg reports a row for an insert that conflicted.
    claimed = statement.on_conflict_do_nothing().returning(inbound_messages.c.message_key)
    return conn.execute(claimed).first() is not None


def last_event_at(conn: Connection, subscriber_id: int, kind: str) -> datetime | None:
    """When the subscriber's latest event of ``kind`` happened, or None if there is none."""
    at: datetime | None = conn.scalar(
        sa.select(sa.func.max(events.c.at)).where(
            events.c.subscriber_id == subscriber_id, events.c.kind == kind
        )
    )
    return at


def count_events(
    conn: Connection, subscriber_id: int, kind: str, *, since: datetime, until: datetime
) -> int:
    """How many events of ``kind`` the subscriber's history holds from ``since`` to ``until``."""
    return int(
        conn.scalar(
            sa.select(sa.func.count())
            .select_from(events)
            .where(
                events.c.subscriber_id == subscriber_id,
                events.c.kind == kind,
                events.c.at >= since,
                events.c.at <= until,
            )
        )
        or 0
    )


@dataclass(frozen=True)
class AddResult:
    """What :func:`add_subscriber` did: ``added``, ``resubscribed`` or ``already`` subscribed."""

    subscriber: Subscriber
    outcome: Literal["added", "resubscribed", "already"]
    was: str | None = None
    """For ``resubscribed``: the status that was lifted."""
    cleaned: tuple[str, ...] = ()
    """Fields whose control characters were removed (``name``, ``attributes.city``)."""


def add_subscriber(
    conn: Connection,
    email: str,
    list_slug: str,
    *,
    name: str | None = None,
    language: str | None = None,
    attributes: Mapping[str, str] | None = None,
    source: str = "cli",
    resubscribe: bool = False,
    validator: AddressValidator | None = None,
) -> AddResult:
    """Subscribe one address to a list, creating the subscriber if needed.

    The address and fields follow the import's rules (:mod:`bulletin.store.normalise`):
    control characters are removed (``AddResult.cleaned`` says from which fields), anything
    else the import rejects is refused (:class:`~bulletin.store.normalise.InvalidSubscriber`).
    An unsubscribed, bounced or complained address is refused (:class:`SubscriptionRefused`)
    unless ``resubscribe`` is true; a blocked address is always refused. Given fields replace
    the stored ones.
    """
    the_list = get_list(conn, list_slug)
    entry = normalise_subscriber(
        email, name=name, language=language, attributes=attributes, validator=validator
    )
    address, name, language = entry.address, entry.name, entry.language
    now = utcnow()
    if domain_is_blocked(conn, address.key):
        raise SubscriptionRefused(
            f"{address.email}: the domain {domain_of(address.key)} is blocked; not subscribing it.",
            hint="Blocked addresses are never subscribed (see `bulletin subscribers blocked`).",
        )
    row = conn.execute(sa.select(subscribers).where(subscribers.c.email_key == address.key)).first()
    if row is None:
        sub_id = conn.execute(
            subscribers.insert().values(
                email=address.email,
                email_key=address.key,
                ascii_email=address.ascii_email,
                smtputf8=address.smtputf8,
                name=name or "",
                language=language or "",
                attributes=entry.attributes,
                status="active",
                source=source,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key
        assert sub_id is not None
        subscriber_id = int(sub_id[0])
        _subscribe(conn, subscriber_id, the_list.id, None, source, now)
        created = get_subscriber_by_id(conn, subscriber_id)
        assert created is not None
        return AddResult(created, "added", cleaned=entry.cleaned)

    subscriber_id = row.id
    list_status = conn.scalar(
        sa.select(subscriptions.c.status).where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.list_id == the_list.id,
        )
    )
    was = row.status if row.status != "active" else None
    if was is None and list_status == "unsubscribed":
        was = "unsubscribed"
    if was == "blocked" or (was is not None and not resubscribe):
        raise SubscriptionRefused(
            f"{row.email} is {_describe_status(row.status, list_status, list_slug)}; "
            "not subscribing it again.",
            hint="Pass --resubscribe if the person asked to be subscribed again."
            if was != "blocked"
            else "Blocked addresses are never subscribed.",
        )
    values: dict[str, Any] = {}
    if name is not None and name != row.name:
        values["name"] = name
    if language is not None and language != row.language:
        values["language"] = language
    if entry.attributes:
        merged = {**(row.attributes or {}), **entry.attributes}
        if merged != row.attributes:
            values["attributes"] = merged
    if was is not None and row.status != "active":
        values["status"] = "active"
    if values:
        conn.execute(
            subscribers.update()
            .where(subscribers.c.id == subscriber_id)
            .values(updated_at=now, **values)
        )
    changed = ", ".join(sorted(k for k in values if k != "status"))
    if changed:
        record_event(conn, subscriber_id, "updated", detail=changed, source=source)
    outcome: Literal["added", "resubscribed", "already"] = "already"
    if was is not None:
        _subscribe(conn, subscriber_id, the_list.id, list_status, source, now)
        outcome = "resubscribed"
        record_event(
            conn,
            subscriber_id,
            "resubscribed",
            list_id=the_list.id,
            detail=f"was {was}",
            source=source,
        )
    elif list_status is None:
        _subscribe(conn, subscriber_id, the_list.id, None, source, now)
        outcome = "added"
    updated = get_subscriber_by_id(conn, subscriber_id)
    assert updated is not None
    return AddResult(updated, outcome, was, entry.cleaned)


def _describe_status(global_status: str, list_status: str | None, list_slug: str) -> str:
    if global_status == "unsubscribed":
        return "unsubscribed from all lists"
    if global_status != "active":
        return global_status
    return f"unsubscribed from {list_slug}"


def _subscribe(
    conn: Connection,
    subscriber_id: int,
    list_id: int,
    current: str | None,
    source: str,
    now: datetime,
) -> None:
    if current is None:
        conn.execute(
            subscriptions.insert().values(
                subscriber_id=subscriber_id,
                list_id=list_id,
                status="subscribed",
                source=source,
                created_at=now,
                updated_at=now,
            )
        )
    else:
        conn.execute(
            subscriptions.update()
            .where(
                subscriptions.c.subscriber_id == subscriber_id,
                subscriptions.c.list_id == list_id,
            )
            .values(status="subscribed", updated_at=now)
        )


def unsubscribe(
    conn: Connection,
    subscriber_id: int,
    list_slug: str | None,
    source: str,
    *,
    detail: str = "",
) -> int:
    """Unsubscribe from one list, or from everything when ``list_slug`` is None.

    Idempotent: returns how many subscriptions changed (0 when already unsubscribed). With
    ``list_slug=None`` the global status also becomes ``unsubscribed`` (unless it is already
    a stronger suppression), so no later import or new list mails the address again.
    """
    list_id = None if list_slug is None else get_list(conn, list_slug).id
    changed_lists, _ = _unsubscribe_ids(conn, subscriber_id, list_id, source, detail)
    return len(changed_lists)


def _unsubscribe_ids(
    conn: Connection, subscriber_id: int, list_id: int | None, source: str, detail: str
) -> tuple[list[int], bool]:
    """What :func:`unsubscribe` does, by list id: (lists changed, global status changed)."""
    now = utcnow()
    where = [
        subscriptions.c.subscriber_id == subscriber_id,
        subscriptions.c.status != "unsubscribed",
    ]
    if list_id is not None:
        where.append(subscriptions.c.list_id == list_id)
    # The rows this statement changed, not the ones a read before it saw: on PostgreSQL two
    # unsubscribes of one address (two serve processes, a retry) can both read "subscribed",
    # and only the one whose UPDATE changed the row may record the event.
    changed_lists = sorted(
        conn.scalars(
            subscriptions.update()
            .where(*where)
            .values(status="unsubscribed", updated_at=now)
            .returning(subscriptions.c.list_id)
        )
    )
    for changed in changed_lists:
        record_event(
            conn, subscriber_id, "unsubscribed", list_id=changed, detail=detail, source=source
        )
    updated = False
    if list_id is None:
        updated = bool(
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id, subscribers.c.status == "active")
                .values(status="unsubscribed", updated_at=now)
            ).rowcount
        )
        if updated:
            record_event(
                conn, subscriber_id, "unsubscribed", detail=detail or "all lists", source=source
            )
    return changed_lists, updated


@dataclass(frozen=True)
class TokenUnsubscribe:
    """What an unsubscribe by token did (see :func:`unsubscribe_by_token`)."""

    subscriber_id: int
    email: str
    language: str
    list_slug: str | None
    """The token's list; None when the whole address was unsubscribed."""
    list_name: str | None
    changed: bool
    """Something changed; False when it was already unsubscribed (an idempotent repeat)."""


def unsubscribe_by_token(
    conn: Connection,
    subscriber_id: int,
    list_id: int | None,
    source: str,
    *,
    all_lists: bool = False,
) -> TokenUnsubscribe | None:
    """Unsubscribe who a token names from its list (or from everything), in ``conn``'s
    write transaction; None if the subscriber or the list is gone.

    The hot path of ``bulletin serve``'s one-click POSTs: one read (the subscriber and the
    token's list together) and then :func:`unsubscribe`'s own statements, whose ``UPDATE ...
    RETURNING`` says whether anything changed -- no read of the subscriptions before. A
    token for every list, or ``all_lists``, unsubscribes from everything.
    """
    row = conn.execute(
        sa.select(
            subscribers.c.email,
            subscribers.c.language,
            sa.select(lists.c.slug).where(lists.c.id == list_id).scalar_subquery(),
            sa.select(lists.c.name).where(lists.c.id == list_id).scalar_subquery(),
        ).where(subscribers.c.id == subscriber_id)
    ).first()
    if row is None:
        return None
    email, language, slug, name = row
    if list_id is not None and slug is None:
        return None
    target = None if all_lists or list_id is None else list_id
    changed_lists, updated = _unsubscribe_ids(conn, subscriber_id, target, source, "")
    return TokenUnsubscribe(
        subscriber_id,
        email,
        language,
        None if target is None else slug,
        None if target is None else name,
        bool(changed_lists) or updated,
    )


@dataclass(frozen=True)
class UnsubscribeTarget:
    """Who and what an unsubscribe token names, as the database says now."""

    subscriber: Subscriber
    list_slug: str | None
    """The token's list; None for a token that means every list."""
    list_name: str | None
    list_done: bool
    """Already unsubscribed from the token's list (or, for an all-lists token, from all)."""
    all_done: bool
    """Unsubscribed from everything: not globally active and on no list any more."""


def unsubscribe_target(
    conn: Connection, subscriber_id: int, list_id: int | None
) -> UnsubscribeTarget | None:
    """The subscriber and list an unsubscribe token names, or None if either is gone.

    The web page, one-click POSTs and mailed unsubscribes all read a token this way, so
    they agree on what "already unsubscribed" means.
    """
    sub = get_subscriber_by_id(conn, subscriber_id)
    if sub is None:
        return None
    still_on = set(
        conn.scalars(
            sa.select(subscriptions.c.list_id).where(
                subscriptions.c.subscriber_id == sub.id, subscriptions.c.status == "subscribed"
            )
        )
    )
    all_done = sub.status != "active" and not still_on
    if list_id is None:
        return UnsubscribeTarget(sub, None, None, all_done, all_done)
    the_list = find_list_by_id(conn, list_id)
    if the_list is None:
        return None
    list_done = all_done or list_id not in still_on
    return UnsubscribeTarget(sub, the_list.slug, the_list.name, list_done, all_done)


SuppressionKind = Literal["bounced", "complained", "blocked"]


def suppress(
    conn: Connection,
    subscriber_id: int,
    kind: SuppressionKind,
    source: str,
    *,
    detail: str = "",
) -> bool:
    """Suppress an address for every list (a hard bounce, a complaint, a manual block).

    Returns whether the status changed. The event is recorded either way (a second bounce is
    still history). A weaker status never replaces a stronger one (blocked > complained >
    bounced > unsubscribed).
    """
    if kind not in ("bounced", "complained", "blocked"):
        raise ValueError(f"not a suppression: {kind!r}")
    rank = {s: i for i, s in enumerate(("active", *SUPPRESSED_STATUSES))}
    current = conn.scalar(sa.select(subscribers.c.status).where(subscribers.c.id == subscriber_id))
    if current is None:
        raise UnknownSubscriber(f"No subscriber with id {subscriber_id}.")
    record_event(conn, subscriber_id, kind, detail=detail, source=source)
    if rank.get(current, 0) >= rank[kind]:
        return False
    conn.execute(
        subscribers.update()
        .where(subscribers.c.id == subscriber_id)
        .values(status=kind, updated_at=utcnow())
    )
    return True


def suppress_address(
    conn: Connection, email: str, kind: SuppressionKind, source: str, *, detail: str = ""
) -> Subscriber:
    """Suppress an address, adding it to the store first if it is not there (a blocklist)."""
    found = find_subscriber(conn, email)
    if found is None:
        address = normalise_subscriber(email).address
        now = utcnow()
        pk = conn.execute(
            subscribers.insert().values(
                email=address.email,
                email_key=address.key,
                ascii_email=address.ascii_email,
                smtputf8=address.smtputf8,
                name="",
                language="",
                attributes={},
                status="active",
                source=source,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key
        assert pk is not None
        subscriber_id = int(pk[0])
    else:
        subscriber_id = found.id
    suppress(conn, subscriber_id, kind, source, detail=detail)
    result = get_subscriber_by_id(conn, subscriber_id)
    assert result is not None
    return result


def remove_subscriber(conn: Connection, subscriber_id: int) -> None:
    """Delete a subscriber with its subscriptions and history (erasure on request).

    The address is forgotten entirely, so a later import may add it again; to keep someone
    out, use :func:`unsubscribe` or :func:`suppress` instead.
    """
    conn.execute(events.delete().where(events.c.subscriber_id == subscriber_id))
    # Consent records are personal data too; erasure takes them (the FK cascades on
    # PostgreSQL, but a SQLite store may run without foreign keys).
    conn.execute(consents.delete().where(consents.c.subscriber_id == subscriber_id))
    conn.execute(subscriptions.delete().where(subscriptions.c.subscriber_id == subscriber_id))
    conn.execute(subscribers.delete().where(subscribers.c.id == subscriber_id))


def details(conn: Connection, email: str) -> SubscriberDetails:
    """A subscriber with their lists and full history (oldest first)."""
    sub = get_subscriber(conn, email)
    effective = _effective(subscriptions.c.status, subscribers.c.status)
    memberships = [
        Membership(r.slug, r.name, r.status, r.effective, r.source, r.created_at, r.updated_at)
        for r in conn.execute(
            sa.select(
                lists.c.slug,
                lists.c.name,
                subscriptions.c.status,
                effective.label("effective"),
                subscriptions.c.source,
                subscriptions.c.created_at,
                subscriptions.c.updated_at,
            )
            .select_from(subscriptions.join(lists).join(subscribers))
            .where(subscriptions.c.subscriber_id == sub.id)
            .order_by(lists.c.slug)
        )
    ]
    # A subscription's start is its row (when, and from where: "import x.csv", "cli", "web");
    # everything after it is in events.
    started = [
        HistoryEvent(m.created_at, "subscribed", m.list_slug, "", m.source) for m in memberships
    ]
    history = started + [
        HistoryEvent(r.at, r.kind, r.slug, r.detail, r.source)
        for r in conn.execute(
            sa.select(events.c.at, events.c.kind, lists.c.slug, events.c.detail, events.c.source)
            .select_from(events.outerjoin(lists))
            .where(events.c.subscriber_id == sub.id)
            .order_by(events.c.id)
        )
    ]
    history.sort(key=lambda e: e.at)  # stable: a start comes before events at the same time
    return SubscriberDetails(sub, memberships, history, consents_of(conn, sub.id))


def count(conn: Connection, list_slug: str | None = None, status: str = "subscribed") -> int:
    """How many subscribers: on a list in an effective status, or overall by global status.

    Without a list, ``status`` is a global status (``subscribed`` means ``active``) or ``all``.
    """
    if list_slug is None:
        query = sa.select(sa.func.count()).select_from(subscribers)
        if status != "all":
            wanted = "active" if status == "subscribed" else status
            if wanted not in GLOBAL_STATUSES:
                raise BulletinError(f"Unknown status {status!r}.")
            query = query.where(subscribers.c.status == wanted)
        return int(conn.scalar(query) or 0)
    the_list = get_list(conn, list_slug)
    query = (
        sa.select(sa.func.count())
        .select_from(subscriptions.join(subscribers))
        .where(subscriptions.c.list_id == the_list.id)
    )
    if status != "all":
        query = query.where(_status_filter(status, blocked_domain_set(conn)))
    return int(conn.scalar(query) or 0)


def _status_filter(status: str, blocked: AbstractSet[str] | None = None) -> sa.ColumnElement[bool]:
    if status == "subscribed":
        return sa.and_(
            subscriptions.c.status == "subscribed",
            subscribers.c.status == "active",
            ~domain_blocked(subscribers.c.email_key, blocked),
        )
    if status == "unsubscribed":
        return sa.or_(
            subscriptions.c.status == "unsubscribed", subscribers.c.status == "unsubscribed"
        )
    if status == "blocked":
        return sa.and_(
            subscriptions.c.status == "subscribed",
            sa.or_(
                subscribers.c.status == "blocked",
                sa.and_(
                    subscribers.c.status == "active",
                    domain_blocked(subscribers.c.email_key, blocked),
                ),
            ),
        )
    if status in ("bounced", "complained"):
        return sa.and_(subscriptions.c.status == "subscribed", subscribers.c.status == status)
    raise BulletinError(
        f"Unknown status {status!r}.",
        hint=f"Use one of: {', '.join(EFFECTIVE_STATUSES)}, all.",
    )


def members(
    conn: Connection, list_slug: str, statuses: tuple[str, ...] = ("subscribed",)
) -> Iterator[Subscriber]:
    """A list's members in the given effective statuses (or ``all``), by id, streamed."""
    the_list = get_list(conn, list_slug)
    where: list[sa.ColumnElement[bool]] = [subscriptions.c.list_id == the_list.id]
    if "all" not in statuses:
        blocked = blocked_domain_set(conn)
        where.append(sa.or_(*(_status_filter(s, blocked) for s in statuses)))
    after = 0
    while True:
        rows = conn.execute(
            sa.select(subscribers)
            .select_from(subscriptions.join(subscribers))
            .where(*where, subscribers.c.id > after)
            .order_by(subscribers.c.id)
            .limit(1000)
        ).all()
        if not rows:
            return
        for row in rows:
            yield _subscriber_from_row(row)
        after = rows[-1].id


def recipients(conn: Connection, list_slug: str, *, after_id: int = 0) -> Iterator[RecipientRow]:
    """Who receives mail sent to a list: subscribed there and globally active, by id.

    Streams in pages of 1,000 (keyset on id, so memory stays flat on any list size and the
    send engine can resume after a given id).
    """
    the_list = get_list(conn, list_slug)
    blocked = blocked_domain_set(conn)
    after = after_id
    while True:
        rows = conn.execute(
            sa.select(
                subscribers.c.id,
                subscribers.c.email,
                subscribers.c.ascii_email,
                subscribers.c.smtputf8,
                subscribers.c.name,
                subscribers.c.language,
                subscribers.c.attributes,
            )
            .select_from(subscriptions.join(subscribers))
            .where(
                subscriptions.c.list_id == the_list.id,
                subscriptions.c.status == "subscribed",
                subscribers.c.status == "active",
                ~domain_blocked(subscribers.c.email_key, blocked),
                subscriptions.c.subscriber_id > after,
            )
            .order_by(subscriptions.c.subscriber_id)
            .limit(1000)
        ).all()
        if not rows:
            return
        for r in rows:
            yield RecipientRow(
                r.id,
                r.email,
                r.ascii_email,
                bool(r.smtputf8),
                r.name,
                r.language,
                dict(r.attributes or {}),
            )
        after = rows[-1].id


def subscribed_lists(conn: Connection, subscriber_id: int) -> list[MailingList]:
    """The lists a subscriber is subscribed to (whatever their global status), by list id."""
    rows = conn.execute(
        sa.select(lists)
        .select_from(lists.join(subscriptions))
        .where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.status == "subscribed",
        )
        .order_by(lists.c.id)
    )
    return [_list_from_row(r) for r in rows]
