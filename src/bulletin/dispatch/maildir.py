"""The Maildir transport: "delivers" each envelope into a local Maildir, no network.

For dry runs and tests: the engine runs exactly as it would against a relay, and every
message lands as a file that any mail client or :func:`bulletin.sink.list_captured` reads.
"""

from __future__ import annotations

import mailbox
import threading
from pathlib import Path

from bulletin.dispatch.transport import Delivery, Envelope
from bulletin.errors import BulletinError


class MaildirTransport:
    """Writes each envelope into the Maildir at ``path`` (created if missing).

    A message is stored as sent, byte for byte (CRLF line ends, as on the wire), after two
    header lines a delivering server would add: ``Return-Path: <mail_from>`` and
    ``Delivered-To: rcpt_to``. The outcome is always ``sent``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.description = f"Maildir {self.path} (no network)"
        try:
            # mailbox creates the Maildir folder itself but not its parents.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._maildir = mailbox.Maildir(self.path, factory=None, create=True)
        except OSError as exc:
            raise BulletinError(
                f"Cannot create the Maildir {self.path}: {exc.strerror or exc}."
            ) from None
        # mailbox names files from the time, pid and a class-wide counter that threads
        # would increment racily; the engine's workers share this transport.
        self._lock = threading.Lock()
        self.count = 0
        """Messages written by this transport."""

    def __repr__(self) -> str:
        return f"MaildirTransport({str(self.path)!r})"

    def connect(self) -> MaildirConnection:
        """A connection that writes into this Maildir (opening one never fails)."""
        return MaildirConnection(self)

    def deliver(self, envelope: Envelope) -> str:
        """Store one envelope; return its Maildir key."""
        for address in (envelope.mail_from, envelope.rcpt_to):
            if "\r" in address or "\n" in address:
                raise ValueError(f"line break in an envelope address: {address!r}")
        head = (
            f"Return-Path: <{envelope.mail_from}>\r\nDelivered-To: {envelope.rcpt_to}\r\n"
        ).encode("utf-8", "surrogateescape")
        with self._lock:
            key = self._maildir.add(head + envelope.data)
            self.count += 1
        return key


class MaildirConnection:
    """A "session" with a Maildir: every send is a file write."""

    def __init__(self, transport: MaildirTransport) -> None:
        self._transport = transport

    def send(self, envelope: Envelope) -> Delivery:
        """Write the message; a write error is reported like a relay's temporary failure."""
        try:
            key = self._transport.deliver(envelope)
        except OSError as exc:
            # A full disk is the Maildir's "452 insufficient storage": try again later.
            return Delivery("deferred", None, f"cannot write the Maildir: {exc.strerror or exc}")
        except ValueError as exc:
            return Delivery("failed", None, str(exc))
        return Delivery("sent", 250, f"250 stored as {key}")

    def close(self) -> None:
        """Nothing to close; files are complete once send returns."""
