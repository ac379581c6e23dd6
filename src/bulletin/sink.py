"""An SMTP server that captures everything into a Maildir, for local sending and demos.

:func:`start_sink` runs aiosmtpd in a background thread. It accepts every sender and
recipient (SMTPUTF8 and 8BITMIME on, messages up to 50 MB) and stores one file per
recipient, with ``X-Bulletin-Envelope-From`` and ``Delivered-To`` header lines in front of
the message exactly as it arrived. :func:`run_sink` serves until Ctrl-C or SIGTERM and
reports what arrives through a callback; :func:`list_captured` reads the Maildir back.

:class:`SocketController` is aiosmtpd's threaded ``Controller`` serving on a socket bound
before its thread starts, so a taken port is reported at once and port 0 works; the
test helpers in ``tests/smtpfaults.py`` use it too.
"""

from __future__ import annotations

import asyncio
import email.message
import email.parser
import email.policy
import mailbox
import signal
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from bulletin import listen
from bulletin.errors import BulletinError

SINK_SIZE_LIMIT = 50 * 1024 * 1024
"""Largest message the sink takes (bytes); bigger ones get 552 like at a real relay."""

DEFAULT_MAILDIR = Path("mail", "sink")
"""Where captured mail goes, relative to the workspace (git ignores ``/mail/``)."""

_STOP_TIMEOUT = 5.0


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket for the sink, or a clear BulletinError (port in use...)."""
    return listen.listen_socket(
        host,
        port,
        in_use_hint="Another program (perhaps another `bulletin sink`) is listening there. "
        "Stop it, or pick another port with --port and set smtp.url to match.",
    )


class SocketController(Controller):
    """aiosmtpd's threaded Controller, serving on a socket that is already listening.

    aiosmtpd binds inside its thread, reports a taken port only after ``ready_timeout``
    and cannot serve on port 0 (it connects to ``self.port`` to check it is up). Binding
    first (:func:`listen_socket`) makes both immediate and exact. ``smtp_class`` picks the
    protocol class (a subclass of :class:`aiosmtpd.smtp.SMTP`); keyword arguments go to it.

    :meth:`stop` also closes client connections still open: asyncio closes only the
    listening socket, and a session left open would keep its socket until garbage
    collection (a ResourceWarning).
    """

    def __init__(
        self,
        handler: Any,
        sock: socket.socket,
        *,
        smtp_class: type[SMTP] = SMTP,
        **kwargs: Any,
    ) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self.sock = sock
        self.smtp_class = smtp_class
        self.sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory(self) -> SMTP:
        protocol = self.smtp_class(self.handler, **self.SMTP_kwargs)
        self.sessions.add(protocol)
        return protocol

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        # The documented extension point for how the server binds (see BaseController).
        return self.loop.create_server(self._factory_invoker, sock=self.sock, ssl=self.ssl_context)

    def close_sessions(self) -> None:
        """Drop every client connection now (as a crashing server would)."""
        if self._thread is None:
            return

        async def drop() -> None:
            for protocol in list(self.sessions):
                transport = protocol.transport
                if isinstance(transport, asyncio.Transport):
                    # abort, not close: closing a TLS transport waits for the client's
                    # close_notify, which an idle client never sends.
                    transport.abort()
                elif transport is not None:  # pragma: no cover - always a Transport
                    transport.close()
            # Let connection_lost run for each before the loop stops.
            for _ in range(3):
                await asyncio.sleep(0)

        future = asyncio.run_coroutine_threadsafe(drop(), self.loop)
        future.result(_STOP_TIMEOUT)

    def stop(self, no_assert: bool = False) -> None:
        self.close_sessions()
        super().stop(no_assert=no_assert)
        self.sock.close()


@dataclass(frozen=True)
class CapturedMessage:
    """One message in the sink's Maildir, summarised from its headers."""

    key: str
    """The Maildir key (file name without flags)."""
    subject: str
    to: str
    from_: str
    date: datetime | None
    message_id: str
    size: int
    """Bytes on disk, the sink's added header lines included."""
    envelope_from: str
    delivered_to: str
    received: datetime
    """When the file was written (local time)."""


