"""Compile a rendered issue once into a message template; personalise it per recipient.

:func:`build_message_template` builds one ``EmailMessage`` with ``email.policy.SMTP`` --
Reply-To, MIME-Version, the multipart/alternative structure, part headers, boundary -- with
sentinel header lines where :mod:`bulletin.mail.headers` formats the rest (From, Subject and
List-Id once; To, Date, Message-ID and List-Unsubscribe per recipient) and marker bodies
where the parts go. It is serialised once and cut into static byte chunks.
:meth:`MessageTemplate.personalise` then only joins bytes: static chunks, four header lines
and the body slots.

The bodies are quoted-printable, encoded segment by segment: every static chunk and every
filled value is encoded on its own, starting at column 0, and a segment that ends mid-line
is closed by a QP *soft* line break (``=`` CRLF), which decoders remove. So a value of any
length can be inserted without re-encoding the 40 KB around it, every line stays within
RFC 2045's 76 characters, and the decoded text is exactly ``CompiledTemplate.fill(values)``
(line breaks normalised to CRLF with a final one, as ``EmailMessage.set_content`` does).
"""

from __future__ import annotations

import binascii
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from urllib.parse import urlsplit

from bulletin.errors import BulletinError
from bulletin.mail import headers as h
from bulletin.render.slots import CompiledTemplate, SlotSpec
from bulletin.render.types import RenderedIssue
from bulletin.workspace import Config

Signer = Callable[[bytes], bytes]
"""Takes a finished message and returns the bytes to send (e.g. with a DKIM-Signature
header prepended). The seam for DKIM: :func:`build_message_template` accepts one."""

_SENTINEL = "X-Bulletin-Slot"
_SENTINEL_RE = re.compile(rb"X-Bulletin-Slot: ([a-z-]+)\r\n")
_TEXT_MARK = "BULLETINBODYTEXTX"
_HTML_MARK = "BULLETINBODYHTMLX"
_DYNAMIC = ("to", "subject", "date", "message-id", "list-unsubscribe")
_SEP = "\x00"
_SOFT = b"=\r\n"
_CRLF = b"\r\n"
_END_DATA = b".\r\n"
# One line of printable ASCII but "=", not starting or ending with a space: quoted-printable
# leaves it as it is (only a line of a single "." would still be encoded, as =2E).
_QP_PLAIN = re.compile(r"[!-<>-~](?:[ !-<>-~]*[!-<>-~])?")
_CACHE_SIZE = 512


@dataclass(frozen=True)
class Recipient:
    """One addressee and the values of the per-recipient slots.

    ``values`` holds the slot values (``name``, ``email``, ``first_name``,
    ``unsubscribe_url``, ``view_online_url``, ``attr.<key>``) plus ``unsubscribe_token``, the
    raw token used for the mailto unsubscribe address, and ``bounce_token`` for VERP.
    ``email`` and ``name`` fill the ``email``/``name`` slots when ``values`` lacks them.
    """

    email: str
    name: str = ""
    values: Mapping[str, str] = field(default_factory=dict)


class InvalidRecipient(BulletinError):
    """A recipient's data cannot be put in a message (bad address, unsafe URL or token)."""

    def __init__(self, email: str, reason: str) -> None:
        self.email = email
        self.reason = reason
        super().__init__(
            f"Cannot compose a message for {email!r}: {reason}.",
            hint="Fix or remove this subscriber; the other recipients are not affected.",
        )


def _fit(q: bytes, last_limit: int) -> bytes:
    """Re-wrap ``b2a_qp`` output (LF line ends) so every line is within 76 characters.

    ``b2a_qp`` fills lines to 76 but then may encode trailing whitespace as ``=20``/``=09``
    past that (up to 78), and the caller may need room for one more ``=`` on the last line
    (``last_limit`` 75). Over-long lines are cut between units (a character or an ``=XX``
    escape) with soft line breaks.
    """
    lines = q.split(b"\n")
    last = len(lines) - 1
    if all(len(line) <= (last_limit if i == last else 76) for i, line in enumerate(lines)):
        return q
    out: list[bytes] = []
    for i, line in enumerate(lines):
        limit = last_limit if i == last else 76
        if len(line) <= limit:
            out.append(line)
            continue
        soft = line.endswith(b"=")  # "=" ends a line only as a soft break
        body = line[:-1] if soft else line
        seg_start = pos = 0
        n = len(body)
        while pos < n:
            unit = 3 if body[pos] == 0x3D else 1  # "=XX"
            if pos + unit - seg_start > 75:
                out.append(body[seg_start:pos] + b"=")
                seg_start = pos
            pos += unit
        tail = body[seg_start:]
        if soft:
            tail += b"="
        out.append(tail)
    return b"\n".join(out)


