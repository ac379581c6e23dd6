"""``bulletin bounces fetch`` and ``unsubscribes fetch``: the same rules, over IMAP.

A mailbox reached by IMAP is read with the standard library's :mod:`imaplib`, message by
message with ``BODY.PEEK[]`` (which sets no ``\\Seen``), and each message goes through the
importer's own rules (:class:`bulletin.inbound.runner.Intake`, the same prepare and apply as
``bounces import`` / ``unsubscribes import``). What the importer recognises (a delivery
report, a complaint, an auto-reply, a tokened unsubscribe) is processed and then moved to
``imap.processed_folder`` (the default) or flagged ``\\Seen $BulletinProcessed`` where it is;
everything else is left exactly as it was: same folder, same flags, still unread, because
the bounce address is often the one people reply to.

Order, for crash safety: a batch is written to the store in one transaction that also
records each message's key in ``inbound_messages``, and only after the commit are the
messages moved or flagged. A run killed between the two leaves messages that the next run
finds recorded: it counts them as processed earlier and only moves them. The primary key of
``inbound_messages`` (not the server) decides between two runs reading the same folder.

TLS, as for SMTP: ``imaps://`` is implicit TLS; on ``imap://`` STARTTLS is used when offered
and required for every host that is not loopback (:func:`bulletin.dispatch.smtp.is_loopback`).
Certificates are verified. The password is never sent in clear to another machine and never
appears in a message, log or exception.

``--watch`` (:func:`watch`) runs a pass, then waits with IMAP IDLE when the server offers it
(re-issued every :data:`IDLE_SECONDS`, below the 29 minutes RFC 2177 lets servers time out
at), else polls every ``imap.poll_seconds``; after a network failure it reconnects with a
growing pause.
"""

from __future__ import annotations

import base64
import imaplib
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.engine import Engine

from bulletin.dispatch.smtp import is_loopback
from bulletin.errors import BulletinError
from bulletin.inbound import runner
from bulletin.inbound.bounces import BounceReport, BounceSettings, bounce_intake
from bulletin.inbound.mailboxes import MailItem
from bulletin.inbound.unsubscribes import UnsubscribeReport, UnsubscribeSettings, unsubscribe_intake
from bulletin.store.db import begin_write, write_transaction
from bulletin.store.subscribers import claim_inbound_message
from bulletin.workspace import ImapUrl, Workspace, imap_url_parts

Purpose = Literal["bounces", "unsubscribes"]

PROCESSED_KEYWORD = "$BulletinProcessed"
"""The keyword ``processed_action = "flag"`` sets (with ``\\Seen``) on processed messages."""

BATCH_SIZE = 50
"""Messages fetched per round trip and written per transaction."""

IDLE_SECONDS = 25 * 60
"""How long one IDLE lasts before it is renewed (servers may drop it after 29 minutes)."""

MAX_BACKOFF = 300.0
"""Longest pause between two attempts to reconnect after a network failure (seconds)."""

_URL_HINT = {
    "bounces": "Give the URL (imaps://user@host/Folder) or set imap.bounces_url in bulletin.toml.",
    "unsubscribes": "Give the URL (imaps://user@host/Folder) or set imap.unsubscribes_url in "
    "bulletin.toml.",
}


class ImapSetupError(BulletinError):
    """The server answers but cannot work with this setup (TLS, certificate, login, folder)."""


class ImapUnreachable(BulletinError):
    """No IMAP server answers, or the connection broke: ``--watch`` tries again later."""


