"""The delivery ledger (migration 2): freezing recipients, claims, leases, and the rate limit."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bulletin.dispatch.ratelimit import HOUR, RateLimiter
from bulletin.store import db, ledger
from bulletin.store.schema import deliveries, sends, utcnow
from bulletin.store.subscribers import (
    add_subscriber,
    create_list,
    find_subscriber,
    remove_subscriber,
    suppress,
    unsubscribe,
)

SLUG = "2014-10-clusterpolisee-03"


@pytest.fixture
def store(database_url: str) -> Engine:
    """Two lists: a, b. ana and ion on both; four more on one each."""
    engine = db.open_store(database_url)
    with db.write_transaction(engine) as conn:
        create_list(conn, "a")
        create_list(conn, "b")
        for name in ("ana", "ion", "dan", "eva"):
            add_subscriber(conn, f"{name}@example.ro", "a", name=name.title())
        for name in ("ana", "ion", "ștefan", "ioana"):
            add_subscriber(conn, f"{name}@example.ro", "b", name=name.title())
    return engine


def sid(engine: Engine, email: str) -> int:
    with engine.connect() as conn:
        sub = find_subscriber(conn, email)
    assert sub is not None
    return sub.id


def new_send(engine: Engine, lists: tuple[str, ...], owner: str = "") -> ledger.SendRow:
    with db.write_transaction(engine) as conn:
        ids = ledger.list_ids(conn, lists)
        return ledger.create_send(
            conn,
            issue_slug=SLUG,
            list_slugs=lists,
            ids=list(ids.values()),
            subject="Subiect",
            fingerprint="f" * 64,
            owner=owner or ledger.owner_name(),
        )


def emails_in(engine: Engine, send_id: int) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.scalars(sa.select(deliveries.c.email).where(deliveries.c.send_id == send_id))
        )


def test_upgrade_from_version_1_adds_the_ledger_and_keeps_every_row(database_url: str) -> None:
    engine = db.connect(database_url)
    db.migrate(engine, target=1)
    with db.write_transaction(engine) as conn:
        create_list(conn, "newsletter-ro")
        add_subscriber(conn, "ștefan@example.ro", "newsletter-ro", name="Ștefan Țiriac")

    report = db.migrate(engine)

    assert (report.before, report.after) == (1, 2)
    path = db.sqlite_path(engine)
    if path is not None:  # a SQLite file keeps a copy beside it (PostgreSQL: pg_dump's job)
        assert report.backup == path.with_name("bulletin.db-before-v2")
        backup = sqlite3.connect(report.backup)
        assert backup.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
        backup.close()
    else:
        assert report.backup is None
    with engine.connect() as conn:
        assert db.schema_version(conn) == 2
        names = set(sa.inspect(conn).get_table_names())
        assert {"sends", "deliveries"} <= names
        assert conn.execute(sa.select(sa.func.count()).select_from(sends)).scalar() == 0
    # The upgraded store can run a send at once.
    send = new_send(engine, ("newsletter-ro",))
    assert emails_in(engine, send.id) == ["ștefan@example.ro"]
    engine.dispose()


def test_freezing_dedupes_across_lists_and_leaves_suppressed_addresses_out(
    store: Engine,
) -> None:
    with db.write_transaction(store) as conn:
        unsubscribe(conn, sid(store, "dan@example.ro"), "a", "web")
        suppress(conn, sid(store, "ioana@example.ro"), "bounced", "test")
        assert ledger.count_eligible(conn, SLUG, ("a", "b")) == (4, 0)

    send = new_send(store, ("b", "a"))

    assert send.lists == ("a", "b") and send.total == 4
    assert emails_in(store, send.id) == [
        "ana@example.ro",
        "eva@example.ro",
        "ion@example.ro",
        "ștefan@example.ro",
    ]
    with store.connect() as conn:
        rows = {r.email: r for r in conn.execute(sa.select(deliveries))}
        list_a = ledger.list_ids(conn, ("a",))["a"]
    assert rows["ana@example.ro"].list_id == list_a  # on both lists: through the first
    assert {r.state for r in rows.values()} == {"pending"}
    assert all(r.message_id is None and r.attempts == 0 for r in rows.values())


def test_a_second_send_of_the_issue_leaves_out_who_already_got_it(store: Engine) -> None:
    first = new_send(store, ("a",))
    assert first.total == 4
    with store.connect() as conn:
        assert ledger.count_eligible(conn, SLUG, ("b",)) == (2, 2)
        # The send to list a itself is not "another send": counted again (a second process
        # planning it), nobody on a is covered.
        assert ledger.count_eligible(conn, SLUG, ("a",)) == (4, 0)

    second = new_send(store, ("b",))

    assert emails_in(store, second.id) == ["ioana@example.ro", "ștefan@example.ro"]
    with store.connect() as conn:
        assert ledger.find_send(conn, SLUG, ["b"]) == second
        assert ledger.find_send(conn, SLUG, ["a", "b"]) is None
        assert [s.id for s in ledger.sends_of_issue(conn, SLUG, "b")] == [second.id]


def test_claims_take_due_retries_first_then_pending_in_order_and_skip_leavers(
    store: Engine,
) -> None:
    send = new_send(store, ("a", "b"))
    ids = [1, 2]
    mid = {"n": 0}

    def message_id_for(email: str) -> str:
        mid["n"] += 1
        return f"<{email}>"

    with db.write_transaction(store) as conn:
        batch = ledger.claim(conn, send.id, ids, 2, message_id_for)
    assert [c.email for c in batch.claimed] == ["ana@example.ro", "ion@example.ro"]
    assert not batch.exhausted and batch.skipped == 0
    ana, ion = batch.claimed
    now = utcnow()
    with db.write_transaction(store) as conn:
        # Only promoted rows (allowed on the wire) take a result.
        ids_now = [ana.subscriber_id, ion.subscriber_id]
        assert ledger.promote(conn, send.id, ids_now) == set(ids_now)
        ledger.record(
            conn,
            send.id,
            [
                ledger.Outcome(ana.subscriber_id, "deferred", 1, 451, "451 later", now, now),
                ledger.Outcome(ion.subscriber_id, "sent", 1, 250, "250 ok", now),
            ],
        )
        unsubscribe(conn, sid(store, "eva@example.ro"), None, "web")
    with db.write_transaction(store) as conn:
        batch = ledger.claim(conn, send.id, ids, 10, message_id_for)
    # ana's retry is due: first, with the Message-ID she got the first time.
    assert [c.email for c in batch.claimed] == [
        "ana@example.ro",
        "dan@example.ro",
        "ștefan@example.ro",
        "ioana@example.ro",
    ]
    assert batch.claimed[0].message_id == "<ana@example.ro>"
    assert batch.claimed[0].was == "deferred" and batch.claimed[0].attempts == 1
    assert mid["n"] == 2 + 3
    assert batch.skipped == 1 and batch.exhausted
    with store.connect() as conn:
        counts = ledger.counts(conn, send.id)
        eva = conn.execute(
            sa.select(deliveries).where(deliveries.c.email == "eva@example.ro")
        ).one()
    assert counts == {
        "pending": 0,
        "queued": 4,
        "sending": 0,
        "sent": 1,
        "deferred": 0,
        "failed": 0,
        "skipped": 1,
    }
    assert (eva.state, eva.last_reply) == ("skipped", "unsubscribed during the send")


@pytest.mark.sqlite_only  # SQLite's query planner; PostgreSQL's depends on table statistics
def test_the_due_queries_read_only_the_state_index(store: Engine) -> None:
    # Late in a big send, walking the primary key would pass every row already sent.
    send = new_send(store, ("a",))
    plans = []
    with store.connect() as conn:
        for query in ledger.due_queries(send.id, 200):
            sql = str(query.compile(store, compile_kwargs={"literal_binds": True}))
            plans += [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
    assert len(plans) == 2, plans
    assert all("COVERING INDEX ix_deliveries_state" in p for p in plans), plans
    assert not any("TEMP B-TREE" in p for p in plans), plans  # no sort either


def test_acquire_puts_rows_left_sending_back_and_counts_only_those_in_doubt(
    store: Engine,
) -> None:
    dead = "other-host:1"
    send = new_send(store, ("a", "b"), owner=dead)
    with db.write_transaction(store) as conn:
        got = ledger.claim(conn, send.id, [1, 2], 5, str)
        # Two of the five claimed were allowed on the wire when the process died.
        ledger.promote(conn, send.id, [c.subscriber_id for c in got.claimed[:2]])
        # The other host's last heartbeat is old: it is gone.
        conn.execute(
            sends.update().values(heartbeat_at=utcnow() - ledger.STALE_AFTER - timedelta(1))
        )
    with store.connect() as conn:
        counts = ledger.counts(conn, send.id)
    assert (counts["pending"], counts["queued"], counts["sending"]) == (1, 3, 2)
    with db.write_transaction(store) as conn:
        assert ledger.acquire(conn, send, ledger.owner_name()) == 2
        again = ledger.get_send(conn, send.id)
        counts = ledger.counts(conn, send.id)
    assert (again.in_doubt, again.runs, again.owner) == (2, 2, ledger.owner_name())
    assert (counts["pending"], counts["queued"], counts["sending"]) == (6, 0, 0)


def test_promote_takes_only_rows_still_queued(store: Engine) -> None:
    send = new_send(store, ("a",))
    with db.write_transaction(store) as conn:
        got = ledger.claim(conn, send.id, [1], 3, str)
        ids = [c.subscriber_id for c in got.claimed]
        ledger.release(conn, send.id, ids[:1])
        assert ledger.promote(conn, send.id, ids) == set(ids[1:])
        assert ledger.promote(conn, send.id, ids) == set()


def test_a_send_running_in_a_live_process_is_not_taken_over(store: Engine) -> None:
    send = new_send(store, ("a",), owner="elsewhere:42")
    with (
        pytest.raises(ledger.SendBusy, match="already running"),
        db.write_transaction(store) as conn,
    ):
        ledger.acquire(conn, send, ledger.owner_name())
    # A process of this host that is gone, whatever its heartbeat, is taken over.
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with db.write_transaction(store) as conn:
        conn.execute(
            sends.update().values(
                owner=f"{ledger.owner_name().rpartition(':')[0]}:{child.pid}", heartbeat_at=utcnow()
            )
        )
    with db.write_transaction(store) as conn:
        assert ledger.acquire(conn, send, ledger.owner_name()) == 0
    # And a live one on this host is respected (our parent process is alive).
    with db.write_transaction(store) as conn:
        host = ledger.owner_name().rpartition(":")[0]
        conn.execute(sends.update().values(owner=f"{host}:{os.getppid()}", state="running"))
    with pytest.raises(ledger.SendBusy), db.write_transaction(store) as conn:
        ledger.acquire(conn, send, ledger.owner_name())


def test_erasing_a_subscriber_removes_their_ledger_rows(store: Engine) -> None:
    send = new_send(store, ("a",))
    with db.write_transaction(store) as conn:
        remove_subscriber(conn, sid(store, "eva@example.ro"))
    assert "eva@example.ro" not in emails_in(store, send.id)


def test_the_suppression_history_is_read_incrementally(store: Engine) -> None:
    with store.connect() as conn, conn.begin():
        start = ledger.last_event_id(conn)
    with db.write_transaction(store) as conn:
        unsubscribe(conn, sid(store, "dan@example.ro"), "a", "web")
        suppress(conn, sid(store, "eva@example.ro"), "complained", "fbl")
    with store.connect() as conn, conn.begin():
        top, ids = ledger.suppressed_since(conn, start)
        assert ids == {sid(store, "dan@example.ro"), sid(store, "eva@example.ro")}
        assert ledger.suppressed_since(conn, top) == (top, set())
        # dan left list a only; still on no other list of this send, so not eligible.
        assert ledger.still_eligible(conn, ids, [1]) == set()


def test_iter_eligible_pages_through_everyone_once(store: Engine) -> None:
    with store.connect() as conn:
        got = [r.email for r in ledger.iter_eligible(conn, SLUG, ("a", "b"), page=2)]
    assert sorted(got) == sorted(set(got)) and len(got) == 6


# --- the rate limiter -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_slots_are_spaced_one_over_the_rate_apart() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock)
    slots = [limiter.reserve() for _ in range(9)]
    assert slots == [1000.0 + i * 0.25 for i in range(9)]
    # (N - 1) / R: the ninth message cannot go before two seconds have passed.
    assert slots[-1] - slots[0] == 2.0
    clock.now = 1010.0  # idle time is not saved up into a burst
    assert limiter.reserve() == 1010.0 and limiter.reserve() == 1010.25


def test_at_most_rate_hour_messages_in_any_hour() -> None:
    clock = FakeClock()
    recent = [clock.now - 3000.0, clock.now - 10.0]  # sent by an earlier run of the send
    limiter = RateLimiter(0, 3, clock=clock, recent=recent)
    first = limiter.reserve()
    assert first == clock.now
    # Three in the window now: the next waits until the oldest is an hour old.
    assert limiter.reserve() == recent[0] + HOUR
    assert limiter.reserve() == recent[1] + HOUR
    assert limiter.reserve() == first + HOUR
    assert limiter.describe() == "3/hour"


def test_acquire_gives_up_when_the_send_stops() -> None:
    limiter = RateLimiter(0.5)  # one message per two seconds
    stop = threading.Event()
    assert limiter.acquire(stop)
    stop.set()
    assert not limiter.acquire(stop)
    assert RateLimiter().acquire() and RateLimiter().unlimited
