"""A private Dovecot IMAP server for the test session, in a temporary folder.

Debian's ``dovecot-imapd`` (``make system-deps`` installs it; the package's own service is
never used) runs with a configuration of our own: its runtime, state and log files, a
passwd-file of test users and their Maildirs all live in one temporary folder, and it listens
on 127.0.0.1 only, on free ports, for plain IMAP with STARTTLS and for implicit TLS, with a
certificate signed by a throwaway CA (:func:`smtpfaults.make_certificates`).

Without the ``dovecot`` program the tests that need it are skipped with the reason, except
under ``CI=true``, where a missing server is a failure: CI must run them.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpfaults import Certificates, make_certificates

DOVECOT = shutil.which("dovecot") or (
    "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
)

USER = "bounces@clusterpolisee.example.org"
PASSWORD = "parolă-secretă-Ștefan-7Qz"
"""Non-ASCII on purpose: the login goes through AUTHENTICATE PLAIN in UTF-8."""
ASCII_USER = "unsubscribe"
ASCII_PASSWORD = "s3cret-ascii-Pa55"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DovecotServer:
    """A running Dovecot of our own; :meth:`stop` ends it."""

    def __init__(self) -> None:
        assert DOVECOT is not None
        self.root = Path(tempfile.mkdtemp(prefix="bulletin-dovecot-"))
        self.root.chmod(0o755)  # login processes run as dovenull and look into base_dir
        self.certs: Certificates = make_certificates(self.root / "tls")
        self.port = _free_port()
        self.tls_port = _free_port()
        self.config = self.root / "dovecot.conf"
        self.log = self.root / "dovecot.log"
        (self.root / "run").mkdir()
        (self.root / "state").mkdir()
        (self.root / "mail").mkdir()
        passwd = self.root / "passwd"
        passwd.write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}\n{ASCII_USER}:{{PLAIN}}{ASCII_PASSWORD}\n",
            encoding="utf-8",
        )
        uid, gid = os.getuid(), os.getgid()
        me = _user_name()
        login_user, internal_user = me, me
        if uid == 0:
            # Dovecot refuses root for login processes and for mail: as root, they run as
            # the package's system users, and the mail belongs to ``dovecot``.
            import pwd

            login_user, internal_user = "dovenull", "dovecot"
            owner = pwd.getpwnam("dovecot")
            uid, gid = owner.pw_uid, owner.pw_gid
            os.chown(self.root / "mail", uid, gid)
        root = self.root
        self.config.write_text(
            f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {self.log}
info_log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.certs.cert_file}
ssl_key = <{self.certs.key_file}
auth_mechanisms = plain login
first_valid_uid = 1
disable_plaintext_auth = no
default_internal_user = {internal_user}
default_login_user = {login_user}
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
""",
            encoding="utf-8",
        )
        with open(self.root / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        logs = self.logs()
        self.stop()
        raise RuntimeError(f"Dovecot did not start: {logs}")

    def logs(self) -> str:
        out = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                out.append(path.read_text(encoding="utf-8", errors="replace")[-3000:])
        return "\n".join(out)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    # helpers for tests ---------------------------------------------------------------------

    def client_context(self) -> ssl.SSLContext:
        return self.certs.client_context()

    def admin(self, user: str = USER, password: str = PASSWORD) -> imaplib.IMAP4:
        """A logged-in connection for populating and inspecting mailboxes."""
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.starttls(ssl_context=self.client_context())
        secret = f"\0{user}\0{password}".encode()
        client.authenticate("PLAIN", lambda _challenge: secret)
        return client

    def url(self, folder: str = "INBOX", *, user: str = USER, tls: bool = False) -> str:
        from urllib.parse import quote

        if tls:
            return f"imaps://{quote(user, safe='')}@127.0.0.1:{self.tls_port}/{folder}"
        return f"imap://{quote(user, safe='')}@127.0.0.1:{self.port}/{folder}"


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    """The session's private Dovecot; skipped without it, except under CI (a failure there)."""
    if DOVECOT is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("dovecot is not installed, and CI must run the IMAP tests")
        pytest.skip("dovecot is not installed (`make system-deps` installs dovecot-imapd)")
    server = DovecotServer()
    yield server
    server.stop()
