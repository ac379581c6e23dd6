"""The SMTP transport: smtplib driven one command at a time, every reply classified.

``smtplib.SMTP.sendmail`` hides which command failed and raises a different exception for
each; the engine needs to know, per recipient, whether to retry, give up or reconnect. So
:class:`SmtpConnection` sends MAIL, RCPT and DATA itself, reads each reply and turns it into
a :class:`~bulletin.dispatch.transport.Delivery`:

=====================================  ==========================================
what happened                          Delivery
=====================================  ==========================================
2xx after the message data             ``sent`` (the reply keeps the queue id)
4xx at MAIL, RCPT, DATA or after data  ``deferred`` with code and reply
5xx anywhere                           ``failed`` with code and reply
421 anywhere, connection lost, timeout ``deferred`` with ``reconnect=True``
SMTPUTF8 needed but not offered        ``failed``, without a round trip
=====================================  ==========================================

A connection carries many messages; RSET is sent only after a refused transaction, so a
clean run costs exactly MAIL, RCPT, DATA and the data per message. When the relay offers
PIPELINING (RFC 2920), MAIL, RCPT and DATA leave in one write and their three replies are
read after it: two round trips per message instead of four. Each reply is still classified
as the table says for its own command (a refused RCPT fails or defers that recipient and
the replies still owed are read before RSET), so the outcome is the same either way.
The commands are written by this module (the addresses are plain ``local@domain``, checked
by the composer), and smtplib is kept for the session: connecting, TLS, AUTH and reading
replies.

TLS policy (``smtp.starttls``): ``smtps://`` is implicit TLS. On ``smtp://``, STARTTLS is
used when the server offers it and is required for every host that is not loopback; ``off``
never uses it and ``required`` requires it even on loopback. Certificates are verified
(``ssl.create_default_context``). The password is never sent over an unencrypted
connection to a non-loopback host, and it never appears in a message, log or exception.
"""

from __future__ import annotations

import base64
import ipaddress
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from bulletin.dispatch.transport import ConnectFailed, Delivery, Envelope
from bulletin.errors import BulletinError, ConfigError, Location, Problem
from bulletin.mail.compose import stuff_dots
from bulletin.workspace import SmtpConfig, host_port, smtp_url_parts

"""Ports used when smtp.url names none (RFC 5321 relay port, RFC 8314 submissions)."""

SINK_PORT = 2525
"""The port `bulletin sink` listens on by default."""

_CONFIG_HINT = "Fix smtp.url in bulletin.toml; see README 'Configuration'."


class SmtpSetupError(BulletinError):
    """The relay answers, but cannot work with this configuration (TLS, certificate, AUTH).

    No retry fixes these: the configuration or the relay has to change.
    """


@dataclass(frozen=True)
class SmtpTarget:
    """Where smtp.url points: scheme, host and port."""

    scheme: Literal["smtp", "smtps"]
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port``, with brackets around an IPv6 address."""
        return host_port(self.host, self.port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1).

    Decided by name, not by resolving it: a name that happens to resolve to this machine is
    treated like any remote host, which is the safe side for the TLS and AUTH rules.
    """
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_smtp_url(url: str) -> SmtpTarget:
    """Split ``smtp://host:port`` or ``smtps://host:port``; raise ConfigError otherwise.

    The rule is the configuration's (:func:`bulletin.workspace.smtp_url_parts`), checked when
    bulletin.toml loads; this is for URLs that did not come through it.
    """
    try:
        scheme, host, port = smtp_url_parts(url)
    except ValueError as exc:
        problem = Problem(f"smtp.url: {exc}", Location("bulletin.toml"), code="config")
        raise ConfigError([problem], hint=_CONFIG_HINT) from None
    return SmtpTarget(scheme, host, port)


