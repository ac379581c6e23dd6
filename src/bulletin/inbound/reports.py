"""What an inbound message says: a bounce (hard or soft), a complaint, or nothing of ours.

Pure: bytes in, a :class:`Report` out; no database, no tokens. Recognised, in order:

* ARF feedback reports (RFC 5965, ``multipart/report; report-type=feedback-report``): a spam
  complaint, except ``not-spam`` and ``auth-failure`` reports;
* delivery status notifications (RFC 3464 ``message/delivery-status`` and RFC 6533
  ``message/global-delivery-status``), read recipient by recipient: ``Action: failed`` is a
  bounce, ``delayed`` is a warning, ``delivered``/``relayed``/``expanded`` are receipts;
* auto-replies (RFC 3834 ``Auto-Submitted``, vacation headers and subjects) are not bounces;
* anything else goes to flufl.bounce, whose detectors know many non-standard formats (Exim,
  qmail, old Exchange...); the failed address's paragraph in the text gives the diagnostic.

A failure is *hard* (the address is gone: status 5.x.x) or *soft* (status 4.x.x after the
sending server gave up, a full mailbox, a policy rejection); see :func:`severity`.
"""

from __future__ import annotations

import email
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from typing import Literal

from flufl.bounce import all_failures

from bulletin.inbound.addresses import addresses, header, header_values, recipients

Verdict = Literal["bounce", "complaint", "delayed", "receipt", "feedback", "auto-reply", "other"]
"""``bounce`` and ``complaint`` act on subscribers; ``delayed`` (a warning, the server keeps
trying), ``receipt`` (delivered/relayed) and ``feedback`` (a report that is not a complaint)
are reports to ignore; ``auto-reply`` and ``other`` are not reports at all."""

Severity = Literal["hard", "soft"]

DIAGNOSTIC_CHARS = 500
"""Longest diagnostic kept (a few MTAs quote whole SMTP transcripts)."""

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_BASIC = re.compile(r"(?<![\d.])([245])\d\d(?=[ -])")
# "550-5.1.1 " at the start of each continuation line of a multi-line SMTP reply.
_CONTINUATION = re.compile(r"\s+[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s+)?")
# Subjects (X.Y.Z: the Y.Z) that say "not now" rather than "never", whatever the class:
# RFC 3463 calls a full mailbox (2.2) and a full mail system (3.1) persistent transient
# failures, 4.7 is "delivery time expired" (a server gave up retrying), and 7.x policy
# rejections (blocklists, DMARC, content filters) judge the sender more than the address --
# a blocked newsletter must not wipe out every subscriber of one provider at once. They are
# soft: an address that keeps failing this way is still suppressed after bounces.soft_limit.
_SOFT_SUBJECTS = {("2", "2"), ("3", "1"), ("4", "7")}
_ORIGINAL_MARKERS = re.compile(
    r"^\s*-+\s*(?:This is a copy of the message|Original message|"
    r"Below this line is a copy of the message|The header of the original message)",
    re.I | re.M,
)
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery", re.I)
_AUTO_SUBJECT = re.compile(
    r"^(?:out of (?:the )?office|automatic reply|auto(?:matic)?[ -]?(?:reply|response)|"
    r"autoreply|auto:|r[ăa]spuns automat|absent|abwesend|vacation|on leave)",
    re.I,
)
_NOT_COMPLAINTS = {"not-spam", "auth-failure"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """One recipient a bounce reports: the address, how bad, and the server's words."""

    address: str
    severity: Severity
    status: str
    diagnostic: str


@dataclass(frozen=True)
class MessageHead:
    """Where a report came from and what it carries about the message it reports on.

    ``original`` holds the returned message's headers when the report includes them.
    """

    message_id: str
    date: datetime | None
    delivered_to: tuple[str, ...]
    original: Message | None


@dataclass(frozen=True)
class Report:
    """What one message says, and what is needed to find whom it is about.

    ``failures`` lists the recipients of a ``bounce``; ``complaint_addresses`` the candidates
    of a ``complaint`` (``Original-Rcpt-To``, then the original's ``To``).
    """

    verdict: Verdict
    head: MessageHead
    failures: tuple[Failure, ...] = ()
    complaint_type: str = ""
    complaint_detail: str = ""
    complaint_addresses: tuple[str, ...] = ()
    original_mail_from: tuple[str, ...] = ()
    note: str = ""

    def worst(self) -> Failure | None:
        """The failure that decides what happens to a subscriber named by a token."""
        if not self.failures:
            return None
        return min(self.failures, key=lambda f: (f.severity != "hard", not f.diagnostic))


def parse(data: bytes) -> Message:
    """A message object for ``data``, as forgiving as the mail it reads.

    ``compat32``: bounces carry broken headers, 8-bit bytes and nonsense dates that the
    modern policy may refuse while parsing lazily; flufl.bounce expects this API too.
    """
    return email.message_from_bytes(data, policy=compat32)


def message_key(msg: Message, data: bytes) -> str:
    """What identifies a message across runs: its Message-ID, else a hash of its bytes."""
    raw = header(msg, "message-id")
    match = re.search(r"<[^<>\s]+>", raw)
    if match and len(match.group(0)) <= 250:
        return match.group(0)
    return "sha256:" + hashlib.sha256(data).hexdigest()[:32]


def message_date(msg: Message) -> datetime | None:
    """The ``Date`` header as a UTC datetime, or None when missing or unreadable."""
    raw = header(msg, "date")
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 5322's -0000: "UTC, offset unknown"
    return when.astimezone(UTC)


def analyse(msg: Message) -> Report:
    """Classify ``msg`` (see the module docstring)."""
    parts = list(_report_parts(msg))
    head = MessageHead(
        header(msg, "message-id"), message_date(msg), tuple(recipients(msg)), _original(parts)
    )
    feedback = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if feedback is not None:
        return _feedback(feedback, head)
    status_parts = [
        p
        for p in parts
        if p.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
    ]
    if status_parts:
        return _dsn(status_parts, head)
    if _is_auto_reply(msg):
        return Report("auto-reply", head)
    return _heuristic(msg, parts, head)


# --- parts -----------------------------------------------------------------------------


def _report_parts(msg: Message) -> Iterator[Message]:
    """The message and its MIME parts, without going into attached messages.

    An attached original can itself be a newsletter with any structure; only the report's
    own parts say what happened.
    """
    yield msg
    if msg.get_content_maintype() == "multipart" and isinstance(msg.get_payload(), list):
        for sub in msg.get_payload():
            if isinstance(sub, Message):
                yield from _report_parts(sub)


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", "replace")


def _headers_from_text(text: str) -> Message:
    return HeaderParser(policy=compat32).parsestr(text, headersonly=True)


def _original(parts: list[Message]) -> Message | None:
    """The headers of the message that bounced or was reported, when the report has them."""
    for part in parts:
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global", "message/global-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str):
                return _headers_from_text(payload)
        if kind == "text/rfc822-headers":
            return _headers_from_text(_text(part))
    # Plain-text bounces (Exim, qmail) quote the original after a marker line.
    for part in parts:
        if part.get_content_type() == "text/plain":
            text = _text(part)
            match = _ORIGINAL_MARKERS.search(text)
            if match:
                rest = text[match.end() :].partition("\n")[2].lstrip("\n")
                found = _headers_from_text(rest)
                if len(found):
                    return found
    return None


