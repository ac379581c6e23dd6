"""The mail composer: a template compiled once, personalised per recipient as bytes.

Every message is parsed back with the standard library and compared with what a naive
build (``EmailMessage.set_content`` of ``CompiledTemplate.fill(values)``) gives.
"""

from __future__ import annotations

import binascii
import dataclasses
import datetime as dt
import email
import email.header
import email.headerregistry
import email.policy
import random
import re
from collections import Counter
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path

import pytest

from bulletin import workspace as ws
from bulletin.content.loader import load_issue
from bulletin.content.model import Issue, LoadedIssue
from bulletin.dispatch.smtp import dot_stuff
from bulletin.mail import InvalidRecipient, MessageTemplate, Recipient, build_message_template
from bulletin.mail import compose as compose_module
from bulletin.mail.compose import stuff_dots
from bulletin.mail.headers import sanitise_display_name
from bulletin.render.pipeline import render_issue
from bulletin.render.slots import CompiledTemplate, SlotRegistry
from bulletin.render.types import RenderedIssue
from bulletin.render.values import sample_values

SUBJECT = "e-newsletter nr. 3: grupuri de lucru și evenimente"
SLUG = "2014-10-clusterpolisee-03"
DOMAIN = "clusterpolisee.example.org"
ONCE = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Reply-To",
)
DATE = dt.datetime(2014, 10, 1, 9, 30, 0, tzinfo=dt.UTC)

# Fragments for random values: everything that has broken an encoder somewhere.
FRAGMENTS = [
    "Ștefan",
    "ăâîșț ĂÂÎȘȚ",
    "Țară",
    "<script>alert('x')</script>",
    "=",
    "=3D",
    "a=b",
    '"citat"',
    "O'Brien, Jr.",
    "\r\n",
    "\n",
    "\r",
    " ",
    "  ",
    "\t",
    ".",
    "\n.\n",
    "😀",
    "👨\u200d👩\u200d👧",
    "&amp;",
    "x" * 80,
    "ș" * 40,
    "=?utf-8?q?evil?=",
    "\x00",
    "\x0c",
    "\u2028",
    "BULLETINSLOT0X",
    "--=_bulletin_",
    "From ",
    "https://example.org/a?b=c&d=e",
    "\xa0",
]


def _random_text(rng: random.Random) -> str:
    """A value built from tricky fragments, sometimes padded to a QP line boundary."""
    s = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 6)))
    if rng.random() < 0.3:
        width = rng.choice([72, 73, 74, 75, 76, 77, 78, 152])
        filler = rng.choice(["a", "=", "ș", " ", "a ", "."])
        s = (s + filler * width)[:width]
    return s


def _make_rendered(
    text: str,
    html: str,
    registry: SlotRegistry,
    *,
    subject: str = SUBJECT,
    from_name: str | None = None,
    slug: str = SLUG,
) -> RenderedIssue:
    issue = Issue.model_validate(
        {
            "subject": subject,
            "date": "2014-10-01",
            "language": "ro",
            "from_name": from_name,
            "sections": [{"type": "text", "body": "x"}],
        }
    )
    loaded = LoadedIssue(slug=slug, path=f"issues/{slug}/issue.yaml", issue=issue)
    return RenderedIssue(
        loaded=loaded,
        subject=subject,
        preheader="",
        language="ro",
        from_name=from_name or "ClusterPoliSEE",
        html=CompiledTemplate.compile(html, registry, "html"),
        text=CompiledTemplate.compile(text, registry, "text"),
        mjml="",
        mjml_sources=(),
        problems=(),
    )


def _hand_rendered() -> RenderedIssue:
    """A small issue with slots at the awkward places: line start and end, adjacent slots,
    right at the QP line limit, inside attributes, with fallbacks, at the very end."""
    reg = SlotRegistry()
    first = reg.token("first_name", "cititorule")
    name = reg.token("name")
    city = reg.token("attr.city", "România")
    unsub = reg.token("unsubscribe_url")
    online = reg.token("view_online_url")
    text = (
        f"Dragă {first},\n\n"
        f"{name}{city}\n"
        + "ș" * 24
        + f"{name}\n"
        + "a" * 75
        + f"{first} {city}.\n"
        + "Vă dorim o lectură plăcută a celui de-al treilea e-newsletter ClusterPoliSEE = "
        "grupuri de lucru și evenimente, cu rânduri lungi care trec de 76 de caractere.\n"
        f"Versiunea online: {online}\n"
        f"Dezabonare: {unsub}"
    )
    html = (
        '<!DOCTYPE html><html lang="ro"><body>'
        f'<p style="font-family:Arial">Dragă {first},</p>'
        + "<p>"
        + "Științe și tehnologii " * 12
        + f"{name}</p>"
        f'<a href="{online}">online</a><a href="{unsub}" title="{name}">dezabonare</a>'
        f"<p>{city}</p></body></html>\n"
    )
    return _make_rendered(text, html, reg)