class SmtpTransport:
    """Opens :class:`SmtpConnection` s to the relay named by ``[smtp]``.

    ``password`` comes from :meth:`bulletin.workspace.Workspace.smtp_password`; it is kept
    only to log in and never shown. ``helo_name`` overrides ``smtp.helo_name``.
    ``ssl_context`` replaces the default certificate-verifying context (tests use it to
    trust a self-signed certificate); it must still verify, bulletin never turns that off.

    Configuration that cannot work is refused here, before any network traffic: a bad
    URL, a user name without a password, a password that would cross the network in clear.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        password: str | None,
        helo_name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.target = parse_smtp_url(config.url)
        self.username = config.username
        self._password = password
        self._helo = helo_name or config.helo_name
        self._helo_lock = threading.Lock()
        self._ssl_context = ssl_context
        self._ssl_lock = threading.Lock()
        target = self.target
        if target.scheme == "smtps":
            how = "TLS"
        elif config.starttls == "off":
            how = "no TLS"
        elif self.tls_required:
            how = "STARTTLS required"
        else:
            how = "STARTTLS when offered"
        self.description = f"{target.url} ({how})"
        if self.username:
            self.description += f", AUTH as {self.username}"
            if not password:
                raise SmtpSetupError(
                    f"smtp.username is {self.username!r} but no SMTP password is set.",
                    hint="Set BULLETIN_SMTP_PASSWORD, or smtp.password_file in bulletin.toml "
                    "(a file with mode 0600, outside git).",
                )
            if target.scheme == "smtp" and config.starttls == "off" and not target.loopback:
                raise SmtpSetupError(
                    f"Refusing to send the SMTP password for {self.username} to "
                    f"{target.address} over an unencrypted connection (smtp.starttls = "
                    '"off").',
                    hint='Remove smtp.starttls = "off" so STARTTLS is used, or use '
                    "smtps://host:465 in smtp.url.",
                )

    def __repr__(self) -> str:
        # Spelled out so the password can never end up in a log through repr().
        return f"SmtpTransport({self.description!r})"

    @property
    def tls_required(self) -> bool:
        """True when a connection must be encrypted before any mail goes over it."""
        if self.target.scheme == "smtps":
            return True
        mode = self.config.starttls
        return mode == "required" or (mode == "auto" and not self.target.loopback)

    def connect(self) -> SmtpConnection:
        """Connect, greet, secure and log in; see :meth:`Transport.connect`."""
        timeout = self.config.timeout
        with self._errors():
            client = self._new_client()
            try:
                tls = self._start(client)
            except BaseException:
                client.close()
                raise
        return SmtpConnection(client, self.target, timeout=timeout, tls=tls)

    def _new_client(self) -> smtplib.SMTP:
        """A client connected to the relay, past its 220 greeting."""
        target = self.target
        helo = self._helo_name()
        timeout = self.config.timeout
        # Given the host, the constructor connects and also remembers the name for
        # certificate checks (smtplib's connect() alone does not).
        if target.scheme == "smtps":
            return smtplib.SMTP_SSL(
                target.host,
                target.port,
                local_hostname=helo,
                timeout=timeout,
                context=self._context(),
            )
        return smtplib.SMTP(target.host, target.port, local_hostname=helo, timeout=timeout)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn what smtplib, ssl and socket raise while connecting into our two kinds."""
        target = self.target
        try:
            yield
        except smtplib.SMTPConnectError as exc:
            said = _reply(exc.smtp_code, exc.smtp_error)
            raise ConnectFailed(
                f"{target.address} refused the session: {said}", exc.smtp_code
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise SmtpSetupError(
                f"The TLS certificate of {target.address} is not trusted ({exc.verify_message}).",
                hint="Name the relay in smtp.url as its certificate does. A relay with a "
                "self-signed certificate needs that certificate in the system's trust "
                'store (or, on loopback, smtp.starttls = "off").',
            ) from None
        except ssl.SSLError as exc:
            hint = (
                "Is the port right? smtps:// is implicit TLS (usually port 465); ports 25 "
                "and 587 take smtp:// with STARTTLS."
                if target.scheme == "smtps"
                else "Check that the relay's TLS setup works."
            )
            raise SmtpSetupError(
                f"TLS with {target.address} failed: {exc.reason or exc}.", hint=hint
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            detail = str(exc).removeprefix("Connection unexpectedly closed").strip(": ")
            if "timed out" in detail:
                what = f"did not answer within {self.config.timeout:g} s"
            else:
                what = "closed the connection before any mail was sent"
            raise ConnectFailed(f"{target.address} {what}.") from None
        except socket.gaierror as exc:
            raise ConnectFailed(
                f"Cannot find the SMTP server {target.host} ({exc.strerror}). "
                "Check smtp.url in bulletin.toml."
            ) from None
        except ConnectionRefusedError:
            raise ConnectFailed(self._nobody_answers()) from None
        except TimeoutError:
            raise ConnectFailed(
                f"{target.address} did not answer within {self.config.timeout:g} s. "
                "Check smtp.url in bulletin.toml and the network."
            ) from None
        except OSError as exc:
            raise ConnectFailed(
                f"Cannot connect to {target.address}: {exc.strerror or exc}."
            ) from None
        except smtplib.SMTPResponseException as exc:
            said = _reply(exc.smtp_code, exc.smtp_error)
            raise ConnectFailed(f"{target.address} answered badly: {said}") from None

    def _start(self, client: smtplib.SMTP) -> bool:
        """EHLO, STARTTLS and AUTH as configured; return whether the session is encrypted."""
        target = self.target
        self._hello(client)
        tls = target.scheme == "smtps"
        if target.scheme == "smtp" and self.config.starttls != "off":
            if client.has_extn("starttls"):
                self._starttls(client)
                tls = True
            elif self.tls_required:
                why = (
                    'smtp.starttls = "required"'
                    if self.config.starttls == "required"
                    else "it is not a loopback address"
                )
                raise SmtpSetupError(
                    f"{target.url} does not offer STARTTLS, and bulletin only sends "
                    f"to it encrypted ({why}).",
                    hint="Use smtps:// if the relay takes implicit TLS (usually port "
                    '465); set smtp.starttls = "off" only for a relay on a network '
                    "you trust.",
                )
        if self.username:
            self._login(client, tls)
        return tls

    def _nobody_answers(self) -> str:
        address = self.target.address
        if self.target.loopback:
            command = "bulletin sink"
            if self.target.port != SINK_PORT:
                command += f" --port {self.target.port}"
            return (
                f"No SMTP server answers at {address}. Start the local capture with "
                f"`{command}`, or set smtp.url in bulletin.toml."
            )
        return (
            f"No SMTP server answers at {address} (connection refused). "
            "Check smtp.url in bulletin.toml."
        )

    def _hello(self, client: smtplib.SMTP) -> None:
        code, text = client.ehlo()
        if code == 421:
            said = _reply(code, text)
            raise ConnectFailed(f"{self.target.address} closed the session: {said}", code)
        if code != 250:
            code, text = client.helo()
            if code != 250:
                raise ConnectFailed(
                    f"{self.target.address} refused EHLO and HELO: {_reply(code, text)}", code
                )

    def _starttls(self, client: smtplib.SMTP) -> None:
        try:
            client.starttls(context=self._context())
        except smtplib.SMTPResponseException as exc:
            message = (
                f"{self.target.address} refused STARTTLS: {_reply(exc.smtp_code, exc.smtp_error)}"
            )
            if 400 <= exc.smtp_code < 500:
                raise ConnectFailed(message, exc.smtp_code) from None
            raise SmtpSetupError(message) from None
        # RFC 3207: what the server said before TLS is void; ask again.
        self._hello(client)

    def _login(self, client: smtplib.SMTP, tls: bool) -> None:
        target = self.target
        user = self.username
        assert user is not None and self._password is not None
        if not tls and not target.loopback:  # pragma: no cover - refused in __init__
            raise SmtpSetupError(f"Refusing to send the SMTP password to {target.address}.")
        if not client.has_extn("auth"):
            raise SmtpSetupError(
                f"smtp.username is set, but {target.url} does not offer AUTH"
                + ("." if tls else " without TLS."),
                hint="Remove smtp.username if the relay takes mail without logging in.",
            )
        try:
            if user.isascii() and self._password.isascii():
                client.login(user, self._password)
            else:
                self._login_plain_utf8(client, user, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            code = exc.smtp_code
            said = _reply(code, exc.smtp_error)
            if code == 421:
                raise ConnectFailed(f"{target.address} closed the session: {said}", code) from None
            if 400 <= code < 500:
                # e.g. 454 4.7.0: the server cannot check credentials now; later it may.
                raise ConnectFailed(
                    f"{target.address} cannot check the login right now: {said}", code
                ) from None
            raise SmtpSetupError(
                f"SMTP authentication failed for user {user} at {target.address}; check "
                f"BULLETIN_SMTP_PASSWORD (or smtp.password_file). The server said: {said}"
            ) from None
        except smtplib.SMTPNotSupportedError:  # pragma: no cover - has_extn checked above
            raise SmtpSetupError(f"{target.url} does not offer AUTH.") from None
        except smtplib.SMTPException as exc:
            if isinstance(exc, smtplib.SMTPServerDisconnected):
                raise
            offered = client.esmtp_features.get("auth", "").strip()
            raise SmtpSetupError(
                f"{target.url} offers no login method bulletin knows (it offers: {offered}; "
                "bulletin speaks PLAIN, LOGIN and CRAM-MD5)."
            ) from None
        finally:
            # smtplib keeps the credentials on the client after login; drop the password.
            client.password = ""

    def _login_plain_utf8(self, client: smtplib.SMTP, user: str, password: str) -> None:
        """AUTH PLAIN with UTF-8 credentials (RFC 4616), which smtplib cannot send.

        smtplib encodes the AUTH exchange as ASCII and fails on "ș" in a password.
        """
        if "PLAIN" not in client.esmtp_features.get("auth", "").upper().split():
            raise SmtpSetupError(
                f"The SMTP user name or password has non-ASCII characters, which need AUTH "
                f"PLAIN, and {self.target.url} does not offer it."
            )
        token = base64.b64encode(
            b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
        ).decode("ascii")
        code, text = client.docmd("AUTH", "PLAIN " + token)
        if code == 334:
            # A server that takes no initial response asks for the credentials instead.
            code, text = client.docmd(token)
        if code not in (235, 503):
            raise smtplib.SMTPAuthenticationError(code, text)

    def _context(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return self._ssl_context

    def _helo_name(self) -> str:
        # smtplib works the local name out from socket.getfqdn(), which can wait on DNS;
        # do it once per transport rather than once per connection.
        with self._helo_lock:
            if self._helo is None:
                probe = smtplib.SMTP()
                self._helo = probe.local_hostname
                probe.close()
            return self._helo


class SmtpConnection:
    """One SMTP session carrying many messages; see the module docstring for the classes."""

    def __init__(
        self, client: smtplib.SMTP, target: SmtpTarget, *, timeout: float, tls: bool
    ) -> None:
        self._client: smtplib.SMTP | None = client
        self.target = target
        self.timeout = timeout
        self.tls = tls
        """Whether the session is encrypted (smtps, or STARTTLS succeeded)."""
        self.smtputf8 = client.has_extn("smtputf8")
        """Whether the server offers SMTPUTF8 (RFC 6531)."""
        self._size = client.has_extn("size")
        self._8bitmime = client.has_extn("8bitmime")
        self.pipelining = client.has_extn("pipelining")
        """Whether the server offers PIPELINING (RFC 2920): MAIL, RCPT and DATA go in one
        write, their replies are read after."""
        self.messages = 0
        """Messages the server accepted on this connection."""

    @property
    def closed(self) -> bool:
        return self._client is None

    def send(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope; never raises for SMTP-level or network failures."""
        client = self._client
        if client is None:
            return Delivery("deferred", None, "the connection is closed", reconnect=True)
        data = envelope.data
        mail_from, rcpt_to = envelope.mail_from, envelope.rcpt_to
        for address in (mail_from, rcpt_to):
            if "\r" in address or "\n" in address or "<" in address or ">" in address:
                # No relay can take such an address (smtplib would raise ValueError).
                return Delivery("failed", None, f"invalid envelope address {address!r}")
        # A non-ASCII address can only travel in an SMTPUTF8 transaction, whatever the flag.
        utf8 = envelope.smtputf8 or not (mail_from.isascii() and rcpt_to.isascii())
        if utf8 and not self.smtputf8:
            return Delivery(
                "failed",
                None,
                f"recipient needs SMTPUTF8, which {self.target.url} does not offer",
            )
        options = ""
        if self._size:
            # Stuffed data is a few bytes longer than the message: SIZE is an estimate
            # (RFC 1870), and a little high is on the safe side.
            options = f" SIZE={len(data)}"
        if utf8:
            options += " SMTPUTF8"
        if self._8bitmime and not data.isascii():
            options += " BODY=8BITMIME"
        # The addresses were checked above and by the composer (plain local@domain), so they
        # go between angle brackets as they are: smtplib's quoteaddr() parses each one with
        # the email package's address parser, per command, for nothing.
        mail = f"MAIL FROM:<{mail_from}>{options}\r\n".encode("utf-8" if utf8 else "ascii")
        rcpt = f"RCPT TO:<{rcpt_to}>\r\n".encode("utf-8" if utf8 else "ascii")
        stage = "MAIL"
        try:
            if self.pipelining:
                # RFC 2920: MAIL, RCPT and DATA in one write, their replies read after, in
                # order. One round trip instead of three before the message data.
                client.send(mail + rcpt + b"DATA\r\n")
                code, text = client.getreply()
                if not 200 <= code < 300:
                    return self._refused_pipelined(client, stage, code, text, 2)
                stage = "RCPT"
                code, text = client.getreply()
                if not 200 <= code < 300:
                    return self._refused_pipelined(client, stage, code, text, 1)
                stage = "DATA"
                code, text = client.getreply()
            else:
                client.send(mail)
                code, text = client.getreply()
                if not 200 <= code < 300:
                    return self._refused(client, stage, code, text)
                stage = "RCPT"
                client.send(rcpt)
                code, text = client.getreply()
                if not 200 <= code < 300:
                    return self._refused(client, stage, code, text)
                stage = "DATA"
                client.send(b"DATA\r\n")
                code, text = client.getreply()
            if code != 354:
                return self._refused(client, stage, code, text)
            stage = "message data"
            # smtplib.SMTP.data() would dot-stuff with a regular expression over the whole
            # message; the composer did it for the engine's envelopes (once per issue for
            # the bytes everyone shares), bytes.replace does it for the others.
            client.send(data if envelope.stuffed else dot_stuff(data))
            stage = "end of data"
            code, text = client.getreply()
            if 200 <= code < 300:
                self.messages += 1
                return Delivery("sent", code, _reply(code, text))
            return self._refused(client, stage, code, text)
        except (smtplib.SMTPException, OSError) as exc:
            return self._lost(stage, exc)

    def _refused_pipelined(
        self, client: smtplib.SMTP, stage: str, code: int, text: bytes, left: int
    ) -> Delivery:
        """A refusal of MAIL or RCPT in a pipelined group: read the ``left`` replies still
        owed (RCPT and/or DATA) before the usual RSET, so that the next transaction starts
        in step with the server.

        The server refuses the DATA of a group whose MAIL or RCPT it refused (RFC 2920
        section 3.1); should it take it anyway (354), an empty message is ended with "."
        and its reply read too: nothing is delivered, since there is no valid recipient.
        """
        if code == 421 or not 400 <= code < 600:
            return self._refused(client, stage, code, text)
        try:
            for i in range(left):
                later, _ = client.getreply()
                if later == 421:
                    # Closing after the refusal: the refusal is the answer for this
                    # recipient, and the session has to be replaced.
                    break
                if later == 354 and i == left - 1:
                    client.send(b".\r\n")
                    client.getreply()
            else:
                return self._refused(client, stage, code, text)
        except (smtplib.SMTPException, OSError):
            pass
        self._drop()
        reply = _reply(code, text)
        return Delivery("deferred" if code < 500 else "failed", code, reply, reconnect=True)

    def close(self) -> None:
        """Quit politely if possible; never raises."""
        client = self._client
        if client is None:
            return
        self._client = None
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            client.close()

    def _refused(self, client: smtplib.SMTP, stage: str, code: int, text: bytes) -> Delivery:
        reply = _reply(code, text)
        if code == 421 or not 400 <= code < 600:
            # 421: the server is closing the session. Anything outside 4xx/5xx here (a
            # garbled reply, a 354 to MAIL) means client and server disagree on the state.
            self._drop()
            if code != 421:
                reply = f"unexpected reply to {stage}: {reply}"
            return Delivery("deferred", code if code > 0 else None, reply, reconnect=True)
        outcome: Literal["deferred", "failed"] = "deferred" if code < 500 else "failed"
        # After the end of data the transaction is over either way; before it, MAIL or RCPT
        # may have been accepted, and the next MAIL would be "nested". RSET clears both.
        try:
            rset_code, _ = client.rset()
        except (smtplib.SMTPException, OSError):
            rset_code = -1
        if rset_code != 250:
            self._drop()
            return Delivery(outcome, code, reply, reconnect=True)
        return Delivery(outcome, code, reply)

    def _lost(self, stage: str, exc: BaseException) -> Delivery:
        self._drop()
        detail = str(exc).removeprefix("Connection unexpectedly closed").strip(": ")
        if isinstance(exc, TimeoutError) or "timed out" in detail:
            what = f"no reply to {stage} within {self.timeout:g} s"
        elif isinstance(exc, smtplib.SMTPResponseException):
            what = f"bad reply to {stage}: {_reply(exc.smtp_code, exc.smtp_error)}"
        else:
            what = f"connection lost at {stage}" + (f" ({detail})" if detail else "")
        if stage == "end of data":
            what += "; the server may have received the message, so a retry may deliver it twice"
        return Delivery("deferred", None, what, reconnect=True)

    def _drop(self) -> None:
        """Close the socket without QUIT: the session is unusable."""
        client = self._client
        self._client = None
        if client is not None:
            client.close()


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload: lines starting with '.' doubled, CRLF and the final '.' appended.

    The rule itself is :func:`bulletin.mail.compose.stuff_dots`.
    """
    stuffed = stuff_dots(data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _reply(code: int, text: bytes | str) -> str:
    """``550 5.1.1 user unknown``: a reply as one line, multi-line replies joined."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return f"{code} {text}".strip() if code > 0 else text
