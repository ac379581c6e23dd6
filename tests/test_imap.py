"""`bounces fetch` and `unsubscribes fetch`: the importers' rules over IMAP, on a real Dovecot.

The session's Dovecot (:mod:`imapserver`) holds, per test, a folder with the DSN corpus of
tests/data/dsn (bounces, a delay, an ARF complaint, an out-of-office reply) and replies
written by people; mail is put there with APPEND, as a delivery would, and inspected over
IMAP. Each test uses folders of its own, so tests do not see each other's mail.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulletin import workspace as ws
from bulletin.cli import cli
from bulletin.errors import BulletinError, ConfigError
from bulletin.inbound.bounces import BounceSettings
from bulletin.inbound.imap import (
    ImapSettings,
    ImapSetupError,
    Watcher,
    bounce_intakes,
    fetch,
    quote_mailbox,
    unsubscribe_intakes,
)
from bulletin.inbound.unsubscribes import UnsubscribeSettings
from bulletin.store import schema
from bulletin.store.db import open_store, write_transaction
from bulletin.store.subscribers import add_subscriber, create_list, find_subscriber, get_list
from bulletin.tokens import TokenSigner
from conftest import set_config
from imapserver import (  # noqa: F401 - dovecot_server is the session's fixture
    ASCII_PASSWORD,
    ASCII_USER,
    PASSWORD,
    USER,
    DovecotServer,
    dovecot_server,
)
from test_bounces import DOMAIN, HARD, KEY, LIST, SUBSCRIBERS, all_samples, sample, snapshot

_folders = itertools.count(1)


@pytest.fixture
def dovecot(dovecot_server: DovecotServer) -> DovecotServer:  # noqa: F811 - a fixture
    return dovecot_server


@pytest.fixture
def folders(dovecot: DovecotServer) -> tuple[str, str]:
    """A new (mail folder, processed folder) pair for this test."""
    n = next(_folders)
    folder = f"Bounces{n}"
    client = dovecot.admin()
    client.create(quote_mailbox(folder))
    client.logout()
    return folder, f"Procesate{n}"


@pytest.fixture
def workspace(
    workspace_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    dovecot: DovecotServer,
    folders: tuple[str, str],
) -> ws.Workspace:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    monkeypatch.setenv("BULLETIN_IMAP_PASSWORD", PASSWORD)
    set_config(
        workspace_dir,
        "sender",
        return_path=f"bounces+{{token}}@{DOMAIN}",
        unsubscribe_mailto=f"unsubscribe@{DOMAIN}",
    )
    with open(workspace_dir / "bulletin.toml", "a", encoding="utf-8") as f:
        f.write(
            f'\n[imap]\nbounces_url = "{dovecot.url(folders[0])}"\n'
            f'processed_folder = "{folders[1]}"\n'
        )
    return ws.load(workspace_dir)


@pytest.fixture
def engine(workspace: ws.Workspace) -> Iterator[sa.Engine]:
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        create_list(conn, LIST, "Newsletter în română")
        for address in SUBSCRIBERS:
            add_subscriber(conn, address, LIST)
    yield engine
    engine.dispose()


def human_reply(n: int) -> bytes:
    """A person's answer to the newsletter: it must stay where it is, unread."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Ștefan Rădulescu <stefan.r@example.ro>"
    msg["To"] = f"newsletter@{DOMAIN}"
    msg["Subject"] = f"Re: Clusterul de poliță, numărul {n}"
    msg["Message-ID"] = f"<reply.{n}@example.ro>"
    msg["Date"] = "Tue, 14 Oct 2014 12:00:00 +0300"
    msg.set_content("Bună ziua, mulțumesc pentru articol! Aș vrea să știu mai multe despre ș și ț.")
    return msg.as_bytes()


HUMAN_FLAGS = {"<reply.1@example.ro>": "", "<reply.2@example.ro>": r"\Flagged $Important"}


def populate(dovecot: DovecotServer, folder: str, messages: list[tuple[bytes, str]]) -> None:
    client = dovecot.admin()
    for data, flags in messages:
        typ, _ = client.append(quote_mailbox(folder), f"({flags})" if flags else None, None, data)
        assert typ == "OK"
    client.logout()