def _values(
    email_: str = "ana.popescu@example.ro",
    name: str = "Ana Popescu",
    **extra: str,
) -> dict[str, str]:
    values = {
        "email": email_,
        "name": name,
        "first_name": name.split()[0] if name.split() else "",
        "unsubscribe_url": "http://127.0.0.1:8080/u/tok.en-1",
        "view_online_url": f"http://127.0.0.1:8080/archive/{SLUG}",
    }
    values.update(extra)
    return values


def _recipient(email_: str = "ana.popescu@example.ro", name: str = "Ana Popescu") -> Recipient:
    return Recipient(email_, name, _values(email_, name))


def _assert_display_name(data: bytes, msg: EmailMessage, name: str) -> None:
    """The To display name reads as the sanitised ``name``.

    Over 39 bytes of consecutive non-ASCII words take several adjacent encoded-words; RFC
    2047 readers drop the space between them, CPython <= 3.13 keeps it (gh-128110). Then the
    RFC reading must be exact and Python's may differ only in spaces.
    """
    want = sanitise_display_name(name)
    got = msg["To"].addresses[0].display_name
    if got == want:
        return
    raw = re.search(rb"\r\nTo:(.*?)\r\n(?! )", data, re.S)
    assert raw is not None
    phrase = raw.group(1).replace(b"\r\n", b"").decode().rpartition("<")[0].strip()
    assert re.search(r"\?= =\?utf-8\?b\?", phrase), (got, want)
    assert got.replace(" ", "") == want.replace(" ", "")
    if '"' not in phrase:
        assert str(email.header.make_header(email.header.decode_header(phrase))) == want


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _parts(msg: EmailMessage) -> tuple[EmailMessage, EmailMessage]:
    parts = list(msg.iter_parts())
    assert len(parts) == 2
    text, html = parts
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    return text, html


def _normalised(text: str) -> str:
    """``text`` as a parsed part returns it: CRLF line breaks and a final one."""
    lines = text.encode("utf-8").splitlines()
    return "".join(line.decode("utf-8") + "\r\n" for line in lines) or "\r\n"