def _field_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status or feedback-report part.

    The email package splits ``message/delivery-status`` into blocks itself; any other
    ``message/*`` type (``global-delivery-status``, ``feedback-report``) it parses as one
    message whose headers are the first block and whose body holds the rest.
    """
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    blocks: list[Message] = []
    body: Message = part
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        blocks.append(payload[0])
        body = payload[0]
    # The bytes, not get_payload()'s text: that would turn the UTF-8 of a global DSN
    # (RFC 6533) into replacement characters. Undecodable bytes stay surrogates, which
    # header() reads back as UTF-8 like every other header.
    raw = body.get_payload(decode=True)
    rest = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else ""
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", rest):
        if chunk.strip():
            blocks.append(_headers_from_text(chunk.strip("\r\n") + "\n"))
    return blocks


# --- delivery status notifications -------------------------------------------------------


def _dsn(status_parts: list[Message], head: MessageHead) -> Report:
    failures: list[Failure] = []
    delayed = receipts = 0
    for part in status_parts:
        for block in _field_blocks(part):
            action = header(block, "action").lower()
            if not action:
                continue  # the per-message block (Reporting-MTA, Arrival-Date)
            found = addresses(
                header_values(block, "original-recipient") + header_values(block, "final-recipient")
            )
            # Final-Recipient is the address the server tried; Original-Recipient, when
            # present, is the one we sent to (before aliasing).
            address = found[0] if found else ""
            if action.startswith(("fail", "error")):  # OpenSMTPD writes "error"
                status = _status(header(block, "status"))
                diagnostic = _diagnostic(header(block, "diagnostic-code"))
                if not status:
                    status = _status(diagnostic)
                failures.append(
                    Failure(
                        address, severity(status, diagnostic), status, _detail(status, diagnostic)
                    )
                )
            elif action.startswith("delayed"):
                delayed += 1
            else:
                receipts += 1
    if failures:
        return Report("bounce", head, failures=tuple(failures))
    if delayed:
        note = "delivery delayed; the server keeps trying"
        return Report("delayed", head, note=note)
    note = "delivery receipt" if receipts else "delivery report without recipients"
    return Report("receipt", head, note=note)


def _status(text: str) -> str:
    """The first enhanced status code (RFC 3463 ``X.Y.Z``) in ``text``, or ``""``."""
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else ""


def _diagnostic(text: str) -> str:
    """A diagnostic code as one readable line: ``smtp;`` dropped, reply lines joined."""
    kind, sep, rest = text.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z][A-Za-z0-9-]*\s*", kind):
        text = rest
    text = " ".join(text.split())
    # "550-5.1.1 The email account ... Please try 550-5.1.1 double-checking ...": keep the
    # first reply code, drop the repeats that start each continuation line.
    head = _BASIC.match(text)
    if head:
        first, _, body = text.partition(" ")
        text = first.replace("-", " ", 1) + " " + _CONTINUATION.sub(" ", " " + body).strip()
    return text


def _detail(status: str, diagnostic: str) -> str:
    detail = diagnostic if not status or status in diagnostic else f"{status} {diagnostic}"
    detail = detail.strip() or status
    if len(detail) > DIAGNOSTIC_CHARS:
        detail = detail[: DIAGNOSTIC_CHARS - 1].rstrip() + "…"
    return detail


def severity(status: str, diagnostic: str = "") -> Severity:
    """Hard or soft, for a recipient a server reported as failed.

    The status class decides (5: hard, 4: soft; a basic SMTP code in the diagnostic when
    there is no status; hard when there is neither, since the server gave up), except the
    subjects that mean "not now" (see ``_SOFT_SUBJECTS``), which are soft in any class.
    """
    if status:
        klass, subject, detail = status.split(".")
        if subject == "7" or (subject, detail) in _SOFT_SUBJECTS:
            return "soft"
        return "soft" if klass == "4" else "hard"
    basic = _BASIC.search(diagnostic)
    if basic and basic.group(1) == "4":
        return "soft"
    return "hard"


# --- feedback reports (complaints) -----------------------------------------------------


def _feedback(part: Message, head: MessageHead) -> Report:
    blocks = _field_blocks(part)
    fields = blocks[0] if blocks else Message()
    kind = header(fields, "feedback-type").lower() or "abuse"
    agent = header(fields, "user-agent")
    if kind in _NOT_COMPLAINTS:
        note = f"feedback report of type {kind} (not a complaint)"
        return Report("feedback", head, note=note)
    candidates = addresses(
        header_values(fields, "original-rcpt-to") + header_values(fields, "removal-recipient")
    )
    if head.original is not None:
        candidates += [a for a in recipients(head.original) if a not in candidates]
    detail = f"spam complaint (Feedback-Type: {kind}" + (f", {agent})" if agent else ")")
    return Report(
        "complaint",
        head,
        complaint_type=kind,
        complaint_detail=detail,
        complaint_addresses=tuple(candidates),
        original_mail_from=tuple(addresses(header_values(fields, "original-mail-from"))),
    )


# --- everything else -------------------------------------------------------------------


def _is_auto_reply(msg: Message) -> bool:
    """An out-of-office or other automatic answer from a person's mailbox, not a server."""
    if _DAEMON.search(header(msg, "from")) or header(msg, "x-failed-recipients"):
        return False  # bounces are auto-replied too (RFC 3834), but come from the system
    auto = header(msg, "auto-submitted").lower()
    if auto.startswith("auto-replied"):
        return True
    if any(header(msg, h) for h in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        return True
    if header(msg, "precedence").lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(header(msg, "subject")))


def _heuristic(msg: Message, parts: list[Message], head: MessageHead) -> Report:
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # noqa: BLE001 - third-party heuristics on arbitrary mail
        # One detector choking on one odd message must not stop an import of thousands.
        log.debug("flufl.bounce failed on a message: %r", exc)
        return Report("other", head, note=f"unreadable ({exc!r})")
    if not permanent:
        if temporary:
            note = "delivery delayed; the server keeps trying"
            return Report("delayed", head, note=note)
        return Report("other", head)
    text = "\n".join(_text(p) for p in parts if p.get_content_type() == "text/plain")
    text = _ORIGINAL_MARKERS.split(text, maxsplit=1)[0]
    failures = []
    for raw in sorted(permanent):
        address = raw.decode("ascii", "replace")
        diagnostic = _paragraph_about(text, address)
        status = _status(diagnostic)
        failures.append(
            Failure(address, severity(status, diagnostic), status, _detail(status, diagnostic))
        )
    return Report("bounce", head, failures=tuple(failures))


def _paragraph_about(text: str, address: str) -> str:
    """What a plain-text bounce says about ``address``: the lines indented under it.

    Exim writes the address on its own line and the reason indented below; Postfix writes
    ``<address>: reason`` and indents the continuation. The first paragraph that carries a
    status or reply code wins; else the first mention's.
    """
    lines = text.splitlines()
    first = ""
    needle = address.lower()
    for i, line in enumerate(lines):
        if needle not in line.lower():
            continue
        indent = len(line) - len(line.lstrip())
        block = [line.strip()]
        for following in lines[i + 1 :]:
            if not following.strip() or len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        paragraph = " ".join(block)
        # Drop the address the paragraph starts with ("<a@b>: host ... said:" / "a@b").
        paragraph = re.sub(
            r"^<?" + re.escape(address) + r">?:?\s*", "", paragraph, flags=re.I
        ).strip()
        if not paragraph:
            continue
        if _ENHANCED.search(paragraph) or _BASIC.search(paragraph):
            return paragraph
        first = first or paragraph
    return first