def corpus_with_replies() -> list[tuple[bytes, str]]:
    """The DSN corpus with the two human replies among it (one flagged by a person)."""
    reports = [(data, "") for data in all_samples()]
    replies = [(human_reply(n), HUMAN_FLAGS[f"<reply.{n}@example.ro>"]) for n in (1, 2)]
    return reports[:4] + replies[:1] + reports[4:] + replies[1:]


def folder_state(
    dovecot: DovecotServer, folder: str, *, unique: bool = True
) -> dict[str, set[str]]:
    """Message-ID -> flags of every message in ``folder`` (read without changing anything).

    ``unique``: fail if a Message-ID is there twice.
    """
    client = dovecot.admin()
    typ, _ = client.select(quote_mailbox(folder), readonly=True)
    if typ != "OK":
        client.logout()
        return {}
    typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    client.logout()
    out: dict[str, set[str]] = {}
    for item in data:
        if isinstance(item, tuple):
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            mid = re.search(rb"<[^>]+>", item[1])
            assert flags is not None and mid is not None
            key = mid.group(0).decode()
            assert not unique or key not in out, f"{key} twice in {folder}"
            out[key] = set(flags.group(1).decode().split()) - {r"\Recent"}
    return out


def key_of(data: bytes) -> str:
    found = re.search(rb"(?im)^Message-Id:\s*(<[^>]+>)", data)
    assert found is not None
    return found.group(1).decode()


def settings_of(workspace: ws.Workspace, url: str | None = None) -> ImapSettings:
    return ImapSettings.from_workspace(workspace, "bounces", url)


def fetch_bounces(workspace: ws.Workspace, engine: sa.Engine, dovecot: DovecotServer, **kw: object):  # type: ignore[no-untyped-def]
    return fetch(
        engine,
        kw.pop("settings", None) or settings_of(workspace),  # type: ignore[arg-type]
        "bounces",
        bounce_intakes(BounceSettings.from_workspace(workspace)),
        ssl_context=dovecot.client_context(),
        **kw,  # type: ignore[arg-type]
    )


def status(engine: sa.Engine, email: str) -> str:
    with engine.begin() as conn:
        sub = find_subscriber(conn, email)
        assert sub is not None
        return sub.status


def processed_keys(engine: sa.Engine) -> list[str]:
    with engine.begin() as conn:
        return sorted(
            conn.execute(sa.select(schema.inbound_messages.c.message_key)).scalars().all()
        )


REPORT_IDS = {key_of(data) for data in all_samples()}
HUMAN_IDS = set(HUMAN_FLAGS)


# --- fetching ------------------------------------------------------------------------------


def test_fetch_processes_the_reports_moves_them_and_leaves_people_s_mail_alone(
    workspace: ws.Workspace,
    engine: sa.Engine,
    dovecot: DovecotServer,
    folders: tuple[str, str],
) -> None:
    folder, done = folders
    populate(dovecot, folder, corpus_with_replies())
    before = folder_state(dovecot, folder)
    assert set(before) == REPORT_IDS | HUMAN_IDS

    result = fetch_bounces(workspace, engine, dovecot)

    # The same counts as `bounces import` of the same corpus (test_bounces), plus IMAP's own.
    assert result.report.summary_rows()[:5] == [
        ("messages read", 10),
        ("hard bounces", 4),
        ("soft bounces", 3),
        ("complaints", 1),
        ("suppressed now", 5),
    ]
    assert result.fetch.summary_rows() == [
        ("messages in the folder", 12),
        ("processed by an earlier run", 0),
        (f"moved to {done}", 10),
        ("left as they were", 2),
    ]
    for email in HARD:
        assert status(engine, email) == "bounced"
    assert status(engine, "radu.stoica@example.net") == "complained"
    suppressed = {e for e in SUBSCRIBERS if status(engine, e) != "active"}
    assert suppressed == HARD | {"radu.stoica@example.net"}

    # People's replies: same folder, same flags, still unread; the reports moved, unread too.
    after = folder_state(dovecot, folder)
    assert after == {mid: before[mid] for mid in HUMAN_IDS}
    assert after["<reply.1@example.ro>"] == set()
    assert after["<reply.2@example.ro>"] == {r"\Flagged", "$Important"}
    moved = folder_state(dovecot, done)
    assert set(moved) == REPORT_IDS
    assert all(r"\Seen" not in flags for flags in moved.values())
    assert processed_keys(engine) == sorted(REPORT_IDS)

    # A second run finds nothing to do and changes nothing, in the store or on the server.
    store = snapshot(engine)
    again = fetch_bounces(workspace, engine, dovecot)
    assert again.report.read == 0
    assert again.fetch.summary_rows()[-1] == ("left as they were", 2)
    assert snapshot(engine) == store
    assert folder_state(dovecot, folder) == after
    assert folder_state(dovecot, done) == moved


