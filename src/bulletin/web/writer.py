"""One writer thread per ``bulletin serve`` process: every change the public app makes goes
through it, and unsubscribes waiting together are saved in one transaction.

Why: SQLite lets one writer in at a time, so N worker threads that each try to write only
take turns at the lock -- and every turn costs hops between the event loop and a thread,
each of which may wait for the GIL behind a busy event loop. One thread that drains a queue
pays those costs once per *batch*: the unsubscribes that arrived while the previous
transaction ran are applied together, in one ``BEGIN IMMEDIATE ... COMMIT``, and their
answers go back to the event loop in one call. A request still gets its 200 only after the
commit that saved it (group commit, as databases do for their own log).

Deadlines (serve's 503 after :data:`~bulletin.web.public.DB_WAIT_SECONDS`) are kept per
request. A job is *claimed* by the writer once the write lock is held, just before its
statements run; until then the request may give up at its deadline (plus :data:`GRACE`,
for the writer's own error to arrive: 503, nothing done), and after that it waits for the
commit, which nothing holds up for long (on SQLite the lock is ours; on PostgreSQL the
statements' timeouts end at the deadline). Without the lock in time, every job of the
batch fails with the database's error, and nothing was written. A job whose statements fail
takes the others of its batch down with the rollback, so they are then run again one per
transaction: only the failing one answers with its error.

On PostgreSQL rows are locked one by one, and a lock held elsewhere on one subscriber must
not fail the others' unsubscribes: a batch there waits at most :data:`BATCH_LOCK_WAIT` for a
lock, and when it fails its jobs are run again one per transaction, each waiting as long as
its own deadline allows. Jobs that open their own transaction (sign-ups, confirmations,
preferences) run alone, in order with the rest.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

from bulletin.store.db import write_transaction

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 200
"""Most unsubscribes saved in one transaction (one a few hundred microseconds)."""

BATCH_LOCK_WAIT = 0.5
"""PostgreSQL: the longest a batch of several jobs waits for a row or table lock."""

IDLE_SECONDS = 30.0
"""The writer thread ends after this long without work; the next write starts another."""

GRACE = 0.25
"""Seconds a request waits past its deadline for the writer to say why it failed."""

_QUEUED, _CLAIMED, _ABANDONED = 0, 1, 2


class TooLate(Exception):
    """A job's deadline passed before it could start: nothing of it was done."""


@dataclass(eq=False)
class _Job(Generic[T]):
    batched: Callable[[Connection], T] | None
    """Statements for a shared transaction (``fn(conn)``); None for a solo job."""
    solo: Callable[[float], T] | None
    """A job that opens its own transaction, given the seconds it may wait (``fn(wait)``)."""
    deadline: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    state: int = field(default=_QUEUED)


