"""Several senders on one send: joining, takeovers after a kill or a stall, one shared rate.

Every sender is a real `bulletin send` process on one workspace (a SQLite file on one
machine, or the session's PostgreSQL server on that pass), sending through a FaultServer
that takes a little time per message. The test stops, continues and kills them with real
signals while they send, and judges the outcome from what the SMTP server received and what
the ledger says:

* everyone gets the issue;
* a second copy only for a message that was on its way in a killed or stalled sender at
  that moment -- its row was ``sending`` under that sender's lease -- and at most one per
  connection of that sender among those still on the wire (the rest of those rows had
  reached the relay and were not recorded yet when the process stopped);
* every second copy carries the same Message-ID as the first;
* a stalled sender that wakes records nothing under its old identity (fencing) and sends
  nothing from the batches it held;
* the rate limit holds over the whole send, all senders together.

Leases are 3 s here (``send.lease_seconds``) so that a stall outlasts one quickly.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bulletin.dispatch.engine import SendEngine
from bulletin.dispatch.ratelimit import LATE
from bulletin.dispatch.smtp import SmtpTransport
from bulletin.store import ledger
from bulletin.store.db import sqlite_path, write_transaction
from bulletin.store.schema import deliveries, utcnow, workers
from bulletin.store.subscribers import find_subscriber, unsubscribe
from conftest import SAMPLE_SLUG
from smtpfaults import FaultServer, Received
from test_engine import (
    KEY,
    by_recipient,
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    configure,
    email_of,
    make_plan,
    open_store,
    parse,
    populate,
    run,
)

LEASE = 3.0
LIST = "news"


def _env() -> dict[str, str]:
    return {**os.environ, "BULLETIN_SECRET_KEY": KEY, "COLUMNS": "200", "NO_COLOR": "1"}


class Sender:
    """One `bulletin send` process of the send; what it printed goes to a file."""

    def __init__(self, root: Path, name: str, *args: str) -> None:
        self.log = root.parent / f"{name}.log"
        with open(self.log, "w", encoding="utf-8") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bulletin", "-w", str(root)),
                    *("send", SAMPLE_SLUG, "--list", LIST, "--yes", *args),
                ],
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:  # pragma: no cover - hung
                self.proc.kill()
                self.proc.wait()
        return code, self.log.read_text(encoding="utf-8")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """End it if it still runs (a failed test must not leave a sender behind)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def state(self) -> str:
        """The process's state letter (R, S, T when stopped...)."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0].decode()


def _worker(db: Engine, pid: int) -> ledger.WorkerRow | None:
    """The live identity of the sender process ``pid``, if it has registered."""
    with db.connect() as conn:
        found = conn.execute(
            sa.select(workers).where(workers.c.pid == pid, workers.c.stopped_at.is_(None))
        ).all()
    if not found:
        return None
    (row,) = found
    return ledger.WorkerRow(**row._mapping)


def _wait_for_worker(db: Engine, sender: Sender, timeout: float = 60) -> ledger.WorkerRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _worker(db, sender.pid)
        if found is not None:
            return found
        assert sender.proc.poll() is None, sender.log.read_text(encoding="utf-8")
        time.sleep(0.05)
    raise AssertionError(f"sender {sender.pid} never registered")


@dataclass
class Stop:
    """A sender stopped or killed, and what it held at that moment."""

    worker: str
    sending: set[str]
    """Addresses whose rows it held ``sending``: allowed on the wire."""
    received: set[str]
    """Addresses the server had received a copy of by then."""
    connections: int

    def on_the_wire(self, duplicates: set[str]) -> set[str]:
        """Duplicates whose first copy the server had not received when it stopped."""
        return (duplicates & self.sending) - self.received


def _stopped(db: Engine, server: FaultServer, worker: str, connections: int) -> Stop:
    with db.connect() as conn:
        sending = set(
            conn.scalars(
                sa.select(deliveries.c.email).where(
                    deliveries.c.worker == worker, deliveries.c.state == "sending"
                )
            )
        )
    received = {r for m in server.messages for r in m.rcpt_tos}
    return Stop(worker, sending, received, connections)


def _stop_between_writes(sender: Sender, db: Engine) -> None:
    """SIGSTOP a sender, at a moment it does not hold SQLite's write lock.

    A process stopped inside a write transaction keeps every other writer of the file out
    until it wakes: a limit of SQLite (see README), not what this test is about. On
    PostgreSQL the server ends such a session after a few seconds (the senders set
    idle_in_transaction_session_timeout), so any moment will do.
    """
    path = sqlite_path(db)
    for _ in range(200):
        sender.signal(signal.SIGSTOP)
        while sender.state() != "T":
            time.sleep(0.001)
        if path is None:
            return
        probe = sqlite3.connect(path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return
        except sqlite3.OperationalError:
            sender.signal(signal.SIGCONT)
            time.sleep(0.003)
        finally:
            probe.close()
    raise AssertionError("the sender always held the write lock")


def _message_id(m: Received) -> str:
    return str(parse(m.data)["Message-ID"])


def _check_everyone(
    db: Engine, server: FaultServer, emails: list[str], stops: list[Stop]
) -> dict[str, list[Received]]:
    """Everyone has the issue; second copies only as the module docstring allows."""
    received = by_recipient(server.messages)
    assert sorted(received) == sorted(emails)
    duplicates = {e for e, copies in received.items() if len(copies) > 1}
    allowed = set().union(*(s.sending for s in stops))
    assert duplicates <= allowed, sorted(duplicates - allowed)
    for stop in stops:
        assert len(stop.on_the_wire(duplicates)) <= stop.connections, (stop, duplicates)
    for email in duplicates:
        assert len(received[email]) == 2, email
        assert len({_message_id(m) for m in received[email]}) == 1, email
    with db.connect() as conn:
        (send,) = ledger.sends_of_issue(conn, SAMPLE_SLUG)
        counts = ledger.counts(conn, send.id)
        ids = dict(conn.execute(sa.select(deliveries.c.email, deliveries.c.message_id)).all())
    assert send.state == "done" and counts["sent"] == len(emails), counts
    assert send.in_doubt >= len(duplicates)
    for email, copies in received.items():
        assert _message_id(copies[0]) == ids[email], email
    print(f"duplicates {len(duplicates)}, in doubt {send.in_doubt}, allowed {len(allowed)}")
    return received


def _check_rate(messages: list[Received], rate: float) -> None:
    """At most ``rate`` a second over all senders: in every one-second window, allowing
    for slots used a little late (:data:`~bulletin.dispatch.ratelimit.LATE`)."""
    times = sorted(m.at for m in messages)
    most = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    bound = rate * (1.0 + LATE) + 2
    print(f"most messages in one second: {most} (rate {rate:g}, bound {bound:g})")
    assert most <= bound


def _fenced_since(db: Engine, worker: str, woke: Any) -> int:
    """Rows the old identity of a stalled sender changed after it woke."""
    with db.connect() as conn:
        return int(
            conn.scalar(
                sa.select(sa.func.count())
                .select_from(deliveries)
                .where(deliveries.c.worker == worker, deliveries.c.updated_at >= woke)
            )
            or 0
        )


def _setup(
    root: Path, tmp: Path, server: FaultServer, n: int, **send: Any
) -> tuple[Engine, list[str]]:
    options = {"lease_seconds": LEASE, "backoff": 0.05, "backoff_cap": 0.2, "max_wait": 10.0}
    workspace = configure(root, server.url, send={**options, **send})
    db = open_store(workspace.database_url())
    return db, populate(db, LIST, n, folder=tmp)


# --- one machine, two senders -------------------------------------------------------------------


@pytest.mark.slow
def test_a_stalled_sender_sends_nothing_its_successor_took_over(
    workspace_dir: Path, tmp_path: Path
) -> None:
    connections, rate = 2, 60
    with FaultServer() as server:
        server.fault("DATA_END", delay=0.05)  # each sender alone: at most 40/s
        db, emails = _setup(
            workspace_dir, tmp_path, server, 400, connections=connections, rate=rate
        )
        try:
            a = Sender(workspace_dir, "a")
            server.wait_for_messages(20, timeout=60)
            b = Sender(workspace_dir, "b")
            _wait_for_worker(db, b)
            server.wait_for_messages(80, timeout=60)

            _stop_between_writes(a, db)
            stalled = _worker(db, a.pid)
            assert stalled is not None
            stop = _stopped(db, server, stalled.id, connections)
            time.sleep(LEASE + 2)  # b takes its rows over meanwhile
            woke = utcnow()
            a.signal(signal.SIGCONT)

            (code_a, out_a), (code_b, out_b) = a.finish(), b.finish()
            assert (code_a, code_b) == (0, 0), out_a + "\n---\n" + out_b
            assert "Joining the send of" in out_b
            assert "Traceback" not in out_a + out_b
            _check_everyone(db, server, emails, [stop])
            _check_rate(server.messages, rate)
            # Fencing: the old identity changed no row after it woke; it was marked lost
            # and the process carried on under a new one.
            assert _fenced_since(db, stalled.id, woke) == 0
            with db.connect() as conn:
                (send,) = ledger.sends_of_issue(conn, SAMPLE_SLUG)
                senders = ledger.workers_of(conn, send.id)
            old = next(w for w in senders if w.id == stalled.id)
            assert (old.state, old.note) == (
                "lost",
                "its lease ran out (the process was stopped, asleep or cut off)",
            )
            assert [w.pid for w in senders].count(a.pid) == 2
        finally:
            db.dispose()


def test_ctrl_c_stops_one_sender_and_the_other_finishes_the_send(
    workspace_dir: Path, tmp_path: Path
) -> None:
    with FaultServer() as server:
        # Slow enough that A alone needs ~9 s: B's start-up (imports, check, render) takes
        # seconds on a loaded machine, and B must join while A still sends.
        server.fault("DATA_END", delay=0.15)
        db, emails = _setup(workspace_dir, tmp_path, server, 120, connections=2, rate=0)
        senders: list[Sender] = []
        try:
            a = Sender(workspace_dir, "a")
            senders.append(a)
            first = _wait_for_worker(db, a)
            b = Sender(workspace_dir, "b")
            senders.append(b)
            _wait_for_worker(db, b)
            server.wait_for_messages(30, timeout=60)
            a.signal(signal.SIGINT)
            code_a, out_a = a.finish()
            assert code_a == 130, out_a
            assert "Interrupted: this sender stopped; the send carries on with 1 other" in out_a
            code_b, out_b = b.finish()
            assert code_b == 0, out_b
            assert f"Done: {SAMPLE_SLUG} is sent." in out_b
            received = by_recipient(server.messages)
            assert sorted(received) == sorted(emails)
            assert all(len(copies) == 1 for copies in received.values())
            with db.connect() as conn:
                (send,) = ledger.sends_of_issue(conn, SAMPLE_SLUG)
                by_id = {w.id: w for w in ledger.workers_of(conn, send.id)}
            assert (send.state, send.in_doubt) == ("done", 0)
            assert by_id[first.id].state == "interrupted"
            assert by_id[first.id].sent + sum(
                w.sent for w in by_id.values() if w.id != first.id
            ) == len(emails)
        finally:
            for sender in senders:
                sender.kill()
            db.dispose()


# --- PostgreSQL: several machines ----------------------------------------------------------------


@pytest.mark.postgresql_only
@pytest.mark.slow
def test_three_senders_one_killed_one_stalled_one_late_share_the_send_and_its_rate(
    workspace_dir: Path, tmp_path: Path
) -> None:
    connections, rate, total = 2, 250, 5000
    with FaultServer() as server:
        server.fault("DATA_END", delay=0.01)
        db, emails = _setup(
            workspace_dir, tmp_path, server, total, connections=connections, rate=rate
        )
        try:
            first = Sender(workspace_dir, "first")
            server.wait_for_messages(200, timeout=60)
            stalls = Sender(workspace_dir, "stalls")
            _wait_for_worker(db, stalls)
            server.wait_for_messages(800, timeout=60)

            _stop_between_writes(stalls, db)
            stalled = _worker(db, stalls.pid)
            assert stalled is not None
            stopped_at = time.monotonic()
            stall = _stopped(db, server, stalled.id, connections)

            server.wait_for_messages(1400, timeout=60)
            late = Sender(workspace_dir, "late")
            _wait_for_worker(db, late)
            time.sleep(1.0)
            status = subprocess.run(
                [sys.executable, "-m", "bulletin", "-w", str(workspace_dir), "status", SAMPLE_SLUG],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert status.returncode == 0, status.stderr
            assert f"{SAMPLE_SLUG} to {LIST}: running" in status.stdout
            senders_table = status.stdout.partition("Senders at work:")[2]
            assert senders_table, status.stdout
            for sender in (first, late):
                assert f" {sender.pid} " in senders_table, status.stdout

            server.wait_for_messages(2200, timeout=60)
            killed = _worker(db, first.pid)
            assert killed is not None
            first.signal(signal.SIGKILL)
            first.proc.wait()
            kill = _stopped(db, server, killed.id, connections)

            time.sleep(max(0.0, stopped_at + LEASE + 2 - time.monotonic()))
            woke = utcnow()
            stalls.signal(signal.SIGCONT)

            (code_s, out_s), (code_l, out_l) = stalls.finish(), late.finish()
            assert (code_s, code_l) == (0, 0), out_s + "\n---\n" + out_l
            assert "Traceback" not in out_s + out_l
            assert "Joining the send of" in out_l
            _check_everyone(db, server, emails, [stall, kill])
            _check_rate(server.messages, rate)
            assert _fenced_since(db, stalled.id, woke) == 0
        finally:
            db.dispose()


@pytest.mark.postgresql_only
def test_an_unsubscribe_committed_out_of_id_order_is_still_honoured(
    workspace_dir: Path, tmp_path: Path
) -> None:
    """The suppression history's ids are taken when a transaction writes, and need not commit
    in that order: the engine's poll by id can miss one. Promotion checks the person anyway."""
    with FaultServer() as server:
        # Both connections hold their first message 3 s: everything after is claimed and
        # waits, queued, until then.
        server.fault("DATA_END", delay=3.0, times=2)
        workspace = configure(workspace_dir, server.url)
        db = open_store(workspace.database_url())
        emails = populate(db, LIST, 12, folder=tmp_path)
        leaving, other = emails[5], emails[10]
        seen: list[str] = []

        def state_of(email: str) -> str:
            with db.connect() as conn:
                return str(
                    conn.scalar(sa.select(deliveries.c.state).where(deliveries.c.email == email))
                )

        def out_of_order(engine: Any) -> None:
            deadline = time.monotonic() + 30
            while server.count("DATA") < 2 or state_of(leaving) != "queued":
                assert time.monotonic() < deadline, "the send never queued the recipient"
                time.sleep(0.01)
            with db.connect() as first:
                tx = first.begin()
                sub = find_subscriber(first, leaving)
                assert sub is not None
                unsubscribe(first, sub.id, LIST, "web")  # takes the lower event id
                with write_transaction(db) as second:
                    late = find_subscriber(second, other)
                    assert late is not None
                    unsubscribe(second, late.id, LIST, "web")  # a higher id, committed first
                time.sleep(1.0)  # the engine polls every 0.25 s: it moves past both ids
                tx.commit()
            seen.append(state_of(leaving))

        try:
            result = run(workspace, db, during=out_of_order, connections=2)
        finally:
            db.dispose()
        assert seen == ["queued"]  # still not on its way when the unsubscribe committed
        received = by_recipient(server.messages)
        assert leaving not in received and other not in received
        assert result.state == "done" and result.counts["skipped"] == 2
        assert len(received) == 10