def test_flag_mode_flags_only_what_it_processed(
    workspace_dir: Path,
    workspace: ws.Workspace,
    engine: sa.Engine,
    dovecot: DovecotServer,
    folders: tuple[str, str],
) -> None:
    folder, done = folders
    set_config(workspace_dir, "imap", processed_action="flag")
    workspace = ws.load(workspace_dir)
    populate(dovecot, folder, corpus_with_replies())
    result = fetch_bounces(workspace, engine, dovecot)
    assert result.fetch.done == 10 and result.fetch.left == 2
    state = folder_state(dovecot, folder)
    for mid in REPORT_IDS:
        assert state[mid] == {r"\Seen", "$BulletinProcessed"}
    assert state["<reply.1@example.ro>"] == set()
    assert state["<reply.2@example.ro>"] == {r"\Flagged", "$Important"}
    assert folder_state(dovecot, done) == {}  # nothing moved, no folder made

    # The next run skips what is flagged: it reads only the two replies, and leaves them.
    again = fetch_bounces(workspace, engine, dovecot)
    assert (again.fetch.messages, again.fetch.left, again.report.read) == (2, 2, 0)
    assert folder_state(dovecot, folder) == state


def test_dry_run_changes_nothing_in_the_store_or_the_mailbox(
    workspace: ws.Workspace, engine: sa.Engine, dovecot: DovecotServer, folders: tuple[str, str]
) -> None:
    folder, done = folders
    populate(dovecot, folder, corpus_with_replies())
    before, store = folder_state(dovecot, folder), snapshot(engine)
    result = fetch_bounces(workspace, engine, dovecot, dry_run=True)
    assert (result.report.hard, result.report.suppressed, result.fetch.done) == (4, 5, 0)
    assert folder_state(dovecot, folder) == before
    assert folder_state(dovecot, done) == {}
    assert snapshot(engine) == store
    assert processed_keys(engine) == []


def test_a_report_processed_before_its_move_is_only_moved_next_time(
    workspace: ws.Workspace, engine: sa.Engine, dovecot: DovecotServer, folders: tuple[str, str]
) -> None:
    """What a run killed between its commit and its MOVE leaves: recorded, still in place."""
    folder, done = folders
    populate(dovecot, folder, corpus_with_replies())
    # The store side of a run, without the server side: the messages are recorded and the
    # suppressions made, and the copy in the folder stays (another folder's copy is read).
    copy = f"{folder}-copy"
    client = dovecot.admin()
    client.create(quote_mailbox(copy))
    client.select(quote_mailbox(folder))
    client.uid("COPY", "1:*", quote_mailbox(copy))
    client.logout()
    copy_settings = replace(settings_of(workspace, dovecot.url(copy)), folder=f"{done}-other")
    first = fetch_bounces(workspace, engine, dovecot, settings=copy_settings)
    assert first.report.hard == 4
    store = snapshot(engine)

    rerun = fetch_bounces(workspace, engine, dovecot)
    assert rerun.report.read == 0  # nothing counted twice...
    assert rerun.fetch.earlier == 10  # ...each recognised as processed...
    assert set(folder_state(dovecot, done)) == REPORT_IDS  # ...and moved now
    assert set(folder_state(dovecot, folder)) == HUMAN_IDS
    assert snapshot(engine) == store


