"""Running a web app with uvicorn: the one runner behind ``bulletin preview`` and ``serve``.

Each command binds its listening socket first (:mod:`bulletin.listen`: a port in use is a
clear error, ``--port 0`` learns the port chosen) and configures uvicorn for its app; this
module runs it on that socket until Ctrl+C or SIGTERM:

* the URL is announced once uvicorn listens, not before (tests read the port from it);
* SIGTERM -- a service manager's stop, ``docker stop``, ``kill`` -- shuts down gracefully
  like Ctrl+C and the command exits 0, instead of dying of the signal;
* when shutdown starts, long-lived responses (the preview's event streams) are told to end:
  uvicorn waits for open responses, and an event stream never ends by itself.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable

import uvicorn


class Server(uvicorn.Server):
    """uvicorn, calling ``on_started`` once it listens and ``on_shutdown`` as it stops.

    :meth:`run` may be called in a background thread (tests); stop it with
    ``server.should_exit = True``. :func:`run_until_stopped` runs it in the foreground.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_started: Callable[[], None] | None = None,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._on_shutdown = on_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)


def url_of(sock: socket.socket) -> str:
    """The ``http://host:port/`` a listening socket answers at (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run_until_stopped(server: Server, sock: socket.socket) -> None:
    """Serve on ``sock`` until Ctrl+C or SIGTERM (blocking); both stop it gracefully.

    The caller owns ``sock`` and closes it.
    """

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # uvicorn handles SIGINT and SIGTERM itself while it runs, then raises the signal again
    # with the handler that was there before: this one for SIGTERM, so a stop exits 0 like
    # Ctrl+C. Signal handlers can only be set from the main thread.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main else None
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