@dataclass(frozen=True)
class ImapSettings:
    """Where to fetch from and what to do with processed mail (``[imap]`` and the URL)."""

    url: ImapUrl
    password: str
    action: Literal["move", "flag"] = "move"
    folder: str = "Processed"
    timeout: float = 30.0
    poll_seconds: float = 60.0

    def __repr__(self) -> str:  # the dataclass's would show the password
        return f"<ImapSettings {self.url}>"

    @classmethod
    def from_workspace(
        cls, workspace: Workspace, purpose: Purpose, url: str | None = None
    ) -> ImapSettings:
        """The command's URL (else the configured one), the password and ``[imap]``."""
        config = workspace.config.imap
        configured = config.bounces_url if purpose == "bounces" else config.unsubscribes_url
        if url is None and configured is None:
            raise BulletinError(f"No mailbox to fetch {purpose} from.", hint=_URL_HINT[purpose])
        try:
            parsed = imap_url_parts(url if url is not None else str(configured))
        except ValueError as exc:
            where = "URL" if url is not None else f"bulletin.toml: imap.{purpose}_url"
            raise BulletinError(f"{where}: {exc}.", hint=_URL_HINT[purpose]) from None
        password = workspace.imap_password()
        if password is None:
            raise BulletinError(
                f"No IMAP password for {parsed.user} at {parsed.address}.",
                hint="Set BULLETIN_IMAP_PASSWORD, or name a file (mode 0600, outside git) "
                "holding it in imap.password_file.",
            )
        if config.processed_action == "move" and config.processed_folder == parsed.folder:
            raise BulletinError(
                f"imap.processed_folder is {parsed.folder!r}, the folder being read.",
                hint="Name another folder for processed mail in imap.processed_folder.",
            )
        return cls(
            parsed,
            password,
            config.processed_action,
            config.processed_folder,
            config.timeout,
            config.poll_seconds,
        )


@dataclass
class FetchReport:
    """What one pass over an IMAP folder did, besides the importer's own counts."""

    mailbox: str
    dry_run: bool
    action: Literal["move", "flag"]
    folder: str
    messages: int = 0
    recognised: int = 0
    earlier: int = 0
    done: int = 0
    left: int = 0

    def summary_rows(self) -> list[tuple[str, int]]:
        """(label, count) rows after the importer's, in order."""
        what = f"moved to {self.folder}" if self.action == "move" else "flagged as processed"
        return [
            ("messages in the folder", self.messages),
            ("processed by an earlier run", self.earlier),
            (what, self.done),
            ("left as they were", self.left),
        ]


@dataclass
class FetchResult:
    """One pass: the importer's report (bounces or unsubscribes) and the IMAP side."""

    report: Any
    fetch: FetchReport

    @property
    def dry_run(self) -> bool:
        return self.fetch.dry_run

    def summary_rows(self) -> list[tuple[str, int]]:
        rows: list[tuple[str, int]] = list(self.report.summary_rows())
        return rows + self.fetch.summary_rows()


IntakeFactory = Callable[[str, bool], tuple[Any, runner.Intake[Any]]]
"""Makes a fresh (report, intake) for one pass, given the mailbox's name and ``dry_run``."""


def bounce_intakes(settings: BounceSettings) -> IntakeFactory:
    """``bounces import``'s rules, a fresh report for each pass."""

    def make(name: str, dry_run: bool) -> tuple[BounceReport, runner.Intake[Any]]:
        report = BounceReport(path=name, kind="IMAP", dry_run=dry_run)
        return report, bounce_intake(settings, report)

    return make


def unsubscribe_intakes(settings: UnsubscribeSettings) -> IntakeFactory:
    """``unsubscribes import``'s rules, a fresh report for each pass."""

    def make(name: str, dry_run: bool) -> tuple[UnsubscribeReport, runner.Intake[Any]]:
        report = UnsubscribeReport(path=name, kind="IMAP", dry_run=dry_run)
        return report, unsubscribe_intake(settings, report)

    return make


# --- one pass ----------------------------------------------------------------------------


def fetch(
    engine: Engine,
    settings: ImapSettings,
    purpose: Purpose,
    make_intake: IntakeFactory,
    *,
    dry_run: bool = False,
    progress: runner.ProgressCallback | None = None,
    ssl_context: ssl.SSLContext | None = None,
    batch_size: int = BATCH_SIZE,
) -> FetchResult:
    """Connect, process the folder once (see the module docstring), log out."""
    with connect(settings, ssl_context=ssl_context) as session:
        return run_pass(
            engine,
            session,
            settings,
            purpose,
            make_intake,
            dry_run=dry_run,
            progress=progress,
            batch_size=batch_size,
        )