def test_two_runs_at_once_count_each_report_once(
    workspace: ws.Workspace, engine: sa.Engine, dovecot: DovecotServer, folders: tuple[str, str]
) -> None:
    folder, done = folders
    populate(dovecot, folder, corpus_with_replies())
    results: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        own = open_store(workspace.database_url())
        try:
            results.append(fetch_bounces(workspace, own, dovecot, batch_size=3))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    reports = [r.report for r in results]  # type: ignore[attr-defined]
    assert sum(r.hard for r in reports) == 4
    assert sum(r.soft for r in reports) == 3
    assert sum(r.complaints for r in reports) == 1
    assert sum(r.suppressed for r in reports) == 5
    assert sum(r.already for r in reports) == 0
    with engine.begin() as conn:
        events = conn.execute(
            sa.select(
                schema.events.c.subscriber_id, schema.events.c.kind, schema.events.c.source
            ).where(schema.events.c.kind != "subscribed")
        ).all()
    assert len(events) == len(set(events)) == 8  # 4 hard, 3 soft, 1 complaint: once each
    assert processed_keys(engine) == sorted(REPORT_IDS)
    # Both runs move what they read; when both MOVE one message at the same instant, the
    # server may file two copies (Dovecot does): the store, not the folder, is the count.
    assert set(folder_state(dovecot, done, unique=False)) == REPORT_IDS
    assert set(folder_state(dovecot, folder)) == HUMAN_IDS


def test_unsubscribes_fetch_acts_on_tokens_and_leaves_other_mail(
    workspace_dir: Path,
    workspace: ws.Workspace,
    engine: sa.Engine,
    dovecot: DovecotServer,
    folders: tuple[str, str],
) -> None:
    folder, done = folders
    with engine.begin() as conn:
        sub = find_subscriber(conn, "ana.popescu@example.ro")
        assert sub is not None
        list_id = get_list(conn, LIST).id
    token = TokenSigner.from_workspace(workspace).unsubscribe_token(sub.id, list_id)
    request = EmailMessage(policy=SMTP)
    request["From"] = "ana.popescu@example.ro"
    request["To"] = f"unsubscribe+{token}@{DOMAIN}"
    request["Subject"] = "unsubscribe"
    request["Message-ID"] = "<unsub.1@client.example>"
    request.set_content("Vă rog să mă dezabonați.")
    human = human_reply(7)
    populate(dovecot, folder, [(request.as_bytes(), ""), (human, "")])

    set_config(workspace_dir, "imap", unsubscribes_url=dovecot.url(folder))
    workspace = ws.load(workspace_dir)
    result = fetch(
        engine,
        ImapSettings.from_workspace(workspace, "unsubscribes"),
        "unsubscribes",
        unsubscribe_intakes(UnsubscribeSettings.from_workspace(workspace)),
        ssl_context=dovecot.client_context(),
    )
    assert (result.report.unsubscribed, result.report.invalid) == (1, 0)
    assert result.fetch.left == 1
    assert set(folder_state(dovecot, done)) == {"<unsub.1@client.example>"}
    assert folder_state(dovecot, folder) == {"<reply.7@example.ro>": set()}
    with engine.begin() as conn:
        from bulletin.store.subscribers import recipients

        assert "ana.popescu@example.ro" not in {r.email for r in recipients(conn, LIST)}


def test_folder_names_are_sent_in_modified_utf7() -> None:
    assert quote_mailbox("Procesate") == '"Procesate"'
    assert quote_mailbox("Răspunsuri & ședințe") == '"R&AQM-spunsuri &- &Ahk-edin&Ahs-e"'
    assert quote_mailbox("台北") == '"&U,BTFw-"'  # RFC 3501's own example
    assert quote_mailbox('a"b\\c') == '"a\\"b\\\\c"'


def test_a_non_ascii_processed_folder_is_created(
    workspace_dir: Path,
    workspace: ws.Workspace,
    engine: sa.Engine,
    dovecot: DovecotServer,
    folders: tuple[str, str],
) -> None:
    folder, _ = folders
    target = f"Rapoarte procesate ș ț {folder}"
    set_config(workspace_dir, "imap", processed_folder=target)
    workspace = ws.load(workspace_dir)
    populate(dovecot, folder, [(sample("postfix-hard-user-unknown.eml"), "")])
    fetch_bounces(workspace, engine, dovecot)
    client = dovecot.admin()
    typ, data = client.list('""', quote_mailbox(target))
    client.logout()
    assert typ == "OK" and data and data[0] is not None
    assert set(folder_state(dovecot, target)) == {key_of(sample("postfix-hard-user-unknown.eml"))}


