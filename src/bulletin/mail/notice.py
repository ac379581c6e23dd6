"""One-off messages to one person: the sign-up confirmation and the welcome mail.

An issue goes to many and is compiled once (:mod:`bulletin.mail.compose`); a notice goes to
one address and is built whole. It carries the usual headers -- From and Reply-To from
bulletin.toml, To, an RFC 2047 Subject folded by :mod:`bulletin.mail.headers` (the same rules
as an issue's), Date and a random Message-ID at the sender's domain -- and a
multipart/alternative body (plain text, then HTML), both quoted-printable UTF-8. It has no
List-Unsubscribe: it is not list mail, and a confirmation link must not sit where mail
providers follow links by themselves.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from bulletin.mail import headers as h
from bulletin.workspace import Config


@dataclass(frozen=True)
class Notice:
    """A finished notice: the bytes for DATA and what the envelope needs."""

    data: bytes
    """CRLF line ends, not dot-stuffed."""
    mail_from: str
    rcpt_to: str
    message_id: str
    smtputf8: bool


def build_notice(
    config: Config,
    *,
    to_email: str,
    to_name: str,
    subject: str,
    text: str,
    html: str,
    date: datetime | None = None,
) -> Notice:
    """The message for ``to_email``; :class:`~bulletin.mail.headers.HeaderValueError` if the
    address cannot be put in a header (the store's rules make that a bug)."""
    sender = config.sender
    from_email = h.wire_address(sender.from_email)
    domain = from_email.rpartition("@")[2].lower()
    rcpt = h.wire_address(to_email)
    message_id = f"<notice.{secrets.token_hex(12)}@{domain}>"
    when = date or datetime.now(UTC)
    head = [
        h.address_header("From", h.sanitise_display_name(sender.from_name), from_email),
        h.address_header("To", h.sanitise_display_name(to_name), rcpt),
        h.fold("Subject", h.text_pieces(h.clean_text(subject))),
        f"Date: {format_datetime(when)}\r\n",
        f"Message-ID: {message_id}\r\n",
    ]
    if sender.reply_to:
        head.append(f"Reply-To: {h.wire_address(sender.reply_to)}\r\n")
    # Ask auto-responders to stay quiet (RFC 3834): nobody reads their answer to a notice.
    head.append("Auto-Submitted: auto-generated\r\n")
    body = EmailMessage(policy=SMTP)
    body.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    body.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    # MIME-Version and Content-Type come from the body's own headers.
    data = "".join(head).encode("utf-8") + body.as_bytes(policy=SMTP)
    return Notice(
        data=data,
        mail_from=h.wire_address(sender.return_path)
        if sender.return_path and "{token}" not in sender.return_path
        else from_email,
        rcpt_to=rcpt,
        message_id=message_id,
        smtputf8=h.needs_smtputf8(rcpt),
    )