# --- joining in-process -------------------------------------------------------------------------


def test_a_sender_started_while_another_runs_joins_it_and_says_so(
    workspace_dir: Path, tmp_path: Path
) -> None:
    """Two engines in one process (each would be a process of its own in real life)."""
    with FaultServer() as server:
        server.fault("DATA_END", delay=0.02)
        workspace = configure(workspace_dir, server.url)
        db = open_store(workspace.database_url())
        try:
            emails = populate(db, LIST, 60, folder=tmp_path)
            starts: list[Any] = []
            results: list[Any] = []

            def second(engine: Any) -> None:
                server.wait_for_messages(5, timeout=30)
                # A rate of its own: the send's limit, for both senders, from now on.
                plan = make_plan(workspace, db, rate=500)
                assert plan.joining and [w.id for w in plan.senders] == [engine.worker_id]
                other = SendEngine(
                    plan,
                    db,
                    SmtpTransport(workspace.config.smtp, password=None),
                    on_start=starts.append,
                )
                results.append(other.run())

            mine = run(workspace, db, during=second)
            assert results, "the second sender did not finish"
            (started,) = starts
            assert len(started.joined) == 1 and started.rate_was == (0.0, 0)
            with db.connect() as conn:
                (send,) = ledger.sends_of_issue(conn, SAMPLE_SLUG)
            assert (send.rate, send.rate_hour, send.runs) == (500.0, 0, 2)
            both = [mine, results[0]]
            assert {r.state for r in both} <= {"done", "running"}
            assert "done" in {r.state for r in both}
            assert sum(r.sent_this_run for r in both) == len(emails)
            assert min(r.sent_this_run for r in both) > 0
            received = by_recipient(server.messages)
            assert sorted(received) == sorted(emails)
            assert all(len(c) == 1 for c in received.values())
            assert email_of(0) in received
        finally:
            db.dispose()