# --- configuration, TLS and passwords --------------------------------------------------------


def test_urls_are_parsed_and_a_password_in_them_is_refused() -> None:
    url = ws.imap_url_parts("imaps://bounces%40example.org@mail.example.org/Rapoarte%20ș")
    assert (url.scheme, url.user, url.host, url.port, url.folder) == (
        "imaps",
        "bounces@example.org",
        "mail.example.org",
        993,
        "Rapoarte ș",
    )
    assert ws.imap_url_parts("imap://u@h:1143").folder == "INBOX"
    assert ws.imap_url_parts("imap://u@h").port == 143
    for bad, words in (
        ("imaps://u:hunter2@h/INBOX", "holds a password"),
        ("pop3://u@h/", "imaps://"),
        ("imaps://h/INBOX", "names no user"),
        ("imaps://u@h:99999/", "port"),
    ):
        with pytest.raises(ValueError, match=words) as caught:
            ws.imap_url_parts(bad)
        assert "hunter2" not in str(caught.value)


def test_a_password_in_bulletin_toml_is_refused_at_its_line(workspace_dir: Path) -> None:
    with open(workspace_dir / "bulletin.toml", "a", encoding="utf-8") as f:
        f.write('\n[imap]\nbounces_url = "imaps://bounces:hunter2@mail.example.org/INBOX"\n')
    line = (workspace_dir / "bulletin.toml").read_text(encoding="utf-8").splitlines().index(
        'bounces_url = "imaps://bounces:hunter2@mail.example.org/INBOX"'
    ) + 1
    with pytest.raises(ConfigError) as caught:
        ws.load(workspace_dir)
    text = str(caught.value)
    assert f"bulletin.toml:{line}" in text and "holds a password" in text
    assert "hunter2" not in text


def test_without_a_url_or_a_password_the_command_says_what_to_set(
    workspace_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BULLETIN_IMAP_PASSWORD", raising=False)
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), "bounces", "fetch"])
    assert result.exit_code != 0
    assert "No mailbox to fetch bounces from" in result.output
    assert "imap.bounces_url" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(
        cli, ["-w", str(workspace_dir), "bounces", "fetch", "imaps://u@127.0.0.1:1/INBOX"]
    )
    assert "No IMAP password for u at 127.0.0.1:1" in result.output
    assert "BULLETIN_IMAP_PASSWORD" in result.output


