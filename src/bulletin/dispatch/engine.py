"""The send engine: deliver an issue to every recipient in its ledger, crash-safe, beside
any other senders of the same send.

Threads and who owns what::

    coordinator (the caller's thread)            N workers (one SMTP connection each)
    ---------------------------------            ------------------------------------
    claims a batch (a lease): pending -> queued  take a job, build its message,
    promotes a few: queued -> sending,   jobs    wait for a rate-limit slot, check
    committed before any byte leaves  ---------> the lease, send it on their own
                                                 connection (reconnect on 421, a
    records results in batches        <--------- dropped connection or a timeout)
    (one write transaction per ~50 ms) results
    renews its leases, heartbeats; polls the suppression history

Only the coordinator writes the ledger (the workers only reserve rate slots), so each
commit carries many state changes. The engine decides what an outcome means for the ledger
(:func:`SendEngine._outcome`): ``sent``; 5xx -> ``failed`` with the reply, never retried;
4xx, timeouts and dropped connections -> ``deferred`` with exponential backoff and jitter,
``failed`` after ``max_attempts`` tries or ``max_age``. Transports only deliver bytes.

**Several senders.** Each run of ``bulletin send`` is one *sender*: a row in ``workers``
(see :mod:`bulletin.store.ledger`). The first creates the send; one started while it runs
joins it (unless told not to, ``SendOptions.join``), on the same machine or another one
sharing the database. Each claims its own batches as leases, fenced by its id, and renews
them while it works; the rate limit is one budget for all of them
(:mod:`bulletin.dispatch.ratelimit`). A sender that finds no due work while others still
hold some waits for them -- taking over whatever lease runs out -- so the last one to stop
finds the send complete and records it ``done``. Ctrl-C stops one sender; the others carry
on.

**Leases and stalls.** A lease is granted in database time; the sender turns it into a
local deadline on a clock that keeps running while the process is stopped or the machine
sleeps (:func:`lease_clock`), measured from just before it asked, minus a margin. Before a
message leaves, its worker checks that deadline: a sender stopped (Ctrl-Z, SIGSTOP, a laptop
asleep) or cut off from the database past its lease sends nothing more from those batches,
since another sender may have taken them over; its results for them are dropped by the
fencing, and the new holder sends them again with the same Message-ID. Only messages that
were on the wire at the moment it stopped can reach someone twice. The sender then carries
on as a new sender (a new ``workers`` row: a new fencing token).

**Crash safety.** A claimed batch is ``queued`` -- this sender's work, not yet allowed out
-- and the coordinator promotes jobs to ``sending`` in small windows, committing each
promotion (in the same transaction as the results it records) before the workers see those
jobs. Promotion also checks, in the same statement, that each person is still subscribed:
an unsubscribe committed before it is honoured, in whatever order history ids were
committed. The window (:meth:`SendOptions.window`) keeps every connection busy -- two jobs
each, more when the measured rate needs it -- and caps the rows ``sending`` at once. After
``kill -9`` another sender (or the next run) sends the ``sending`` rows again with the same
Message-ID (at-least-once) and counts them as *in doubt*: at most that many people may have
two copies, and at most :attr:`SendOptions.in_doubt_limit` per crash. ``queued`` rows never
left; they go back to ``pending`` without counting.

Stopping: :meth:`SendEngine.stop` stops taking new work; messages on the wire finish and
are recorded, queued ones go back to ``pending``. :func:`stop_on_signals` makes the first
Ctrl-C or SIGTERM do that and the second quit at once. After ``pause_after`` failed
connection attempts in a row the sender pauses the same way. When only deferred recipients
are left, the engine waits for them up to ``max_wait`` seconds, then stops in state
``waiting`` and says when they fall due.

The engine never prints: progress goes to an ``on_progress`` callback, and how the sender
began (joining others, changing the send's rate) to ``on_start``.
"""

from __future__ import annotations

import queue
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy.engine import Connection as DbConnection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from bulletin.dispatch.composer import Composer
from bulletin.dispatch.plan import IssueChanged, SendOptions, SendPlan
from bulletin.dispatch.ratelimit import Grant, SharedRateLimiter
from bulletin.dispatch.transport import ConnectFailed, Connection, Delivery, Transport
from bulletin.errors import BulletinError
from bulletin.mail.compose import InvalidRecipient, Recipient
from bulletin.store import ledger
from bulletin.store.db import write_transaction
from bulletin.store.schema import utcnow

IDLE_CLOSE = 5.0
"""Seconds a worker keeps an idle connection open (relays drop idle sessions anyway)."""

_HEARTBEAT = 5.0
"""Longest time between two heartbeats (more often with a lease under 15 s: a third of it)."""
_POLL = 0.25
_PROGRESS = 0.2
_RATE_SPAN = 2.0
"""Seconds of recent results the promotion window's rate is measured over."""
_BLOCK = 0.5
"""Seconds of its share of the rate a sender reserves at a time."""
_OTHERS = 1.0
"""Seconds between two looks for work while other senders hold the last recipients."""

