"""The send rate, shared by every connection: messages per second and per hour.

Each worker asks :meth:`RateLimiter.acquire` for a slot before it sends one message. Slots
are handed out in order under a lock, and the worker sleeps outside the lock until its slot
comes:

* per second, slots are spaced ``1 / rate`` apart (a token bucket holding one token), so N
  messages take at least ``(N - 1) / rate`` seconds whatever the number of connections --
  relays that count per second see no bursts;
* per hour, a slot is never closer than an hour to the slot ``rate_hour`` places before
  it (a sliding window over the last ``rate_hour`` slots): at most ``rate_hour`` messages
  in *any* hour, not merely on average. A resumed send passes the times of messages sent in
  the last hour so a restart does not reset the count.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

HOUR = 3600.0


class RateLimiter:
    """Hands out send slots at most ``rate`` per second and ``rate_hour`` per hour.

    ``0`` means no limit. ``clock`` is a monotonic clock in seconds (tests pass a fake
    one); ``recent`` are clock times of messages already sent within the last hour.
    """

    def __init__(
        self,
        rate: float = 0.0,
        rate_hour: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        recent: Iterable[float] = (),
    ) -> None:
        if rate < 0 or rate_hour < 0:
            raise ValueError("rates cannot be negative")
        self.rate = rate
        self.rate_hour = rate_hour
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._next = clock()
        self._window: deque[float] | None = None
        if rate_hour:
            self._window = deque(sorted(recent)[-rate_hour:], maxlen=rate_hour)

    @property
    def unlimited(self) -> bool:
        return not self.rate and not self.rate_hour

    def reserve(self) -> float:
        """Reserve the next slot; the clock time at which it may be used."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            window = self._window
            if window is not None:
                if len(window) == window.maxlen:
                    # The oldest of the last rate_hour slots must be an hour old.
                    slot = max(slot, window[0] + HOUR)
                window.append(slot)
            self._next = slot + self._interval
            return slot

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for a slot; False if ``stop`` was set meanwhile (the slot is then lost)."""
        if self.unlimited:
            return not (stop is not None and stop.is_set())
        slot = self.reserve()
        delay = slot - self._clock()
        if delay <= 0:
            return not (stop is not None and stop.is_set())
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)

    def describe(self) -> str:
        """``20 messages/s, 5,000/hour`` or ``no limit``."""
        parts = []
        if self.rate:
            parts.append(f"{self.rate:g} messages/s")
        if self.rate_hour:
            parts.append(f"{self.rate_hour:,}/hour")
        return ", ".join(parts) or "no limit"