class _CaptureHandler:
    """aiosmtpd handler: accept everything, store one copy per recipient."""

    def __init__(self, maildir: mailbox.Maildir, on_stored: Any) -> None:
        self.maildir = maildir
        self.on_stored = on_stored

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        data = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        try:
            for rcpt in envelope.rcpt_tos:
                head = f"X-Bulletin-Envelope-From: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n"
                # surrogateescape: an address that was not valid UTF-8 is kept byte for byte.
                self.maildir.add(head.encode("utf-8", "surrogateescape") + data)
                self.on_stored(rcpt, data)
        except OSError as exc:
            return f"451 4.3.0 Cannot store the message: {exc.strerror or exc}"
        return "250 2.0.0 OK captured"


class SinkHandle:
    """A running sink: where it listens, how many messages it stored, how to stop it."""

    def __init__(self, controller: SocketController, maildir: Path) -> None:
        self._controller = controller
        self.maildir = maildir
        self.host: str = controller.hostname
        self.port: int = controller.port
        self.count = 0
        """Messages stored since the start (one per recipient)."""
        self.last: tuple[str, str] | None = None
        """Recipient and subject of the latest stored message."""
        self._changed = threading.Condition()
        self._stopped = False

    @property
    def url(self) -> str:
        """``smtp://host:port``, the value for smtp.url."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{host}:{self.port}"

    def _stored(self, rcpt: str, data: bytes) -> None:
        try:
            subject = _text(_headers(data), "subject")
        except Exception:  # pragma: no cover - the parser is lenient; never fail a stored message
            subject = ""
        with self._changed:
            self.count += 1
            self.last = (rcpt, subject)
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until more than ``seen`` messages are stored (or ``timeout`` s); the count."""
        with self._changed:
            self._changed.wait_for(lambda: self.count > seen, timeout)
            return self.count

    def stop(self) -> None:
        """Stop listening and close open sessions; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._controller.stop()

    def __enter__(self) -> SinkHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_MAILDIR_PARTS = ("cur", "new", "tmp")


def open_maildir(folder: Path) -> mailbox.Maildir:
    """The Maildir at ``folder``, made ready to store messages, or a clear BulletinError.

    A missing or empty folder becomes a Maildir, and one missing a subfolder gets it:
    mailbox's ``create=True`` makes cur/, new/ and tmp/ only when it creates the folder
    itself, and every message stored into an existing empty folder would fail. A folder
    holding anything else is refused now rather than with a 451 for every message later,
    and so that captured mail never mixes with someone's files.
    """
    hint = "Pick a new or empty folder with --maildir."
    if folder.exists() and not folder.is_dir():
        raise BulletinError(f"{folder} is a file, not a folder.", hint=hint)
    try:
        present = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        others = [n for n in present if not n.startswith(".") and n not in _MAILDIR_PARTS]
        if others and not set(present) & set(_MAILDIR_PARTS):
            shown = ", ".join(others[:5]) + (
                f" and {len(others) - 5} more" if len(others) > 5 else ""
            )
            raise BulletinError(
                f"{folder} is not a Maildir: it holds other files ({shown}) and no cur, new "
                "or tmp folder.",
                hint=hint,
            )
        for part in _MAILDIR_PARTS:
            (folder / part).mkdir(parents=True, exist_ok=True)
        return mailbox.Maildir(folder, factory=None, create=False)
    except OSError as exc:
        raise BulletinError(
            f"Cannot create the Maildir {folder}: {exc.strerror or exc}.", hint=hint
        ) from None


def start_sink(maildir: Path, host: str = "127.0.0.1", port: int = 2525) -> SinkHandle:
    """Start capturing mail on ``host:port`` into ``maildir`` (created if missing).

    Port 0 picks a free port (see ``handle.port``). Raises BulletinError when the port is
    taken or the folder cannot be a Maildir (see :func:`open_maildir`), before listening.
    Stop it with ``handle.stop()``.
    """
    maildir = Path(maildir)
    box = open_maildir(maildir)
    sock = listen_socket(host, port)
    handle: SinkHandle | None = None

    def on_stored(rcpt: str, data: bytes) -> None:
        assert handle is not None
        handle._stored(rcpt, data)

    controller = SocketController(
        _CaptureHandler(box, on_stored),
        sock,
        server_hostname="bulletin-sink",
        enable_SMTPUTF8=True,
        data_size_limit=SINK_SIZE_LIMIT,
    )
    handle = SinkHandle(controller, maildir)
    try:
        controller.start()
    except BaseException:
        sock.close()
        raise
    return handle


@dataclass(frozen=True)
class SinkActivity:
    """What a running sink stored since its last report (see :func:`run_sink`)."""

    count: int
    """Messages stored since the start."""
    new: int
    """Messages stored since the last report."""
    last: tuple[str, str] | None
    """Recipient and subject of the latest stored message."""


def run_sink(
    handle: SinkHandle, on_activity: Callable[[SinkActivity], None], *, interval: float = 0.5
) -> int:
    """Serve until Ctrl-C or SIGTERM, reporting what is stored; stop; return the count.

    ``on_activity`` is called at most once per ``interval`` seconds, so a big send is
    summarised rather than listed. A process manager's SIGTERM stops the sink like Ctrl-C
    (the handlers are installed for the duration, so call this from the main thread). The
    sink is stopped however this returns.

    The handlers only set a flag that the loop looks at a few times a second: an exception
    raised from a signal handler can land between a lock's acquisition and the ``with``
    block that would release it (the main thread waits on the condition the SMTP thread
    notifies), and the SMTP thread then blocks on that lock for ever, hanging the stop.
    """
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = 0
    try:
        while not stop:
            count = handle.wait(seen, timeout=_STOP_POLL)
            if count == seen:
                continue
            on_activity(SinkActivity(count, count - seen, handle.last))
            seen = count
            quiet_until = time.monotonic() + interval
            while not stop and time.monotonic() < quiet_until:
                time.sleep(_STOP_POLL)
    finally:
        # Back to the usual handlers first: a second Ctrl-C while stopping quits at once.
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        handle.stop()
    return handle.count


_STOP_POLL = 0.1
"""Seconds between two looks at the stop flag: a stop is noticed this fast."""


def _headers(data: bytes) -> email.message.EmailMessage:
    """The header block of a message, parsed as UTF-8 text (RFC 6532 headers survive)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data if end < 0 else data[: end + 2]
    parser = email.parser.Parser(policy=email.policy.default)
    message = parser.parsestr(head.decode("utf-8", "replace"), headersonly=True)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _text(message: email.message.EmailMessage, name: str) -> str:
    value = message.get(name)
    if value is None:
        return ""
    try:
        return str(value)
    except (ValueError, LookupError):  # pragma: no cover - malformed encoded words
        return message.get_all(name, [""])[0]


