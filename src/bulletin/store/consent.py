"""Consent records: what each person agreed to, when, where, and when they confirmed it.

One ``consents`` row is written every time a subscription begins from our side -- a form
confirmation (``form``), the preferences page (``preferences``), ``subscribers add``
(``cli``) -- and by imports that carry the source tool's opt-in times (``import``). Rows are
never updated: a person who leaves and comes back has two records, the history an
organisation must be able to show.

The consent text stored is the one the person saw (the list's own text, or the localised
default naming the newsletter, resolved by the caller); ``consent_version`` is the list's
version of it at that moment. The client address is stored only when the caller passes it,
which the web app does only with ``privacy.store_ip = true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bulletin.store.schema import consents, lists, subscriptions, utcnow

CONSENT_SOURCES = ("form", "preferences", "cli", "import")
"""Where a consent record comes from (``detail`` says more: the file, the tool)."""


@dataclass(frozen=True)
class Consent:
    """One consent record of a person for one list."""

    id: int
    list_slug: str
    list_name: str
    source: str
    detail: str
    consent_text: str
    consent_version: int
    given_at: datetime | None
    confirmed_at: datetime | None
    ip: str | None
    created_at: datetime
    recorded: bool = True
    """False for a subscription that began without a record (a plain CSV import, or before
    consent records existed): what its subscription row says, shown as such."""


def record_consent(
    conn: Connection,
    subscriber_id: int,
    list_id: int,
    *,
    source: str,
    consent_text: str,
    consent_version: int,
    detail: str = "",
    given_at: datetime | None = None,
    confirmed_at: datetime | None = None,
    ip: str | None = None,
) -> int:
    """Append one consent record; its id.

    ``given_at`` defaults to now (the moment of a command or a preferences change, which
    need no separate confirmation, so ``confirmed_at`` stays as given).
    """
    if source not in CONSENT_SOURCES:
        raise ValueError(f"not a consent source: {source!r}")
    now = utcnow()
    pk = conn.execute(
        consents.insert().values(
            subscriber_id=subscriber_id,
            list_id=list_id,
            source=source,
            detail=detail,
            consent_text=consent_text,
            consent_version=consent_version,
            given_at=given_at or now,
            confirmed_at=confirmed_at,
            ip=ip,
            created_at=now,
        )
    ).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def consents_of(conn: Connection, subscriber_id: int) -> list[Consent]:
    """Every consent of a subscriber, oldest first: one per subscription at least.

    A subscription that began without a consent record -- a plain CSV import, which carries
    no opt-in time or text (writing a row per imported person would slow a million-row
    import by a fifth), or one made before records existed -- is given one read from its
    subscription row (``recorded`` False): the source and time it began, no text.
    """
    rows = conn.execute(
        sa.select(consents, lists.c.slug, lists.c.name.label("list_name"))
        .select_from(consents.join(lists))
        .where(consents.c.subscriber_id == subscriber_id)
        .order_by(consents.c.id)
    )
    found = [
        Consent(
            id=r.id,
            list_slug=r.slug,
            list_name=r.list_name,
            source=r.source,
            detail=r.detail,
            consent_text=r.consent_text,
            consent_version=r.consent_version,
            given_at=r.given_at,
            confirmed_at=r.confirmed_at,
            ip=r.ip,
            created_at=r.created_at,
        )
        for r in rows
    ]
    covered = {c.list_slug for c in found}
    unrecorded = conn.execute(
        sa.select(
            subscriptions.c.source,
            subscriptions.c.created_at,
            lists.c.slug,
            lists.c.name.label("list_name"),
        )
        .select_from(subscriptions.join(lists))
        .where(subscriptions.c.subscriber_id == subscriber_id)
        .order_by(subscriptions.c.created_at, lists.c.slug)
    )
    derived = [
        Consent(
            id=0,
            list_slug=r.slug,
            list_name=r.list_name,
            source="import" if r.source.startswith("import") else r.source or "unknown",
            detail=f"{r.source} (no consent record: from the subscription)",
            consent_text="",
            consent_version=0,
            given_at=r.created_at,
            confirmed_at=None,
            ip=None,
            created_at=r.created_at,
            recorded=False,
        )
        for r in unrecorded
        if r.slug not in covered
    ]
    return sorted(derived + found, key=lambda c: (c.created_at, c.id))
