"""Issue #5 end to end: an unsubscribe while a send runs is honoured for unsent messages.

Everything is a real process or a real server: ``bulletin subscribers import`` fills a real
SQLite store, ``bulletin serve`` answers the unsubscribe links, ``bulletin send`` delivers
through a FaultServer (tests/smtpfaults.py) on a loopback port, and the test talks to them
over HTTP and SMTP only, reading the store for what it cannot see from outside.

The timing is made by the SMTP server, not by sleeps: the second message's MAIL waits
``PAUSE`` seconds. While it waits, recipients 3 to ~10 are claimed (``queued`` in the
ledger, behind it) and the rest are still ``pending``. The test unsubscribes one
queued recipient (only the engine's poll of the suppression history can stop that one) and
three pending ones (the claim must skip them), through the links a mail provider would use.
Then it follows one delivered message the whole way: its headers, its parts, its link.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.headerregistry import Address
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from bulletin import workspace as wsm
from bulletin.store.schema import deliveries, events, lists, subscribers, subscriptions
from bulletin.tokens import TokenSigner
from bulletin.urls import unsubscribe_url
from conftest import SAMPLE_SLUG
from smtpfaults import FaultServer
from test_engine import (
    NAMES,
    SINGLE,
    by_recipient,
    check_message,
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    configure,
    open_store,
    parse,
)
from test_public import FORM, ONE_CLICK, ServeProcess, multipart

KEY = "e2e-unsubscribe-during-send-key-0123456789"
LIST = "abonati-ro"
RECIPIENTS = 60
PAUSE = 3.0
"""Seconds the second message's MAIL waits: the window in which the test unsubscribes."""
PER_MESSAGE = 0.01
"""Seconds each message's final reply waits, so the rest of the send takes a while too."""
QUEUED = 5
"""Index (in send order) of the recipient who leaves while claimed and queued."""
LATER = (40, 50, RECIPIENTS - 1)
"""Indexes of recipients who leave while still pending; LATER[1] posts multipart."""


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # One key for every process, so the tokens that send signs verify in serve and here.
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps its tables at the terminal width


def _command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bulletin", "-w", str(root), *args]


def bulletin(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a bulletin command to its end; its exit status is for the caller to check."""
    return subprocess.run(
        _command(root, *args), capture_output=True, text=True, encoding="utf-8", timeout=60
    )


def free_port() -> int:
    """A loopback port nobody listens on now (serve binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], bool], what: str, timeout: float, alive: Callable[[], str]
) -> None:
    """Poll ``check`` until true; fail saying ``what`` if it times out or ``alive`` says why."""
    deadline = time.monotonic() + timeout
    while not check():
        problem = alive()
        if problem or time.monotonic() > deadline:
            pytest.fail(f"waiting for {what}: {problem or 'timed out'}")
        time.sleep(0.01)


