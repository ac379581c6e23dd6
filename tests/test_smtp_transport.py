"""The SMTP transport against real servers: every fault becomes the right Delivery.

The servers are :class:`smtpfaults.FaultServer` (aiosmtpd on a free loopback port, with
programmed faults); timeouts are 0.5 s so the slow cases stay fast.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from email import message_from_bytes, message_from_string
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from bulletin.dispatch import smtp as smtp_module
from bulletin.dispatch.smtp import (
    SmtpConnection,
    SmtpSetupError,
    SmtpTransport,
    dot_stuff,
    is_loopback,
    parse_smtp_url,
)
from bulletin.dispatch.transport import ConnectFailed, Delivery, Envelope
from bulletin.errors import ConfigError
from bulletin.workspace import SmtpConfig
from smtpfaults import Certificates, FaultServer, make_certificates

TIMEOUT = 0.5
SENDER = "newsletter@clusterpolisee.example.org"
PASSWORD = "pa55-w0rd-ș"


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> str:
    """A server address the transport must treat as a remote (non-loopback) host.

    Tests may only send traffic to loopback here, so the server listens on 127.0.0.1 and the
    transport's loopback test is told otherwise: the TLS and AUTH policy is what is tested.
    """
    monkeypatch.setattr(smtp_module, "is_loopback", lambda host: False)
    return "127.0.0.1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    names = ("localhost", "127.0.0.1")
    return make_certificates(tmp_path_factory.mktemp("certs"), names)


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def server(request: pytest.FixtureRequest) -> Iterator[FaultServer]:
    """The fault server, with and without PIPELINING: each fault gives the same Delivery
    whether MAIL, RCPT and DATA are sent one by one or in one group."""
    with FaultServer(pipelining=request.param) as s:
        yield s


def message(n: int = 1, subject: str = "Buletin nr. 3: știri și evenimente") -> bytes:
    """A small message with the awkward bits: dot lines, raw UTF-8 body, CRLF."""
    return (
        f"From: ClusterPoliSEE <{SENDER}>\r\n"
        f"To: r{n}@example.ro\r\n"
        f"Subject: =?utf-8?b?{base64.b64encode(subject.encode()).decode()}?=\r\n"
        f"Message-ID: <m{n}@clusterpolisee.example.org>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f".Primul rând începe cu un punct (mesajul {n}).\r\n"
        ".\r\n"
        "..\r\n"
        "Țară, școală, învățământ.\r\n"
    ).encode()


def envelope(rcpt: str, n: int = 1, **kw: Any) -> Envelope:
    return Envelope(SENDER, rcpt, message(n), f"<m{n}@clusterpolisee.example.org>", **kw)


def transport(url: str, **smtp: Any) -> SmtpTransport:
    password = smtp.pop("password", None)
    ssl_context = smtp.pop("ssl_context", None)
    config = SmtpConfig(url=url, timeout=smtp.pop("timeout", TIMEOUT), **smtp)
    return SmtpTransport(
        config, password=password, helo_name="bulletin.test", ssl_context=ssl_context
    )


class Session:
    """A connection that is closed when the test ends, whatever happens."""

    def __init__(self, t: SmtpTransport) -> None:
        self.connection: SmtpConnection = t.connect()

    def __enter__(self) -> SmtpConnection:
        return self.connection

    def __exit__(self, *exc: object) -> None:
        self.connection.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- the happy path ---------------------------------------------------------------------


def test_one_connection_carries_many_messages_without_rset(server: FaultServer) -> None:
    t = transport(server.url)
    with Session(t) as conn:
        deliveries = [conn.send(envelope(f"r{i}@example.ro", i)) for i in range(5)]
    assert [d.outcome for d in deliveries] == ["sent"] * 5
    assert all(d.code == 250 and "queued as" in d.reply and not d.reconnect for d in deliveries)
    assert server.sessions == 1
    assert server.count("MAIL") == 5 and server.count("RSET") == 0
    assert server.count("QUIT") == 1
    got = server.messages
    assert [m.rcpt_tos for m in got] == [[f"r{i}@example.ro"] for i in range(5)]
    # Byte for byte: dot-stuffing undone by the server, CRLF and UTF-8 untouched.
    assert [m.data for m in got] == [message(i) for i in range(5)]
    assert all(m.mail_from == SENDER for m in got)
    # Raw UTF-8 in the body: announced as 8BITMIME; SIZE announced too.
    assert "BODY=8BITMIME" in got[0].mail_options
    assert f"SIZE={len(message(0))}" in got[0].mail_options


def test_a_composed_issue_arrives_unchanged(workspace_dir: Path, server: FaultServer) -> None:
    from bulletin import workspace as ws
    from bulletin.content.loader import load_issue
    from bulletin.mail.compose import Recipient, build_message_template
    from bulletin.render.pipeline import render_issue
    from bulletin.render.values import sample_values

    workspace = ws.load(workspace_dir)
    loaded = load_issue(workspace, workspace.issue_dir("2014-10-clusterpolisee-03"))
    template = build_message_template(workspace.config, render_issue(workspace, loaded))
    values = {
        **sample_values(workspace, loaded.slug, email="ana@example.ro", name="Ana Ștefănescu"),
        "unsubscribe_url": "http://127.0.0.1:8080/u/tok-1",
    }
    recipient = Recipient("ana@example.ro", "Ana Ștefănescu", values)
    data = template.personalise(recipient)
    env = Envelope(
        template.envelope_from(recipient),
        template.envelope_to(recipient),
        data,
        template.message_id_for(recipient.email),
        template.needs_smtputf8(recipient),
    )
    with Session(transport(server.url)) as conn:
        assert conn.send(env).outcome == "sent"
    (got,) = server.messages
    assert got.data == data
    parsed = message_from_bytes(got.data, policy=default_policy)
    assert parsed["Subject"] == loaded.issue.subject
    assert "Ștefănescu" in str(parsed["To"])


def test_description_says_how_it_connects() -> None:
    assert transport("smtp://127.0.0.1:2525").description == (
        "smtp://127.0.0.1:2525 (STARTTLS when offered)"
    )
    assert transport("smtp://mail.example.org:587").description == (
        "smtp://mail.example.org:587 (STARTTLS required)"
    )
    assert transport("smtp://127.0.0.1:25", starttls="required").description.endswith(
        "(STARTTLS required)"
    )
    assert transport("smtp://10.0.0.5:25", starttls="off").description.endswith("(no TLS)")
    described = transport("smtps://mail.example.org", username="ana", password="x").description
    assert described == "smtps://mail.example.org:465 (TLS), AUTH as ana"


# -- per-recipient and per-message replies ----------------------------------------------


@pytest.mark.parametrize(
    ("stage", "reply", "outcome"),
    [
        ("RCPT", "550 5.1.1 user unknown", "failed"),
        ("RCPT", "451 4.3.0 mailbox busy, try later", "deferred"),
        ("RCPT", "452 4.2.2 mailbox full", "deferred"),
        ("MAIL", "552 5.3.4 message too big", "failed"),
        ("MAIL", "451 4.7.1 greylisted", "deferred"),
        ("DATA", "554 5.5.1 no valid recipients", "failed"),
        ("DATA", "451 4.3.0 try again", "deferred"),
        ("DATA_END", "554 5.7.1 message refused as spam", "failed"),
        ("DATA_END", "451 4.3.0 queue full", "deferred"),
    ],
)
def test_refusals_are_classified_and_the_session_goes_on(
    server: FaultServer, stage: Any, reply: str, outcome: str
) -> None:
    if stage == "MAIL":
        # MAIL names the sender, the same for all: refuse the second MAIL.
        server.fault(stage, reply, after=1, times=1)
    else:
        server.fault(stage, reply, address="bad@example.ro")
    with Session(transport(server.url)) as conn:
        first = conn.send(envelope("good@example.ro", 1))
        refused = conn.send(envelope("bad@example.ro", 2))
        after = conn.send(envelope("good2@example.ro", 3))
    assert first.outcome == "sent" and after.outcome == "sent"
    assert refused == Delivery(outcome, int(reply[:3]), reply)  # type: ignore[arg-type]
    assert [m.rcpt_tos for m in server.messages] == [["good@example.ro"], ["good2@example.ro"]]
    # One session; RSET exactly once, after the refusal.
    assert server.sessions == 1
    assert server.count("RSET") == 1
    verbs = [v for _, v in server.commands if v in ("MAIL", "RSET")]
    assert verbs == ["MAIL", "MAIL", "RSET", "MAIL"]


def test_pipelining_is_used_only_when_offered(server: FaultServer) -> None:
    with Session(transport(server.url)) as conn:
        assert conn.pipelining is server_offers_pipelining(server)
        got = [conn.send(envelope(f"r{i}@example.ro", i)) for i in range(4)]
    assert [d.outcome for d in got] == ["sent"] * 4
    # Offered: every MAIL came with its RCPT and DATA behind it, in one write.
    assert server.pipelined == (4 if conn.pipelining else 0)
    assert [m.data for m in server.messages] == [message(i) for i in range(4)]


def server_offers_pipelining(server: FaultServer) -> bool:
    with socket.create_connection((server.host, server.port), timeout=2) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO probe.test\r\n")
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if line[3:4] != b"-":
                break
        s.sendall(b"QUIT\r\n")
    return any(b"PIPELINING" in line.upper() for line in lines)


def test_pipelined_refusal_with_a_354_to_data_still_ends_in_step() -> None:
    # A server that answers 354 to the DATA of a group whose RCPT it refused (RFC 2920
    # says it should not): the empty message is ended, the refusal stands, and the next
    # message goes through on the same session.
    with FaultServer(pipelining=True) as server:
        server.fault("RCPT", "550 5.1.1 user unknown", address="bad@example.ro")
        server.fault("DATA", "354 go ahead anyway", after=1, times=1)
        with Session(transport(server.url)) as conn:
            first = conn.send(envelope("good@example.ro", 1))
            refused = conn.send(envelope("bad@example.ro", 2))
            after = conn.send(envelope("good2@example.ro", 3))
        assert (first.outcome, after.outcome) == ("sent", "sent")
        assert refused == Delivery("failed", 550, "550 5.1.1 user unknown")
        assert [m.rcpt_tos for m in server.messages] == [["good@example.ro"], ["good2@example.ro"]]
        assert server.sessions == 1 and server.count("RSET") == 1


def test_pipelined_refusal_then_421_replaces_the_session() -> None:
    with FaultServer(pipelining=True) as server:
        server.fault("RCPT", "452 4.2.2 mailbox full", address="full@example.ro")
        server.fault("DATA", "421 4.3.2 closing", times=1)
        with Session(transport(server.url)) as conn:
            d = conn.send(envelope("full@example.ro", 1))
            assert d == Delivery("deferred", 452, "452 4.2.2 mailbox full", reconnect=True)
            assert conn.closed
        assert server.messages == [] and server.count("RSET") == 0


def test_multi_line_replies_become_one_line(server: FaultServer) -> None:
    server.fault("RCPT", "550-5.1.1 The account does not exist.\r\n550 5.1.1 Try another.")
    with Session(transport(server.url)) as conn:
        d = conn.send(envelope("x@example.ro"))
    assert d.outcome == "failed" and d.code == 550
    assert d.reply == "550 5.1.1 The account does not exist. 5.1.1 Try another."


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA", "DATA_END"])
def test_421_anywhere_defers_and_asks_for_a_new_connection(server: FaultServer, stage: Any) -> None:
    server.fault(stage, "421 4.3.2 service shutting down", times=1)
    t = transport(server.url)
    with Session(t) as conn:
        d = conn.send(envelope("a@example.ro"))
        assert d == Delivery("deferred", 421, "421 4.3.2 service shutting down", reconnect=True)
        assert conn.closed
        # The engine should reconnect; if it does not, nothing goes on the wire.
        again = conn.send(envelope("b@example.ro"))
        assert again.outcome == "deferred" and again.reconnect
    with Session(t) as conn:
        assert conn.send(envelope("b@example.ro")).outcome == "sent"
    assert server.sessions == 2
    assert [m.rcpt_tos for m in server.messages] == [["b@example.ro"]]


def test_disconnect_after_n_messages(server: FaultServer) -> None:
    server.disconnect_after(2)
    with Session(transport(server.url)) as conn:
        got = [conn.send(envelope(f"r{i}@example.ro", i)) for i in range(3)]
    assert [d.outcome for d in got] == ["sent", "sent", "deferred"]
    assert got[2].reconnect and got[2].code is None
    assert got[2].reply.startswith("connection lost at MAIL")
    assert len(server.messages) == 2


def test_disconnect_at_data_command(server: FaultServer) -> None:
    server.fault("DATA", close=True)
    with Session(transport(server.url)) as conn:
        d = conn.send(envelope("a@example.ro"))
    assert d.outcome == "deferred" and d.reconnect
    assert d.reply.startswith("connection lost at DATA")
    assert server.messages == []


def test_disconnect_after_the_data_warns_of_a_possible_duplicate(server: FaultServer) -> None:
    server.fault("DATA_END", close=True)
    with Session(transport(server.url)) as conn:
        d = conn.send(envelope("a@example.ro"))
    assert d.outcome == "deferred" and d.reconnect
    assert "end of data" in d.reply and "twice" in d.reply


def test_slow_reply_times_out_within_the_timeout(server: FaultServer) -> None:
    server.fault("RCPT", delay=3.0)
    with Session(transport(server.url)) as conn:
        start = time.monotonic()
        d = conn.send(envelope("a@example.ro"))
        elapsed = time.monotonic() - start
    assert d == Delivery("deferred", None, "no reply to RCPT within 0.5 s", reconnect=True)
    assert TIMEOUT <= elapsed < TIMEOUT + 0.5


def test_slow_reply_within_the_timeout_is_fine(server: FaultServer) -> None:
    server.fault("DATA_END", delay=0.2)
    with Session(transport(server.url)) as conn:
        assert conn.send(envelope("a@example.ro")).outcome == "sent"


def test_connection_dropped_while_idle(server: FaultServer) -> None:
    # Relays close idle sessions; the engine learns it at the next MAIL and reconnects.
    t = transport(server.url)
    with Session(t) as conn:
        assert conn.send(envelope("a@example.ro", 1)).outcome == "sent"
        server.drop_connections()
        d = conn.send(envelope("b@example.ro", 2))
    assert d.outcome == "deferred" and d.reconnect and d.reply.startswith("connection lost at")
    with Session(t) as conn:
        assert conn.send(envelope("b@example.ro", 2)).outcome == "sent"
    assert len(server.messages) == 2 and server.sessions == 2


def test_server_down_then_up(server: FaultServer) -> None:
    t = transport(server.url)
    with Session(t) as conn:
        assert conn.send(envelope("a@example.ro", 1)).outcome == "sent"
        server.stop()
        lost = conn.send(envelope("b@example.ro", 2))
        assert lost.outcome == "deferred" and lost.reconnect
    with pytest.raises(ConnectFailed, match="No SMTP server answers"):
        t.connect()
    server.start()
    with Session(t) as conn:
        assert conn.send(envelope("b@example.ro", 2)).outcome == "sent"
    assert [m.rcpt_tos for m in server.messages] == [["a@example.ro"], ["b@example.ro"]]
    assert server.sessions == 2


# -- SMTPUTF8 ---------------------------------------------------------------------------


def test_invalid_envelope_address_fails_without_a_round_trip(server: FaultServer) -> None:
    with Session(transport(server.url)) as conn:
        d = conn.send(envelope("a@example.ro\r\nRCPT TO:<b@example.ro>"))
        assert d.outcome == "failed" and "invalid envelope address" in d.reply
        assert conn.send(envelope("a@example.ro")).outcome == "sent"
    assert server.count("MAIL") == 1 and server.count("RSET") == 0


def test_smtputf8_is_used_when_offered(server: FaultServer) -> None:
    rcpt = "ștefan@exemplu.ro"
    data = (f"From: <{SENDER}>\r\nTo: {rcpt}\r\nSubject: Bună\r\n\r\nSalut, Ștefan!\r\n").encode()
    with Session(transport(server.url)) as conn:
        assert conn.smtputf8
        d = conn.send(Envelope(SENDER, rcpt, data, "<u@x>", smtputf8=True))
        # The next, ASCII, message is still fine on the same session.
        assert conn.send(envelope("ana@example.ro")).outcome == "sent"
    assert d.outcome == "sent"
    first = server.messages[0]
    assert first.smtputf8 and "SMTPUTF8" in first.mail_options
    assert first.rcpt_tos == [rcpt]
    assert first.data == data
    assert message_from_string(first.data.decode(), policy=default_policy)["To"] == rcpt
    assert not server.messages[1].smtputf8


def test_smtputf8_not_offered_fails_without_a_round_trip() -> None:
    with FaultServer(smtputf8=False) as server:
        with Session(transport(server.url)) as conn:
            d = conn.send(envelope("ștefan@exemplu.ro", smtputf8=True))
            # A non-ASCII address needs SMTPUTF8 even when the flag was forgotten.
            unflagged = conn.send(envelope("ștefan@exemplu.ro"))
            ok = conn.send(envelope("ana@example.ro"))
        assert server.count("MAIL") == 1
    expected = f"recipient needs SMTPUTF8, which {server.url} does not offer"
    assert d == Delivery("failed", None, expected)
    assert unflagged == d
    assert ok.outcome == "sent"


# -- TLS --------------------------------------------------------------------------------


def test_starttls_with_a_custom_ca(certs: Certificates) -> None:
    with FaultServer(starttls=certs.server_context()) as server:
        t = transport(server.url, ssl_context=certs.client_context())
        with Session(t) as conn:
            assert conn.tls
            assert conn.send(envelope("a@example.ro")).outcome == "sent"
        assert server.messages[0].tls
        assert [v for _, v in server.commands[:3]] == ["EHLO", "STARTTLS", "EHLO"]


def test_untrusted_certificate_is_a_clear_error(certs: Certificates) -> None:
    with FaultServer(starttls=certs.server_context()) as server:
        with pytest.raises(SmtpSetupError) as info:
            transport(server.url).connect()  # the system's CAs do not know ours
        assert server.messages == [] and server.count("MAIL") == 0
        # The server saw the client give up the handshake (a moment later, in its thread).
        deadline = time.monotonic() + 2
        while not server.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [type(e).__name__ for e in server.errors] == ["TLSSetupException"]
    text = str(info.value)
    assert f"The TLS certificate of 127.0.0.1:{server.port} is not trusted" in text
    assert "unable to get local issuer certificate" in text


def test_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    other = make_certificates(tmp_path, ("mail.example.org",))
    with FaultServer(starttls=other.server_context()) as server:
        with pytest.raises(SmtpSetupError, match="not trusted.*mismatch"):
            transport(server.url, ssl_context=other.client_context()).connect()


def test_starttls_required_but_not_offered(server: FaultServer) -> None:
    with pytest.raises(SmtpSetupError, match="does not offer STARTTLS") as info:
        transport(server.url, starttls="required").connect()
    assert 'smtp.starttls = "required"' in str(info.value)
    assert server.count("MAIL") == 0


def test_starttls_off_does_not_use_it(certs: Certificates) -> None:
    with FaultServer(starttls=certs.server_context()) as server:
        with Session(transport(server.url, starttls="off")) as conn:
            assert not conn.tls
            assert conn.send(envelope("a@example.ro")).outcome == "sent"
        assert server.count("STARTTLS") == 0


def test_non_loopback_host_requires_starttls(remote: str) -> None:
    with FaultServer(host=remote) as server:
        with pytest.raises(SmtpSetupError, match="does not offer STARTTLS") as info:
            transport(server.url).connect()
        assert "it is not a loopback address" in str(info.value)
        assert server.count("MAIL") == 0


def test_non_loopback_host_with_starttls_works(certs: Certificates, remote: str) -> None:
    with FaultServer(
        host=remote, starttls=certs.server_context(), auth=("ana", PASSWORD)
    ) as server:
        t = transport(
            server.url, username="ana", password=PASSWORD, ssl_context=certs.client_context()
        )
        with Session(t) as conn:
            assert conn.tls
            assert conn.send(envelope("a@example.ro")).outcome == "sent"
        assert server.messages[0].tls and server.messages[0].login == "ana"


def test_non_loopback_without_tls_never_gets_the_password(remote: str) -> None:
    with FaultServer(host=remote, auth=("ana", PASSWORD)) as server:
        with pytest.raises(SmtpSetupError) as info:
            transport(server.url, starttls="off", username="ana", password=PASSWORD)
        assert server.sessions == 0 and server.auth_attempts == []
    text = str(info.value)
    assert "Refusing to send the SMTP password for ana" in text
    assert PASSWORD not in text and PASSWORD not in repr(info.value)


def test_smtps_implicit_tls(certs: Certificates) -> None:
    with FaultServer(implicit_tls=certs.server_context()) as server:
        assert server.url.startswith("smtps://")
        with Session(transport(server.url, ssl_context=certs.client_context())) as conn:
            assert conn.tls
            assert conn.send(envelope("a@example.ro")).outcome == "sent"
        assert server.messages[0].tls and server.count("STARTTLS") == 0


def test_smtps_against_a_plain_server_explains(server: FaultServer) -> None:
    url = server.url.replace("smtp://", "smtps://")
    with pytest.raises(SmtpSetupError, match="TLS with 127.0.0.1") as info:
        transport(url, ssl_context=ssl.create_default_context()).connect()
    assert "smtps:// is implicit TLS" in (info.value.hint or "")


# -- AUTH -------------------------------------------------------------------------------


def test_auth_success_over_starttls(certs: Certificates) -> None:
    server = FaultServer(starttls=certs.server_context(), auth=("ana", PASSWORD), require_auth=True)
    with server:
        t = transport(
            server.url, username="ana", password=PASSWORD, ssl_context=certs.client_context()
        )
        with Session(t) as conn:
            assert conn.send(envelope("a@example.ro")).outcome == "sent"
        assert server.auth_attempts == [("ana", True)]
        assert server.messages[0].login == "ana"
        # AUTH came after STARTTLS.
        verbs = [v for _, v in server.commands]
        assert verbs.index("STARTTLS") < verbs.index("AUTH")


@pytest.mark.parametrize("password", [PASSWORD, "wrong-but-ascii"], ids=["utf8", "ascii"])
def test_auth_failure_names_user_and_host_but_not_the_password(
    certs: Certificates, password: str
) -> None:
    with FaultServer(starttls=certs.server_context(), auth=("ana", "right")) as server:
        t = transport(
            server.url, username="ana", password=password, ssl_context=certs.client_context()
        )
        with pytest.raises(SmtpSetupError) as info:
            t.connect()
        assert server.count("MAIL") == 0
        assert server.auth_attempts and not any(ok for _, ok in server.auth_attempts)
    text = str(info.value)
    assert text.startswith(
        f"SMTP authentication failed for user ana at 127.0.0.1:{server.port}; "
        "check BULLETIN_SMTP_PASSWORD"
    )
    assert "535" in text
    for shown in (text, repr(info.value), repr(t), t.description):
        assert password not in shown
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_auth_on_loopback_without_tls_is_allowed() -> None:
    # An ASCII password goes through smtplib's own login (PLAIN here); the UTF-8 one in
    # test_auth_success_over_starttls through bulletin's, which smtplib cannot do.
    with FaultServer(auth=("ana", "s3cret"), require_auth=True) as server:
        with Session(transport(server.url, username="ana", password="s3cret")) as conn:
            assert not conn.tls
            assert conn.send(envelope("a@example.ro")).outcome == "sent"
        assert server.auth_attempts == [("ana", True)]


def test_auth_temporary_failure_is_worth_retrying() -> None:
    with FaultServer(auth=("ana", "s3cret")) as server:
        server.fault("AUTH", "454 4.7.0 temporary authentication failure")
        with pytest.raises(ConnectFailed) as info:
            transport(server.url, username="ana", password="s3cret").connect()
    assert info.value.code == 454
    assert "cannot check the login right now: 454 4.7.0" in str(info.value)


def test_starttls_temporarily_unavailable_is_worth_retrying(certs: Certificates) -> None:
    with FaultServer(starttls=certs.server_context()) as server:
        server.fault("STARTTLS", "454 4.7.0 TLS not available due to temporary reason")
        with pytest.raises(ConnectFailed) as info:
            transport(server.url, ssl_context=certs.client_context()).connect()
    assert info.value.code == 454 and "refused STARTTLS" in str(info.value)


def test_username_without_password_is_refused_before_connecting() -> None:
    with pytest.raises(SmtpSetupError, match="no SMTP password") as info:
        transport("smtp://127.0.0.1:1", username="ana")
    assert "BULLETIN_SMTP_PASSWORD" in (info.value.hint or "")


def test_username_but_no_auth_offered(server: FaultServer) -> None:
    with pytest.raises(SmtpSetupError, match="does not offer AUTH"):
        transport(server.url, username="ana", password=PASSWORD).connect()


# -- connecting -------------------------------------------------------------------------


def test_nothing_listening_says_what_to_do() -> None:
    port = free_port()
    with pytest.raises(ConnectFailed) as info:
        transport(f"smtp://127.0.0.1:{port}").connect()
    assert str(info.value) == (
        f"No SMTP server answers at 127.0.0.1:{port}. Start the local capture with "
        f"`bulletin sink --port {port}`, or set smtp.url in bulletin.toml."
    )


def test_nothing_listening_on_the_sink_port_names_the_plain_command() -> None:
    t = transport("smtp://127.0.0.1:2525")
    try:
        t.connect().close()
    except ConnectFailed as exc:
        assert str(exc) == (
            "No SMTP server answers at 127.0.0.1:2525. Start the local capture with "
            "`bulletin sink`, or set smtp.url in bulletin.toml."
        )
    else:  # pragma: no cover - something runs on 2525 here
        pytest.skip("a server listens on 127.0.0.1:2525")


def test_greeting_421_is_a_connect_failure(server: FaultServer) -> None:
    server.fault("CONNECT", "421 4.3.2 too busy, try later")
    with pytest.raises(ConnectFailed) as info:
        transport(server.url).connect()
    assert info.value.code == 421
    assert "refused the session: 421 4.3.2 too busy" in str(info.value)


def test_slow_greeting_is_a_connect_failure(server: FaultServer) -> None:
    server.fault("CONNECT", delay=3.0)
    start = time.monotonic()
    with pytest.raises(ConnectFailed, match=r"did not answer within 0\.5 s"):
        transport(server.url).connect()
    assert time.monotonic() - start < TIMEOUT + 0.5


def test_unknown_host_is_a_connect_failure() -> None:
    with pytest.raises(ConnectFailed, match="Cannot find the SMTP server no-such-host.invalid"):
        transport("smtp://no-such-host.invalid:25", starttls="off").connect()


# -- configuration ----------------------------------------------------------------------


def test_url_parsing() -> None:
    assert parse_smtp_url("smtp://127.0.0.1:2525").address == "127.0.0.1:2525"
    assert parse_smtp_url("smtps://mail.example.org").port == 465
    assert parse_smtp_url("smtp://mail.example.org/").port == 25
    v6 = parse_smtp_url("smtp://[::1]:2525")
    assert v6.host == "::1" and v6.address == "[::1]:2525" and v6.loopback
    for bad, why in [
        ("http://x:25", "smtp:// or smtps://"),
        ("smtp://x:99999", "port"),
        ("smtp://x:25/path", "without a path"),
        ("smtp://:25", "names no host"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_smtp_url(bad)


def test_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as info:
        parse_smtp_url("smtp://ana:hunter2@mail.example.org:587")
    assert "smtp.username" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST."))
    assert not any(is_loopback(h) for h in ("10.0.0.1", "mail.example.org", "192.0.2.2", "::"))


def test_dot_stuffing() -> None:
    assert dot_stuff(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert dot_stuff(b".start\r\n") == b"..start\r\n.\r\n"
    assert dot_stuff(b"no final newline") == b"no final newline\r\n.\r\n"
    # A bare LF followed by a dot is stuffed too: no early end of data anywhere.
    assert dot_stuff(b"x\n.\r\n") == b"x\n..\r\n.\r\n"
    assert dot_stuff(b"x\r\n.\r\n") == b"x\r\n..\r\n.\r\n"
