"""A real SMTP server for tests whose misbehaviour a test programs: :class:`FaultServer`.

aiosmtpd runs in a thread on a free 127.0.0.1 port. By default it accepts every message
and records it (:attr:`FaultServer.messages`). A test then adds faults, each a rule "at
this stage, for this address, do that":

    with FaultServer() as server:
        server.fault("RCPT", "550 5.1.1 user unknown", address="gone@example.org")
        server.fault("DATA_END", "451 4.3.0 try again later", times=1)
        server.fault("MAIL", "421 4.3.2 shutting down")       # 421 closes the connection
        server.fault("DATA", close=True)                         # drop without a reply
        server.fault("RCPT", delay=2.0)                          # a slow reply
        server.disconnect_after(3)                               # drop at the 4th MAIL
        ... send with bulletin.dispatch.smtp.SmtpTransport(..., url=server.url) ...
        assert [m.rcpt_tos for m in server.messages] == [...]
        assert server.sessions == 1 and server.count("RSET") == 0

Stages: ``CONNECT`` (the greeting), ``EHLO``, ``STARTTLS``, ``AUTH``, ``MAIL``, ``RCPT``,
``DATA`` (the command, before 354), ``DATA_END`` (after the message data, instead of the
final reply), ``RSET``, ``QUIT``. A fault first waits ``delay`` seconds; then, if it has a
``reply``, that line is sent instead of the normal one; with ``close`` the connection is
closed (after the reply, if any; a 421 reply always closes). A fault with only a delay
lets the normal reply follow. ``address`` limits a fault to one address: the sender for
MAIL, a recipient for RCPT, DATA and DATA_END. ``after`` lets that many matching events
pass first (counted across connections, from when the fault is added); ``times`` limits
how often it fires (``None``: always). Faults are checked in the order added.

Server options: ``smtputf8`` (advertise SMTPUTF8), ``starttls`` (an SSLContext: offer
STARTTLS with it), ``require_starttls``, ``implicit_tls`` (an SSLContext: speak TLS from the
first byte, for ``smtps://``), ``auth`` (a ``(user, password)`` pair: offer AUTH PLAIN and
LOGIN, before STARTTLS too when ``starttls`` is not given, as loopback relays may) and
``require_auth`` (530 to MAIL before AUTH), ``pipelining`` (advertise PIPELINING, RFC 2920;
aiosmtpd takes pipelined commands either way, it only does not say so).

``stop()`` drops open connections like a crashed server; ``start()`` again serves on the
same port ("server down, then up"); ``drop_connections()`` drops them and keeps listening.
:func:`make_certificates` makes a CA and a server certificate for STARTTLS tests.

Observations (all thread-safe copies): :attr:`messages`, :attr:`sessions` (connections that
said EHLO/HELO), :attr:`commands` (``(session, VERB)`` in order, AUTH arguments never kept),
:meth:`count`, :attr:`pipelined`, :attr:`auth_attempts`, :attr:`errors`,
:meth:`wait_for_messages`.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from bulletin.sink import SocketController, listen_socket

Stage = Literal[
    "CONNECT", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "DATA_END", "RSET", "QUIT"
]
STAGES: tuple[Stage, ...] = (
    "CONNECT",
    "EHLO",
    "STARTTLS",
    "AUTH",
    "MAIL",
    "RCPT",
    "DATA",
    "DATA_END",
    "RSET",
    "QUIT",
)


@dataclass
class Fault:
    """One programmed misbehaviour; see the module docstring."""

    stage: Stage
    reply: str | None = None
    address: str | None = None
    close: bool = False
    delay: float = 0.0
    times: int | None = None
    after: int = 0
    fired: int = 0
    """How often it has fired so far."""
    _seen: int = 0

    def matches(self, stage: str, addresses: list[str]) -> bool:
        if stage != self.stage or (self.times is not None and self.fired >= self.times):
            return False
        if self.address is not None and self.address.lower() not in (a.lower() for a in addresses):
            return False
        self._seen += 1
        if self._seen <= self.after:
            return False
        self.fired += 1
        return True


@dataclass(frozen=True)
class Received:
    """One message the server accepted (replied 2xx to its data)."""

    session: int
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    """As received, dot-stuffing undone, CRLF line ends."""
    mail_options: list[str]
    smtputf8: bool
    tls: bool
    login: str | None
    at: float = 0.0
    """When it was accepted, on the monotonic clock (rate measurements)."""


@dataclass
class _State:
    """Everything shared between the test thread and the server thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[Fault] = field(default_factory=list)
    messages: list[Received] = field(default_factory=list)
    commands: list[tuple[int, str]] = field(default_factory=list)
    greeted_sessions: set[int] = field(default_factory=set)
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    next_session: int = 0
    paused: bool = False
    require_auth: bool = False
    offer_auth: bool = False
    pipelining: bool = False
    pipelined: int = 0
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def take(self, stage: str, addresses: list[str]) -> Fault | None:
        with self.lock:
            if self.paused:
                return None
            for fault in self.faults:
                if fault.matches(stage, addresses):
                    return fault
        return None