def _naive_contents(text: str, html: str) -> tuple[str, str]:
    """What the standard library gives for the same texts, built and parsed naively."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = "x"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    t, h = _parts(_parse(msg.as_bytes()))
    return t.get_content(), h.get_content()


def _assert_wellformed(data: bytes, *, smtputf8: bool = False) -> EmailMessage:
    """Line endings, line lengths, header counts, part layout; returns the parsed message."""
    assert data.endswith(b"\r\n")
    stripped = data.replace(b"\r\n", b"")
    assert b"\n" not in stripped and b"\r" not in stripped, "bare CR or LF"
    if not smtputf8:
        assert data.isascii()
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        # Over 78 only for one token that cannot be folded (a msg-id, a very long word).
        token = line[1:] if line.startswith(b" ") else line.partition(b": ")[2]
        assert len(line) <= 78 or (len(line) <= 998 and b" " not in token), line
    names = Counter(
        line.split(b":", 1)[0].decode().lower()
        for line in head.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    )
    for name in ONCE:
        assert names[name.lower()] == 1, (name, names)
    assert all(count == 1 for count in names.values()), names
    boundary_lines = [ln for ln in body.split(b"\r\n") if ln.startswith(b"--=_bulletin_")]
    assert len(boundary_lines) == 3
    in_qp = False
    for line in body.split(b"\r\n"):
        if line.startswith(b"--=_bulletin_"):
            in_qp = False
        elif line == b"Content-Transfer-Encoding: quoted-printable":
            in_qp = True
        elif in_qp:
            assert len(line) <= 76, line
            assert not line.endswith((b" ", b"\t")), line  # RFC 2045: encode it
    msg = _parse(data)
    assert not msg.defects
    assert msg.get_content_type() == "multipart/alternative"
    text, html = _parts(msg)
    for part, ctype in ((text, "text/plain"), (html, "text/html")):
        assert part.get_content_type() == ctype
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert "MIME-Version" not in part
    return msg


@pytest.fixture
def config(workspace_dir: Path) -> ws.Config:
    """The sample configuration without mailto unsubscribe or VERP: tests add them explicitly."""
    loaded = ws.load(workspace_dir).config
    return loaded.model_copy(
        update={
            "sender": loaded.sender.model_copy(
                update={"unsubscribe_mailto": None, "return_path": None}
            )
        }
    )


def _with_sender(config: ws.Config, **update: str | None) -> ws.Config:
    return config.model_copy(update={"sender": config.sender.model_copy(update=update)})


def test_headers_of_one_message(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    data = template.personalise(_recipient(), date=DATE)
    msg = _assert_wellformed(data)

    assert msg["Subject"] == SUBJECT
    assert b"Subject: e-newsletter nr. 3: grupuri de lucru =?utf-8?" in data  # RFC 2047
    (sender,) = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("ClusterPoliSEE", f"newsletter@{DOMAIN}")
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Ana Popescu", "ana.popescu@example.ro")
    assert msg["Date"].datetime == DATE
    assert b"Date: Wed, 01 Oct 2014 09:30:00 +0000\r\n" in data
    assert msg["Message-ID"] == template.message_id_for("ana.popescu@example.ro")
    assert re.fullmatch(rf"<{SLUG}\.[0-9a-f]{{20}}@{re.escape(DOMAIN)}>", msg["Message-ID"])
    assert msg["MIME-Version"] == "1.0"
    assert msg["Reply-To"] == f"contact@{DOMAIN}"
    assert msg["List-Id"] == (f"ClusterPoliSEE e-newsletter <clusterpolisee-e-newsletter.{DOMAIN}>")
    assert msg["List-Unsubscribe"] == "<http://127.0.0.1:8080/u/tok.en-1>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Return-Path" not in msg  # the receiving server adds it from MAIL FROM


def test_message_is_reproducible_and_dated_now(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    again = build_message_template(config, _hand_rendered())
    first = template.personalise(_recipient(), date=DATE)
    assert first == again.personalise(_recipient(), date=DATE)

    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    now_msg = _parse(template.personalise(_recipient()))
    after = dt.datetime.now(dt.UTC)
    assert before <= now_msg["Date"].datetime <= after
    # A naive datetime is taken as UTC rather than written as "-0000" (unknown zone).
    naive = _parse(template.personalise(_recipient(), date=DATE.replace(tzinfo=None)))
    assert naive["Date"].datetime == DATE


def test_bodies_decode_to_fill_for_tricky_values(config: ws.Config) -> None:
    rendered = _hand_rendered()
    template = build_message_template(config, rendered)
    rng = random.Random(20141001)
    for i in range(200):
        values = _values(
            name=_random_text(rng),
            first_name=_random_text(rng),
            view_online_url=_random_text(rng),
            **{"attr.city": _random_text(rng)},
        )
        if i % 3 == 0:
            del values["first_name"]  # the fallback text is used
        recipient = Recipient(values["email"], "Ana", values)
        data = template.personalise(recipient, date=DATE)
        assert template.wire(recipient, date=DATE) == dot_stuff(data)
        text, html = _parts(_assert_wellformed(data))
        want_text, want_html = rendered.text.fill(values), rendered.html.fill(values)
        assert text.get_content() == _normalised(want_text), values
        assert html.get_content() == _normalised(want_html), values
        assert (text.get_content(), html.get_content()) == _naive_contents(want_text, want_html)


def test_random_templates_decode_to_fill(config: ws.Config) -> None:
    """Slots anywhere: at line edges, adjacent, first and last, in long lines."""
    rng = random.Random(7)
    statics = ["", "a", " ", "\n", "\n\n", "=", ".", "ș", "Științe și tehnologii ", "x" * 75]
    for _ in range(100):
        reg = SlotRegistry()
        tokens = [reg.token("name"), reg.token("attr.a", "implicit"), reg.token("first_name")]
        pieces = []
        for _ in range(rng.randint(0, 8)):
            pieces.append("".join(rng.choice(statics) for _ in range(rng.randint(0, 4))))
            pieces.append(rng.choice(tokens))
        pieces.append("".join(rng.choice(statics) for _ in range(rng.randint(0, 3))))
        source = "".join(pieces)
        rendered = _make_rendered(source, f"<p>{source}</p>", reg)
        template = build_message_template(config, rendered)
        for _ in range(5):
            values = _values(name=_random_text(rng), first_name="", **{"attr.a": _random_text(rng)})
            recipient = Recipient("a@example.ro", "", values)
            data = template.personalise(recipient, date=DATE)
            # Stuffed piece by piece (the shared pieces once per issue) = stuffed whole.
            assert template.wire(recipient, date=DATE) == dot_stuff(data)
            text, html = _parts(_assert_wellformed(data))
            assert text.get_content() == _normalised(rendered.text.fill(values))
            assert html.get_content() == _normalised(rendered.html.fill(values))


def test_html_values_are_escaped_like_the_preview(config: ws.Config) -> None:
    rendered = _hand_rendered()
    template = build_message_template(config, rendered)
    values = _values(name='<script>alert("x")</script> & Co')
    data = template.personalise(Recipient(values["email"], "", values), date=DATE)
    _, html = _parts(_parse(data))
    content = html.get_content()
    assert "<script>" not in content
    assert 'title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co"' in content
    assert content == _normalised(rendered.html.fill(values))


def test_text_that_ends_in_a_slot_gets_a_final_line_break(config: ws.Config) -> None:
    reg = SlotRegistry()
    rendered = _make_rendered(
        f"Salut {reg.token('name')}", f"<b>{reg.token('first_name')}</b>{reg.token('name')}", reg
    )
    template = build_message_template(config, rendered)
    for name in ["Ana", "", "Ana\n", "a" * 76, "ș" * 30 + " "]:
        values = _values(name=name, first_name="")
        data = template.personalise(Recipient("a@example.ro", "", values), date=DATE)
        text, html = _parts(_assert_wellformed(data))
        assert text.get_content() == _normalised(rendered.text.fill(values))
        assert html.get_content() == _normalised(rendered.html.fill(values))


def test_templates_with_carriage_returns_are_encoded_whole(config: ws.Config) -> None:
    reg = SlotRegistry()
    rendered = _make_rendered(
        f"Salut\r{reg.token('name')}\r\nși\r", f"<p>\r\n{reg.token('name')}</p>", reg
    )
    template = build_message_template(config, rendered)
    for name in ["\nAna", "Ana\r", ""]:
        values = _values(name=name)
        data = template.personalise(Recipient("a@example.ro", "", values), date=DATE)
        text, html = _parts(_assert_wellformed(data))
        assert text.get_content() == _normalised(rendered.text.fill(values))
        assert html.get_content() == _normalised(rendered.html.fill(values))


@pytest.mark.parametrize(
    "name",
    [
        "Ana Popescu",
        "Ștefan Ionescu",
        "Ana-Maria Țăranu-Șerban",
        'O\'Brien, John "JJ" \\ Jr.',
        "=?utf-8?q?evil?= Popescu",
        "Ștefan (Fane) Ionescu, dr.",
        "😀 Zâmbărică 👨\u200d👩\u200d👧",
        "A" * 100,
        "Ana " * 40,
        "Popescu " + "x" * 70 + " Ion",
        ".",
        "",
        "   ",
    ],
)
def test_display_names_roundtrip(config: ws.Config, name: str) -> None:
    template = build_message_template(config, _hand_rendered())
    data = template.personalise(_recipient("ana@example.ro", name), date=DATE)
    msg = _assert_wellformed(data)
    (to,) = msg["To"].addresses
    assert to.addr_spec == "ana@example.ro"
    assert to.display_name == sanitise_display_name(name)
    assert not msg["To"].defects
    clean = sanitise_display_name(name)
    if clean.isascii() and "=?" not in clean:  # ASCII names stay readable
        raw = re.search(rb"\r\nTo:(.*?)\r\n(?! )", data, re.S)
        assert raw is not None and b"=?" not in raw.group(1)


def test_long_non_ascii_names_are_split_for_rfc2047_readers(config: ws.Config) -> None:
    """Over 45 bytes of consecutive non-ASCII words need several encoded-words. RFC 2047
    readers drop the space between them; CPython <= 3.13 keeps it (gh-128110)."""
    template = build_message_template(config, _hand_rendered())
    name = "Științe și Tehnologii Învățământ Românesc Ștefănescu-Țăranu Ăâîșț"
    data = template.personalise(_recipient("ana@example.ro", name), date=DATE)
    msg = _assert_wellformed(data)
    raw = re.search(rb"\r\nTo:(.*?)\r\n(?! )", data, re.S)
    assert raw is not None
    phrase = raw.group(1).replace(b"\r\n", b"").decode().rpartition("<")[0].strip()
    assert phrase.count("=?utf-8?b?") >= 2
    decoded = str(email.header.make_header(email.header.decode_header(phrase)))
    assert decoded == name
    assert " ".join(msg["To"].addresses[0].display_name.split()) == name


def test_random_names_roundtrip(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    rng = random.Random(3)
    words = ["Ana", "Ștefan", "ț", "O'Brien,", '"JJ"', "dr.", "\\", "=?", "😀", "\r\n", "Ion"]
    for _ in range(300):
        name = " ".join(rng.choice(words) for _ in range(rng.randint(0, 5)))
        data = template.personalise(_recipient("ana@example.ro", name), date=DATE)
        msg = _assert_wellformed(data)
        (to,) = msg["To"].addresses
        assert to.display_name == sanitise_display_name(name), name


@pytest.mark.parametrize(
    "name",
    [
        "Evil\r\nBcc: victim@example.com",
        "Evil\nX-Injected: yes",
        "Evil\rX-Injected: yes",
        "Evil\r\n\r\n<html>body</html>",
        "Evil\x00\x0b\x0c\x1b\x7f\x85\u2028\u2029X-Injected: yes",
        "Evil\udcff",
    ],
)
def test_names_cannot_inject_headers(config: ws.Config, name: str) -> None:
    template = build_message_template(config, _hand_rendered())
    data = template.personalise(Recipient("ana@example.ro", name, _values()), date=DATE)
    msg = _assert_wellformed(data)
    assert "Bcc" not in msg and "X-Injected" not in msg
    display = msg["To"].addresses[0].display_name
    assert display == sanitise_display_name(name)
    assert "\r" not in display and "\n" not in display and display.startswith("Evil")


def test_values_that_are_not_unicode_text_are_refused(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    with pytest.raises(InvalidRecipient, match="not valid Unicode"):
        template.personalise(Recipient("ana@example.ro", "Ana", _values(name="Ana\udcff")))


@pytest.mark.parametrize(
    ("email_", "values"),
    [
        ("ana@example.ro\r\nBcc: victim@example.com", {}),
        ("ana@example.ro\nBcc: victim@example.com", {}),
        ("Ana <ana@example.ro>", {}),
        ("ana@example.ro, b@example.ro", {}),
        ("ana @example.ro", {}),
        ('"ana"@example.ro', {}),
        ("ana", {}),
        ("ana@example.ro", {"unsubscribe_url": "http://x/u/t\r\nBcc: victim@example.com"}),
        ("ana@example.ro", {"unsubscribe_url": "http://x/u/t>, <http://evil"}),
        ("ana@example.ro", {"unsubscribe_url": "javascript:alert(1)"}),
        ("ana@example.ro", {"unsubscribe_url": ""}),
    ],
)
def test_unsafe_recipient_data_is_refused(
    config: ws.Config, email_: str, values: dict[str, str]
) -> None:
    template = build_message_template(config, _hand_rendered())
    recipient = Recipient(email_, "Ana", {**_values(), "email": email_, **values})
    with pytest.raises(InvalidRecipient) as info:
        template.personalise(recipient)
    assert info.value.email == email_
    assert "Cannot compose a message for" in str(info.value)


def test_message_id_override_is_checked(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    data = template.personalise(_recipient(), message_id="<abc.123@example.org>", date=DATE)
    assert _parse(data)["Message-ID"] == "<abc.123@example.org>"
    with pytest.raises(InvalidRecipient):
        template.personalise(_recipient(), message_id="<a@b>\r\nBcc: victim@example.com")


def test_message_ids_are_deterministic_and_distinct(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    other_issue = build_message_template(
        config, _make_rendered("x", "<p>x</p>", SlotRegistry(), slug="2014-11-next")
    )
    addresses = [f"reader{i}@example.ro" for i in range(500)]
    ids = [template.message_id_for(a) for a in addresses]
    assert len(set(ids)) == len(ids)
    rebuilt = build_message_template(config, _hand_rendered())
    assert ids == [rebuilt.message_id_for(a) for a in addresses]
    assert all(i.endswith(f"@{DOMAIN}>") and i.startswith(f"<{SLUG}.") for i in ids)
    assert template.message_id_for("Reader1@EXAMPLE.RO") == template.message_id_for(
        "Reader1@example.ro"
    )
    assert other_issue.message_id_for(addresses[0]) != ids[0]
    msgs = [_parse(template.personalise(_recipient(a, "X"), date=DATE)) for a in addresses[:3]]
    assert [m["Message-ID"] for m in msgs] == ids[:3]


def test_non_ascii_local_part_needs_smtputf8(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    utf8 = _recipient("ștefan@exemplu.ro", "Ștefan Ionescu")
    assert template.needs_smtputf8(utf8)
    assert not template.needs_smtputf8(_recipient())
    data = template.personalise(utf8, date=DATE)
    _assert_wellformed(data, smtputf8=True)
    # RFC 6532: the address is raw UTF-8; the display name stays RFC 2047 encoded.
    assert "<ștefan@exemplu.ro>".encode() in data
    head = data.partition(b"\r\n\r\n")[0]
    assert all(line.isascii() for line in head.split(b"\r\n") if not line.startswith(b"To:"))
    msg = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Ștefan Ionescu", "ștefan@exemplu.ro")
    assert template.envelope_to(utf8) == "ștefan@exemplu.ro"


def test_ascii_local_part_with_idn_domain_uses_a_label(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    recipient = _recipient("ana@bucurești.ro", "Ana")
    assert not template.needs_smtputf8(recipient)
    data = template.personalise(recipient, date=DATE)
    msg = _assert_wellformed(data)
    assert msg["To"].addresses[0].addr_spec == "ana@xn--bucureti-m9c.ro"
    assert template.envelope_to(recipient) == "ana@xn--bucureti-m9c.ro"


def test_mailto_unsubscribe_and_verp(config: ws.Config) -> None:
    config = _with_sender(
        config,
        unsubscribe_mailto=f"unsubscribe@{DOMAIN}",
        return_path=f"bounces+{{token}}@{DOMAIN}",
    )
    template = build_message_template(config, _hand_rendered())
    values = _values(
        unsubscribe_url="https://news.example.org/u/" + "Ab1-_.x" * 12,
        unsubscribe_token="Ab1-_tok",
    )
    recipient = Recipient("ana@example.ro", "Ana", values)
    data = template.personalise(recipient, date=DATE)
    msg = _assert_wellformed(data)
    assert msg["List-Unsubscribe"] == (
        f"<{values['unsubscribe_url']}>, <mailto:unsubscribe+Ab1-_tok@{DOMAIN}>"
    )
    # The URL cannot be folded; the mailto goes on a continuation line.
    assert b"Ab1-_.x>,\r\n <mailto:unsubscribe+Ab1-_tok@" in data
    assert template.envelope_from(recipient) == f"bounces+Ab1-_tok@{DOMAIN}"

    # Without a separate token, the last path segment of the unsubscribe URL is the token.
    derived = Recipient("b@example.ro", "", _values(unsubscribe_url="https://n.example/u/xYz.9"))
    assert (
        f"<mailto:unsubscribe+xYz.9@{DOMAIN}>"
        in _parse(template.personalise(derived))["List-Unsubscribe"]
    )
    assert template.envelope_from(derived) == f"bounces+xYz.9@{DOMAIN}"

    bad = Recipient("c@example.ro", "", _values(unsubscribe_token="a@b\r\nX: y"))
    with pytest.raises(InvalidRecipient):
        template.personalise(bad)
    with pytest.raises(InvalidRecipient):
        template.envelope_from(bad)


def test_envelope_from_defaults_to_from(config: ws.Config) -> None:
    template = build_message_template(config, _hand_rendered())
    assert template.envelope_from(_recipient()) == f"newsletter@{DOMAIN}"
    fixed = build_message_template(
        _with_sender(config, return_path=f"bounces@{DOMAIN}"), _hand_rendered()
    )
    assert fixed.envelope_from(_recipient()) == f"bounces@{DOMAIN}"


def test_issue_from_name_and_subject_prefix(config: ws.Config) -> None:
    reg = SlotRegistry()
    rendered = _make_rendered("x", "<p>x</p>", reg, from_name="Echipa ClusterPoliSEE Iași")
    template = build_message_template(config, rendered, subject_prefix="[Test] ")
    msg = _assert_wellformed(template.personalise(_recipient(), date=DATE))
    assert [p.get_content() for p in _parts(msg)] == ["x\r\n", "<p>x</p>\r\n"]
    assert msg["From"].addresses[0].display_name == "Echipa ClusterPoliSEE Iași"
    assert msg["Subject"] == "[Test] " + SUBJECT
    assert template.subject == "[Test] " + SUBJECT


def test_list_id_uses_configured_domain_and_list_name(config: ws.Config) -> None:
    config = config.model_copy(
        update={
            "newsletter": config.newsletter.model_copy(
                update={"list_id": "news.example.org", "name": "Buletinul Științific, nr"}
            )
        }
    )
    template = build_message_template(config, _hand_rendered(), list_name="Parteneri Iași")
    msg = _assert_wellformed(template.personalise(_recipient(), date=DATE))
    assert msg["List-Id"] == "Buletinul Științific, nr <parteneri-iasi.news.example.org>"


def test_sign_hook_gets_the_finished_message(config: ws.Config) -> None:
    seen: list[bytes] = []

    def sign(message: bytes) -> bytes:
        seen.append(message)
        return b"X-Signed: yes\r\n" + message

    template = build_message_template(config, _hand_rendered(), sign=sign)
    data = template.personalise(_recipient(), date=DATE)
    assert data == b"X-Signed: yes\r\n" + seen[0]
    assert _parse(seen[0])["To"].addresses[0].addr_spec == "ana.popescu@example.ro"


def _sample(workspace_dir: Path) -> tuple[ws.Workspace, LoadedIssue, RenderedIssue]:
    workspace = ws.load(workspace_dir)
    loaded = load_issue(workspace, workspace.issue_dir(SLUG))
    return workspace, loaded, render_issue(workspace, loaded)


def test_real_sample_issue(workspace_dir: Path) -> None:
    workspace, loaded, rendered = _sample(workspace_dir)
    template = build_message_template(workspace.config, rendered)
    assert isinstance(template, MessageTemplate)
    rng = random.Random(11)
    for i in range(40):
        name = "Ana Popescu" if i == 0 else _random_text(rng)
        values: Mapping[str, str] = {
            **sample_values(workspace, loaded.slug, email=f"r{i}@example.ro", name=name),
            "unsubscribe_url": f"http://127.0.0.1:8080/u/t{i}",
        }
        data = template.personalise(Recipient(f"r{i}@example.ro", name, values))
        msg = _assert_wellformed(data)
        assert msg["Subject"] == loaded.issue.subject
        _assert_display_name(data, msg, name)
        text, html = _parts(msg)
        assert text.get_content() == _normalised(rendered.text.fill(values))
        assert html.get_content() == _normalised(rendered.html.fill(values))
        assert "Științe" in html.get_content() or "ș" in html.get_content()


# --- the wire form (what the send engine hands to SMTP) ------------------------------------

TRICKY = [
    ("ștefan.țiriac@example.ro", "Ștefan Țiriac"),
    (
        "ana.maria@example.ro",
        "Ana-Maria Ștefănescu-Bălănescu Țiriac-Dumitrescu Popescu-Vîlcu din Iași, România",
    ),
    ("ioana@exemplu.ro", ".Ioana, cu punct la început"),
    ("radu@example.ro", "Radu\n.Neamțu"),
    ("mihai@example.ro", ""),
]


def test_wire_is_the_email_package_reading_of_the_message(config: ws.Config) -> None:
    # Tricky recipients (Romanian names, a name long enough to fold, a non-ASCII local
    # part, values whose lines start with a dot) and a subject with a merge field: the wire
    # bytes, unstuffed as a server does, are the message, and the email package reads from
    # them what a straightforward composition with it holds.
    rendered = _hand_rendered()
    reg = SlotRegistry()
    subject = f"Pentru {reg.token('first_name', 'tine')}: știri și evenimente"
    rendered = dataclasses.replace(
        rendered, subject_template=CompiledTemplate.compile(subject, reg, "text")
    )
    template = build_message_template(config, rendered)
    for address, name in TRICKY:
        values = _values(address, name, **{"attr.city": ".Iași\n..Cluj\n."})
        recipient = Recipient(address, name, values)
        wire = template.wire(recipient, message_id="<m.1@example.ro>", date=DATE)
        data = template.personalise(recipient, message_id="<m.1@example.ro>", date=DATE)
        assert wire.endswith(b"\r\n.\r\n") and b"\n.\r\n" not in wire[:-3]
        assert not re.search(rb"(^|\n)\.(?!\.)", wire[:-3]), "a line starts with one dot"
        unstuffed = re.sub(rb"(^|\n)\.", rb"\1", wire[:-3])
        assert unstuffed == data
        # The envelope in one go: the same as each piece asked for on its own.
        for wire_form, want in ((True, wire), (False, data)):
            got = template.envelope(
                recipient, message_id="<m.1@example.ro>", date=DATE, wire=wire_form
            )
            assert got == (
                template.envelope_from(recipient),
                template.envelope_to(recipient),
                want,
                template.needs_smtputf8(recipient),
            )
        smtputf8 = not address.partition("@")[0].isascii()
        msg = (
            email.message_from_string(data.decode(), policy=email.policy.default)
            if smtputf8
            else _assert_wellformed(data)
        )
        assert isinstance(msg, EmailMessage)
        reference = EmailMessage(policy=email.policy.SMTP)
        local, _, domain = address.partition("@")
        reference["To"] = email.headerregistry.Address(
            sanitise_display_name(name), username=local, domain=domain
        )
        reference["Subject"] = template.subject_for(values)
        reference.set_content(rendered.text.fill(values), cte="quoted-printable")
        reference.add_alternative(rendered.html.fill(values), subtype="html")
        parsed_ref = email.message_from_string(
            reference.as_string(policy=email.policy.SMTPUTF8), policy=email.policy.default
        )
        assert msg["To"].addresses[0].addr_spec == address
        _assert_display_name(data, msg, name)
        assert str(msg["Subject"]) == str(parsed_ref["Subject"])
        assert str(msg["Subject"]).startswith(f"Pentru {values['first_name'] or 'tine'}:")
        text, html = _parts(msg)  # type: ignore[arg-type]
        ref_text, ref_html = _parts(parsed_ref)  # type: ignore[arg-type]
        assert text.get_content() == ref_text.get_content()
        assert html.get_content() == ref_html.get_content()


def test_a_signed_message_is_stuffed_after_signing(config: ws.Config) -> None:
    signed: list[bytes] = []

    def sign(message: bytes) -> bytes:
        signed.append(message)
        return b"X-Signed: yes\r\n" + message

    template = build_message_template(config, _hand_rendered(), sign=sign)
    recipient = Recipient("ana@example.ro", ".Ana", _values("ana@example.ro", ".Ana"))
    data = template.personalise(recipient, date=DATE)
    assert template.wire(recipient, date=DATE) == dot_stuff(data)
    assert signed[0] == signed[1] and data == b"X-Signed: yes\r\n" + signed[0]


def test_plain_values_skip_the_encoder_with_the_same_bytes() -> None:
    # _qp_segment's shortcut for values quoted-printable leaves alone gives what the
    # encoder gives, for values on both sides of the line.
    rng = random.Random(13)
    alphabet = ["a", "Z", "0", ".", " ", "=", "~", "!", "<", ">", "ș", "\t", "\n", "_", "-", "/"]
    values = [".", "..", " a", "a ", "a b", "=", "x" * 74, "x" * 75, "x" * 76, ". ", ".\n"]
    for _ in range(3000):
        values.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))))
    values += ["http://127.0.0.1:8080/u/EAEAtrLY_nER1a8yn0As1Xczpg", "Ana-Maria Popescu"]
    for value in values:
        q = binascii.b2a_qp(value.encode("utf-8"), istext=True)
        hard = q.endswith(b"\n")
        if len(q) > 75:
            q = compose_module._fit(q, 76 if hard else 75)
        want = (q if hard else q + b"=\n").replace(b"\n", b"\r\n")
        assert compose_module._qp_segment(value) == want, value


def test_stuff_dots_doubles_every_leading_dot() -> None:
    assert stuff_dots(b".a\r\n.\r\nb.\r\n..c\n.d") == b"..a\r\n..\r\nb.\r\n...c\n..d"
    assert stuff_dots(b"") == b""