def _qp_segment(text: str) -> bytes:
    """``text`` quoted-printable from column 0, closed by a hard or soft line break.

    Values never contain CR here (see _BodyPart.render), so ``b2a_qp`` writes LF line ends,
    which become CRLF at the end.
    """
    if not text:
        return b""
    if len(text) <= 75 and text != "." and _QP_PLAIN.fullmatch(text) is not None:
        # What b2a_qp gives such a value (links, tokens, most names): itself, and the soft
        # break. Each recipient has a few of these; the encoder costs more than the check.
        return text.encode("ascii") + _SOFT
    q = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    hard = q.endswith(b"\n")
    if len(q) > 75:
        q = _fit(q, 76 if hard else 75)  # a soft break must still fit on the last line
    if not hard:
        q += b"=\n"
    return q.replace(b"\n", b"\r\n")


def _qp_whole(text: str) -> bytes:
    """A whole part body the way ``set_content`` normalises it, quoted-printable."""
    data = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    return _fit(binascii.b2a_qp(data, istext=True), 76).replace(b"\n", b"\r\n")


def stuff_dots(data: bytes) -> bytes:
    """``data`` with one more '.' before every line that starts with one (RFC 5321 4.5.2).

    A dot after any LF counts, bare or not (smtplib's rule), so that a stray bare LF cannot
    end the data early at a server that takes LF as a line end. The one home of the rule:
    the SMTP transport applies it to whole messages, :meth:`MessageTemplate.wire` once per
    issue to the bytes everyone shares and per message only to the recipient's own.
    """
    stuffed = data.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed


class _BodyPart:
    """One text or HTML part: its chunks pre-encoded, its slots filled per recipient."""

    __slots__ = (
        "template",
        "chunks",
        "stuffed",
        "slot_index",
        "n",
        "values_template",
        "single",
        "mode",
        "cache",
    )

    def __init__(self, template: CompiledTemplate) -> None:
        self.template = template
        specs: list[SlotSpec] = list(dict.fromkeys(template.slots))
        index = {s: i for i, s in enumerate(specs)}
        self.slot_index = tuple(index[s] for s in template.slots)
        self.n = len(specs)
        # Every distinct slot is escaped by CompiledTemplate.fill itself -- one fill of a
        # template made of the distinct slots separated by NUL -- so escaping and fallbacks
        # cannot diverge from the preview and the plain fill.
        separators = ("",) + (_SEP,) * (self.n - 1) + ("",) if specs else ("",)
        self.values_template = CompiledTemplate(separators, tuple(specs), template.escape)
        self.single = tuple(CompiledTemplate(("", ""), (s,), template.escape) for s in specs)
        # Encoded values by value: view_online_url is the same for everyone, and first names
        # repeat. Bounded by clearing, which is cheaper than an LRU and good enough here.
        self.cache: dict[str, bytes] = {}
        chunks = list(template.chunks)
        if any("\r" in c for c in chunks):
            # A CR at a chunk edge could pair with an LF across a slot; not worth the
            # bookkeeping for output no renderer of ours produces.
            self.mode = "whole"
        elif self.n == 0:
            self.mode = "static"
            self.chunks: tuple[bytes, ...] = (_qp_whole(chunks[0]),)
            self.stuffed: tuple[bytes, ...] = (stuff_dots(self.chunks[0]),)
            return
        elif chunks[-1]:
            self.mode = "closed"
            if not chunks[-1].endswith("\n"):
                chunks[-1] += "\n"  # set_content ends every text with a line break
        else:
            self.mode = "open"  # ends with a slot: the final line break depends on the value
        self.chunks = tuple(_qp_segment(c) for c in chunks)
        # Every segment starts a line (each ends with a hard or soft line break), so
        # dot-stuffing them one by one is dot-stuffing the whole body.
        self.stuffed = tuple(stuff_dots(c) for c in self.chunks)

    def render(self, values: Mapping[str, str], out: list[bytes], stuffed: bool = False) -> None:
        """Append this part's encoded body (ending with CRLF) to ``out``; ``stuffed``: as
        SMTP DATA carries it (see :func:`stuff_dots`)."""
        mode = self.mode
        if mode == "static":
            out.append(self.stuffed[0] if stuffed else self.chunks[0])
            return
        if mode == "whole":
            body = _qp_whole(self.template.fill(values))
            out.append(stuff_dots(body) if stuffed else body)
            return
        vals = self.values_template.fill(values).split(_SEP)
        if len(vals) != self.n:  # a value contained NUL
            vals = [t.fill(values) for t in self.single]
        enc: list[bytes] = []
        cache = self.cache
        for v in vals:
            e = cache.get(v)
            if e is None:
                if "\r" in v:
                    # CR/CRLF normalisation may join a value's CR with the next segment's LF.
                    body = _qp_whole(self.template.fill(values))
                    out.append(stuff_dots(body) if stuffed else body)
                    return
                e = _qp_segment(v)
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[v] = e
            enc.append(stuff_dots(e) if stuffed else e)
        chunks = self.stuffed if stuffed else self.chunks
        start = len(out)
        out.append(chunks[0])
        i = 1
        for j in self.slot_index:
            out.append(enc[j])
            out.append(chunks[i])
            i += 1
        if mode == "open":
            k = len(out) - 1
            while k >= start and not out[k]:
                k -= 1
            if k < start:
                out.append(_CRLF)
            elif out[k].endswith(_SOFT):
                out[k] = out[k][:-3] + _CRLF