class Writer:
    """The writer thread of one engine; :meth:`batched` and :meth:`solo` are awaited in the
    event loop."""

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._row_locks = engine.dialect.name != "sqlite"
        self._queue: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        self.batches = 0
        """Transactions the writer began for batched jobs (for tests and the bench)."""

    async def batched(self, fn: Callable[[Connection], T], deadline: float) -> T:
        """``fn(conn)`` inside a write transaction shared with other jobs, once committed.

        Raises :class:`TooLate` if it could not start before ``deadline`` (time.monotonic),
        or what the database raised (nothing of the job was saved then).
        """
        return await self._submit(fn, None, deadline)

    async def solo(self, fn: Callable[[float], T], deadline: float) -> T:
        """``fn(wait)`` in the writer thread, alone; ``wait`` is what is left before
        ``deadline``, the longest ``fn`` may wait for the database."""
        return await self._submit(None, fn, deadline)

    async def _submit(
        self,
        batched: Callable[[Connection], T] | None,
        solo: Callable[[float], T] | None,
        deadline: float,
    ) -> T:
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(batched, solo, deadline, loop, loop.create_future())
        # Queued before the thread is checked: a thread ending for idleness either sees
        # this job or is replaced (see _run).
        self._queue.put(job)
        self._start()
        try:
            # A moment past the deadline: the writer's own waits end at the deadline too,
            # and its error (no free connection, the lock held) says more than "too late".
            async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + GRACE):
                return await asyncio.shield(job.future)
        except TimeoutError:
            pass
        with self._state:
            if job.state == _QUEUED:
                job.state = _ABANDONED
                raise TooLate
        # Claimed: its transaction holds the lock, and its answer follows the commit.
        return await job.future

    def _start(self) -> None:
        with self._started:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="bulletin-writer", daemon=True)
                thread.start()
                self._thread = thread

    def _claim(self, job: _Job[Any]) -> bool:
        with self._state:
            if job.state != _QUEUED:
                return False
            job.state = _CLAIMED
            return True

    def _run(self) -> None:
        while True:
            try:
                jobs = [self._queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                with self._started:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle(jobs)
            except BaseException as exc:  # a bug here must not leave requests waiting
                log.exception("the writer thread failed")
                _deliver([(job, None, exc) for job in jobs])

    def _handle(self, jobs: list[_Job[Any]]) -> None:
        batch: list[_Job[Any]] = []
        for job in jobs:
            if job.solo is not None:
                self._run_batch(batch)
                batch = []
                self._run_solo(job)
            else:
                batch.append(job)
        self._run_batch(batch)

    def _run_solo(self, job: _Job[Any]) -> None:
        assert job.solo is not None
        if not self._claim(job):
            return
        wait = job.deadline - time.monotonic()
        try:
            if wait <= 0:
                raise TooLate
            result = job.solo(wait)
        except Exception as exc:
            _deliver([(job, None, exc)])
        else:
            _deliver([(job, result, None)])

    def _run_batch(self, jobs: list[_Job[Any]]) -> None:
        jobs = [job for job in jobs if job.state == _QUEUED]
        if not jobs:
            return
        wait = max(job.deadline for job in jobs) - time.monotonic()
        if wait <= 0:
            # Their requests are answering 503 at their deadlines (or just did).
            _deliver([(job, None, TooLate()) for job in jobs if self._claim(job)])
            return
        capped = self._row_locks and len(jobs) > 1 and wait > BATCH_LOCK_WAIT
        if capped:
            wait = BATCH_LOCK_WAIT
        claimed: list[_Job[Any]] = []
        results: list[tuple[_Job[Any], Any, BaseException | None]] = []
        self.batches += 1
        try:
            with write_transaction(self.engine, wait=wait) as conn:
                # The write lock is ours from here: what is claimed now is saved or rolled
                # back within moments, whoever else waits for the database.
                claimed = [job for job in jobs if self._claim(job)]
                for job in claimed:
                    assert job.batched is not None
                    results.append((job, job.batched(conn), None))
        except Exception as exc:
            if len(results) < len(claimed) and (len(claimed) > 1 or capped):
                # One job's statements failed (a bug, a row locked elsewhere) and rolled back
                # the others: run each alone, so that only the one that fails answers with
                # its error.
                self._retry_alone(claimed)
                return
            # No lock in time, no connection, or the commit failed: nothing was saved.
            pending = claimed or [job for job in jobs if self._claim(job)]
            _deliver([(job, None, exc) for job in pending])
            return
        _deliver(results)

    def _retry_alone(self, jobs: list[_Job[Any]]) -> None:
        """Run claimed jobs one per transaction, answering each.

        On PostgreSQL a first round waits at most :data:`BATCH_LOCK_WAIT` for each job's
        locks, so that one row locked elsewhere does not use up the others' time; what
        failed then gets a second try with all the time its deadline leaves.
        """
        cap = BATCH_LOCK_WAIT if self._row_locks else None
        failed: list[tuple[_Job[Any], BaseException]] = []
        for job in jobs:
            exc = self._alone(job, cap)
            if exc is None:
                continue
            if cap is None or isinstance(exc, TooLate):
                _deliver([(job, None, exc)])
            else:
                failed.append((job, exc))
        for job, exc in failed:
            again = self._alone(job, None)
            if again is not None:
                # A second "too late" says less than the first error.
                _deliver([(job, None, exc if isinstance(again, TooLate) else again)])

    def _alone(self, job: _Job[Any], cap: float | None) -> BaseException | None:
        """Run one claimed job in a transaction of its own: its result delivered, or the
        error it failed with (not delivered)."""
        assert job.batched is not None
        wait = job.deadline - time.monotonic()
        if wait <= 0:
            return TooLate()
        try:
            with write_transaction(self.engine, wait=wait if cap is None else min(wait, cap)) as c:
                result = job.batched(c)
        except Exception as exc:
            return exc
        _deliver([(job, result, None)])
        return None


def _deliver(outcomes: list[tuple[_Job[Any], Any, BaseException | None]]) -> None:
    """Hand results to the event loops of their requests (one wake-up per loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job[Any], Any, BaseException | None]]]
    by_loop = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # that loop is closed: nobody waits for these answers
            pass


def _settle(items: list[tuple[_Job[Any], Any, BaseException | None]]) -> None:
    for job, result, exc in items:
        if job.future.done():
            continue
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)
