"""Generic live reload: rebuild when watched files change, keep the last good output.

A :class:`LiveReloader` gets a *build* callable and the paths to watch. It knows nothing
about newsletters: the preview app gives it "load, render and check the issue". Each build
attempt gets a new version number; a failed attempt records what went wrong but keeps the
output of the last good build, so a typo in ``issue.yaml`` shows an error next to the email
as it was, never a blank page. Clients (Server-Sent Events handlers) wait for the version
to move with :meth:`LiveReloader.wait_for_change`.

Threading: builds are CPU-bound (Jinja2, MJML, CSS inlining), so :meth:`watch` runs them in
a worker thread and only the version bump and the wake-up happen on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from watchfiles import Change, DefaultFilter, awatch

from bulletin.errors import BulletinError, Problem, ProblemsError

T = TypeVar("T")

log = logging.getLogger(__name__)

WATCH_STEP_MS = 50
"""How long the watcher waits for more changes before yielding a batch.

Editors save in several steps (write a temporary file, rename, touch); 50 ms groups one save
into one rebuild while keeping the reload well under a second."""


@dataclass(frozen=True)
class BuildFailure:
    """Why the latest build failed: a user error (with located problems) or a bug."""

    message: str
    problems: tuple[Problem, ...] = ()
    hint: str | None = None
    bug: bool = False
    """True for an unexpected exception; ``message`` then holds the traceback."""

    @classmethod
    def from_exception(cls, exc: BaseException) -> BuildFailure:
        if isinstance(exc, ProblemsError):
            # The message of a ProblemsError repeats every problem after its summary line;
            # keep only the summary since the problems are listed separately.
            summary = exc.message.split("\n", 1)[0] if exc.problems else exc.message
            if exc.problems and summary == str(exc.problems[0]):
                summary = ""
            return cls(summary or "The build failed.", tuple(exc.problems), exc.hint)
        if isinstance(exc, BulletinError):
            return cls(exc.message, (), exc.hint)
        text = "".join(traceback.format_exception(exc))
        return cls(text, (), None, bug=True)


@dataclass(frozen=True)
class BuildState(Generic[T]):
    """The outcome of the latest build attempt plus the last good output."""

    version: int
    """Increases on every build attempt, good or bad."""
    output: T | None
    """Output of the last successful build (``None`` until one succeeds)."""
    output_version: int
    """Version that produced ``output`` (0 when there is none)."""
    failure: BuildFailure | None
    """Why the latest attempt failed; ``None`` when it succeeded."""
    finished_at: float
    """``time.time()`` when the attempt ended."""
    duration: float
    """Seconds the attempt took."""
    changed: tuple[str, ...] = field(default=())
    """Paths whose change triggered this attempt (empty for the first build)."""

    @property
    def ok(self) -> bool:
        return self.failure is None


class LiveReloader(Generic[T]):
    """Runs ``build`` now and again whenever a file under ``paths`` changes.

    ``on_build`` is called (in the building thread) after every attempt, e.g. to log it.
    A :class:`BulletinError` from ``build`` is a user error; any other exception is a bug
    whose traceback is kept in the failure so the developer sees it. Either way the last good
    output stays available.
    """

    def __init__(
        self,
        build: Callable[[], T],
        paths: Iterable[Path],
        *,
        on_build: Callable[[BuildState[T]], None] | None = None,
        watch_filter: Callable[[Change, str], bool] | None = None,
    ) -> None:
        self._build = build
        self.paths: tuple[Path, ...] = tuple(paths)
        self._on_build = on_build
        self._filter = watch_filter if watch_filter is not None else DefaultFilter()
        # Builds may be triggered from the watcher and from tests at the same time; one at a
        # time keeps version numbers and "last good" consistent.
        self._lock = threading.Lock()
        self._state: BuildState[T] = BuildState(0, None, 0, None, time.time(), 0.0)
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def state(self) -> BuildState[T]:
        """The latest state (an immutable snapshot, safe to read from any thread)."""
        return self._state

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: waiting clients should finish."""
        return self._closed

    def rebuild(self, changed: Sequence[str] = ()) -> BuildState[T]:
        """Build once (blocking) and record the outcome; never raises for build errors."""
        with self._lock:
            start = time.perf_counter()
            prev = self._state
            version = prev.version + 1
            try:
                output = self._build()
            except Exception as exc:  # a bug in a build must not stop the watcher either
                self._state = BuildState(
                    version=version,
                    output=prev.output,
                    output_version=prev.output_version,
                    failure=BuildFailure.from_exception(exc),
                    finished_at=time.time(),
                    duration=time.perf_counter() - start,
                    changed=tuple(changed),
                )
            else:
                self._state = BuildState(
                    version=version,
                    output=output,
                    output_version=version,
                    failure=None,
                    finished_at=time.time(),
                    duration=time.perf_counter() - start,
                    changed=tuple(changed),
                )
            state = self._state
        if self._on_build is not None:
            self._on_build(state)
        return state

    async def arebuild(self, changed: Sequence[str] = ()) -> BuildState[T]:
        """Build in a worker thread, then wake everyone waiting for a change."""
        state = await asyncio.to_thread(self.rebuild, changed)
        self._notify()
        return state

    def _notify(self) -> None:
        # Swap the event before setting it: waiters hold the old one and wake up, later
        # waiters get a fresh one. Runs on the event loop only.
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    async def wait_for_change(self, seen_version: int, timeout: float) -> BuildState[T]:
        """The state once its version differs from ``seen_version``, or after ``timeout`` s."""
        if self._state.version == seen_version and not self._closed:
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        return self._state

    def close(self) -> None:
        """Wake all waiting clients and tell them to finish (the server is stopping)."""
        self._closed = True
        self._notify()

    async def watch(self, stop: asyncio.Event) -> None:
        """Rebuild on every batch of changes under ``paths`` until ``stop`` is set."""
        existing = [p for p in self.paths if p.exists()]
        if not existing:
            return
        try:
            async for changes in awatch(
                *existing, watch_filter=self._filter, step=WATCH_STEP_MS, stop_event=stop
            ):
                await self.arebuild(sorted({path for _, path in changes}))
        except Exception:
            # Live reload is gone but the last output is still served; say so loudly.
            log.exception("Watching files stopped; restart to get live reload back")

    async def start_watching(self, stop: asyncio.Event) -> asyncio.Task[None]:
        """Run :meth:`watch` in a task; return once file changes are being recorded.

        awatch registers its watches (inotify) synchronously in its first step, before it
        first suspends. One trip through the event loop runs that step, so a file saved
        right after this returns is never missed.
        """
        task = asyncio.create_task(self.watch(stop))
        await asyncio.sleep(0)
        return task