class _FaultHandler:
    """aiosmtpd handler: the end of DATA (faults and recording) and AUTH."""

    def __init__(self, state: _State, credentials: tuple[str, str] | None) -> None:
        self.state = state
        self.credentials = credentials

    async def handle_EHLO(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: SmtpEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # With this 5-argument hook aiosmtpd leaves recording the name to us.
        session.host_name = hostname
        if not self.state.offer_auth:
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        if self.state.pipelining:
            # aiosmtpd reads commands in turn from a buffered stream, so it takes pipelined
            # groups as they come; it just does not say so.
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        assert isinstance(server, _FaultSMTP)
        fault = self.state.take("DATA_END", list(envelope.rcpt_tos))
        status = "250 2.0.0 OK queued as Q" + str(len(self.state.messages) + 1)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.reply is not None:
                status = fault.reply
            if fault.close and server.transport is not None:
                if fault.reply is None:
                    # The reply returned below goes to a closed transport: never sent.
                    server.transport.close()
                else:
                    # Close once the reply is written (close() flushes what is buffered).
                    server.loop.call_soon(server.transport.close)
        if status.startswith("2") and not (fault is not None and fault.close and not fault.reply):
            auth = session.auth_data
            login = auth.login.decode() if isinstance(auth, LoginPassword) else None
            with self.state.changed:
                self.state.messages.append(
                    Received(
                        session=server.session_id,
                        mail_from=envelope.mail_from or "",
                        rcpt_tos=list(envelope.rcpt_tos),
                        data=envelope.original_content or b"",
                        mail_options=list(envelope.mail_options),
                        smtputf8=bool(envelope.smtp_utf8),
                        tls=server.encrypted,
                        login=login,
                        at=time.monotonic(),
                    )
                )
                self.state.changed.notify_all()
        return status

    async def handle_exception(self, error: Exception) -> str:
        # Failed TLS handshakes are what some tests are about: keep them, do not log a
        # traceback for each.
        with self.state.lock:
            self.state.errors.append(error)
        return f"500 Error: ({type(error).__name__}) {error}"

    def authenticate(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: SmtpEnvelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        user = auth_data.login.decode("utf-8", "replace")
        ok = self.credentials is not None and (user, auth_data.password.decode()) == (
            self.credentials
        )
        with self.state.lock:
            self.state.auth_attempts.append((user, ok))
        return AuthResult(success=ok, auth_data=auth_data if ok else None, handled=False)


class _FaultSMTP(SMTP):
    """aiosmtpd's SMTP with the command-stage faults and a command log."""

    def __init__(self, handler: _FaultHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.state = handler.state
        with self.state.lock:
            self.state.next_session += 1
            self.session_id = self.state.next_session
        self._greeted = False

    async def push(self, status: Any) -> None:
        if not self._greeted:
            # The first line pushed is the 220 greeting: the CONNECT stage.
            self._greeted = True
            fault = self.state.take("CONNECT", [])
            if fault is not None and await self._act(fault):
                return
        await super().push(status)

    @property
    def encrypted(self) -> bool:
        """True after STARTTLS and on an implicit-TLS (smtps) connection."""
        transport = self.transport
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def _log(self, verb: str) -> None:
        with self.state.lock:
            self.state.commands.append((self.session_id, verb))
            if verb in ("EHLO", "HELO"):
                self.state.greeted_sessions.add(self.session_id)

    async def _fault(self, stage: Stage, arg: str | None = None) -> bool:
        """Log the command and apply a matching fault; True when it replaced the reply."""
        self._log(stage)
        addresses: list[str] = []
        if arg and "<" in arg:
            addresses = [arg.split("<", 1)[1].split(">", 1)[0]]
        fault = self.state.take(stage, addresses)
        return fault is not None and await self._act(fault)

    async def _act(self, fault: Fault) -> bool:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        close = fault.close or (fault.reply or "").startswith("421")
        if fault.reply is None and not close:
            return False
        if fault.reply is not None:
            await super().push(fault.reply)
        if close and self.transport is not None:
            self.transport.close()
        return True

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._fault("EHLO"):
            await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._fault("EHLO"):
            await super().smtp_HELO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._reader._buffer:  # type: ignore[attr-defined]
            # More commands were already here when MAIL was read: a pipelined group.
            with self.state.lock:
                self.state.pipelined += 1
        if await self._fault("MAIL", arg):
            return
        assert self.session is not None
        if self.state.require_auth and not self.session.authenticated:
            await super().push("530 5.7.0 Authentication required")
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._fault("RCPT", arg):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        addresses = list(self.envelope.rcpt_tos) if self.envelope is not None else []
        self._log("DATA")
        fault = self.state.take("DATA", addresses)
        if fault is None or not await self._act(fault):
            await super().smtp_DATA(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if not await self._fault("RSET"):
            await super().smtp_RSET(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        if not await self._fault("QUIT"):
            await super().smtp_QUIT(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not await self._fault("STARTTLS"):
            await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        # Never pass the argument on to the log or a fault: it carries the credentials.
        if not await self._fault("AUTH"):
            await super().smtp_AUTH(arg)


class FaultServer:
    """A programmable SMTP server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        smtputf8: bool = True,
        starttls: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        require_auth: bool = False,
        idle_timeout: float = 30.0,
        pipelining: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._state = _State()
        self._handler = _FaultHandler(self._state, auth)
        self._implicit_tls = implicit_tls
        self._state.require_auth = require_auth
        self._state.offer_auth = auth is not None
        self._state.pipelining = pipelining
        self._smtp_kwargs: dict[str, Any] = {
            "server_hostname": "faults.test",
            "enable_SMTPUTF8": smtputf8,
            "tls_context": starttls,
            "require_starttls": require_starttls,
            # AUTH is offered over plain text only when no TLS is configured: a loopback
            # relay may take it so. (Requiring AUTH without TLS makes aiosmtpd warn, so
            # require_auth is enforced by _FaultSMTP.smtp_MAIL instead.)
            "auth_require_tls": starttls is not None,
            "timeout": idle_timeout,
        }
        if auth is not None:
            self._smtp_kwargs["authenticator"] = self._handler.authenticate
        self._controller: SocketController | None = None

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> FaultServer:
        """Listen (on the same port as before after a stop); return self."""
        assert self._controller is None, "already running"
        sock = listen_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        controller = SocketController(
            self._handler,
            sock,
            smtp_class=_FaultSMTP,
            ssl_context=self._implicit_tls,
            **self._smtp_kwargs,
        )
        # The controller opens one connection of its own to check the server is up; it
        # must not use up a CONNECT fault.
        with self._state.lock:
            self._state.paused = True
        try:
            controller.start()
        except BaseException:
            sock.close()
            raise
        finally:
            with self._state.lock:
                self._state.paused = False
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections (faults and records are kept)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def drop_connections(self) -> None:
        """Drop every open connection but keep listening."""
        if self._controller is not None:
            self._controller.close_sessions()

    def __enter__(self) -> FaultServer:
        if self._controller is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        scheme = "smtps" if self._implicit_tls is not None else "smtp"
        return f"{scheme}://{self.host}:{self.port}"

    # -- programming -----------------------------------------------------------------

    def fault(
        self,
        stage: Stage,
        reply: str | None = None,
        *,
        address: str | None = None,
        close: bool = False,
        delay: float = 0.0,
        times: int | None = None,
        after: int = 0,
    ) -> Fault:
        """Add a fault (checked in the order added; the first match fires)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        fault = Fault(stage, reply, address, close, delay, times, after)
        with self._state.lock:
            self._state.faults.append(fault)
        return fault

    def disconnect_after(self, messages: int) -> Fault:
        """Drop the connection, without a reply, at the MAIL after ``messages`` MAILs.

        Once; MAILs are counted from now, across connections.
        """
        return self.fault("MAIL", close=True, after=messages, times=1)

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    # -- observations ----------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        with self._state.lock:
            return list(self._state.messages)

    @property
    def sessions(self) -> int:
        """Connections that said EHLO or HELO (the controller's own check is not one)."""
        with self._state.lock:
            return len(self._state.greeted_sessions)

    @property
    def commands(self) -> list[tuple[int, str]]:
        with self._state.lock:
            return list(self._state.commands)

    @property
    def pipelined(self) -> int:
        """MAIL commands that arrived with more commands behind them (a pipelined group)."""
        with self._state.lock:
            return self._state.pipelined

    def count(self, verb: str) -> int:
        """How many times clients sent ``verb`` (``MAIL``, ``RSET``, ``AUTH``...)."""
        with self._state.lock:
            return sum(1 for _, v in self._state.commands if v == verb.upper())

    @property
    def auth_attempts(self) -> list[tuple[str, bool]]:
        """``(user, accepted)`` per AUTH exchange; passwords are not kept."""
        with self._state.lock:
            return list(self._state.auth_attempts)

    @property
    def errors(self) -> list[Exception]:
        """Exceptions in the server's sessions (e.g. aiosmtpd's TLSSetupException)."""
        with self._state.lock:
            return list(self._state.errors)

    def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``n`` messages were accepted; return them (maybe fewer)."""
        deadline = time.monotonic() + timeout
        with self._state.changed:
            self._state.changed.wait_for(
                lambda: len(self._state.messages) >= n, max(0.0, deadline - time.monotonic())
            )
            return list(self._state.messages)


# -- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and a server certificate it signed, as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """For FaultServer(starttls=... or implicit_tls=...)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_certificates(
    folder: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> Certificates:
    """Write a CA and a server certificate for ``names`` (DNS names or IPs) into ``folder``.

    EC keys: generating them takes milliseconds, RSA keys take a noticeable fraction of a
    second each.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulletin test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    folder.mkdir(parents=True, exist_ok=True)
    out = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    out.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out
