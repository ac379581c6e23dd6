"""The delivery ledger: freezing recipients, leases and fencing, takeovers, the shared rate.

Everything runs on the pass's database (a SQLite file, or a PostgreSQL schema). Time is the
``now`` each call is given, as the engine passes the database's clock: a lease "runs out"
here by calling with a later ``now``, not by waiting.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

import oldschema
from bulletin.dispatch.ratelimit import Grant, SharedRateLimiter
from bulletin.store import db, ledger
from bulletin.store.migrations import MIGRATIONS
from bulletin.store.schema import UTCDateTime, deliveries, sends, utcnow, workers
from bulletin.store.subscribers import (
    add_subscriber,
    create_list,
    find_subscriber,
    remove_subscriber,
    suppress,
    unsubscribe,
)

SLUG = "2014-10-clusterpolisee-03"
LEASE = 60.0
HOUR = 3600.0


@pytest.fixture
def store(database_url: str) -> Iterator[Engine]:
    """Two lists: a, b. ana and ion on both; four more on one each."""
    engine = db.open_store(database_url)
    with db.write_transaction(engine) as conn:
        create_list(conn, "a")
        create_list(conn, "b")
        for name in ("ana", "ion", "dan", "eva"):
            add_subscriber(conn, f"{name}@example.ro", "a", name=name.title())
        for name in ("ana", "ion", "ștefan", "ioana"):
            add_subscriber(conn, f"{name}@example.ro", "b", name=name.title())
    yield engine
    engine.dispose()


def sid(engine: Engine, email: str) -> int:
    with engine.connect() as conn:
        sub = find_subscriber(conn, email)
    assert sub is not None
    return sub.id


def new_send(engine: Engine, lists: tuple[str, ...], **rates: float) -> ledger.SendRow:
    with db.write_transaction(engine) as conn:
        ids = ledger.list_ids(conn, lists)
        return ledger.create_send(
            conn,
            issue_slug=SLUG,
            list_slugs=lists,
            ids=list(ids.values()),
            subject="Subiect",
            fingerprint="f" * 64,
            **rates,  # type: ignore[arg-type]
        )


def join(
    conn: Connection,
    send: ledger.SendRow,
    worker: str,
    now: datetime,
    *,
    host: str | None = None,
    pid: int | None = None,
    lease: float = LEASE,
    join: bool = True,
) -> ledger.Joined:
    """Register a sender; ``host``/``pid`` make it another machine's or process's."""
    got = ledger.register_worker(
        conn,
        ledger.get_send(conn, send.id),
        worker,
        now=now,
        lease_seconds=lease,
        rate=send.rate,
        rate_hour=send.rate_hour,
        join=join,
    )
    if host is not None or pid is not None:
        values: dict[str, object] = {}
        if host is not None:
            values["host"] = host
        if pid is not None:
            values["pid"] = pid
        conn.execute(workers.update().where(workers.c.id == worker).values(**values))
    return got


def claim(
    conn: Connection, send: ledger.SendRow, worker: str, n: int, now: datetime
) -> ledger.Batch:
    return ledger.claim(
        conn, send.id, worker, [1, 2], n, lambda e: f"<{e}>", now=now, lease_seconds=LEASE
    )


def emails_in(engine: Engine, send_id: int) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.scalars(sa.select(deliveries.c.email).where(deliveries.c.send_id == send_id))
        )


def rows(engine: Engine) -> dict[str, sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {r.email: r for r in conn.execute(sa.select(deliveries))}


def test_upgrade_from_version_1_adds_the_ledger_and_keeps_every_row(database_url: str) -> None:
    engine = db.connect(database_url)
    db.migrate(engine, target=1)
    with db.write_transaction(engine) as conn:
        news = oldschema.add_list(conn, "newsletter-ro")
        oldschema.add_subscribers(conn, news, [("ștefan@example.ro", "Ștefan Țiriac")])

    report = db.migrate(engine)

    assert (report.before, report.after) == (1, MIGRATIONS[-1].version)
    path = db.sqlite_path(engine)
    if path is not None:  # a SQLite file keeps a copy beside it (PostgreSQL: pg_dump's job)
        assert report.backup == path.with_name("bulletin.db-before-v2")
        backup = sqlite3.connect(report.backup)
        assert backup.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
        backup.close()
    else:
        assert report.backup is None
    with engine.connect() as conn:
        assert db.schema_version(conn) == MIGRATIONS[-1].version
        names = set(sa.inspect(conn).get_table_names())
        assert {"sends", "deliveries", "workers", "send_slots"} <= names
        assert conn.execute(sa.select(sa.func.count()).select_from(sends)).scalar() == 0
    # The upgraded store can run a send at once.
    send = new_send(engine, ("newsletter-ro",))
    assert emails_in(engine, send.id) == ["ștefan@example.ro"]
    engine.dispose()


def test_upgrade_from_version_2_keeps_a_send_in_progress_resumable(database_url: str) -> None:
    # A send started by the previous version: rows left pending and sending by a crash.
    engine = db.connect(database_url)
    db.migrate(engine, target=2)
    stamp = sa.bindparam("now", utcnow(), type_=UTCDateTime)
    with db.write_transaction(engine) as conn:
        a = oldschema.add_list(conn, "a")
        oldschema.add_subscribers(conn, a, [(f"{n}@example.ro", "") for n in ("ana", "ion", "dan")])
        send_id = conn.execute(
            sa.text(
                "INSERT INTO sends (issue_slug, lists, subject, fingerprint, state, note, total,"
                " in_doubt, runs, active_seconds, owner, created_at) VALUES (:s, 'a', 'S', 'f',"
                " 'running', '', 3, 0, 1, 0.0, 'gone-host:1', :now) RETURNING id"
            ).bindparams(stamp),
            {"s": SLUG},
        ).scalar_one()
        for i, state in enumerate(("sent", "sending", "pending"), 1):
            conn.execute(
                sa.text(
                    "INSERT INTO deliveries (send_id, subscriber_id, list_id, email, state,"
                    " attempts, last_reply, updated_at) VALUES (:send, :sub, 1, :e, :st, 0, '',"
                    " :now)"
                ).bindparams(stamp),
                {"send": send_id, "sub": i, "e": f"x{i}@example.ro", "st": state},
            )

    assert db.migrate(engine, backup=False).after == MIGRATIONS[-1].version

    with db.write_transaction(engine) as conn:
        send = ledger.get_send(conn, send_id)
        assert (send.rate, send.rate_hour) == (0.0, 0)
        join(conn, send, "w1", utcnow())
        # The old run's `sending` row has no lease (and no live sender): in doubt at once.
        assert ledger.expire(conn, send_id, utcnow()) == 1
        assert ledger.counts(conn, send_id)["pending"] == 2
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
    found = rows(store)
    with store.connect() as conn:
        list_a = ledger.list_ids(conn, ("a",))["a"]
    assert found["ana@example.ro"].list_id == list_a  # on both lists: through the first
    assert {r.state for r in found.values()} == {"pending"}
    assert all(r.message_id is None and r.attempts == 0 for r in found.values())
    assert all(r.worker is None and r.lease_until is None for r in found.values())


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
    mid = {"n": 0}

    def message_id_for(email: str) -> str:
        mid["n"] += 1
        return f"<{email}>"

    def take(n: int) -> ledger.Batch:
        with db.write_transaction(store) as conn:
            return ledger.claim(
                conn, send.id, "w", [1, 2], n, message_id_for, now=now, lease_seconds=LEASE
            )

    now = utcnow()
    with db.write_transaction(store) as conn:
        join(conn, send, "w", now)
    batch = take(2)
    assert [c.email for c in batch.claimed] == ["ana@example.ro", "ion@example.ro"]
    assert not batch.exhausted and batch.skipped == 0
    ana, ion = batch.claimed
    with db.write_transaction(store) as conn:
        # Only promoted rows (allowed on the wire) take a result.
        both = [ana.subscriber_id, ion.subscriber_id]
        assert ledger.promote(conn, send.id, "w", both, [1, 2], now=now) == (set(both), set())
        ledger.record(
            conn,
            send.id,
            "w",
            [
                ledger.Outcome(ana.subscriber_id, "deferred", 1, 451, "451 later", now, now),
                ledger.Outcome(ion.subscriber_id, "sent", 1, 250, "250 ok", now),
            ],
            now=now,
        )
        unsubscribe(conn, sid(store, "eva@example.ro"), None, "web")
    batch = take(10)
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
    assert counts == {
        "pending": 0,
        "queued": 4,
        "sending": 0,
        "sent": 1,
        "deferred": 0,
        "failed": 0,
        "skipped": 1,
    }
    eva = rows(store)["eva@example.ro"]
    assert (eva.state, eva.last_reply) == ("skipped", "unsubscribed during the send")
    queued = [r for r in rows(store).values() if r.state == "queued"]
    assert {r.worker for r in queued} == {"w"}
    assert {r.lease_until for r in queued} == {now + timedelta(seconds=LEASE)}


def test_the_due_queries_read_the_state_index_in_order(store: Engine) -> None:
    # Late in a big send, walking the primary key would pass every row already sent, and
    # sorting would read every pending row for each claim.
    send = new_send(store, ("a",))
    plans: list[str] = []
    with store.connect() as conn, conn.begin():
        sqlite = store.dialect.name == "sqlite"
        if not sqlite:
            # A handful of rows: without this PostgreSQL rightly reads the table instead.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for query in ledger.due_queries(send.id, 200, utcnow()):
            sql = str(query.compile(store, compile_kwargs={"literal_binds": True}))
            if sqlite:
                plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
            else:
                plan = [r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql)]
            plans.append("\n".join(plan))
    assert len(plans) == 2, plans
    for plan in plans:
        if store.dialect.name == "sqlite":
            assert "COVERING INDEX ix_deliveries_state" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # no sort either
        else:
            assert "ix_deliveries_state" in plan, plan
            assert "Sort" not in plan, plan
            assert "LockRows" in plan, plan  # FOR UPDATE SKIP LOCKED


def test_leased_rows_are_not_claimed_again_until_their_lease_runs_out(store: Engine) -> None:
    send = new_send(store, ("a",))
    now = utcnow()
    with db.write_transaction(store) as conn:
        join(conn, send, "w1", now)
        join(conn, send, "w2", now)
        first = claim(conn, send, "w1", 2, now)
        second = claim(conn, send, "w2", 10, now)
        # w1's rows are its own while its lease runs: w2 gets the other two only.
        assert {c.email for c in first.claimed} == {"ana@example.ro", "ion@example.ro"}
        assert {c.email for c in second.claimed} == {"dan@example.ro", "eva@example.ro"}
        assert second.exhausted
        assert ledger.expire(conn, send.id, now + timedelta(seconds=LEASE - 1)) == 0
        assert claim(conn, send, "w2", 10, now + timedelta(seconds=LEASE - 1)).claimed == []
        # w1 promoted one before it went silent; w2 renews its own leases as it works. w1's
        # lease runs out: queued goes back silently, sending counts as in doubt.
        ledger.promote(conn, send.id, "w1", [first.claimed[0].subscriber_id], [1], now=now)
        ledger.beat(
            conn,
            send.id,
            "w2",
            now=now + timedelta(seconds=30),
            lease_seconds=LEASE,
            sent=0,
            rate=0.0,
        )
        later = now + timedelta(seconds=LEASE + 1)
        assert ledger.expire(conn, send.id, later) == 1
        assert ledger.get_send(conn, send.id).in_doubt == 1
        again = claim(conn, send, "w2", 10, later)
    assert {c.email for c in again.claimed} == {"ana@example.ro", "ion@example.ro"}
    # The same Message-ID as the first time: a second copy is recognisable as one.
    assert {c.message_id for c in again.claimed} == {c.message_id for c in first.claimed}
    assert {r.worker for r in rows(store).values()} == {"w2"}


def test_a_sender_whose_lease_ran_out_changes_nothing(store: Engine) -> None:
    """Fencing: every write of a leased row names its holder."""
    send = new_send(store, ("a",))
    now = utcnow()
    later = now + timedelta(seconds=LEASE + 1)
    with db.write_transaction(store) as conn:
        join(conn, send, "old", now)
        join(conn, send, "new", now)
        got = claim(conn, send, "old", 4, now)
        ids = [c.subscriber_id for c in got.claimed]
        assert ledger.promote(conn, send.id, "old", ids[:2], [1], now=now) == (set(ids[:2]), set())
        # Past its lease, even before anyone takes the rows over, it may promote nothing.
        assert ledger.promote(conn, send.id, "old", ids[2:], [1], now=later) == (set(), set())
        assert ledger.expire(conn, send.id, later) == 2
        taken = claim(conn, send, "new", 4, later)
        assert {c.subscriber_id for c in taken.claimed} == set(ids)
    before = rows(store)
    with db.write_transaction(store) as conn:
        # The stalled sender wakes and reports what it sent, releases, skips: all dropped.
        ledger.record(
            conn,
            send.id,
            "old",
            [ledger.Outcome(i, "sent", 1, 250, "250 ok", now) for i in ids[:2]],
            now=later,
        )
        ledger.release(conn, send.id, "old", ids, now=later)
        ledger.skip(conn, send.id, "old", ids, now=later)
        assert ledger.promote(conn, send.id, "old", ids, [1], now=later) == (set(), set())
    assert rows(store) == before
    assert {r.state for r in before.values()} == {"queued"}
    with db.write_transaction(store) as conn:
        assert ledger.promote(conn, send.id, "new", ids, [1], now=later) == (set(ids), set())
        ledger.record(
            conn,
            send.id,
            "new",
            [ledger.Outcome(i, "sent", 1, 250, "ok", later) for i in ids],
            now=later,
        )
    assert {(r.state, r.worker) for r in rows(store).values()} == {("sent", "new")}


def test_renewing_keeps_only_leases_that_have_not_run_out(store: Engine) -> None:
    send = new_send(store, ("a",))
    now = utcnow()
    with db.write_transaction(store) as conn:
        join(conn, send, "w", now)
        got = claim(conn, send, "w", 2, now)
        ids = {c.subscriber_id for c in got.claimed}
        renewed = ledger.beat(
            conn,
            send.id,
            "w",
            now=now + timedelta(seconds=30),
            lease_seconds=LEASE,
            sent=0,
            rate=0.0,
        )
        assert renewed == ids
        # Renewed at +30 s: still held at +80 s, when the first lease would have run out.
        assert ledger.expire(conn, send.id, now + timedelta(seconds=80)) == 0
        late = now + timedelta(seconds=95)
        assert (
            ledger.beat(conn, send.id, "w", now=late, lease_seconds=LEASE, sent=0, rate=0.0)
            == set()
        )
        w = next(x for x in ledger.workers_of(conn, send.id) if x.id == "w")
        assert w.heartbeat_at == late


def test_promotion_honours_an_unsubscribe_committed_after_the_claim(store: Engine) -> None:
    # Whatever the suppression history's ids say: the check reads the subscription itself.
    send = new_send(store, ("a", "b"))
    now = utcnow()
    with db.write_transaction(store) as conn:
        join(conn, send, "w", now)
        got = claim(conn, send, "w", 10, now)
        by_email = {c.email: c.subscriber_id for c in got.claimed}
    with db.write_transaction(store) as conn:
        unsubscribe(conn, by_email["dan@example.ro"], "a", "web")  # dan was on a only
        unsubscribe(conn, by_email["ana@example.ro"], "a", "web")  # ana stays on b
        suppress(conn, by_email["eva@example.ro"], "complained", "fbl")
    with db.write_transaction(store) as conn:
        promoted, skipped = ledger.promote(conn, send.id, "w", by_email.values(), [1, 2], now=now)
    assert skipped == {by_email["dan@example.ro"], by_email["eva@example.ro"]}
    assert promoted == set(by_email.values()) - skipped
    found = rows(store)
    assert found["dan@example.ro"].state == "skipped"
    assert found["dan@example.ro"].last_reply == "unsubscribed during the send"
    assert found["ana@example.ro"].state == "sending"


def test_a_live_sender_is_joined_or_refused_and_a_dead_one_loses_its_leases_at_once(
    store: Engine,
) -> None:
    send = new_send(store, ("a",))
    now = utcnow()
    with db.write_transaction(store) as conn:
        assert join(conn, send, "elsewhere", now, host="mail-2.example", pid=42).senders == []
        claim(conn, send, "elsewhere", 2, now)
    with pytest.raises(ledger.SendBusy) as caught, db.write_transaction(store) as conn:
        join(conn, send, "me", now, join=False)
    assert caught.value.message == "This send is already running (process 42 on mail-2.example)."
    with db.write_transaction(store) as conn:
        joined = join(conn, send, "me", now)
        assert [w.id for w in joined.senders] == ["elsewhere"]
        # Another machine's sender keeps its rows until its lease runs out, heartbeat or not.
        assert ledger.expire(conn, send.id, now + timedelta(seconds=LEASE - 1)) == 0
        assert ledger.counts(conn, send.id)["queued"] == 2

    # A sender of this machine whose process is gone loses its rows at once.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with db.write_transaction(store) as conn:
        join(conn, send, "dead", now, pid=child.pid)
        got = claim(conn, send, "dead", 2, now)
        ledger.promote(conn, send.id, "dead", [got.claimed[0].subscriber_id], [1], now=now)
        assert ledger.expire(conn, send.id, now) == 1
        dead = next(w for w in ledger.workers_of(conn, send.id) if w.id == "dead")
        assert (dead.state, dead.stopped_at) == ("failed", now)
        assert {w.id for w in ledger.live_workers(conn, send.id, now)} == {"elsewhere", "me"}
        # And a live one of this machine (our parent) is respected.
        join(conn, send, "parent", now, pid=os.getppid())
        claim(conn, send, "parent", 1, now)
        assert ledger.expire(conn, send.id, now) == 0
        # Heard of within its lease: live. Silent for longer: not, though it keeps its rows.
        assert "parent" in {w.id for w in ledger.live_workers(conn, send.id, now)}
        later = now + timedelta(seconds=LEASE + 1)
        assert "elsewhere" not in {w.id for w in ledger.live_workers(conn, send.id, later)}


def test_the_last_sender_to_stop_says_how_the_send_stands(store: Engine) -> None:
    send = new_send(store, ("a",))
    now = utcnow()
    with db.write_transaction(store) as conn:
        join(conn, send, "w1", now)
        join(conn, send, "w2", now)
        got = claim(conn, send, "w1", 2, now)
        ledger.release(conn, send.id, "w1", [c.subscriber_id for c in got.claimed], now=now)
        first = ledger.stop_worker(conn, send.id, "w1", "interrupted", now=now)
        assert (first.state, [w.id for w in first.others]) == ("running", ["w2"])
        assert ledger.get_send(conn, send.id).state == "running"
        last = ledger.stop_worker(conn, send.id, "w2", "interrupted", now=now)
        assert (last.state, last.others) == ("interrupted", [])
        assert ledger.get_send(conn, send.id).state == "interrupted"
        # Rejoined and finished: done, whoever stops last.
        join(conn, send, "w3", now)
        got = claim(conn, send, "w3", 10, now)
        ids = [c.subscriber_id for c in got.claimed]
        ledger.promote(conn, send.id, "w3", ids, [1], now=now)
        ledger.record(
            conn,
            send.id,
            "w3",
            [ledger.Outcome(i, "sent", 1, 250, "ok", now) for i in ids],
            now=now,
        )
        done = ledger.stop_worker(conn, send.id, "w3", "done", now=now, sent=4)
        assert done.state == "done"
        final = ledger.get_send(conn, send.id)
    assert (final.state, final.runs, final.finished_at) == ("done", 3, now)


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


# --- the shared rate ----------------------------------------------------------------------------


def reserve(store: Engine, send: ledger.SendRow) -> ledger.Slots:
    with db.write_transaction(store) as conn:
        return ledger.reserve_slots(conn, send.id, seconds=0.5)


def test_slots_come_from_one_schedule_for_every_sender(store: Engine) -> None:
    send = new_send(store, ("a",), rate=10.0)
    now = utcnow()
    with db.write_transaction(store) as conn:
        join(conn, send, "w1", now)
    alone = reserve(store, send)
    # One sender: its share of half a second at 10/s is 5 slots, 0.1 s apart.
    assert len(alone.slots) == 5 and alone.interval == 0.1
    gaps = {round((b - a).total_seconds(), 6) for a, b in pairwise(alone.slots)}
    assert gaps == {0.1}
    with db.write_transaction(store) as conn:
        join(conn, send, "w2", now)
    blocks = [reserve(store, send) for _ in range(6)]
    # Two senders: blocks of 3 at 5/s each (its share), one starting every 0.3 s.
    assert [len(b.slots) for b in blocks] == [3] * 6
    assert {b.interval for b in blocks} == {0.2}
    assert blocks[0].slots[0] == alone.slots[0] + timedelta(seconds=0.5)
    starts = [b.slots[0] for b in blocks]
    assert {round((b - a).total_seconds(), 6) for a, b in pairwise(starts)} == {0.3}
    every = sorted([*alone.slots, *(s for b in blocks for s in b.slots)])
    # However they fall together: never more than 10 in any second, as 10/s allows.
    for i, first in enumerate(every):
        in_a_second = [s for s in every[i:] if (s - first).total_seconds() < 1.0]
        assert len(in_a_second) <= 10, (i, every)
    # A send without a limit grants nothing to wait for.
    with db.write_transaction(store) as conn:
        ledger.set_rate(conn, send.id, 0.0, 0)
    assert reserve(store, send).slots == []


def test_at_most_rate_hour_slots_in_any_hour_over_every_sender(store: Engine) -> None:
    send = new_send(store, ("a",), rate_hour=7)
    with db.write_transaction(store) as conn:
        join(conn, send, "w1", utcnow())
    slots = [s for _ in range(5) for s in reserve(store, send).slots]
    assert len(slots) == 5  # an hourly limit alone: one slot at a time
    slots += [s for _ in range(4) for s in reserve(store, send).slots]
    slots.sort()
    # Any window of an hour holds at most 7 of them: the 8th waits for the 1st to age.
    for i in range(len(slots) - 7):
        assert (slots[i + 7] - slots[i]).total_seconds() >= HOUR, (i, slots)
    assert (slots[7] - slots[0]).total_seconds() == pytest.approx(HOUR, abs=1)


def test_the_limiter_waits_for_each_slot_and_drops_the_ones_it_missed() -> None:
    clock = [1000.0]
    grants = [Grant([1000.0, 1000.1, 1000.2, 1000.3], 0.1)]
    asked: list[int] = []

    def grant() -> Grant | None:
        asked.append(1)
        return grants.pop(0) if grants else Grant([], unlimited=True)

    limiter = SharedRateLimiter(grant, clock=lambda: clock[0])
    assert limiter._next() == 1000.0
    assert limiter._next() == 1000.1
    clock[0] = 1000.35  # 1000.2 is too late to use without a burst: lost
    assert limiter._next() == 1000.3
    assert len(asked) == 1
    assert limiter._next() is None and len(asked) == 2  # no limit (any more)
    clock[0] += 1
    assert limiter._next() is None and len(asked) == 2  # believed for a while...
    clock[0] += 2
    limiter._next()
    assert len(asked) == 3  # ...then asked again


def test_acquire_gives_up_when_the_send_stops() -> None:
    limiter = SharedRateLimiter(lambda: Grant([0.0, 2.0], 2.0), clock=lambda: 0.0)
    stop = threading.Event()
    assert limiter.acquire(stop)
    stop.set()
    assert not limiter.acquire(stop)
    assert SharedRateLimiter(lambda: Grant([], unlimited=True)).acquire()


def test_no_answer_from_the_database_means_no_slot_yet() -> None:
    answers: list[Grant | None] = [None, Grant([], unlimited=True)]
    limiter = SharedRateLimiter(lambda: answers.pop(0))
    assert limiter.acquire(threading.Event())
    assert answers == []


def test_whoever_stops_last_marks_senders_not_heard_of_as_gone(store: Engine) -> None:
    send = new_send(store, ("a",))
    now = utcnow()
    later = now + timedelta(seconds=LEASE + 1)
    with db.write_transaction(store) as conn:
        join(conn, send, "silent", now, host="mail-2.example", pid=42)
        join(conn, send, "me", now)
        ledger.beat(conn, send.id, "me", now=later, lease_seconds=LEASE, sent=0, rate=0.0)
        end = ledger.stop_worker(conn, send.id, "me", "interrupted", now=later)
        assert (end.state, end.others) == ("interrupted", [])
        silent = next(w for w in ledger.workers_of(conn, send.id) if w.id == "silent")
    assert (silent.state, silent.stopped_at) == ("failed", later)
    assert silent.note == "not heard of since its lease ran out"
    with db.write_transaction(store) as conn:
        # Should it wake after all, its heartbeat finds it stopped: it holds nothing.
        assert (
            ledger.beat(conn, send.id, "silent", now=later, lease_seconds=LEASE, sent=0, rate=0.0)
            is None
        )


@pytest.mark.postgresql_only
def test_freezing_a_send_right_after_an_import_gives_the_planner_statistics(
    store: Engine,
) -> None:
    """Without statistics PostgreSQL plans the recipients' count and the freezing as nested
    loops over the whole list (3 s at 5,000 members, minutes at 50,000) and every claim as a
    walk over every pending row; autovacuum only comes round up to a minute later."""
    with db.write_transaction(store) as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subscribers (email, email_key, smtputf8, name, language, attributes,"
                " status, source, created_at, updated_at) SELECT 'x' || g || '@example.ro',"
                " 'x' || g || '@example.ro', false, '', '', '{}', 'active', 'import', now(),"
                " now() FROM generate_series(1, 3000) AS g"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO subscriptions SELECT id, 1, 'subscribed', 'import', now(), now()"
                " FROM subscribers WHERE email LIKE 'x%'"
            )
        )

    def analyzed(conn: Connection, table: str) -> object:
        return conn.scalar(
            sa.text("SELECT last_analyze FROM pg_stat_user_tables WHERE relid = to_regclass(:t)"),
            {"t": table},
        )

    with store.connect() as conn:
        assert analyzed(conn, "subscriptions") is None  # as after any import
    send = new_send(store, ("a",))
    assert send.total == 3004
    with store.connect() as conn:
        for table in ("subscribers", "subscriptions", "deliveries"):
            assert analyzed(conn, table) is not None, table
        # Fresh statistics are left alone: a second send does not analyze again.
        before = analyzed(conn, "subscriptions")
    new_send(store, ("b",))
    with store.connect() as conn:
        assert analyzed(conn, "subscriptions") == before
