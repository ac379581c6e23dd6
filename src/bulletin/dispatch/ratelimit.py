"""The send rate, shared by every connection of every sender of a send.

A send's rate limit (``--rate`` messages per second, ``--rate-hour`` per hour) holds for the
send as a whole, however many senders work on it. The budget lives in the database: each
sender reserves a *block* of slots at a time (:func:`bulletin.store.ledger.reserve_slots`,
one short write transaction that moves the send's schedule on), and its connections take
the slots one by one through :class:`SharedRateLimiter`:

* per second, slots are spaced ``1 / rate`` apart on one schedule for all senders (GCRA),
  so N messages take at least about ``(N - 1) / rate`` seconds -- relays that count per
  second see no bursts, whether one sender or four send;
* per hour, a block is granted only when the slots granted in the hour before it leave room
  for it: at most ``rate_hour`` messages in *any* hour, not merely on average, across
  restarts and senders.

A slot is used at its time or a little after (:data:`LATE` at most, or one interval at a low
rate); one a sender could not use in time is dropped, never saved up: unused slots make the
send slower, never faster.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

LATE = 0.05
"""Seconds after its time a slot may still be used (at rates above 20/s; one interval below)."""

RECHECK = 2.0
"""Seconds a sender trusts that the send has no rate limit before asking again (another
sender may set one)."""


@dataclass(frozen=True)
class Grant:
    """Slots granted from the shared budget, as times on this process's clock."""

    slots: list[float]
    interval: float = 0.0
    """Seconds between two slots (0: only an hourly limit, no spacing)."""
    unlimited: bool = False
    """The send has no rate limit (``slots`` is then empty)."""


class SharedRateLimiter:
    """Hands out this sender's slots of a send's shared budget to its connections.

    ``reserve`` asks the database for the next block (:class:`Grant`); it is called by
    whichever connection finds no slot left, one at a time, and may return None when the
    database could not answer (the connection then tries again shortly). ``clock`` is a
    monotonic clock in seconds, the one the grant's slot times are on.
    """

    def __init__(
        self, reserve: Callable[[], Grant | None], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._reserve = reserve
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: deque[float] = deque()
        self._late = LATE
        self._unlimited_until = -float("inf")

    def _next(self) -> float | None:
        """This sender's next slot (a clock time), reserving a block when none is left.

        None when the send has no rate limit; NaN when the database could not be asked.
        """
        with self._lock:
            while True:
                now = self._clock()
                if now < self._unlimited_until:
                    return None
                slots = self._slots
                while slots and slots[0] + self._late < now:
                    slots.popleft()  # too late to use without a burst: lost
                if slots:
                    return slots.popleft()
                grant = self._reserve()
                if grant is None:
                    return float("nan")
                if grant.unlimited:
                    self._unlimited_until = self._clock() + RECHECK
                    return None
                # With an hourly limit only, slots carry no spacing: any delay is harmless.
                self._late = max(LATE, grant.interval) if grant.interval else float("inf")
                slots.extend(grant.slots)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for a slot; False if ``stop`` was set meanwhile (the slot is then lost)."""
        while True:
            if stop is not None and stop.is_set():
                return False
            slot = self._next()
            if slot is None:
                return True
            if slot != slot:  # NaN: no answer from the database; ask again shortly
                if stop is not None and stop.wait(0.2):
                    return False
                if stop is None:
                    time.sleep(0.2)
                continue
            delay = slot - self._clock()
            if delay <= 0:
                return True
            if stop is None:
                time.sleep(delay)
                return True
            return not stop.wait(delay)

    def forget(self) -> None:
        """Drop the slots held (the send's rate changed: the next block follows the new one)."""
        with self._lock:
            self._slots.clear()
            self._unlimited_until = -float("inf")


def describe(rate: float, rate_hour: int) -> str:
    """``20 messages/s, 5,000 messages/hour`` or ``no limit``."""
    parts = []
    if rate:
        parts.append(f"{rate:g} messages/s")
    if rate_hour:
        parts.append(f"{rate_hour:,} messages/hour")
    return ", ".join(parts) or "no limit"