def run_pass(
    engine: Engine,
    session: ImapSession,
    settings: ImapSettings,
    purpose: Purpose,
    make_intake: IntakeFactory,
    *,
    dry_run: bool = False,
    progress: runner.ProgressCallback | None = None,
    batch_size: int = BATCH_SIZE,
    stopped: Callable[[], bool] | None = None,
) -> FetchResult:
    """Process the folder once over an open session; ``stopped()`` ends it between batches."""
    url = settings.url
    report, intake = make_intake(str(url), dry_run)
    fetched = FetchReport(str(url), dry_run, settings.action, settings.folder)
    session.select(url.folder, readonly=dry_run)
    criteria = "UNDELETED"
    if settings.action == "flag":
        criteria += f" UNKEYWORD {PROCESSED_KEYWORD}"
    uids = session.search(criteria)
    fetched.messages = len(uids)
    if settings.action == "move" and not dry_run and uids:
        session.ensure_folder(settings.folder)
    done = 0
    if progress is not None:
        progress(0, len(uids))
    with _transactions(engine, dry_run) as transaction:
        for start in range(0, len(uids), batch_size):
            if stopped is not None and stopped():
                break  # the rest is untouched; the next run reads it
            batch = uids[start : start + batch_size]
            messages = session.fetch(batch)
            ready: list[tuple[int, Any]] = []
            for uid in batch:
                data = messages.get(uid)
                if data is None:
                    continue  # gone meanwhile (another run moved it, a person deleted it)
                prepared = intake.prepare(MailItem(uid, f"UID {uid}", data))
                if intake.recognised(prepared):
                    ready.append((uid, prepared))
                else:
                    fetched.left += 1
            fetched.recognised += len(ready)
            with transaction() as conn:
                for _uid, prepared in ready:
                    if claim_inbound_message(conn, purpose, intake.key(prepared)):
                        intake.apply(conn, prepared)
                    else:
                        fetched.earlier += 1
            # Only after the commit: a crash before this line leaves the messages where they
            # were, recorded, and the next run just moves them.
            if ready and not dry_run:
                processed = [uid for uid, _ in ready]
                if settings.action == "move":
                    session.move(processed, settings.folder)
                else:
                    session.flag(processed)
                fetched.done += len(processed)
            done += len(batch)
            if progress is not None:
                progress(done, len(uids))
    return FetchResult(report, fetched)


@contextmanager
def _transactions(engine: Engine, dry_run: bool) -> Iterator[Callable[[], Any]]:
    """One transaction per batch; for a dry run, one transaction rolled back at the end."""
    if not dry_run:

        def each() -> Any:
            return write_transaction(engine)

        yield each
        return
    with engine.connect() as conn:
        transaction = begin_write(conn)

        @contextmanager
        def same() -> Iterator[Any]:
            yield conn

        try:
            yield same
        finally:
            transaction.rollback()


# --- watching ----------------------------------------------------------------------------


class Watcher:
    """Runs passes until stopped: ``stop`` may be called from a signal handler."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        """Finish the current batch, then return from :meth:`watch`."""
        self.reason = reason
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def watch(
        self,
        engine: Engine,
        settings: ImapSettings,
        purpose: Purpose,
        make_intake: IntakeFactory,
        *,
        on_pass: Callable[[FetchResult], None],
        on_wait: Callable[[str], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Process the folder, wait for new mail (IDLE or polling), again, until stopped.

        Setup errors (login, certificate, folder) end it; network failures do not: it
        reconnects after 1, 2, 4... seconds (at most :data:`MAX_BACKOFF`).
        """
        pause = 1.0
        while not self.stopped:
            try:
                with connect(settings, ssl_context=ssl_context) as session:
                    pause = 1.0
                    while not self.stopped:
                        result = run_pass(
                            engine,
                            session,
                            settings,
                            purpose,
                            make_intake,
                            stopped=lambda: self.stopped,
                        )
                        on_pass(result)
                        if self.stopped:
                            break
                        if session.can_idle:
                            session.idle(IDLE_SECONDS, lambda: self.stopped)
                        else:
                            self._stop.wait(settings.poll_seconds)
                            session.noop()
            except ImapUnreachable as exc:
                if on_wait is not None:
                    on_wait(f"{exc.message} Trying again in {pause:.0f} s.")
                self._stop.wait(pause)
                pause = min(pause * 2, MAX_BACKOFF)