def test_a_password_file_must_be_private(
    workspace_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BULLETIN_IMAP_PASSWORD", raising=False)
    secret = workspace_dir / "imap-password"
    secret.write_text("din-fișier\n", encoding="utf-8")
    secret.chmod(0o644)
    with open(workspace_dir / "bulletin.toml", "a", encoding="utf-8") as f:
        f.write('\n[imap]\npassword_file = "imap-password"\n')
    workspace = ws.load(workspace_dir)
    with pytest.raises(BulletinError, match="readable by other users"):
        workspace.imap_password()
    secret.chmod(0o600)
    assert workspace.imap_password() == "din-fișier"


def test_imaps_with_an_untrusted_certificate_is_refused(
    workspace: ws.Workspace, engine: sa.Engine, dovecot: DovecotServer, folders: tuple[str, str]
) -> None:
    settings = settings_of(workspace, dovecot.url(folders[0], tls=True))
    make = bounce_intakes(BounceSettings.from_workspace(workspace))
    with pytest.raises(ImapSetupError, match="certificate of 127.0.0.1:.* is not trusted"):
        fetch(engine, settings, "bounces", make)  # the system's CAs only
    # Trusting the test CA, the same URL works (implicit TLS).
    result = fetch(engine, settings, "bounces", make, ssl_context=dovecot.client_context())
    assert result.fetch.messages == 0


def test_a_wrong_password_is_a_clear_error_without_the_password(
    workspace: ws.Workspace, dovecot: DovecotServer, folders: tuple[str, str], tmp_path: Path
) -> None:
    wrong = "greșită-Țară-9981"
    result = run_bulletin(
        workspace.root, tmp_path, dovecot, "bounces", "fetch", password=wrong, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"refused the login of {USER}" in output
    assert "BULLETIN_IMAP_PASSWORD" in output
    assert "Traceback" not in output
    assert wrong not in output
    assert wrong.encode("utf-8") not in (dovecot.root / "dovecot.log").read_bytes()


class _NoStartTls(socketserver.StreamRequestHandler):
    """An IMAP greeting without STARTTLS; records what the client sends."""

    received: list[bytes] = []

    def handle(self) -> None:
        self.wfile.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain only\r\n")
        for line in self.rfile:
            type(self).received.append(line)
            tag = line.split(b" ", 1)[0]
            if b"CAPABILITY" in line.upper():
                self.wfile.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
            self.wfile.write(tag + b" OK done\r\n")


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_imap_to_another_machine_without_starttls_is_refused_before_the_password(
    workspace: ws.Workspace, engine: sa.Engine
) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to listen on")
    _NoStartTls.received = []
    with socketserver.ThreadingTCPServer((address, 0), _NoStartTls) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        settings = settings_of(workspace, f"imap://bounces@{address}:{port}/INBOX")
        with pytest.raises(ImapSetupError, match="does not offer STARTTLS") as caught:
            fetch(
                engine,
                settings,
                "bounces",
                bounce_intakes(BounceSettings.from_workspace(workspace)),
            )
        server.shutdown()
    assert PASSWORD not in str(caught.value)
    sent = b"".join(_NoStartTls.received)
    assert b"LOGIN" not in sent.upper() and b"AUTHENTICATE" not in sent.upper()
    assert PASSWORD.encode() not in sent


def test_ascii_credentials_log_in_with_login(
    workspace_dir: Path,
    engine: sa.Engine,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BULLETIN_IMAP_PASSWORD", ASCII_PASSWORD)
    workspace = ws.load(workspace_dir)
    settings = ImapSettings.from_workspace(
        workspace, "bounces", dovecot.url("INBOX", user=ASCII_USER)
    )
    assert PASSWORD not in repr(settings) and ASCII_PASSWORD not in repr(settings)
    make = bounce_intakes(BounceSettings.from_workspace(workspace))
    result = fetch(engine, settings, "bounces", make, ssl_context=dovecot.client_context())
    assert result.fetch.messages == 0


# --- the command, killed and watching ---------------------------------------------------------


def run_env(dovecot: DovecotServer, password: str = PASSWORD) -> dict[str, str]:
    return {
        **os.environ,
        "BULLETIN_SECRET_KEY": KEY,
        "BULLETIN_IMAP_PASSWORD": password,
        "SSL_CERT_FILE": str(dovecot.certs.ca_file),  # how an operator trusts a private CA
        "COLUMNS": "200",
    }


def command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bulletin", "-w", str(root), *args]


def run_bulletin(
    root: Path,
    tmp: Path,
    dovecot: DovecotServer,
    *args: str,
    password: str = PASSWORD,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(root, *args),
        env=run_env(dovecot, password),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp,
    )


def many_bounces(n: int) -> list[bytes]:
    """``n`` hard bounces for bounced{i}@example.ro, each with its own Message-ID."""
    base = sample("postfix-hard-user-unknown.eml")
    out = []
    for i in range(n):
        data = base.replace(b"ana.popescu@example.ro", f"bounced{i}@example.ro".encode())
        out.append(data.replace(b"4F2A81C0D3B@mail", f"4F2A{i:05d}@mail".encode()))
    return out


def test_a_killed_fetch_then_a_rerun_counts_each_report_once(
    workspace: ws.Workspace,
    engine: sa.Engine,
    dovecot: DovecotServer,
    folders: tuple[str, str],
    tmp_path: Path,
) -> None:
    folder, done = folders
    n = 600
    with write_transaction(engine) as conn:
        for i in range(n):
            add_subscriber(conn, f"bounced{i}@example.ro", LIST)
    reports = many_bounces(n)
    populate(dovecot, folder, [(data, "") for data in reports] + [(human_reply(3), "")])

    log = open(tmp_path / "fetch.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        command(workspace.root, "bounces", "fetch"),
        env=run_env(dovecot),
        stdout=log,
        stderr=log,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(processed_keys(engine)) >= 50:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the fetch finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    log.close()
    recorded = len(processed_keys(engine))
    assert 0 < recorded < n

    result = run_bulletin(workspace.root, tmp_path, dovecot, "bounces", "fetch")
    assert result.returncode == 0, result.stderr
    assert re.search(r"hard bounces\s*│\s*" + f"{n - recorded:,}" + r"\b", result.stdout)
    with engine.begin() as conn:
        bounced = conn.execute(
            sa.select(schema.events.c.subscriber_id, sa.func.count())
            .where(schema.events.c.kind == "bounced")
            .group_by(schema.events.c.subscriber_id)
        ).all()
    assert len(bounced) == n and all(count == 1 for _, count in bounced)
    assert len(processed_keys(engine)) == n
    assert len(folder_state(dovecot, done)) == n
    assert folder_state(dovecot, folder) == {"<reply.3@example.ro>": set()}


def test_watch_processes_new_mail_as_it_arrives_and_stops_on_sigterm(
    workspace: ws.Workspace,
    engine: sa.Engine,
    dovecot: DovecotServer,
    folders: tuple[str, str],
    tmp_path: Path,
) -> None:
    folder, done = folders
    log_path = tmp_path / "watch.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        command(workspace.root, "bounces", "fetch", "--watch"),
        env=run_env(dovecot),
        stdout=log,
        stderr=log,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while b"Watching" not in log_path.read_bytes():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        time.sleep(0.5)  # in IDLE by now
        populate(dovecot, folder, [(sample("postfix-hard-user-unknown.eml"), "")])
        deadline = time.monotonic() + 20
        while status(engine, "ana.popescu@example.ro") != "bounced":
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = log_path.read_text(encoding="utf-8")
    assert "Stopped." in output
    assert re.search(r"hard bounces\s*│\s*1\b", output)
    assert set(folder_state(dovecot, done)) == {key_of(sample("postfix-hard-user-unknown.eml"))}


def test_watch_stops_while_idle_in_process(
    workspace: ws.Workspace, engine: sa.Engine, dovecot: DovecotServer
) -> None:
    watcher = Watcher()
    passes: list[int] = []
    settings = settings_of(workspace)
    make = bounce_intakes(BounceSettings.from_workspace(workspace))
    thread = threading.Thread(
        target=watcher.watch,
        args=(engine, settings, "bounces", make),
        kwargs={
            "on_pass": lambda r: passes.append(r.fetch.messages),
            "ssl_context": dovecot.client_context(),
        },
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not passes and time.monotonic() < deadline:
        time.sleep(0.02)
    watcher.stop("test")
    thread.join(5)
    assert not thread.is_alive()
    assert passes == [0]


def test_watch_reconnects_after_the_connection_is_cut(
    workspace: ws.Workspace, engine: sa.Engine, dovecot: DovecotServer, folders: tuple[str, str]
) -> None:
    """The server drops the session (``doveadm kick``): the watch reconnects and carries on."""
    folder, done = folders
    watcher = Watcher()
    passes: list[int] = []
    waits: list[str] = []
    thread = threading.Thread(
        target=watcher.watch,
        args=(
            engine,
            settings_of(workspace),
            "bounces",
            bounce_intakes(BounceSettings.from_workspace(workspace)),
        ),
        kwargs={
            "on_pass": lambda r: passes.append(r.fetch.recognised),
            "on_wait": waits.append,
            "ssl_context": dovecot.client_context(),
        },
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not passes and time.monotonic() < deadline:
            time.sleep(0.02)
        assert passes == [0]
        kicked = subprocess.run(
            ["doveadm", "-c", str(dovecot.config), "kick", USER],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert kicked.returncode == 0, kicked.stderr
        deadline = time.monotonic() + 10
        while not waits and time.monotonic() < deadline:
            time.sleep(0.02)
        assert waits and "broke" in waits[0]
        populate(dovecot, folder, [(sample("postfix-hard-user-unknown.eml"), "")])
        deadline = time.monotonic() + 20
        while status(engine, "ana.popescu@example.ro") != "bounced":
            assert time.monotonic() < deadline, (passes, waits)
            time.sleep(0.05)
    finally:
        watcher.stop("test")
        thread.join(10)
    assert not thread.is_alive()
    assert set(folder_state(dovecot, done)) == {key_of(sample("postfix-hard-user-unknown.eml"))}


def test_without_move_a_message_is_copied_then_expunged_by_uid(
    workspace: ws.Workspace, dovecot: DovecotServer, folders: tuple[str, str]
) -> None:
    """Servers without MOVE (RFC 6851): COPY, \\Deleted, UID EXPUNGE of those UIDs only."""
    from bulletin.inbound.imap import connect

    folder, done = folders
    report = sample("postfix-hard-user-unknown.eml")
    populate(dovecot, folder, [(report, ""), (human_reply(4), r"\Deleted")])
    settings = settings_of(workspace)
    with connect(settings, ssl_context=dovecot.client_context()) as session:
        # Dovecot offers MOVE; this session is told it does not, to take the other path.
        session._capabilities -= {"MOVE"}
        session.select(folder, readonly=False)
        uids = session.search("UNDELETED")
        assert len(uids) == 1
        session.ensure_folder(done)
        session.move(uids, done)
    assert set(folder_state(dovecot, done)) == {key_of(report)}
    # Someone else's \Deleted message was not expunged along with ours.
    assert folder_state(dovecot, folder) == {"<reply.4@example.ro>": {r"\Deleted"}}


def test_the_command_prints_the_summary_and_a_dry_run_says_so(
    workspace: ws.Workspace,
    engine: sa.Engine,
    dovecot: DovecotServer,
    folders: tuple[str, str],
    tmp_path: Path,
) -> None:
    folder, done = folders
    populate(dovecot, folder, corpus_with_replies())
    dry = run_bulletin(workspace.root, tmp_path, dovecot, "bounces", "fetch", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "(dry run: nothing was changed)" in dry.stdout
    assert re.search(r"hard bounces\s*│\s*4\b", dry.stdout)
    assert re.search(rf"moved to {done}\s*│\s*0\b", dry.stdout)
    assert status(engine, "ana.popescu@example.ro") == "active"

    real = run_bulletin(workspace.root, tmp_path, dovecot, "bounces", "fetch")
    assert real.returncode == 0, real.stderr
    assert f"Bounces in {dovecot.url(folder).replace('%40', '@')}" in real.stdout
    assert re.search(rf"moved to {done}\s*│\s*10\b", real.stdout)
    assert re.search(r"left as they were\s*│\s*2\b", real.stdout)
    assert "hard      ana.popescu@example.ro: 550 5.1.1" in real.stdout
    assert PASSWORD not in real.stdout + real.stderr


def test_refused_combinations_say_why(
    workspace_dir: Path, workspace: ws.Workspace, folders: tuple[str, str]
) -> None:
    result = CliRunner().invoke(
        cli, ["-w", str(workspace_dir), "bounces", "fetch", "--watch", "--dry-run"]
    )
    assert result.exit_code == 2 and "no --dry-run" in result.output
    set_config(workspace_dir, "imap", processed_folder=folders[0])
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), "bounces", "fetch"])
    assert result.exit_code == 1
    assert f"imap.processed_folder is '{folders[0]}', the folder being read" in result.output


def test_a_stop_ends_the_pass_between_batches(
    workspace: ws.Workspace, engine: sa.Engine, dovecot: DovecotServer, folders: tuple[str, str]
) -> None:
    """SIGTERM in --watch: the batch in hand is finished and moved, the rest stays as it is."""
    from bulletin.inbound.imap import connect, run_pass

    folder, done = folders
    populate(dovecot, folder, [(data, "") for data in all_samples()])
    asked: list[bool] = []

    def stopped() -> bool:
        asked.append(True)
        return len(asked) > 1  # after the first batch

    settings = settings_of(workspace)
    make = bounce_intakes(BounceSettings.from_workspace(workspace))
    with connect(settings, ssl_context=dovecot.client_context()) as session:
        result = run_pass(engine, session, settings, "bounces", make, batch_size=3, stopped=stopped)
    assert result.fetch.done == 3
    assert len(folder_state(dovecot, done)) == 3
    assert len(folder_state(dovecot, folder)) == 7
    assert len(processed_keys(engine)) == 3