_RAN_OUT = "its lease ran out (the process was stopped, asleep or cut off)"

_Marker = Literal["release", "skip"]
"""A job that was not sent: ``release`` (back to pending) or ``skip`` (unsubscribed)."""


def _make_lease_clock() -> Callable[[], float]:
    if hasattr(time, "CLOCK_BOOTTIME"):
        boottime = time.CLOCK_BOOTTIME

        def boot() -> float:
            return time.clock_gettime(boottime)

        return boot
    # Elsewhere the monotonic clock may pause while the machine sleeps, and the wall clock
    # may jump: time counts as passed when either says so.
    mono0, wall0 = time.monotonic(), time.time()

    def either() -> float:
        return mono0 + max(time.monotonic() - mono0, time.time() - wall0)

    return either


lease_clock = _make_lease_clock()
"""Seconds on a clock that keeps running while this process is stopped or the machine
sleeps (Linux: CLOCK_BOOTTIME): what a lease's local deadline is measured on."""


class SmtpUnavailable(BulletinError):
    """The relay could not be reached before the send began; nothing was sent."""


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running send, for progress bars."""

    total: int
    sent: int
    failed: int
    skipped: int
    deferred: int
    pending: int
    in_flight: int
    processed: int
    """Recipients finished by this sender (sent, failed or skipped)."""
    elapsed: float
    rate: float
    """Messages this sender got accepted per second, over the last few seconds."""
    note: str = ""
    """What the send is waiting for, if anything (a reconnect, deferred recipients)."""
    senders: int = 1
    """Senders working on the send, this one included."""


@dataclass(frozen=True)
class Started:
    """How a sender began (for ``on_start``): the senders it joined, a rate it changed."""

    send_id: int
    joined: list[ledger.WorkerRow]
    """The senders already running the send, oldest first; empty when this one started
    (or restarted) it."""
    rate_was: tuple[float, int] | None = None
    """The send's rate limits (per second, per hour) before this sender set its own."""


@dataclass(frozen=True)
class SendResult:
    """How a sender's run of a send ended."""

    send_id: int
    state: str
    """``done``; ``running`` (this sender had nothing left to do, others carry on);
    ``waiting`` (deferred recipients left), ``paused`` or ``interrupted``."""
    counts: dict[str, int]
    in_doubt: int
    """Recipients this sender found ``sending`` under a lease that had run out (a sender
    killed, stopped or cut off): their messages may have left, so they were sent again
    (same Message-ID) and may have two copies."""
    in_doubt_total: int
    """The same over every sender of the send."""
    sent_this_run: int
    elapsed: float
    note: str = ""
    retry_at: datetime | None = None
    already_done: bool = False
    others: int = 0
    """Other senders still working on the send when this one stopped."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.sent_this_run / self.elapsed if self.elapsed > 0 else 0.0


def in_doubt_note(n: int) -> str:
    """What an in-doubt count means, in the words `bulletin send` and `status` print."""
    if n == 1:
        return (
            "1 message was on its way when a run stopped; it was sent again with the same "
            "Message-ID, so at most 1 person may have two copies."
        )
    return (
        f"{n:,} messages were on their way when a run stopped; they were sent again with the "
        f"same Message-ID, so at most {n:,} people may have two copies."
    )


@dataclass(eq=False)
class _Epoch:
    """One identity of this sender (a ``workers`` row): the fencing token of its rows.

    A sender whose lease ran out carries on under a new one.
    """

    worker: str
    deadline: float = -float("inf")
    """On :func:`lease_clock`: until when the rows it holds are safely its own."""
    sent: int = 0


@dataclass(eq=False)
class _Job:
    """One claimed recipient on its way through a worker."""

    claimed: ledger.Claimed
    recipient: Recipient
    epoch: _Epoch
    cancelled: bool = False
    """Set by the coordinator when the recipient unsubscribed after the claim."""
    promoted: bool = False
    """``sending`` in the ledger (committed): handed to the workers, may leave."""
    lost: bool = False
    """Its row is no longer this sender's (a renewal did not find it): it must not leave."""


@dataclass
class _Pending:
    """Results received but not yet committed, and jobs skipped before promotion."""

    results: list[tuple[_Job, ledger.Outcome | _Marker]] = field(default_factory=list)
    since: float = 0.0

    def __len__(self) -> int:
        return len(self.results)