# --- the IMAP client -----------------------------------------------------------------------


@contextmanager
def connect(
    settings: ImapSettings, *, ssl_context: ssl.SSLContext | None = None
) -> Iterator[ImapSession]:
    """A logged-in :class:`ImapSession`; logs out on the way out."""
    session = ImapSession(settings, ssl_context)
    try:
        session.open()
        yield session
    finally:
        session.close()


class ImapSession:
    """An imaplib connection with bulletin's TLS policy and error messages.

    ``ssl_context`` replaces the default verifying context (tests trust their own CA with
    it); certificates are always verified.
    """

    def __init__(self, settings: ImapSettings, ssl_context: ssl.SSLContext | None) -> None:
        self.url = settings.url
        self._password = settings.password
        self._timeout = settings.timeout
        self._context = ssl_context or ssl.create_default_context()
        self._client: imaplib.IMAP4 | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._tags = 0

    @property
    def client(self) -> imaplib.IMAP4:
        assert self._client is not None, "not connected"
        return self._client

    @property
    def can_idle(self) -> bool:
        return "IDLE" in self._capabilities

    # connection and login

    def open(self) -> None:
        url = self.url
        try:
            if url.scheme == "imaps":
                self._client = imaplib.IMAP4_SSL(
                    url.host, url.port, ssl_context=self._context, timeout=self._timeout
                )
                tls = True
            else:
                self._client = imaplib.IMAP4(url.host, url.port, timeout=self._timeout)
                tls = self._starttls()
        except ssl.SSLCertVerificationError as exc:
            raise ImapSetupError(
                f"The certificate of {url.address} is not trusted: {exc.verify_message}.",
                hint="Use the name the certificate is issued to in the URL, or make its CA "
                "trusted (SSL_CERT_FILE may name a CA bundle).",
            ) from None
        except (ssl.SSLError, imaplib.IMAP4.error) as exc:
            raise ImapSetupError(
                f"No TLS with {url.address}: {_said(exc)}.",
                hint="imaps:// expects TLS from the start (port 993), imap:// STARTTLS (port 143).",
            ) from None
        except ConnectionRefusedError:
            raise ImapUnreachable(
                f"No IMAP server answers at {url.address} (connection refused).",
                hint="Check the host and port in the URL.",
            ) from None
        except (TimeoutError, OSError) as exc:
            raise ImapUnreachable(
                f"Cannot reach {url.address}: {getattr(exc, 'strerror', None) or exc}.",
                hint="Check the host name and the network.",
            ) from None
        self._capabilities = self._read_capabilities()
        self._login(tls)

    def _starttls(self) -> bool:
        client = self.client
        offered = "STARTTLS" in client.capabilities
        if not offered:
            if is_loopback(self.url.host):
                return False
            raise ImapSetupError(
                f"{self.url.address} does not offer STARTTLS, and bulletin sends no password "
                "over an unencrypted connection to another machine.",
                hint="Use imaps:// (port 993) if the server has it.",
            )
        client.starttls(ssl_context=self._context)
        return True

    def _read_capabilities(self) -> frozenset[str]:
        return frozenset(str(c).upper() for c in self.client.capabilities)

    def _login(self, tls: bool) -> None:
        client = self.client
        user = self.url.user
        if not tls and "LOGINDISABLED" in self._capabilities:
            raise ImapSetupError(
                f"{self.url.address} refuses logins without TLS and offers no STARTTLS.",
                hint="Use imaps:// if the server has it.",
            )
        try:
            if user.isascii() and self._password.isascii():
                client.login(user, self._password)
            else:
                secret = f"\0{user}\0{self._password}".encode()
                client.authenticate("PLAIN", lambda _challenge: secret)
        except imaplib.IMAP4.abort as exc:
            raise ImapUnreachable(f"{self.url.address} closed the connection: {exc}.") from None
        except imaplib.IMAP4.error as exc:
            # The server's text ("[AUTHENTICATIONFAILED] ..."), never the command we sent.
            raise ImapSetupError(
                f"{self.url.address} refused the login of {user}: {_said(exc)}.",
                hint="Check the user in the URL and the password in BULLETIN_IMAP_PASSWORD "
                "or imap.password_file.",
            ) from None
        # Servers announce more after login (MOVE, UIDPLUS...); imaplib keeps the first list.
        with self._network():
            typ, data = client.capability()
        if typ == "OK" and data and data[0]:
            self._capabilities = frozenset(
                _bytes(data[0]).decode("ascii", "replace").upper().split()
            )

    def close(self) -> None:
        client = self._client
        self._client = None
        if client is None:
            return
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            # The connection broke: imaplib's logout raised before closing the socket.
            with suppress(OSError):
                client.shutdown()

    # commands

    def _ok(
        self, what: str, response: tuple[str, list[Any]], *, gone_is_ok: bool = False
    ) -> list[Any]:
        typ, data = response
        # RFC 5530: some messages were expunged meanwhile -- by another run that moved them
        # first, or by a person. For a move or a flag that is the outcome we wanted.
        if typ == "NO" and gone_is_ok and b"[EXPUNGEISSUED]" in b" ".join(map(_bytes, data)):
            return data
        if typ != "OK":
            raise ImapSetupError(f"{self.url.address} refused to {what}: {_text(data)}.")
        return data

    @contextmanager
    def _network(self) -> Iterator[None]:
        try:
            yield
        except imaplib.IMAP4.abort as exc:
            raise ImapUnreachable(f"The connection to {self.url.address} broke: {exc}.") from None
        except (TimeoutError, OSError) as exc:
            raise ImapUnreachable(
                f"The connection to {self.url.address} broke: {exc.strerror or exc}."
            ) from None

    def select(self, folder: str, *, readonly: bool) -> None:
        with self._network():
            typ, data = self.client.select(quote_mailbox(folder), readonly=readonly)
        if typ != "OK":
            raise ImapSetupError(
                f"There is no folder {folder!r} for {self.url.user} at {self.url.address}: "
                f"{_text(data)}.",
                hint="Check the folder at the end of the URL (INBOX, or Bounces...).",
            )

    def search(self, criteria: str) -> list[int]:
        with self._network():
            data = self._ok("search", self.client.uid("SEARCH", criteria))
        return sorted(int(n) for n in b" ".join(d for d in data if d).split())

    def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The bytes of each message, read with BODY.PEEK (no \\Seen is set)."""
        with self._network():
            data = self._ok("fetch", self.client.uid("FETCH", _uid_set(uids), "(BODY.PEEK[])"))
        out: dict[int, bytes] = {}
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                found = re.search(rb"UID (\d+)", item[0])
                if found:
                    out[int(found.group(1))] = item[1]
        return out

    def ensure_folder(self, folder: str) -> None:
        name = quote_mailbox(folder)
        with self._network():
            typ, data = self.client.list('""', name)
            if typ == "OK" and any(d for d in data):
                return
            typ, data = self.client.create(name)
        if typ != "OK" and b"ALREADYEXISTS" not in b" ".join(_bytes(d) for d in data):
            raise ImapSetupError(
                f"{self.url.address} refused to create the folder {folder!r}: {_text(data)}.",
                hint='Create it by hand, or set imap.processed_action = "flag".',
            )

    def move(self, uids: Sequence[int], folder: str) -> None:
        """Move messages by UID: MOVE if offered, else COPY, \\Deleted and UID EXPUNGE."""
        name = quote_mailbox(folder)
        which = _uid_set(uids)
        with self._network():
            if "MOVE" in self._capabilities:
                self._ok(
                    f"move messages to {folder!r}",
                    self.client.uid("MOVE", which, name),
                    gone_is_ok=True,
                )
                return
            self._ok(
                f"copy messages to {folder!r}",
                self.client.uid("COPY", which, name),
                gone_is_ok=True,
            )
            self._ok(
                "mark messages deleted",
                self.client.uid("STORE", which, "+FLAGS.SILENT", r"(\Deleted)"),
            )
            if "UIDPLUS" in self._capabilities:
                self._ok("expunge messages", self.client.uid("EXPUNGE", which))
            # Without UIDPLUS a plain EXPUNGE would also remove what others marked deleted:
            # the copies stay marked \Deleted (and are skipped) until the server expunges.

    def flag(self, uids: Sequence[int]) -> None:
        flags = rf"(\Seen {PROCESSED_KEYWORD})"
        with self._network():
            self._ok(
                "flag messages",
                self.client.uid("STORE", _uid_set(uids), "+FLAGS.SILENT", flags),
                gone_is_ok=True,
            )

    def noop(self) -> None:
        with self._network():
            self.client.noop()

    def idle(self, seconds: float, stopped: Callable[[], bool]) -> bool:
        """Wait with IDLE (RFC 2177) until new mail, ``seconds`` pass or ``stopped()``.

        imaplib has no IDLE before Python 3.14, so the exchange is written here, on the
        socket itself: a timeout on imaplib's buffered reader would break it for good, while
        ``select`` can wait a second at a time to look at ``stopped``. Returns whether the
        server announced new messages.
        """
        sock = self.client.sock
        self._tags += 1
        tag = f"BLT{self._tags}".encode()
        news = False
        with self._network():
            sock.sendall(tag + b" IDLE\r\n")
            while not (line := _read_line(sock)).startswith(b"+"):
                if line.startswith(tag + b" "):
                    # Refused after all: poll from now on rather than ask again at once.
                    self._capabilities -= {"IDLE"}
                    return False
                news = news or _NEW_MAIL.match(line) is not None
            deadline = time.monotonic() + seconds
            while not news and not stopped() and time.monotonic() < deadline:
                if not _readable(sock, 1.0):
                    continue
                news = _NEW_MAIL.match(_read_line(sock)) is not None
            sock.sendall(b"DONE\r\n")
            while not _read_line(sock).startswith(tag + b" "):
                pass  # untagged lines before the end of IDLE: the next pass reads the folder
        return news


_NEW_MAIL = re.compile(rb"\* \d+ (EXISTS|RECENT)")


def _readable(sock: socket.socket, wait: float) -> bool:
    # TLS may hold decrypted bytes that select() cannot see.
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    return bool(select.select([sock], [], [], wait)[0])


def _read_line(sock: socket.socket) -> bytes:
    """One line, byte by byte: nothing is read ahead of imaplib's own reader."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            raise imaplib.IMAP4.abort("the server closed the connection")
        line += byte
        if len(line) > 65536:
            raise imaplib.IMAP4.abort("an endless line from the server")
    return bytes(line)


def quote_mailbox(name: str) -> str:
    """A folder name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    wide: list[str] = []

    def flush() -> None:
        if wide:
            raw = "".join(wide).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ","))
            out.append("-")
            wide.clear()

    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            wide.append(ch)
    flush()
    text = "".join(out).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(u) for u in uids)


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple):
        return b" ".join(_bytes(v) for v in value)
    return str(value).encode()


def _text(data: list[Any]) -> str:
    text = b" ".join(_bytes(d) for d in data if d).decode("utf-8", "replace")
    return text.strip().rstrip(".") or "no reason"


def _said(exc: BaseException) -> str:
    """What the server said in an imaplib error (which quotes the reply as b'...')."""
    text = str(exc)
    found = re.fullmatch(r"""b(['"])(.*)\1""", text.strip())
    return found.group(2) if found else text
