"""The seam between the send engine and whatever delivers bytes (SMTP, a Maildir).

The engine never imports smtplib: it opens connections from a :class:`Transport`, hands each
one :class:`Envelope` at a time and acts on the :class:`Delivery` it gets back. Transports
classify replies; the engine decides what a class means for the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Outcome = Literal["sent", "deferred", "failed"]


@dataclass(frozen=True)
class Envelope:
    """One message for one recipient, ready for the wire."""

    mail_from: str
    rcpt_to: str
    data: bytes
    """The whole message, CRLF line endings, not dot-stuffed (unless ``stuffed``)."""
    message_id: str
    smtputf8: bool = False
    """The recipient's address needs SMTPUTF8 (non-ASCII local part)."""
    stuffed: bool = False
    """``data`` is already what SMTP DATA carries: dot-stuffed and ending with the ``.``
    line (see :meth:`bulletin.mail.compose.MessageTemplate.wire`). The send engine asks
    for this; everything that reads or stores the message itself does not."""


@dataclass(frozen=True)
class Delivery:
    """What happened to one envelope.

    ``outcome`` is ``sent`` (2xx after DATA), ``deferred`` (4xx, timeouts, dropped
    connections: try again later) or ``failed`` (5xx or a recipient this relay can never
    take: never retried). ``reconnect`` tells the engine the connection is unusable (421,
    disconnect, timeout) and must be replaced before the next message.
    """

    outcome: Outcome
    code: int | None = None
    reply: str = ""
    reconnect: bool = False


class Connection(Protocol):
    """One open session with the relay, carrying many messages in turn."""

    def send(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope; never raises for SMTP-level or network failures."""
        ...

    def close(self) -> None:
        """Quit politely if possible; never raises."""
        ...


class Transport(Protocol):
    """A factory of connections, shared by the engine's workers."""

    description: str
    """Human-readable target, e.g. ``smtp://127.0.0.1:2525 (STARTTLS)``, for plans and logs."""

    def connect(self) -> Connection:
        """Open a new connection.

        Raises :class:`bulletin.errors.BulletinError` subclasses only for configuration
        problems that no retry can fix (bad credentials, TLS required but not offered);
        raises :class:`ConnectFailed` when the server cannot be reached right now.
        """
        ...


class ConnectFailed(Exception):
    """The relay could not be reached or refused the session; worth retrying later."""

    def __init__(self, reply: str, code: int | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.code = code
