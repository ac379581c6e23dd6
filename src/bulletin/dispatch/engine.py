"""The send engine: deliver an issue to every recipient in its ledger, crash-safe.

Threads and who owns what::

    coordinator (the caller's thread)            N workers (one SMTP connection each)
    ---------------------------------            ------------------------------------
    claims a batch: pending -> queued            take a job, build its message,
    promotes a few: queued -> sending,   jobs    wait for a rate-limit slot, send it
    committed before any byte leaves  ---------> on their own connection
                                                 (reconnect on 421, a dropped
    records results in batches        <--------- connection or a timeout)
    (one write transaction per ~50 ms) results
    polls the suppression history; cancels queued jobs of whoever unsubscribed

Only the coordinator touches the database, so SQLite has a single writer and each commit
carries many state changes. The engine decides what an outcome means for the ledger
(:func:`SendEngine._outcome`): ``sent``; 5xx -> ``failed`` with the reply, never retried;
4xx, timeouts and dropped connections -> ``deferred`` with exponential backoff and jitter,
``failed`` after ``max_attempts`` tries or ``max_age``. Transports only deliver bytes.

Crash safety: a claimed batch is ``queued`` -- this run's work, not yet allowed out -- and
the coordinator promotes jobs to ``sending`` in small windows, committing each promotion
(in the same transaction as the results it records, so it costs nothing extra) before
the workers see those jobs. The window (:meth:`SendOptions.window`) keeps every
connection busy -- two jobs each, more when the measured rate needs it -- and caps the
rows ``sending`` at once: promoted and not yet recorded, on the wire or waiting for the
next commit. After ``kill -9`` the next run sends the ``sending`` rows again with the same
Message-ID (at-least-once) and counts them as *in doubt*: at most that many people may
have two copies, and at most :attr:`SendOptions.in_doubt_limit` per crash. ``queued`` rows
never left; they go back to ``pending`` without counting.

Stopping: :meth:`SendEngine.stop` stops taking new work; messages on the wire finish and
are recorded, queued ones go back to ``pending``. :func:`stop_on_signals` makes the first
Ctrl-C or SIGTERM do that and the second quit at once. After ``pause_after`` failed
connection attempts in a row the send pauses the same way. When only deferred recipients
are left, the engine waits for them up to ``max_wait`` seconds, then stops in state
``waiting`` and says when they fall due.

The engine never prints: progress goes to an ``on_progress`` callback.
"""

from __future__ import annotations

import queue
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bulletin.dispatch.composer import Composer
from bulletin.dispatch.plan import IssueChanged, SendOptions, SendPlan
from bulletin.dispatch.ratelimit import RateLimiter
from bulletin.dispatch.transport import ConnectFailed, Connection, Delivery, Transport
from bulletin.errors import BulletinError
from bulletin.mail.compose import InvalidRecipient, Recipient
from bulletin.store import ledger
from bulletin.store.db import write_transaction
from bulletin.store.schema import utcnow

IDLE_CLOSE = 5.0
"""Seconds a worker keeps an idle connection open (relays drop idle sessions anyway)."""

_HEARTBEAT = 5.0
_POLL = 0.25
_PROGRESS = 0.2
_RATE_SPAN = 2.0
"""Seconds of recent results the promotion window's rate is measured over."""

_Marker = Literal["release", "skip"]
"""A job that was not sent: ``release`` (back to pending) or ``skip`` (unsubscribed)."""


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
    """Recipients finished in this run (sent, failed or skipped)."""
    elapsed: float
    rate: float
    """Messages accepted per second, over the last few seconds."""
    note: str = ""
    """What the send is waiting for, if anything (a reconnect, deferred recipients)."""


@dataclass(frozen=True)
class SendResult:
    """How a run of a send ended."""

    send_id: int
    state: str
    """``done``, ``waiting`` (deferred recipients left), ``paused`` or ``interrupted``."""
    counts: dict[str, int]
    in_doubt: int
    """Recipients found ``sending`` when this run started: their messages were on their way
    when a run stopped, so they were sent again (same Message-ID) and may have two copies."""
    in_doubt_total: int
    """The same over every run of the send."""
    sent_this_run: int
    elapsed: float
    note: str = ""
    retry_at: datetime | None = None
    already_done: bool = False

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
class _Job:
    """One claimed recipient on its way through a worker."""

    claimed: ledger.Claimed
    recipient: Recipient
    cancelled: bool = False
    """Set by the coordinator when the recipient unsubscribed after the claim."""
    promoted: bool = False
    """``sending`` in the ledger (committed): handed to the workers, may leave."""


