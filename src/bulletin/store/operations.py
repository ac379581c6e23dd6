"""The subscriber store's operations as commands use them: one call, its own transactions.

The functions in :mod:`bulletin.store.subscribers` take a connection inside a transaction
the caller opens, so several calls can commit together. A command needs the opposite: one
call that opens what it needs, writes with the lock held as briefly as possible, and never
waits for a person while holding it. These are those calls, for the CLI (and any other
front end) to use instead of opening transactions itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TextIO

from sqlalchemy.engine import Engine

from bulletin.store import person
from bulletin.store import subscribers as subs
from bulletin.store.consent import record_consent
from bulletin.store.copy import CopyReport, copy_store, count_rows
from bulletin.store.db import database_problem, open_store, write_transaction
from bulletin.store.export import export_csv


def add(
    engine: Engine,
    email: str,
    list_slug: str,
    *,
    name: str | None = None,
    language: str | None = None,
    resubscribe: bool = False,
    source: str = "cli",
    consent_text: Callable[[subs.MailingList], str] | None = None,
) -> subs.AddResult:
    """Subscribe one address to a list (see :func:`~bulletin.store.subscribers.add_subscriber`).

    When the subscription begins (added or re-subscribed) and ``consent_text`` is given, a
    consent record with source ``cli`` keeps the list's text (``consent_text(list)``: the
    caller resolves the localised default) and version, in the same transaction.
    """
    with write_transaction(engine) as conn:
        result = subs.add_subscriber(
            conn,
            email,
            list_slug,
            name=name,
            language=language,
            resubscribe=resubscribe,
            source=source,
        )
        if consent_text is not None and result.outcome != "already":
            the_list = subs.get_list(conn, list_slug)
            record_consent(
                conn,
                result.subscriber.id,
                the_list.id,
                source="cli",
                detail="bulletin subscribers add",
                consent_text=consent_text(the_list),
                consent_version=the_list.consent_version,
            )
        return result


def forget(
    engine: Engine, email: str, confirm: Callable[[subs.Subscriber], bool] | None = None
) -> subs.Subscriber | None:
    """Delete a subscriber with their history; None when ``confirm`` said no.

    The question is asked before the write lock is taken: a person thinking it over must not
    keep unsubscribes waiting. The deletion is by id, so an address that changed meanwhile
    is not touched by mistake; one that vanished meanwhile is simply gone.
    """
    with engine.connect() as conn:
        sub = subs.get_subscriber(conn, email)
    if confirm is not None and not confirm(sub):
        return None
    with write_transaction(engine) as conn:
        subs.remove_subscriber(conn, sub.id)
    return sub


def unsubscribe(
    engine: Engine, email: str, list_slug: str | None, *, source: str = "cli"
) -> tuple[subs.Subscriber, int]:
    """Unsubscribe an address from one list, or from all (None); the subscriber and how
    many subscriptions changed."""
    with write_transaction(engine) as conn:
        sub = subs.get_subscriber(conn, email)
        return sub, subs.unsubscribe(conn, sub.id, list_slug, source)


def block(engine: Engine, target: str, *, source: str = "cli") -> tuple[str, bool]:
    """Block an address or (``@example.org``) a whole domain; what was blocked, and whether
    it is new.

    A blocked address is added to the store if it is not there, so that no later import or
    form subscribes it.
    """
    with write_transaction(engine) as conn:
        if target.strip().startswith("@"):
            return subs.block_domain(conn, target, source)
        already = subs.find_subscriber(conn, target)
        sub = subs.suppress_address(conn, target, "blocked", source)
        return sub.email, already is None or already.status != "blocked"


def unblock_domain(engine: Engine, domain: str, *, source: str = "cli") -> tuple[str, bool]:
    """Take a domain off the blocklist; the domain, and whether it was on it."""
    with write_transaction(engine) as conn:
        return subs.unblock_domain(conn, domain, source)


def blocked_domains(engine: Engine) -> list[subs.BlockedDomain]:
    """The blocked domains, with how many stored addresses each holds."""
    with engine.begin() as conn:
        return subs.list_blocked_domains(conn)


def details(engine: Engine, email: str) -> subs.SubscriberDetails:
    """A subscriber with their lists and history, read in one snapshot."""
    with engine.begin() as conn:
        return subs.details(conn, email)


def personal_data(engine: Engine, email: str) -> dict[str, Any]:
    """Everything stored about a person (see :mod:`bulletin.store.person`), one snapshot."""
    with engine.begin() as conn:
        return person.personal_data(conn, email)


def count(engine: Engine, list_slug: str | None, status: str) -> int:
    """How many subscribers are in a status (on a list, or overall)."""
    with engine.begin() as conn:
        return subs.count(conn, list_slug, status)


def export(
    engine: Engine,
    list_slug: str,
    out: TextIO,
    statuses: Sequence[str],
    *,
    consent: bool = False,
) -> int:
    """Write a list's members as CSV (one snapshot for both passes); how many were written."""
    with engine.begin() as conn:
        return export_csv(conn, list_slug, out, statuses=statuses, consent=consent)


def lists(engine: Engine) -> list[subs.ListCounts]:
    """Every list with member counts by status."""
    with engine.begin() as conn:
        return subs.list_counts(conn)


def create_list(
    engine: Engine,
    slug: str,
    name: str | None = None,
    settings: subs.ListSettings | None = None,
) -> subs.MailingList:
    """Create a list (private and double opt-in unless ``settings`` say otherwise)."""
    with write_transaction(engine) as conn:
        return subs.create_list(conn, slug, name, settings)


def edit_list(engine: Engine, slug: str, settings: subs.ListSettings) -> subs.MailingList:
    """Change a list's settings (a new consent text bumps its version)."""
    with write_transaction(engine) as conn:
        return subs.edit_list(conn, slug, settings)


def get_list(engine: Engine, slug: str) -> subs.MailingList:
    """The list with this slug (:class:`~bulletin.store.subscribers.UnknownList` if none)."""
    with engine.connect() as conn:
        return subs.get_list(conn, slug)


def copy_into(
    target: Engine,
    source: str,
    *,
    on_start: Callable[[int], None] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> CopyReport:
    """Copy the store at URL ``source`` into the empty store ``target`` (see :mod:`.copy`).

    The source is brought to the current schema first, as any command would (a SQLite file
    keeps its copy from before the upgrade). Trouble with the source is a user error naming
    it, like trouble with the target. ``on_start(rows)`` says how many rows will be copied.
    """
    source_engine = open_store(source)
    try:
        try:
            if on_start is not None:
                on_start(count_rows(source_engine))
            return copy_store(source_engine, target, progress=progress)
        except Exception as exc:
            problem = database_problem(exc, source_engine)
            if problem is not None:
                raise problem from None
            raise
    finally:
        source_engine.dispose()


def sent_issues(engine: Engine) -> set[str]:
    """The slugs of the issues that have been sent (a send started): the archive shows them."""
    from bulletin.store import ledger

    with engine.connect() as conn:
        return ledger.sent_issues(conn)