class MessageTemplate:
    """An issue's message compiled once; :meth:`personalise` gives each recipient's bytes."""

    __slots__ = (
        "slug",
        "subject",
        "from_email",
        "_head",
        "_head_stuffed",
        "_middle_stuffed",
        "_tail_stuffed",
        "_text",
        "_middle",
        "_html",
        "_tail",
        "_msgid_left",
        "_msgid_domain",
        "_mailto",
        "_return_path",
        "_sign",
        "_date_cache",
        "_subject_line",
        "_subject_template",
        "_subject_prefix",
    )

    def __init__(
        self,
        *,
        slug: str,
        subject: str,
        from_email: str,
        head: tuple[bytes, ...],
        text: _BodyPart,
        middle: bytes,
        html: _BodyPart,
        tail: bytes,
        msgid_domain: str,
        mailto: tuple[str, str] | None,
        return_path: str | None,
        sign: Signer | None,
        subject_template: CompiledTemplate | None = None,
        subject_prefix: str = "",
    ) -> None:
        self.slug = slug
        self.subject = subject
        # A subject with merge fields is encoded per recipient (RFC 2047 words of its own
        # value); one without is encoded once.
        personal = subject_template is not None and bool(subject_template.slots)
        self._subject_template = subject_template if personal else None
        self._subject_prefix = subject_prefix
        self._subject_line = b"" if personal else _subject_line(subject)
        self.from_email = from_email
        self._head = head
        self._text = text
        self._middle = middle
        self._html = html
        self._tail = tail
        # Each piece ends with a line break (checked by build_message_template), so each
        # can be dot-stuffed on its own, here, once.
        self._head_stuffed = tuple(stuff_dots(piece) for piece in head)
        self._middle_stuffed = stuff_dots(middle)
        self._tail_stuffed = stuff_dots(tail)
        self._msgid_left = re.sub(r"[^A-Za-z0-9-]+", "-", slug).strip("-")[:40] or "issue"
        self._msgid_domain = msgid_domain
        self._mailto = mailto
        self._return_path = return_path
        self._sign = sign
        self._date_cache: tuple[int, bytes] = (-1, b"")

    def personalise(
        self,
        recipient: Recipient,
        *,
        message_id: str | None = None,
        date: datetime | None = None,
    ) -> bytes:
        """The complete message for one recipient: CRLF line ends, ready for SMTP DATA.

        ``message_id`` overrides :meth:`message_id_for`; ``date`` (default: now, formatted
        once per second) makes output reproducible. Dot-stuffing is the transport's job
        (or see :meth:`wire`). Raises :class:`InvalidRecipient` for data that cannot go in
        a header safely.
        """
        return self._data(recipient, message_id, date, stuffed=False)

    def wire(
        self,
        recipient: Recipient,
        *,
        message_id: str | None = None,
        date: datetime | None = None,
    ) -> bytes:
        """:meth:`personalise`'s message as SMTP DATA carries it: dot-stuffed, ending with
        the ``.`` line.

        The bytes everyone shares were dot-stuffed once, when the template was built; per
        message only the recipient's own pieces are, instead of a pass over the whole
        message (which costs more than building it). A signed message is stuffed whole: the
        signature covers the message as :meth:`personalise` gives it.
        """
        return self._data(recipient, message_id, date, stuffed=True)

    def envelope(
        self,
        recipient: Recipient,
        *,
        message_id: str | None = None,
        date: datetime | None = None,
        wire: bool = False,
    ) -> tuple[str, str, bytes, bool]:
        """``(MAIL FROM, RCPT TO, data, needs SMTPUTF8)`` of one recipient's message.

        What :meth:`envelope_from`, :meth:`envelope_to`, :meth:`personalise` (or, with
        ``wire``, :meth:`wire`) and :meth:`needs_smtputf8` give, with the recipient's
        address checked once rather than by each.
        """
        mail_from = self.envelope_from(recipient)
        rcpt_to = self.envelope_to(recipient)
        data = self._data(recipient, message_id, date, stuffed=wire, rcpt_to=rcpt_to)
        # wire_address() keeps the local part as it is: non-ASCII there needs SMTPUTF8.
        return mail_from, rcpt_to, data, not rcpt_to.rpartition("@")[0].isascii()

    def _data(
        self,
        recipient: Recipient,
        message_id: str | None,
        date: datetime | None,
        *,
        stuffed: bool,
        rcpt_to: str | None = None,
    ) -> bytes:
        if self._sign is not None:
            # The signature covers the message as personalise() gives it: stuffed after.
            out = self._pieces(recipient, message_id, date, stuffed=False, rcpt_to=rcpt_to)
            signed = self._sign(b"".join(out))
            return stuff_dots(signed) + _END_DATA if stuffed else signed
        out = self._pieces(recipient, message_id, date, stuffed=stuffed, rcpt_to=rcpt_to)
        if stuffed:
            out.append(_END_DATA)
        return b"".join(out)

    def _pieces(
        self,
        recipient: Recipient,
        message_id: str | None,
        date: datetime | None,
        *,
        stuffed: bool,
        rcpt_to: str | None = None,
    ) -> list[bytes]:
        """The message in pieces, each starting a line (so each can be dot-stuffed alone).

        ``rcpt_to``: the recipient's address as :func:`~bulletin.mail.headers.wire_address`
        gave it, when the caller has it already.
        """
        email = recipient.email
        values = recipient.values
        if "email" not in values or "name" not in values:
            values = {"email": email, "name": recipient.name, **values}
        try:
            name = h.sanitise_display_name(recipient.name)
            address = rcpt_to if rcpt_to is not None else h.wire_address(email)
            to = h.address_header("To", name, address).encode("utf-8")
            msgid = h.check_msgid(message_id) if message_id else self.message_id_for(email)
            unsubscribe = self._list_unsubscribe(values)
            subject = self._subject_line or self._personal_subject(values)
        except h.HeaderValueError as exc:
            raise InvalidRecipient(email, str(exc)) from None
        msgid_line = _msgid_line(msgid)
        date_line = self._date_line(date)
        if stuffed:
            # Header lines start with a name, folded ones with a space: never with a dot.
            # Stuffed all the same, so the rule does not depend on that argument.
            head = self._head_stuffed
            to, subject, unsubscribe = stuff_dots(to), stuff_dots(subject), stuff_dots(unsubscribe)
            middle, tail = self._middle_stuffed, self._tail_stuffed
        else:
            head, middle, tail = self._head, self._middle, self._tail
        out = [
            head[0],
            to,
            head[1],
            subject,
            head[2],
            date_line,
            head[3],
            msgid_line,
            head[4],
            unsubscribe,
            head[5],
        ]
        try:
            self._text.render(values, out, stuffed)
            out.append(middle)
            self._html.render(values, out, stuffed)
        except UnicodeEncodeError:
            raise InvalidRecipient(email, "a value is not valid Unicode text") from None
        out.append(tail)
        return out

    def subject_for(self, values: Mapping[str, str]) -> str:
        """The subject one reader gets, merge fields filled."""
        if self._subject_template is None:
            return self.subject
        return h.clean_text(self._subject_prefix + self._subject_template.fill(values))

    def _personal_subject(self, values: Mapping[str, str]) -> bytes:
        return _subject_line(self.subject_for(values))

    def message_id_for(self, recipient_email: str) -> str:
        """``<slug.hash@sender-domain>``: the same for the same issue and address, always.

        A resent message keeps its Message-ID, so receivers can recognise a duplicate. The
        hash hides the address; the domain part of the address is compared case-blind.
        """
        local, _, domain = recipient_email.rpartition("@")
        key = f"{self.slug}\x00{local}@{domain.lower()}".encode("utf-8", "surrogatepass")
        token = hashlib.blake2b(key, digest_size=10, person=b"bulletin-msgid").hexdigest()
        return f"<{self._msgid_left}.{token}@{self._msgid_domain}>"

    def needs_smtputf8(self, recipient: Recipient) -> bool:
        """True when the address has a non-ASCII local part.

        Such a message carries the address as raw UTF-8 in its To header (RFC 6532) -- the
        display name is still RFC 2047 encoded -- and must go over SMTPUTF8 (RFC 6531); a
        server without it cannot take the recipient at all. Parse such bytes as UTF-8 text
        (``email.message_from_string(data.decode())``), not with ``message_from_bytes``.
        """
        try:
            return h.needs_smtputf8(recipient.email)
        except h.HeaderValueError as exc:
            raise InvalidRecipient(recipient.email, str(exc)) from None

    def envelope_to(self, recipient: Recipient) -> str:
        """The RCPT TO address: as in the To header (IDN domains as A-labels when possible)."""
        try:
            return h.wire_address(recipient.email)
        except h.HeaderValueError as exc:
            raise InvalidRecipient(recipient.email, str(exc)) from None

    def envelope_from(self, recipient: Recipient) -> str:
        """The MAIL FROM address: ``sender.return_path`` with ``{token}`` (VERP), or From.

        ``{token}`` is the ``bounce_token`` value (the send engine always gives one), else
        the unsubscribe token.

        No Return-Path header is written: the delivering server adds it from MAIL FROM.
        """
        rp = self._return_path
        if rp is None:
            return self.from_email
        if "{token}" not in rp:
            return rp
        values = recipient.values
        try:
            # A bounce token when the caller has one: an unsubscribe token in the envelope
            # sender would let anyone who sees the bounce address unsubscribe the reader.
            bounce = values.get("bounce_token")
            token = h.check_token(bounce) if bounce else _token(values)
        except h.HeaderValueError as exc:
            raise InvalidRecipient(recipient.email, str(exc)) from None
        return rp.replace("{token}", token)

    def _date_line(self, date: datetime | None) -> bytes:
        if date is not None:
            if date.tzinfo is None:
                date = date.replace(tzinfo=UTC)
            return b"Date: " + format_datetime(date).encode("ascii") + _CRLF
        now = int(time.time())
        cached = self._date_cache
        if cached[0] != now:
            stamp = format_datetime(datetime.fromtimestamp(now, UTC))
            cached = (now, b"Date: " + stamp.encode("ascii") + _CRLF)
            self._date_cache = cached
        return cached[1]

    def _list_unsubscribe(self, values: Mapping[str, str]) -> bytes:
        url = values.get("unsubscribe_url")
        if not url:
            raise h.HeaderValueError("it has no unsubscribe_url value")
        pieces = [f"<{h.check_url(url)}>"]
        if self._mailto is not None:
            local, domain = self._mailto
            pieces[0] += ","
            pieces.append(f"<mailto:{local}+{_token(values)}@{domain}>")
        return h.fold("List-Unsubscribe", pieces).encode("ascii")


