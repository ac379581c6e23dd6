"""Everything the store holds about one person: an access request answered in one call.

``subscribers show EMAIL --json`` prints :func:`personal_data`. It reads every table that
names the person -- the subscriber row, subscriptions (with list slugs), consent records,
history, the delivery ledger (one row per send, with the send's issue and subject) and
pending sign-ups -- in one snapshot, so the answer is complete and consistent. Times are
ISO 8601 in UTC; nothing is left out because it looks internal (the person may ask for it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bulletin.store.consent import consents_of
from bulletin.store.normalise import address_key
from bulletin.store.schema import deliveries, lists, sends, signups
from bulletin.store.subscribers import (
    details,
    domain_is_blocked,
    find_subscriber,
    get_subscriber,
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _row(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in mapping.items()}


def personal_data(conn: Connection, email: str) -> dict[str, Any]:
    """A JSON-ready dict of everything stored about ``email`` (see the module docs).

    Raises :class:`~bulletin.store.subscribers.UnknownSubscriber` when nothing at all is
    stored; an address with only pending sign-ups gets ``"subscriber": null`` and those.
    """
    key = address_key(email)
    pending = _signups(conn, key)
    sub = find_subscriber(conn, email)
    if sub is None:
        if not pending:
            get_subscriber(conn, email)  # raises, with the usual message and hint
        return {
            "subscriber": None,
            "subscriptions": [],
            "consents": [],
            "events": [],
            "deliveries": [],
            "signups": pending,
        }
    info = details(conn, email)
    subscriber = _row(
        {
            "id": sub.id,
            "email": sub.email,
            "ascii_email": sub.ascii_email,
            "smtputf8": sub.smtputf8,
            "name": sub.name,
            "language": sub.language,
            "attributes": sub.attributes,
            "status": sub.status,
            "domain_blocked": domain_is_blocked(conn, sub.email_key),
            "source": sub.source,
            "created_at": sub.created_at,
            "updated_at": sub.updated_at,
        }
    )
    subscriptions = [
        _row(
            {
                "list": m.list_slug,
                "list_name": m.list_name,
                "status": m.status,
                "effective": m.effective,
                "source": m.source,
                "created_at": m.created_at,
                "updated_at": m.updated_at,
            }
        )
        for m in info.memberships
    ]
    consents = [
        _row(
            {
                "list": c.list_slug,
                "source": c.source,
                "detail": c.detail,
                "consent_text": c.consent_text,
                "consent_version": c.consent_version,
                "given_at": c.given_at,
                "confirmed_at": c.confirmed_at,
                "ip": c.ip,
                "created_at": c.created_at,
                "recorded": c.recorded,
            }
        )
        for c in consents_of(conn, sub.id)
    ]
    history = [
        _row(
            {
                "at": e.at,
                "kind": e.kind,
                "list": e.list_slug,
                "detail": e.detail,
                "source": e.source,
            }
        )
        for e in info.history
    ]
    ledger = conn.execute(
        sa.select(
            sends.c.id.label("send_id"),
            sends.c.issue_slug.label("issue"),
            sends.c.lists,
            sends.c.subject,
            lists.c.slug.label("through_list"),
            deliveries.c.email,
            deliveries.c.state,
            deliveries.c.attempts,
            deliveries.c.message_id,
            deliveries.c.first_attempt_at,
            deliveries.c.updated_at,
            deliveries.c.last_code,
            deliveries.c.last_reply,
        )
        .select_from(deliveries.join(sends).outerjoin(lists, lists.c.id == deliveries.c.list_id))
        .where(deliveries.c.subscriber_id == sub.id)
        .order_by(sends.c.id)
    )
    return {
        "subscriber": subscriber,
        "subscriptions": subscriptions,
        "consents": consents,
        "events": history,
        "deliveries": [_row(dict(r._mapping)) for r in ledger],
        "signups": pending,
    }


def _signups(conn: Connection, key: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(
            lists.c.slug.label("list"),
            signups.c.email,
            signups.c.name,
            signups.c.language,
            signups.c.consent_text,
            signups.c.consent_version,
            signups.c.ip,
            signups.c.created_at,
            signups.c.mailed_at,
        )
        .select_from(signups.join(lists))
        .where(signups.c.email_key == key)
        .order_by(signups.c.id)
    )
    return [_row(dict(r._mapping)) for r in rows]
