"""Subscribers, lists, unsubscribes, suppression, recipients and history."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bulletin.errors import BulletinError
from bulletin.store import db, schema
from bulletin.store.normalise import InvalidSubscriber
from bulletin.store.subscribers import (
    SubscriptionRefused,
    UnknownList,
    UnknownSubscriber,
    add_subscriber,
    count,
    create_list,
    details,
    find_subscriber,
    get_list,
    list_counts,
    recipients,
    remove_subscriber,
    suppress,
    suppress_address,
    unsubscribe,
)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = db.open_store(database_url)
    with db.write_transaction(engine) as conn:
        create_list(conn, "newsletter-ro", "Newsletter în română")
        create_list(conn, "events")
    yield engine
    engine.dispose()


def test_lists_have_slugs_and_names(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        assert get_list(conn, "newsletter-ro").name == "Newsletter în română"
        assert get_list(conn, "events").name == "events"
        with pytest.raises(BulletinError, match="already exists"):
            create_list(conn, "events")
        with pytest.raises(BulletinError, match="not a valid list slug"):
            create_list(conn, "Bad Slug")
        with pytest.raises(UnknownList) as excinfo:
            get_list(conn, "nope")
        assert "bulletin lists create nope" in str(excinfo.value)
        assert "events, newsletter-ro" in str(excinfo.value)


def test_list_names_follow_the_name_rule(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        created = create_list(conn, "news", "Știri\r\n\x1b[2J\u202eIași")
        assert created.name == get_list(conn, "news").name == "Știri [2JIași"
        assert create_list(conn, "blank", " \x1b ").name == "blank"
        with pytest.raises(BulletinError, match="longer than 300 characters"):
            create_list(conn, "long", "N" * 301)


def test_add_normalises_and_is_case_insensitive(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        first = add_subscriber(conn, "Ion.Popescu@Example.RO", "newsletter-ro", name="Ion")
        again = add_subscriber(conn, "ion.popescu@example.ro", "newsletter-ro")
        other_list = add_subscriber(conn, "ION.POPESCU@EXAMPLE.RO", "events")
    assert first.outcome == "added"
    assert first.subscriber.email == "Ion.Popescu@example.ro"
    assert first.subscriber.email_key == "ion.popescu@example.ro"
    assert again.outcome == "already" and again.subscriber.id == first.subscriber.id
    assert other_list.outcome == "added" and other_list.subscriber.id == first.subscriber.id
    with engine.begin() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(schema.subscribers)) == 1
        info = details(conn, "ion.popescu@EXAMPLE.ro")
    assert [m.list_slug for m in info.memberships] == ["events", "newsletter-ro"]
    assert [e.kind for e in info.history] == ["subscribed", "subscribed"]


def test_the_database_refuses_two_spellings_of_one_address(engine: sa.Engine) -> None:
    now = schema.utcnow()
    row = {
        "email": "a@example.ro",
        "email_key": "a@example.ro",
        "smtputf8": False,
        "name": "",
        "language": "",
        "attributes": {},
        "status": "active",
        "source": "",
        "created_at": now,
        "updated_at": now,
    }
    with pytest.raises(sa.exc.IntegrityError), db.write_transaction(engine) as conn:
        conn.execute(schema.subscribers.insert(), [row, {**row, "email": "A@example.ro"}])


def test_idn_and_smtputf8_addresses(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        idn = add_subscriber(conn, "ana@ROMÂNĂ.ro", "events").subscriber
        utf8 = add_subscriber(conn, "Ștefan <ștefan@example.ro>", "events").subscriber
    assert (idn.email, idn.ascii_email, idn.smtputf8) == (
        "ana@română.ro",
        "ana@xn--romn-doa3r.ro",
        False,
    )
    assert (utf8.email, utf8.ascii_email, utf8.smtputf8, utf8.name) == (
        "ștefan@example.ro",
        None,
        True,
        "Ștefan",
    )


def test_invalid_address_is_a_user_error(engine: sa.Engine) -> None:
    with pytest.raises(BulletinError, match="not a valid email address"):
        with db.write_transaction(engine) as conn:
            add_subscriber(conn, "ion@@example.ro", "events")


@pytest.mark.parametrize(
    "email",
    [
        "l" * 65 + "@example.ro",
        "ș" * 33 + "@example.ro",
        "l" * 64 + "@" + ".".join(["d" * 61] * 3) + ".roma",  # 255 octets
    ],
)
def test_every_way_in_refuses_addresses_over_rfc_5321_limits(engine: sa.Engine, email: str) -> None:
    with db.write_transaction(engine) as conn:
        with pytest.raises(BulletinError, match="too long"):
            add_subscriber(conn, email, "events")
        with pytest.raises(BulletinError, match="too long"):
            suppress_address(conn, email, "blocked", "admin")
    with engine.begin() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(schema.subscribers)) == 0


def test_add_cleans_and_refuses_fields_like_the_import(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        added = add_subscriber(
            conn,
            "ion@example.ro",
            "events",
            name="Ion\r\nPopescu\x1b[2J\u202e",
            language="en_gb",
            attributes={"City": "Iași\x1b"},
        )
        assert added.cleaned == ("name", "attributes.city")
        sub = added.subscriber
        assert (sub.name, sub.language, sub.attributes) == (
            "Ion Popescu[2J",
            "en-GB",
            {"city": "Iași"},
        )
        again = add_subscriber(conn, "ion@example.ro", "events", name="Ion Popescu")
        assert (again.outcome, again.cleaned) == ("already", ())
    for fields, message in (
        ({"language": "xx-!!"}, "Language 'xx-!!' is not a language code like 'ro' or 'en-GB'."),
        ({"name": "N" * 301}, "The name is longer than 300 characters (301)."),
        (
            {"attributes": {"city": "v" * 2001}},
            "The value of 'city' is longer than 2000 characters",
        ),
        ({"attributes": {"email": "x"}}, "'email' cannot name an attribute"),
    ):
        with pytest.raises(InvalidSubscriber) as caught:
            with db.write_transaction(engine) as conn:
                add_subscriber(conn, "ana@example.ro", "events", **fields)  # type: ignore[arg-type]
        assert caught.value.message.startswith(message)
        assert caught.value.hint
    with engine.begin() as conn:
        assert find_subscriber(conn, "ana@example.ro") is None
        stored = find_subscriber(conn, "ion@example.ro")
        assert stored is not None and stored.name == "Ion Popescu"


def test_unsubscribe_from_one_list_is_idempotent_and_never_silently_undone(
    engine: sa.Engine,
) -> None:
    with db.write_transaction(engine) as conn:
        sub = add_subscriber(conn, "ion@example.ro", "newsletter-ro").subscriber
        add_subscriber(conn, "ion@example.ro", "events")
        assert unsubscribe(conn, sub.id, "newsletter-ro", "web") == 1
        assert unsubscribe(conn, sub.id, "newsletter-ro", "web") == 0
        with pytest.raises(SubscriptionRefused, match="unsubscribed from newsletter-ro"):
            add_subscriber(conn, "ion@example.ro", "newsletter-ro")
        assert [r.email for r in recipients(conn, "newsletter-ro")] == []
        assert [r.email for r in recipients(conn, "events")] == ["ion@example.ro"]
        back = add_subscriber(conn, "ion@example.ro", "newsletter-ro", resubscribe=True)
        assert (back.outcome, back.was) == ("resubscribed", "unsubscribed")
        assert [r.email for r in recipients(conn, "newsletter-ro")] == ["ion@example.ro"]
        kinds = [(e.kind, e.list_slug, e.source) for e in details(conn, "ion@example.ro").history]
    assert kinds == [
        ("subscribed", "newsletter-ro", "cli"),
        ("subscribed", "events", "cli"),
        ("unsubscribed", "newsletter-ro", "web"),
        ("resubscribed", "newsletter-ro", "cli"),
    ]


def test_unsubscribe_from_everything_is_global(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        sub = add_subscriber(conn, "ion@example.ro", "newsletter-ro").subscriber
        add_subscriber(conn, "ion@example.ro", "events")
        assert unsubscribe(conn, sub.id, None, "web") == 2
        assert unsubscribe(conn, sub.id, None, "web") == 0
        create_list(conn, "new-list")
        # Not on new-list before, but they asked for nothing at all: refused there too.
        with pytest.raises(SubscriptionRefused, match="unsubscribed from all lists"):
            add_subscriber(conn, "ion@example.ro", "new-list")
        found = find_subscriber(conn, "ion@example.ro")
        assert found is not None and found.status == "unsubscribed"


def test_global_suppression_is_honoured_for_every_list(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        a = add_subscriber(conn, "a@example.ro", "newsletter-ro").subscriber
        add_subscriber(conn, "a@example.ro", "events")
        b = add_subscriber(conn, "b@example.ro", "newsletter-ro").subscriber
        add_subscriber(conn, "c@example.ro", "newsletter-ro")
        assert suppress(conn, a.id, "bounced", "bounce-processor", detail="550 5.1.1")
        assert suppress(conn, b.id, "complained", "fbl")
        # A weaker status never replaces a stronger one, but the event is still history.
        assert not suppress(conn, b.id, "bounced", "bounce-processor")
        assert [r.email for r in recipients(conn, "newsletter-ro")] == ["c@example.ro"]
        assert list(recipients(conn, "events")) == []
        with pytest.raises(SubscriptionRefused, match="bounced"):
            add_subscriber(conn, "a@example.ro", "newsletter-ro")
        assert count(conn, "newsletter-ro", "subscribed") == 1
        assert count(conn, "newsletter-ro", "bounced") == 1
        assert count(conn, "newsletter-ro", "complained") == 1
        assert count(conn, None, "all") == 3
        assert count(conn, None, "subscribed") == 1
        b_info = details(conn, "b@example.ro")
        assert b_info.subscriber.status == "complained"
        assert [e.kind for e in b_info.history][-2:] == ["complained", "bounced"]


def test_blocked_addresses_stay_out_even_with_resubscribe(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        blocked = suppress_address(conn, "Spam@Example.ro", "blocked", "admin")
        assert blocked.status == "blocked" and blocked.email == "Spam@example.ro"
        with pytest.raises(SubscriptionRefused, match="never subscribed"):
            add_subscriber(conn, "spam@example.ro", "events", resubscribe=True)


def test_resubscribe_lifts_a_bounce(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        sub = add_subscriber(conn, "a@example.ro", "events").subscriber
        suppress(conn, sub.id, "bounced", "bounce-processor")
        result = add_subscriber(conn, "a@example.ro", "events", resubscribe=True)
        assert (result.outcome, result.was, result.subscriber.status) == (
            "resubscribed",
            "bounced",
            "active",
        )
        assert [r.id for r in recipients(conn, "events")] == [sub.id]


def test_recipients_stream_in_id_order_and_resume_after_an_id(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        ids = [
            add_subscriber(
                conn, f"user{i}@example.ro", "events", attributes={"city": "Iași"}
            ).subscriber.id
            for i in range(1200)
        ]
        rows = list(recipients(conn, "events"))
        assert [r.id for r in rows] == ids
        assert rows[0].attributes == {"city": "Iași"}
        assert [r.id for r in recipients(conn, "events", after_id=ids[999])] == ids[1000:]


def test_list_counts_by_status(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        a = add_subscriber(conn, "a@example.ro", "events").subscriber
        add_subscriber(conn, "b@example.ro", "events")
        c = add_subscriber(conn, "c@example.ro", "events").subscriber
        unsubscribe(conn, a.id, "events", "cli")
        suppress(conn, c.id, "blocked", "cli")
        counts = {c.slug: c for c in list_counts(conn)}
    assert counts["events"].counts == {
        "subscribed": 1,
        "unsubscribed": 1,
        "bounced": 0,
        "complained": 0,
        "blocked": 1,
    }
    assert counts["events"].total == 3
    assert counts["newsletter-ro"].total == 0


def test_remove_erases_the_subscriber_and_history(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        sub = add_subscriber(conn, "a@example.ro", "events").subscriber
        unsubscribe(conn, sub.id, "events", "cli")
        remove_subscriber(conn, sub.id)
        assert find_subscriber(conn, "a@example.ro") is None
        assert conn.scalar(sa.select(sa.func.count()).select_from(schema.events)) == 0
        assert conn.scalar(sa.select(sa.func.count()).select_from(schema.subscriptions)) == 0
        with pytest.raises(UnknownSubscriber, match="not in the subscriber store"):
            details(conn, "a@example.ro")