def _token(values: Mapping[str, str]) -> str:
    """The recipient's raw unsubscribe token: ``unsubscribe_token``, else the last path
    segment of ``unsubscribe_url`` (``.../u/TOKEN``)."""
    token = values.get("unsubscribe_token")
    if not token:
        url = values.get("unsubscribe_url") or ""
        token = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    if not token:
        raise h.HeaderValueError("it has no unsubscribe_token value")
    return h.check_token(token)


def _subject_line(subject: str) -> bytes:
    # Not the standard library's Subject: its folder puts the space between two words
    # outside adjacent encoded-words ("evenimente și știri" reads "șiștiri" in RFC 2047
    # readers), and this issue's own subject triggers it.
    return h.fold("Subject", h.text_pieces(subject)).encode("ascii")


def _msgid_line(msgid: str) -> bytes:
    # Not folded even past 78 characters (the limit is a SHOULD; 998 is the MUST): some
    # threading code reads Message-ID from a single line.
    return f"Message-ID: {msgid}\r\n".encode("ascii")


def _wire(address: str) -> str:
    # bulletin.toml's addresses were checked when it was loaded (workspace.SenderConfig); one
    # that cannot be put in a header now is a bug, not a user error.
    return h.wire_address(address)


def build_message_template(
    config: Config,
    rendered: RenderedIssue,
    *,
    subject_prefix: str = "",
    list_name: str | None = None,
    sign: Signer | None = None,
) -> MessageTemplate:
    """Compile ``rendered`` into a :class:`MessageTemplate` (once per issue and send).

    ``list_name`` names the subscriber list in List-Id (default: the newsletter name);
    ``sign`` is applied to every personalised message (the DKIM seam).
    """
    sender = config.sender
    newsletter = config.newsletter
    from_email = _wire(sender.from_email)
    domain = from_email.rpartition("@")[2].lower()
    reply_to = _wire(sender.reply_to) if sender.reply_to else None
    mailto: tuple[str, str] | None = None
    if sender.unsubscribe_mailto:
        local, _, mdomain = _wire(sender.unsubscribe_mailto).rpartition("@")
        mailto = (local, mdomain)
    # list_id is already a domain in ASCII (workspace.NewsletterConfig).
    list_domain = newsletter.list_id or domain

    from_name = h.sanitise_display_name(
        rendered.loaded.issue.from_name or rendered.from_name or sender.from_name
    )
    subject = h.clean_text(subject_prefix + rendered.subject)
    list_id = f"<{h.list_label(list_name or newsletter.name)}.{list_domain}>"
    static = {
        "from": h.address_header("From", from_name, from_email),
        "list-id": h.fold(
            "List-Id", [*h.phrase_pieces(h.sanitise_display_name(newsletter.name)), list_id]
        ),
    }

    # The boundary contains "=_", which quoted-printable can never produce, so no body
    # (whatever the subscriber values) can contain a line that ends a part.
    digest = hashlib.sha256()
    for compiled in (rendered.text, rendered.html):
        for chunk in compiled.chunks:
            digest.update(chunk.encode("utf-8", "surrogatepass"))
    boundary = "=_bulletin_" + digest.hexdigest()[:24]

    msg = EmailMessage(policy=SMTP)
    msg[_SENTINEL] = "from"
    msg[_SENTINEL] = "to"
    msg[_SENTINEL] = "subject"
    msg[_SENTINEL] = "date"
    msg[_SENTINEL] = "message-id"
    if reply_to:
        msg["Reply-To"] = reply_to
    msg[_SENTINEL] = "list-id"
    msg[_SENTINEL] = "list-unsubscribe"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["MIME-Version"] = "1.0"
    msg.make_alternative(boundary=boundary)
    for mark, subtype in ((_TEXT_MARK, "plain"), (_HTML_MARK, "html")):
        part = EmailMessage(policy=SMTP)
        part.set_content(mark, subtype=subtype, charset="utf-8", cte="quoted-printable")
        del part["MIME-Version"]  # set_content adds it; it belongs to the top level only
        msg.attach(part)
    raw = msg.as_bytes(policy=SMTP)

    # Cut at the sentinels: static ones are replaced now, dynamic ones split the head.
    pieces: list[bytes] = []
    kinds: list[str] = []
    pos = 0
    current = b""
    for m in _SENTINEL_RE.finditer(raw):
        current += raw[pos : m.start()]
        kind = m.group(1).decode("ascii")
        if kind in static:
            current += static[kind].encode("ascii")
        else:
            pieces.append(current)
            kinds.append(kind)
            current = b""
        pos = m.end()
    rest = raw[pos:]
    if tuple(kinds) != _DYNAMIC:  # pragma: no cover - guards the construction above
        raise AssertionError(f"unexpected header layout {kinds}")
    text_mark = _TEXT_MARK.encode("ascii") + _CRLF
    html_mark = _HTML_MARK.encode("ascii") + _CRLF
    before_text, _, after_text = rest.partition(text_mark)
    middle, _, tail = after_text.partition(html_mark)
    pieces.append(current + before_text)
    if not all(p.endswith(_CRLF) for p in (*pieces, middle, tail) if p):  # pragma: no cover
        # MessageTemplate.wire dot-stuffs the pieces one by one: each must end a line (or
        # be empty: two dynamic headers in a row).
        raise AssertionError("a static piece of the message does not end with a line break")

    return MessageTemplate(
        slug=rendered.loaded.slug,
        subject=subject,
        from_email=from_email,
        head=tuple(pieces),
        text=_BodyPart(rendered.text),
        middle=middle,
        html=_BodyPart(rendered.html),
        tail=tail,
        msgid_domain=domain,
        mailto=mailto,
        return_path=sender.return_path,
        sign=sign,
        subject_template=rendered.subject_template,
        subject_prefix=subject_prefix,
    )