def list_captured(maildir: Path) -> list[CapturedMessage]:
    """The messages in a Maildir, newest first (a missing folder holds none)."""
    maildir = Path(maildir)
    out: list[CapturedMessage] = []
    # Read the Maildir layout directly (new/ and cur/, "key:info" names) so only the
    # header block of each file is read, not the whole message.
    for sub in ("new", "cur"):
        folder = maildir / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith("."):
                continue
            try:
                with open(path, "rb") as f:
                    head = _read_head(f)
                stat = path.stat()
            except FileNotFoundError:  # pragma: no cover - moved while listing
                continue
            out.append(_summary(path.name.split(":", 1)[0], head, stat.st_size, stat.st_mtime))
    out.sort(key=lambda m: (m.received, m.key), reverse=True)
    return out


def _summary(key: str, head: bytes, size: int, mtime: float) -> CapturedMessage:
    message = _headers(head)
    date: datetime | None
    try:
        date = parsedate_to_datetime(_text(message, "date")) if message["date"] else None
    except (TypeError, ValueError):
        date = None
    envelope_from = _text(message, "x-bulletin-envelope-from") or _text(message, "return-path")
    return CapturedMessage(
        key=key,
        subject=_text(message, "subject"),
        to=_text(message, "to"),
        from_=_text(message, "from"),
        date=date,
        message_id=_text(message, "message-id"),
        size=size,
        envelope_from=envelope_from.strip().removeprefix("<").removesuffix(">"),
        delivered_to=_text(message, "delivered-to"),
        received=datetime.fromtimestamp(mtime),
    )


def read_captured(maildir: Path, key: str) -> bytes:
    """The whole stored file of one captured message (headers added by the sink included)."""
    box = mailbox.Maildir(Path(maildir), factory=None, create=False)
    try:
        with box.get_file(key) as f:
            data: bytes = f.read()
    except KeyError:
        raise BulletinError(f"No captured message {key!r} in {maildir}.") from None
    return data


def _read_head(f: Any) -> bytes:
    """Read up to the blank line that ends the headers (not the whole, maybe large, body)."""
    lines: list[bytes] = []
    for line in f:
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(lines)