def ledger_states(db: Engine) -> dict[str, tuple[str, str]]:
    """{email: (state, last reply)} of every recipient of the (only) send."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.email, deliveries.c.state, deliveries.c.last_reply)
        )
        return {r.email: (r.state, r.last_reply) for r in rows}


def subscription_of(db: Engine, email: str) -> tuple[str, str, int]:
    """(global status, status on LIST, history entries) of ``email``."""
    with db.connect() as conn:
        sub = conn.execute(
            sa.select(subscribers.c.id, subscribers.c.status).where(subscribers.c.email == email)
        ).one()
        on_list = conn.scalar(
            sa.select(subscriptions.c.status)
            .select_from(subscriptions.join(lists))
            .where(subscriptions.c.subscriber_id == sub.id, lists.c.slug == LIST)
        )
        n_events = conn.scalar(
            sa.select(sa.func.count()).select_from(events).where(events.c.subscriber_id == sub.id)
        )
    assert on_list is not None and n_events is not None
    return sub.status, on_list, n_events


def status_counts(output: str) -> dict[str, int]:
    """The state/count rows of `bulletin status` output."""
    pattern = r"(?m)^\s*(sent|failed|deferred|skipped|pending|queued|sending|total)\s+([\d,]+)\s*$"
    return {name: int(n.replace(",", "")) for name, n in re.findall(pattern, output)}


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the boxed tables rich prints, as lists of stripped cells."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.lstrip().startswith("│")
    ]


@pytest.fixture
def smtp() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def test_unsubscribes_during_a_send_stop_the_unsent_messages(
    workspace_dir: Path, tmp_path: Path, smtp: FaultServer
) -> None:
    root = workspace_dir
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    configure(root, smtp.url)
    config = root / "bulletin.toml"
    text, n = re.subn(
        r'(?m)^base_url = "[^"]*"$', f'base_url = "{base_url}"', config.read_text("utf-8")
    )
    assert n == 1
    config.write_text(text, encoding="utf-8")
    workspace = wsm.load(root)
    issue = yaml.safe_load((root / "issues" / SAMPLE_SLUG / "issue.yaml").read_text("utf-8"))

    # 1. Subscribers, imported by the command a user runs.
    emails = [f"cititor{i:03d}@example.org" for i in range(RECIPIENTS)]
    csv = tmp_path / "abonati.csv"
    csv.write_text(
        "email,name,language\n"
        + "".join(f"{e},{NAMES[i % len(NAMES)]} {i},ro\n" for i, e in enumerate(emails)),
        encoding="utf-8",
    )
    imported = bulletin(root, "subscribers", "import", str(csv), "--list", LIST, "--create-list")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    db = open_store(workspace.database_url())
    with db.connect() as conn:
        list_id = conn.scalar(sa.select(lists.c.id).where(lists.c.slug == LIST))
        ids = dict(conn.execute(sa.select(subscribers.c.email, subscribers.c.id)).all())
    assert list_id is not None and sorted(ids) == sorted(emails)
    # The ledger sends pending recipients in subscriber order.
    order = sorted(emails, key=ids.__getitem__)
    signer = TokenSigner([KEY])

    # 2-3. The unsubscribe server, a slow relay and the send.
    smtp.fault("MAIL", delay=PAUSE, after=1, times=1)
    smtp.fault("DATA_END", delay=PER_MESSAGE)
    serve: ServeProcess | None = None
    send: subprocess.Popen[bytes] | None = None
    log = tmp_path / "send.log"
    try:
        serve = ServeProcess(root, "--port", str(port))
        assert serve.url == base_url
        with open(log, "wb") as out:
            send = subprocess.Popen(
                _command(
                    root,
                    *("send", SAMPLE_SLUG, "--list", LIST, "--yes"),
                    *("--connections", "1", "--batch-size", "5", "--rate", "0"),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = send

        def send_alive() -> str:
            code = proc.poll()
            if code is None:
                return ""
            return f"bulletin send exited {code}:\n{log.read_text('utf-8', 'replace')}"

        # 4. The first message is in; the second is held at MAIL for PAUSE seconds.
        wait_until(lambda: len(smtp.messages) >= 1, "the first message", 30, send_alive)
        paused_at = time.monotonic()
        first = smtp.messages[0]
        assert first.rcpt_tos == [order[0]]
        header = str(parse(first.data)["List-Unsubscribe"])
        # The web link first (providers use it for one-click), then the mailto fallback.
        link = re.match(r"<(http://[^>]+)>, <mailto:[^>]+>$", header)
        assert link is not None, header
        # The links of recipients nobody has seen a message for are built the way the
        # engine builds them; the first message shows it does exactly that.
        assert link.group(1) == unsubscribe_url(
            base_url, signer.unsubscribe_token(ids[order[0]], list_id)
        )

        def link_of(email: str) -> str:
            return unsubscribe_url(base_url, signer.unsubscribe_token(ids[email], list_id))

        queued = order[QUEUED]
        later = [order[i] for i in LATER]
        leaving = [queued, *later]
        # The claim after the first message takes the queued recipient within ~0.1 s.
        wait_until(
            lambda: ledger_states(db)[queued][0] == "queued",
            f"{queued} to be claimed",
            PAUSE / 2,
            send_alive,
        )
        before = ledger_states(db)
        assert [before[e][0] for e in later] == ["pending"] * len(later)

        with httpx.Client(timeout=10) as client:
            for email in leaving:
                if email == later[1]:
                    body, headers = multipart({"List-Unsubscribe": "One-Click"})
                else:
                    body, headers = ONE_CLICK, FORM
                response = client.post(link_of(email), content=body, headers=headers)
                assert response.status_code == 200, response.text
                assert "a fost dezabonată de la" in response.text
                if email == queued:
                    # Committed while the second message was still held at MAIL, so the
                    # queued recipient's message cannot have left yet.
                    took = time.monotonic() - paused_at
                    assert len(smtp.messages) == 1, f"the window closed after {took:.2f} s"
        # Still sending, and far from the later recipients: they were never claimed.
        assert send.poll() is None and len(smtp.messages) < QUEUED

        # 5. The send finishes by itself, with everyone else served once.
        code = send.wait(timeout=30)
        output = log.read_text("utf-8")
        assert code == 0, output
        assert f"Done: {SAMPLE_SLUG} is sent." in output

        received = by_recipient(smtp.messages)
        assert [e for e in leaving if e in received] == [], "unsubscribed, yet sent"
        assert sorted(received) == sorted(set(emails) - set(leaving))
        assert all(len(copies) == 1 for copies in received.values())
        assert len(smtp.messages) == RECIPIENTS - len(leaving)
        for email, (copy,) in received.items():
            check_message(copy.data, email, db, signer, LIST)

        after = ledger_states(db)
        for email in leaving:
            assert after[email] == ("skipped", "unsubscribed during the send"), email
        assert {after[e][0] for e in received} == {"sent"}

        # Each command is mostly a Python start-up: run them side by side.
        with ThreadPoolExecutor(1 + len(leaving)) as pool:
            status_run = pool.submit(bulletin, root, "status", SAMPLE_SLUG, "--list", LIST)
            shows = list(pool.map(lambda e: bulletin(root, "subscribers", "show", e), leaving))
        status = status_run.result()
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"{SAMPLE_SLUG} to {LIST}: done" in status.stdout
        counts = status_counts(status.stdout)
        sent = RECIPIENTS - len(leaving)
        assert counts == {
            "sent": sent,
            "failed": 0,
            "deferred": 0,
            "skipped": len(leaving),
            "pending": 0,
            "queued": 0,
            "sending": 0,
            "total": RECIPIENTS,
        }
        assert sum(v for k, v in counts.items() if k != "total") == counts["total"]

        for email, shown in zip(leaving, shows, strict=True):
            assert shown.returncode == 0, shown.stdout + shown.stderr
            # Lists: the membership is unsubscribed; History: the event, from the link.
            # Lists rows start with the list slug, History rows with a timestamp (the Consent
            # table after them starts with the slug too).
            rows = table_rows(shown.stdout.partition("\nConsent")[0])
            assert [r[:2] for r in rows if r[0] == LIST] == [[LIST, "unsubscribed"]], shown.stdout
            history = [(r[1], r[2], r[4]) for r in rows if len(r) == 5 and r[0] != LIST]
            assert history[-1] == ("unsubscribed", LIST, "one-click"), shown.stdout
            assert subscription_of(db, email)[:2] == ("active", "unsubscribed")

        # 6. One delivered message, end to end.
        message = parse(first.data)
        for name in (*SINGLE, "List-Unsubscribe-Post"):
            assert len(message.get_all(name, [])) == 1, name
        assert str(message["Subject"]) == issue["subject"]
        # Romanian in a header travels encoded (RFC 2047) and decodes to the original.
        raw_subject = re.search(rb"(?m)^Subject: ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", first.data)
        assert raw_subject is not None and raw_subject.group(1).isascii()
        assert b"=?utf-8?" in raw_subject.group(1).lower() and "și știri" in issue["subject"]
        sender = workspace.config.sender
        assert message["From"].addresses == (
            Address(sender.from_name, addr_spec=sender.from_email),
        )
        assert message["To"].addresses[0].addr_spec == order[0]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.fullmatch(r"<[^<>@\s]+>", str(message["List-Id"]).rpartition(" ")[2])
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        plain, html = (p.get_content() for p in parts)
        assert link.group(1) in plain and link.group(1) in html
        assert issue["title"] in html

        reader = order[0]
        with httpx.Client(timeout=10) as client:
            before_get = subscription_of(db, reader)
            page = client.get(link.group(1))
            assert page.status_code == 200
            assert f"Vă dezabonați de la {LIST}?" in page.text
            assert '<form method="post">' in page.text and ">Dezabonare</button>" in page.text
            assert reader not in page.text  # masked: links get forwarded
            assert subscription_of(db, reader) == before_get  # a GET changes nothing
            assert before_get[:2] == ("active", "subscribed")

            done = client.post(link.group(1), content=ONE_CLICK, headers=FORM)
            assert done.status_code == 200
            assert f"a fost dezabonată de la {LIST}" in done.text
        status_now, on_list, n_events = subscription_of(db, reader)
        assert (status_now, on_list) == ("active", "unsubscribed")
        assert n_events == before_get[2] + 1
        # Already delivered: the ledger and the counts keep saying so.
        assert ledger_states(db)[reader][0] == "sent"
        again = bulletin(root, "status", SAMPLE_SLUG, "--list", LIST)
        assert status_counts(again.stdout) == counts
    finally:
        if send is not None and send.poll() is None:
            send.kill()
            send.wait(10)
        if serve is not None:
            serve.stop()
        db.dispose()