class SendEngine:
    """Runs one sender of a :class:`SendPlan`'s send through a transport; see the module docs."""

    def __init__(
        self,
        plan: SendPlan,
        db: Engine,
        transport: Transport,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_start: Callable[[Started], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.db = db
        self.transport = transport
        self.options: SendOptions = plan.options
        self.on_progress = on_progress
        self.on_start = on_start
        self._clock = clock
        lease = self.options.lease_seconds
        self._lease = lease
        # The local deadline comes this much before the database's end of the lease.
        self._margin = min(5.0, lease / 5) + self.options.commit_interval
        # How long PostgreSQL lets a stopped sender sit on the locks of an open transaction.
        self._hold = max(2.0, min(10.0, lease / 2))
        self._beat_every = min(_HEARTBEAT, lease / 3)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self._note = ""
        self._fatal: BaseException | None = None
        self._failures = 0
        # Not queue.SimpleQueue, though its C put/get are cheaper: a worker was seen blocked
        # for good in SimpleQueue.get(timeout=0.1) on CPython 3.11 (a test hung in wind-down).
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._results: queue.Queue[tuple[_Job, Delivery | _Marker]] = queue.Queue()
        self._epoch = _Epoch("")
        self._outstanding: dict[int, _Job] = {}
        """This identity's claimed jobs not yet committed: queued, with the workers, or
        awaiting commit."""
        self._orphans: set[_Job] = set()
        """Jobs of an identity whose lease ran out, still with the workers or uncommitted."""
        self._queued: deque[_Job] = deque()
        """Claimed and not yet promoted, in claim order."""
        self._sending = 0
        """Promoted jobs whose results are not committed: the rows ``sending`` right now."""
        self._with_workers = 0
        """Promoted jobs no worker has returned a result for yet."""
        self._delivered = 0
        self._rates: deque[tuple[float, int]] = deque()
        self._pending = _Pending()
        self._counts: dict[str, int] = {}
        self._sent_this_run = 0
        self._processed = 0
        self._in_doubt = 0
        self._senders = 1
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._composer: Composer | None = None
        self._limiter = SharedRateLimiter(self._reserve, clock=clock)
        self._send_id = 0
        self._last_event = 0
        self._wait_note = ""
        self._lost_note = ("", 0.0)
        """Shown with the progress for a while after this sender lost its leases."""
        self._others_hold = False
        """The last claim found nothing due while other senders hold recipients."""

    # -- control (any thread) ----------------------------------------------------------

    def stop(self, reason: str = "interrupted") -> None:
        """Stop taking new work; messages on the wire finish and are recorded."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def in_flight(self) -> int:
        """Recipients claimed and not yet recorded (queued or on the wire)."""
        return len(self._outstanding) + len(self._orphans)

    @property
    def worker_id(self) -> str:
        """This sender's current ``workers`` id (empty before it started)."""
        return self._epoch.worker

    # -- the run -----------------------------------------------------------------------

    def run(self) -> SendResult:
        """Send to every due recipient, beside any other senders; return how the run ended.

        Raises :class:`SmtpUnavailable` (nothing sent, ledger untouched) when the relay
        cannot be reached at the start, :class:`~bulletin.store.ledger.SendBusy` when
        other senders run this send and ``SendOptions.join`` is off, and configuration
        errors from the transport. ``KeyboardInterrupt`` (see :func:`stop_on_signals`)
        leaves at once: the messages then on the wire count as in doubt.
        """
        plan = self.plan
        started = self._clock()
        if plan.done:
            assert plan.existing is not None
            return self._already_done(plan.existing)
        self._composer = plan.composer()
        try:
            first: Connection = self.transport.connect()
        except ConnectFailed as exc:
            raise SmtpUnavailable(
                exc.reply, hint="Nothing was sent, and the ledger is unchanged."
            ) from None
        try:
            joined = self._start()
        except BaseException:
            first.close()
            raise
        if self._stop_reason == "done-already":
            first.close()
            with self.db.connect() as conn:
                return self._already_done(ledger.get_send(conn, self._send_id))
        if self.on_start is not None and joined is not None:
            self.on_start(joined)
        workers = [
            threading.Thread(
                target=self._worker,
                args=(first if i == 0 else None,),
                name=f"bulletin-send-{i + 1}",
                daemon=True,
            )
            for i in range(self.options.connections)
        ]
        for w in workers:
            w.start()
        try:
            ending = self._loop(started)
            self._stopping.set()
            self._wind_down(workers)
        except KeyboardInterrupt:
            # Quit at once (a second Ctrl-C): record what is known, in one quick commit, so
            # that only the messages the workers hold -- on the wire -- stay `sending` and
            # count as in doubt (the sender is marked stopped: the others need not wait for
            # its lease to end).
            self._stopping.set()
            self._settle()
            with suppress(Exception):
                self._leave("interrupted", "quit at once", started)
            raise
        except BaseException:
            # A bug: leave at once; whatever is `sending` counts as in doubt.
            self._stopping.set()
            with suppress(Exception):
                self._leave("failed", "stopped by an error", started)
            raise
        return self._finish(ending, started)

    @contextmanager
    def _transaction(self) -> Iterator[tuple[DbConnection, datetime]]:
        """A write transaction of this sender and the database's time at its start."""
        with write_transaction(self.db) as conn:
            yield conn, ledger.database_now(conn, hold_limit=self._hold)

    def _start(self) -> Started | None:
        """Create the send, or join it; None when it turned out to be done already."""
        try:
            return self._start_once()
        except IntegrityError:
            # Another sender created this send between our look and our insert (possible
            # on PostgreSQL; SQLite's write lock serialises the two). Look again: it is
            # running (join it), or already done.
            return self._start_once()

    def _start_once(self) -> Started | None:
        plan = self.plan
        opts = self.options
        worker = ledger.new_worker_id()
        with self._transaction() as (conn, now):
            send = ledger.find_send(conn, plan.issue_slug, plan.lists)
            if send is None:
                send = ledger.create_send(
                    conn,
                    issue_slug=plan.issue_slug,
                    list_slugs=plan.lists,
                    ids=plan.list_ids,
                    subject=plan.subject,
                    fingerprint=plan.fingerprint,
                    now=now,
                    rate=opts.rate,
                    rate_hour=opts.rate_hour,
                )
            elif send.state == "done":
                # Finished by other senders since the plan was made.
                self._send_id = send.id
                self._stop_reason = "done-already"
                return None
            elif send.fingerprint != plan.fingerprint:
                raise IssueChanged(
                    f"Issue {plan.issue_slug} changed since its send started.",
                    hint="Undo the change and run the same command again.",
                )
            joined = ledger.register_worker(
                conn,
                send,
                worker,
                now=now,
                lease_seconds=self._lease,
                rate=opts.rate,
                rate_hour=opts.rate_hour,
                join=opts.join,
            )
            self._send_id = send.id
            self._counts = ledger.counts(conn, send.id)
            self._last_event = ledger.last_event_id(conn)
        self._epoch = _Epoch(worker)
        self._senders = 1 + len(joined.senders)
        return Started(send.id, joined.senders, joined.rate_was)

    def _loop(self, started: float) -> str:
        """Claim, promote, collect and commit until the send is done, waiting or stopped."""
        opts = self.options
        batch = opts.batch
        next_claim = 0.0  # when due work may exist again (after a batch came up short)
        next_poll = next_progress = 0.0
        next_beat = self._clock() + self._beat_every
        while True:
            self._collect(0.02 if self._outstanding or self._orphans else 0.05)
            now = self._clock()
            try:
                if self._outstanding and lease_clock() >= self._epoch.deadline:
                    self._lose_epoch(_RAN_OUT)
                if now >= next_beat:
                    # Even while nothing completes (workers waiting for an hourly slot, or for
                    # deferred recipients), the others must see that this sender is alive.
                    self._beat()
                    next_beat = now + self._beat_every
                if self._stopping.is_set() or self._fatal is not None:
                    return "stopped"
                if now >= next_poll and self._outstanding:
                    self._poll_suppression()
                    next_poll = now + _POLL
                if len(self._queued) < self._window(now) and now >= next_claim:
                    exhausted, due_in = self._claim(opts.claim_size(self._measured(now)))
                    if exhausted:
                        next_claim = now + due_in
                pend = self._pending
                due = pend and (len(pend) >= batch or now - pend.since >= opts.commit_interval)
                if due or self._starving(now):
                    next_claim = min(next_claim, now + self._commit(promote=True))
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # The connection broke mid-transaction (PostgreSQL ends the session of a
                # sender stopped inside a transaction): nothing of it was committed, and
                # the leases may be gone. Carry on as a new sender.
                self._lose_epoch("its database connection was lost")
                next_claim = 0.0
                continue
            idle = not self._outstanding and not self._pending and not self._orphans
            if idle and now < next_claim:
                # Only deferred recipients are left, or other senders hold the last ones.
                wait = next_claim - now
                if wait == float("inf"):
                    return "finished"
                if wait > opts.max_wait:
                    return "waiting"
                self._wait_note = (
                    "waiting for the other senders' last recipients"
                    if self._others_hold
                    else f"waiting {wait:.0f} s for deferred recipients"
                )
                if self._stopping.wait(min(wait, 1.0)):
                    return "stopped"
            else:
                self._wait_note = ""
            if now >= next_progress:
                self._report(started)
                next_progress = now + _PROGRESS

    def _measured(self, now: float) -> float:
        """Messages per second delivered by this sender over the last seconds."""
        rates = self._rates
        while len(rates) > 1 and now - rates[0][0] > _RATE_SPAN:
            rates.popleft()
        if rates and now > rates[0][0]:
            return (self._delivered - rates[0][1]) / (now - rates[0][0])
        return 0.0

    def _window(self, now: float) -> int:
        """How many rows may be ``sending`` at once now (see :meth:`SendOptions.window`)."""
        return self.options.window(self._measured(now))

    def _recent_rate(self) -> float:
        now = self._clock()
        old = next((s for s in self._samples if now - s[0] <= 5.0), None)
        if old is None or now <= old[0]:
            return 0.0
        return (self._sent_this_run - old[1]) / (now - old[0])

    def _starving(self, now: float) -> bool:
        """Whether workers are about to run out of promoted jobs while some wait, queued.

        Committing now (and promoting with it) keeps connections busy when the window is
        small for the rate, e.g. at the start before a rate is measured.
        """
        if not self._queued or self._with_workers >= self.options.connections:
            return False
        recorded = sum(1 for job, _ in self._pending.results if job.promoted)
        return self._sending - recorded < self._window(now)

    # -- leases ----------------------------------------------------------------------------

    def _beat(self) -> None:
        """Heartbeat: renew this sender's leases, and look at the send and its senders."""
        epoch = self._epoch
        held = set(self._outstanding)
        asked = lease_clock()
        with self._transaction() as (conn, now):
            renewed = ledger.beat(
                conn,
                self._send_id,
                epoch.worker,
                now=now,
                lease_seconds=self._lease,
                sent=epoch.sent,
                rate=self._recent_rate(),
            )
            live = ledger.live_workers(conn, self._send_id, now)
            fresh = None
            if len(live) > 1 and self.on_progress is not None:
                fresh = ledger.counts(conn, self._send_id)  # the others change them too
        if renewed is None:  # marked stopped by another sender: it holds nothing any more
            self._lose_epoch("another sender took it for stopped")
            return
        for sid in held - renewed:
            # Not renewed: the row is no longer this sender's (its subscriber was erased,
            # or the lease had run out); whatever holds the job must not send it.
            self._outstanding[sid].lost = True
        if held:
            epoch.deadline = max(epoch.deadline, asked + self._lease - self._margin)
        self._senders = max(1, len(live))
        if fresh is not None:
            self._counts = fresh

    def _lose_epoch(self, why: str) -> None:
        """The leases of this sender's identity ran out: drop its unsent work, start anew.

        Nothing it still holds leaves any more (the workers check the deadline); results
        already known are recorded under the old identity (fenced: they change only rows no
        other sender took over). Then the old identity is stopped and a new one joins.
        """
        old = self._epoch
        old.deadline = -float("inf")
        while self._queued:
            self._add_result(self._queued.popleft(), "release")
        self._orphans.update(self._outstanding.values())
        self._outstanding.clear()
        self._lost_note = (f"lost its claims: {why}; carrying on", self._clock() + 10.0)
        for attempt in range(2):
            try:
                self._commit()
                worker = ledger.new_worker_id()
                with self._transaction() as (conn, now):
                    ledger.stop_worker(
                        conn,
                        self._send_id,
                        old.worker,
                        "lost",
                        now=now,
                        note=why,
                        sent=old.sent,
                    )
                    send = ledger.get_send(conn, self._send_id)
                    joined = ledger.register_worker(
                        conn,
                        send,
                        worker,
                        now=now,
                        lease_seconds=self._lease,
                        rate=send.rate,
                        rate_hour=send.rate_hour,
                    )
                break
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt:
                    raise
        self._epoch = _Epoch(worker)
        self._senders = 1 + len(joined.senders)

    def _reserve(self) -> Grant | None:
        """The next block of rate slots for this sender (called by a worker thread)."""
        try:
            with write_transaction(self.db) as conn:
                got = ledger.reserve_slots(
                    conn, self._send_id, seconds=_BLOCK, hold_limit=self._hold
                )
                # Slot times are relative to the database's clock when they were granted;
                # measured after that, the local times come a little late, never early.
                here = self._clock()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return None
        if not got.slots:
            return Grant([], unlimited=True)
        return Grant([here + (s - got.now).total_seconds() for s in got.slots], got.interval)

    def _leave(self, state: str, note: str, started: float) -> None:
        """Mark this sender stopped on the way out (Ctrl-C twice, or an error)."""
        with self._transaction() as (conn, now):
            ledger.stop_worker(
                conn,
                self._send_id,
                self._epoch.worker,
                state,
                now=now,
                note=note,
                sent=self._epoch.sent,
                active_seconds=self._clock() - started,
            )

    # -- claiming and recording --------------------------------------------------------------

    def _claim(self, limit: int) -> tuple[bool, float]:
        """Claim a batch and queue its jobs; ``(exhausted, seconds until more is due)``.

        Leases that ran out are put back first (any sender does it, before it claims).
        """
        composer = self._composer
        assert composer is not None
        # Read the suppression history first: anything after this point is caught by the
        # next poll, or by the check at promotion.
        self._poll_suppression()
        epoch = self._epoch
        asked = lease_clock()
        with self._transaction() as (conn, now):
            in_doubt = ledger.expire(conn, self._send_id, now)
            got = ledger.claim(
                conn,
                self._send_id,
                epoch.worker,
                self.plan.list_ids,
                limit,
                composer.message_id_for,
                now=now,
                lease_seconds=self._lease,
            )
            due_in = 0.0
            held = 0
            if got.exhausted:
                due = ledger.next_retry(conn, self._send_id)
                due_in = float("inf") if due is None else (due - now).total_seconds()
                held, first_end = ledger.elsewhere(conn, self._send_id, epoch.worker)
                if held:
                    # Other senders hold the last recipients: look again now and then, and
                    # take over whatever lease of theirs runs out.
                    ends = _OTHERS if first_end is None else (first_end - now).total_seconds()
                    due_in = min(due_in, _OTHERS, max(0.0, ends) + 0.05)
            if in_doubt:
                self._counts = ledger.counts(conn, self._send_id)
        self._in_doubt += in_doubt
        self._others_hold = held > 0
        if got.claimed and not self._outstanding:
            epoch.deadline = asked + self._lease - self._margin
        counts = self._counts
        if got.skipped:
            # Skipped rows were pending or deferred; which does not matter for progress.
            counts["skipped"] += got.skipped
            self._processed += got.skipped
            self._take_open(got.skipped)
        for c in got.claimed:
            counts[c.was] -= 1
            counts["queued"] += 1
            values = composer.values(c.subscriber_id, c.list_id, c.email, c.name, c.attributes)
            job = _Job(c, Recipient(c.email, c.name, values), epoch)
            self._outstanding[c.subscriber_id] = job
            self._queued.append(job)
        return got.exhausted, max(0.0, due_in) if got.exhausted else 0.0

    def _take_open(self, n: int) -> None:
        counts = self._counts
        for state in ("pending", "deferred"):
            k = min(n, counts[state])
            counts[state] -= k
            n -= k

    def _collect(self, timeout: float) -> None:
        """Move results from the workers into the uncommitted batch."""
        try:
            item = self._results.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._add_result(*item)
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return

    def _add_result(self, job: _Job, result: Delivery | _Marker) -> None:
        pend = self._pending
        if not pend:
            pend.since = self._clock()
        if job.promoted:
            self._with_workers -= 1
        if isinstance(result, Delivery):
            self._delivered += 1
            pend.results.append((job, self._outcome(job.claimed, result)))
        else:
            pend.results.append((job, result))

    def _outcome(self, c: ledger.Claimed, d: Delivery) -> ledger.Outcome:
        """What a delivery means for the ledger (see the module docs)."""
        opts = self.options
        now = utcnow()
        attempts = c.attempts + 1
        first = c.first_attempt_at or now
        if d.outcome in ("sent", "failed"):
            return ledger.Outcome(c.subscriber_id, d.outcome, attempts, d.code, d.reply, first)
        age = (now - first).total_seconds()
        if attempts >= opts.max_attempts or age >= opts.max_age:
            reply = (
                f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} over "
                f"{_duration(age)}: {d.reply}"
            )
            return ledger.Outcome(c.subscriber_id, "failed", attempts, d.code, reply, first)
        delay = min(opts.backoff_cap, opts.backoff * 2 ** (attempts - 1))
        # Equal jitter: recipients deferred together (a relay's brief outage) come back
        # spread out rather than all in the same second.
        delay = delay / 2 + random.uniform(0, delay / 2)
        return ledger.Outcome(
            c.subscriber_id,
            "deferred",
            attempts,
            d.code,
            d.reply,
            first,
            now + timedelta(seconds=delay),
        )

    def _commit(self, *, promote: bool = False) -> float:
        """Commit the uncommitted results, and promote the next jobs, in one transaction.

        With ``promote``, queued jobs are promoted to ``sending`` as far as the window
        allows once these results are recorded -- while this sender's lease has time left;
        they go to the workers only after the commit. Results are recorded under the
        identity that claimed them (fenced). Returns the seconds until the first recipient
        deferred here falls due (infinity when none was deferred).
        """
        pend = self._pending
        now = self._clock()
        epoch = self._epoch
        room = 0
        if promote and lease_clock() < epoch.deadline:
            recorded = sum(1 for job, _ in pend.results if job.promoted)
            room = self._window(now) - (self._sending - recorded)
        chosen: list[_Job] = []
        while room > len(chosen) and self._queued:
            job = self._queued.popleft()
            if job.cancelled:  # unsubscribed while queued: never promoted
                self._add_result(job, "skip")
            else:
                chosen.append(job)
        if not pend and not chosen:
            return float("inf")
        by_worker: dict[str, tuple[list[ledger.Outcome], list[int], list[int]]] = {}
        for job, r in pend.results:
            outcomes, released, skipped = by_worker.setdefault(job.epoch.worker, ([], [], []))
            if isinstance(r, ledger.Outcome):
                outcomes.append(r)
            elif r == "release":
                released.append(job.claimed.subscriber_id)
            else:
                skipped.append(job.claimed.subscriber_id)
        try:
            with self._transaction() as (conn, at):
                for worker, (outcomes, released, skipped) in by_worker.items():
                    ledger.record(conn, self._send_id, worker, outcomes, now=at)
                    ledger.release(conn, self._send_id, worker, released, now=at)
                    ledger.skip(conn, self._send_id, worker, skipped, now=at)
                promoted, left = ledger.promote(
                    conn,
                    self._send_id,
                    epoch.worker,
                    (j.claimed.subscriber_id for j in chosen),
                    self.plan.list_ids,
                    now=at,
                )
        except BaseException:
            self._queued.extendleft(reversed(chosen))  # not promoted: still queued
            raise
        counts = self._counts
        retries: list[datetime] = []
        for job, result in pend.results:
            was = "sending" if job.promoted else "queued"
            counts[was] -= 1
            if job.promoted:
                self._sending -= 1
            if isinstance(result, ledger.Outcome):
                counts[result.state] += 1
                if result.state == "sent":
                    self._sent_this_run += 1
                    job.epoch.sent += 1
                if result.state in ("sent", "failed"):
                    self._processed += 1
                if result.next_attempt_at is not None:
                    retries.append(result.next_attempt_at)
            elif result == "release":
                counts["pending"] += 1
            else:
                counts["skipped"] += 1
                self._processed += 1
            self._forget(job)
        self._pending = _Pending()
        self._rates.append((now, self._delivered))
        for job in chosen:
            sid = job.claimed.subscriber_id
            counts["queued"] -= 1
            if sid in left:
                # Unsubscribed or suppressed before this promotion: never sent.
                counts["skipped"] += 1
                self._processed += 1
                self._forget(job)
                continue
            if sid not in promoted:
                # No longer this sender's row (erased, or its lease is gone): not sent.
                self._forget(job)
                continue
            counts["sending"] += 1
            job.promoted = True
            self._sending += 1
            self._with_workers += 1
            self._jobs.put(job)
        if not retries:
            return float("inf")
        return max(0.0, (min(retries) - utcnow()).total_seconds())

    def _forget(self, job: _Job) -> None:
        """Drop a finished job (a later identity may hold a job for the same recipient)."""
        sid = job.claimed.subscriber_id
        if self._outstanding.get(sid) is job:
            del self._outstanding[sid]
        else:
            self._orphans.discard(job)

    def _poll_suppression(self) -> None:
        """Cancel queued jobs of recipients who unsubscribed or were suppressed since.

        An optimisation (those jobs are not promoted, or not sent if promoted): promotion
        itself checks each person again, whatever this poll missed.
        """
        with self.db.connect() as conn, conn.begin():
            self._last_event, ids = ledger.suppressed_since(conn, self._last_event)
            hit = [i for i in ids if i in self._outstanding]
            if not hit:
                return
            keep = ledger.still_eligible(conn, hit, self.plan.list_ids)
        for i in hit:
            if i not in keep:
                self._outstanding[i].cancelled = True

    def _wind_down(self, workers: list[threading.Thread]) -> None:
        """Let workers finish what is on the wire, then record everything."""
        while any(w.is_alive() for w in workers):
            self._collect(0.05)
        self._settle()

    def _settle(self) -> None:
        """Commit the results received and put back every job no worker holds (stopping)."""
        self._collect(0)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            self._add_result(job, "release")
        while self._queued:
            self._add_result(self._queued.popleft(), "release")
        self._commit()

    def _finish(self, ending: str, started: float) -> SendResult:
        elapsed = self._clock() - started
        reason = self._stop_reason
        note = self._note
        if self._fatal is not None:
            state, note = "paused", str(self._fatal)
        elif reason == "paused":
            state = "paused"
        elif reason is not None:
            state = "interrupted"
        elif ending == "waiting":
            state = "waiting"
        else:
            state = "done"
        with self._transaction() as (conn, now):
            end = ledger.stop_worker(
                conn,
                self._send_id,
                self._epoch.worker,
                state,
                now=now,
                note=note,
                sent=self._epoch.sent,
                rate=self._recent_rate(),
                active_seconds=elapsed,
            )
            send = ledger.get_send(conn, self._send_id)
        self._counts = end.counts
        self._report(started, final=True)
        if self._fatal is not None:
            if isinstance(self._fatal, BulletinError):
                raise self._fatal
            raise RuntimeError("a send worker failed") from self._fatal
        if end.state == "done":
            state = "done"
        elif state == "done":
            state = "running"  # nothing left for this sender; the others finish the rest
        elif state == "waiting" and end.state not in ("waiting", "running"):
            state = end.state
        return SendResult(
            send_id=self._send_id,
            state=state,
            counts=end.counts,
            in_doubt=self._in_doubt,
            in_doubt_total=send.in_doubt,
            sent_this_run=self._sent_this_run,
            elapsed=elapsed,
            note=note,
            retry_at=end.retry_at,
            others=len(end.others),
        )

    def _already_done(self, send: ledger.SendRow) -> SendResult:
        with self.db.connect() as conn:
            counts = ledger.counts(conn, send.id)
        return SendResult(
            send_id=send.id,
            state="done",
            counts=counts,
            in_doubt=0,
            in_doubt_total=send.in_doubt,
            sent_this_run=0,
            elapsed=0.0,
            already_done=True,
        )

    def _report(self, started: float, *, final: bool = False) -> None:
        now = self._clock()
        self._samples.append((now, self._sent_this_run))  # the heartbeat's rate uses them
        if self.on_progress is None:
            return
        c = self._counts
        lost, until = self._lost_note
        note = self._note or (lost if now < until else "") or self._wait_note
        self.on_progress(
            Progress(
                total=sum(c.values()),
                sent=c.get("sent", 0),
                failed=c.get("failed", 0),
                skipped=c.get("skipped", 0),
                deferred=c.get("deferred", 0),
                pending=c.get("pending", 0),
                in_flight=self.in_flight,
                processed=self._processed,
                elapsed=now - started,
                rate=self._recent_rate(),
                note="" if final else note,
                senders=self._senders,
            )
        )

    # -- workers -----------------------------------------------------------------------

    def _worker(self, first: Connection | None) -> None:
        """Take jobs and send them over one connection until the engine stops."""
        conn = first
        failures = 0
        idle_since = self._clock()
        job: _Job | None = None
        on_wire = False
        try:
            while not self._stopping.is_set():
                try:
                    job = self._jobs.get(timeout=0.1)
                except queue.Empty:
                    job = None
                    if conn is not None and self._clock() - idle_since > IDLE_CLOSE:
                        conn.close()
                        conn = None
                    continue
                while conn is None and not self._stopping.is_set():
                    try:
                        conn = self.transport.connect()
                    except ConnectFailed as exc:
                        failures += 1
                        self._connect_failed(exc)
                        delay = min(30.0, self.options.reconnect_delay * 2 ** (failures - 1))
                        self._stopping.wait(delay)
                    else:
                        failures = 0
                        self._connected()
                if conn is None or job.cancelled:
                    self._results.put((job, "release" if conn is None else "skip"))
                    job = None
                    continue
                assert self._composer is not None
                try:
                    envelope = self._composer.envelope(
                        job.recipient, job.claimed.message_id, wire=True
                    )
                except InvalidRecipient as exc:
                    self._results.put((job, Delivery("failed", None, exc.reason)))
                    job = None
                    continue
                if not self._limiter.acquire(self._stopping):
                    self._results.put((job, "release"))
                    job = None
                    break
                if job.cancelled:  # unsubscribed while this worker waited for its slot
                    self._results.put((job, "skip"))
                    job = None
                    continue
                if job.lost or lease_clock() >= job.epoch.deadline:
                    # The lease ran out (this process was stopped, the machine asleep, or
                    # the database out of reach): the row may be another sender's by now.
                    # Nothing from that batch leaves any more.
                    self._results.put((job, "release"))
                    job = None
                    continue
                on_wire = True
                delivery = conn.send(envelope)
                on_wire = False
                self._results.put((job, delivery))
                job = None
                idle_since = self._clock()
                if delivery.reconnect:
                    conn.close()
                    conn = None
        except BaseException as exc:
            # A configuration error (bad login...) or a bug: stop the whole sender. A job
            # that may have reached the relay stays `sending` (in doubt); one that cannot
            # have is released.
            if job is not None and not on_wire:
                self._results.put((job, "release"))
            with self._lock:
                if self._fatal is None:
                    self._fatal = exc
            self._stopping.set()
        finally:
            if conn is not None:
                conn.close()

    def _connect_failed(self, exc: ConnectFailed) -> None:
        with self._lock:
            self._failures += 1
            self._note = exc.reply
            if self._failures >= self.options.pause_after and self._stop_reason is None:
                self._stop_reason = "paused"
                self._note = (
                    f"{exc.reply} The send is paused after {self._failures} failed connection "
                    "attempts; run the same command again to resume."
                )
                self._stopping.set()

    def _connected(self) -> None:
        with self._lock:
            self._failures = 0
            if self._stop_reason is None:
                self._note = ""


class Stoppable(Protocol):
    """Anything that stops gracefully when asked (a send, an IMAP watch)."""

    def stop(self, reason: str) -> None: ...


@contextmanager
def stop_on_signals(
    engine: Stoppable, on_stopping: Callable[[], None] | None = None
) -> Iterator[None]:
    """While inside: the first Ctrl-C or SIGTERM stops ``engine`` gracefully, the second
    quits at once (``KeyboardInterrupt`` out of :meth:`SendEngine.run`).

    Gracefully means the messages on the wire finish and are recorded and the rest goes
    back to ``pending``; at once means those on the wire count as in doubt next time.
    ``on_stopping`` is called (in the main thread) when the first signal arrives. The
    previous handlers are restored on the way out. Signal handlers belong to the main
    thread, so this must be used there.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("stop_on_signals works in the main thread only")
    signals = 0

    def handle(signum: int, frame: object) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            raise KeyboardInterrupt
        engine.stop("interrupted")
        if on_stopping is not None:
            on_stopping()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h``, ``2 days``: how long retries went on."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