@dataclass
class _Pending:
    """Results received but not yet committed, and jobs skipped before promotion."""

    results: list[tuple[_Job, ledger.Outcome | _Marker]] = field(default_factory=list)
    since: float = 0.0

    def __len__(self) -> int:
        return len(self.results)


class SendEngine:
    """Runs one send of a :class:`SendPlan` through a transport; see the module docs."""

    def __init__(
        self,
        plan: SendPlan,
        db: Engine,
        transport: Transport,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.db = db
        self.transport = transport
        self.options: SendOptions = plan.options
        self.on_progress = on_progress
        self._clock = clock
        self._owner = ledger.owner_name()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self._note = ""
        self._fatal: BaseException | None = None
        self._failures = 0
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._results: queue.Queue[tuple[_Job, Delivery | _Marker]] = queue.Queue()
        self._outstanding: dict[int, _Job] = {}
        """Claimed and not yet committed: queued, with the workers, or awaiting commit."""
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
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._composer: Composer | None = None
        self._limiter = RateLimiter(self.options.rate, self.options.rate_hour, clock=clock)
        self._send_id = 0
        self._last_event = 0
        self._wait_note = ""

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
        return len(self._outstanding)

    # -- the run -----------------------------------------------------------------------

    def run(self) -> SendResult:
        """Send to every due recipient; return how the run ended.

        Raises :class:`SmtpUnavailable` (nothing sent, ledger untouched) when the relay
        cannot be reached at the start, :class:`~bulletin.store.ledger.SendBusy` when
        another process runs this send, and configuration errors from the transport.
        ``KeyboardInterrupt`` (see :func:`stop_on_signals`) leaves at once: the messages
        then on the wire count as in doubt next time.
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
            in_doubt = self._start()
        except BaseException:
            first.close()
            raise
        if self._stop_reason == "done-already":
            first.close()
            with self.db.connect() as conn:
                return self._already_done(ledger.get_send(conn, self._send_id))
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
            # count as in doubt next time.
            self._stopping.set()
            self._settle()
            raise
        except BaseException:
            # A bug: leave at once; whatever is `sending` counts as in doubt next time.
            self._stopping.set()
            raise
        return self._finish(ending, in_doubt, started)

    def _start(self) -> int:
        """Create or take over the send; returns the recipients found in doubt."""
        try:
            return self._start_once()
        except IntegrityError:
            # Another process created this send between our look and our insert (possible
            # on PostgreSQL; SQLite's write lock serialises the two). Look again: it is
            # running (SendBusy), or already done.
            return self._start_once()

    def _start_once(self) -> int:
        plan = self.plan
        composer = self._composer
        assert composer is not None
        with write_transaction(self.db) as conn:
            existing = ledger.find_send(conn, plan.issue_slug, plan.lists)
            if existing is None:
                send = ledger.create_send(
                    conn,
                    issue_slug=plan.issue_slug,
                    list_slugs=plan.lists,
                    ids=plan.list_ids,
                    subject=plan.subject,
                    fingerprint=plan.fingerprint,
                    owner=self._owner,
                )
                in_doubt = 0
            else:
                send = existing
                if existing.state == "done":
                    # Finished by another process since the plan was made.
                    self._send_id = existing.id
                    self._stop_reason = "done-already"
                    return 0
                if existing.fingerprint != plan.fingerprint:
                    raise IssueChanged(
                        f"Issue {plan.issue_slug} changed since its send started.",
                        hint="Undo the change and run the same command again.",
                    )
                in_doubt = ledger.acquire(conn, existing, self._owner)
            self._send_id = send.id
            self._counts = ledger.counts(conn, send.id)
            self._last_event = ledger.last_event_id(conn)
            if self.options.rate_hour:
                now, mono = utcnow(), self._clock()
                recent = ledger.sent_since(conn, send.id, now - timedelta(hours=1))
                self._limiter = RateLimiter(
                    self.options.rate,
                    self.options.rate_hour,
                    clock=self._clock,
                    recent=[mono - (now - t).total_seconds() for t in recent],
                )
        return in_doubt

    def _loop(self, started: float) -> str:
        """Claim, promote, collect and commit until the send is done, waiting or stopped."""
        opts = self.options
        batch = opts.batch
        next_claim = 0.0  # when due work may exist again (after a batch came up short)
        next_poll = next_progress = 0.0
        last_beat = self._clock()
        while True:
            self._collect(0.02 if self._outstanding else 0.05)
            now = self._clock()
            if now - last_beat >= _HEARTBEAT:
                # Even while nothing completes (workers waiting for an hourly slot, or for
                # deferred recipients), other processes must see that this one is alive.
                with write_transaction(self.db) as conn:
                    ledger.heartbeat(conn, self._send_id, self._owner)
                last_beat = now
            if self._stopping.is_set() or self._fatal is not None:
                return "stopped"
            if now >= next_poll and self._outstanding:
                self._poll_suppression()
                next_poll = now + _POLL
            if len(self._queued) < self._window(now) and now >= next_claim:
                exhausted, due_in = self._claim(batch)
                if exhausted:
                    next_claim = now + due_in
            pend = self._pending
            due = pend and (len(pend) >= batch or now - pend.since >= opts.commit_interval)
            if due or self._starving(now):
                next_claim = min(next_claim, now + self._commit(promote=True))
            if not self._outstanding and not self._pending and now < next_claim:
                # Only deferred recipients are left (or none at all).
                wait = next_claim - now
                if wait == float("inf"):
                    return "finished"
                if wait > opts.max_wait:
                    return "waiting"
                self._wait_note = f"waiting {wait:.0f} s for deferred recipients"
                if self._stopping.wait(min(wait, 1.0)):
                    return "stopped"
            else:
                self._wait_note = ""
            if now >= next_progress:
                self._report(started)
                next_progress = now + _PROGRESS

    def _window(self, now: float) -> int:
        """How many rows may be ``sending`` at once now (see :meth:`SendOptions.window`)."""
        rates = self._rates
        while len(rates) > 1 and now - rates[0][0] > _RATE_SPAN:
            rates.popleft()
        rate = 0.0
        if rates and now > rates[0][0]:
            rate = (self._delivered - rates[0][1]) / (now - rates[0][0])
        return self.options.window(rate)

    def _starving(self, now: float) -> bool:
        """Whether workers are about to run out of promoted jobs while some wait, queued.

        Committing now (and promoting with it) keeps connections busy when the window is
        small for the rate, e.g. at the start before a rate is measured.
        """
        if not self._queued or self._with_workers >= self.options.connections:
            return False
        recorded = sum(1 for job, _ in self._pending.results if job.promoted)
        return self._sending - recorded < self._window(now)

    def _claim(self, limit: int) -> tuple[bool, float]:
        """Claim a batch and queue its jobs; ``(exhausted, seconds until more is due)``."""
        composer = self._composer
        assert composer is not None
        # Read the suppression history first: anything after this point is caught by the
        # next poll, anything before it is already in the statuses the claim reads.
        self._poll_suppression()
        with write_transaction(self.db) as conn:
            got = ledger.claim(
                conn, self._send_id, self.plan.list_ids, limit, composer.message_id_for
            )
            due_in = 0.0
            if got.exhausted:
                due = ledger.next_retry(conn, self._send_id)
                due_in = float("inf") if due is None else (due - utcnow()).total_seconds()
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
            job = _Job(c, Recipient(c.email, c.name, values))
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
        allows once these results are recorded; they go to the workers only after the
        commit. Returns the seconds until the first recipient deferred here falls due
        (infinity when none was deferred).
        """
        pend = self._pending
        now = self._clock()
        room = 0
        if promote:
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
        outcomes = [r for _, r in pend.results if isinstance(r, ledger.Outcome)]
        released = [j.claimed.subscriber_id for j, r in pend.results if r == "release"]
        skipped = [j.claimed.subscriber_id for j, r in pend.results if r == "skip"]
        with write_transaction(self.db) as conn:
            ledger.record(conn, self._send_id, outcomes)
            ledger.release(conn, self._send_id, released)
            ledger.skip(conn, self._send_id, skipped)
            promoted = ledger.promote(
                conn, self._send_id, (j.claimed.subscriber_id for j in chosen)
            )
        counts = self._counts
        for job, result in pend.results:
            was = "sending" if job.promoted else "queued"
            counts[was] -= 1
            if job.promoted:
                self._sending -= 1
            if isinstance(result, ledger.Outcome):
                counts[result.state] += 1
                if result.state == "sent":
                    self._sent_this_run += 1
                if result.state in ("sent", "failed"):
                    self._processed += 1
            elif result == "release":
                counts["pending"] += 1
            else:
                counts["skipped"] += 1
                self._processed += 1
            self._outstanding.pop(job.claimed.subscriber_id, None)
        self._pending = _Pending()
        self._rates.append((now, self._delivered))
        for job in chosen:
            sid = job.claimed.subscriber_id
            counts["queued"] -= 1
            if sid not in promoted:
                # Erased since the claim (the ledger row went with them): not sent.
                self._outstanding.pop(sid, None)
                continue
            counts["sending"] += 1
            job.promoted = True
            self._sending += 1
            self._with_workers += 1
            self._jobs.put(job)
        retries = [o.next_attempt_at for o in outcomes if o.next_attempt_at is not None]
        if not retries:
            return float("inf")
        return max(0.0, (min(retries) - utcnow()).total_seconds())

    def _poll_suppression(self) -> None:
        """Cancel queued jobs of recipients who unsubscribed or were suppressed since."""
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

    def _finish(self, ending: str, in_doubt: int, started: float) -> SendResult:
        elapsed = self._clock() - started
        reason = self._stop_reason
        note = self._note
        retry_at: datetime | None = None
        with write_transaction(self.db) as conn:
            counts = ledger.counts(conn, self._send_id)
            left = sum(counts[s] for s in ledger.OPEN_STATES)
            if self._fatal is not None:
                state = "paused"
                note = str(self._fatal)
            elif reason == "paused":
                state = "paused"
            elif reason is not None:
                state = "interrupted"
            elif left == 0:
                state = "done"
            elif counts["pending"] or counts["queued"] or counts["sending"]:  # pragma: no cover
                state = "interrupted"
            else:
                state = "waiting"
                retry_at = ledger.next_retry(conn, self._send_id)
            ledger.finish(
                conn,
                self._send_id,
                state,
                note=note,
                retry_at=retry_at,
                active_seconds=elapsed,
            )
            send = ledger.get_send(conn, self._send_id)
        self._report(started, final=True)
        if self._fatal is not None:
            if isinstance(self._fatal, BulletinError):
                raise self._fatal
            raise RuntimeError("a send worker failed") from self._fatal
        return SendResult(
            send_id=self._send_id,
            state=state,
            counts=counts,
            in_doubt=in_doubt,
            in_doubt_total=send.in_doubt,
            sent_this_run=self._sent_this_run,
            elapsed=elapsed,
            note=note,
            retry_at=retry_at,
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
        if self.on_progress is None:
            return
        now = self._clock()
        self._samples.append((now, self._sent_this_run))
        rate = 0.0
        old = next((s for s in self._samples if now - s[0] <= 5.0), None)
        if old is not None and now > old[0]:
            rate = (self._sent_this_run - old[1]) / (now - old[0])
        c = self._counts
        note = self._note or self._wait_note
        self.on_progress(
            Progress(
                total=sum(c.values()),
                sent=c.get("sent", 0),
                failed=c.get("failed", 0),
                skipped=c.get("skipped", 0),
                deferred=c.get("deferred", 0),
                pending=c.get("pending", 0),
                in_flight=len(self._outstanding),
                processed=self._processed,
                elapsed=now - started,
                rate=rate,
                note="" if final else note,
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
                    envelope = self._composer.envelope(job.recipient, job.claimed.message_id)
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
            # A configuration error (bad login...) or a bug: stop the whole send. A job
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


@contextmanager
def stop_on_signals(
    engine: SendEngine, on_stopping: Callable[[], None] | None = None
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
