"""`bulletin send` and `bulletin status` as a user runs them (click's runner, real servers)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from bulletin.cli import cli
from bulletin.dispatch.plan import TEST_PREFIX
from bulletin.store.schema import deliveries, sends
from conftest import SAMPLE_SLUG
from smtpfaults import FaultServer
from test_engine import (
    KEY,
    SUBJECT,
    by_recipient,
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    configure,
    email_of,
    open_store,
    parse,
    populate,
)

FAST_SEND = {
    "rate": 0,
    "connections": 2,
    "backoff": 0.05,
    "backoff_cap": 0.2,
    "max_wait": 5.0,
    "pause_after": 3,
}


@pytest.fixture(autouse=True)
def _signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables and messages at the width


@pytest.fixture
def server() -> Any:
    with FaultServer() as s:
        yield s


def bulletin(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-w", str(root), *args], catch_exceptions=False)


def setup(root: Path, url: str, n: int = 6, **send: Any) -> Any:
    workspace = configure(root, url, send={**FAST_SEND, **send})
    db = open_store(workspace.database_url())
    populate(db, "news", n, folder=root)
    return db


def ledger_size(db: Any) -> tuple[int, int]:
    with db.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(sends)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one(),
        )


def test_send_shows_the_plan_sends_and_a_second_run_sends_nothing(
    workspace_dir: Path, server: FaultServer
) -> None:
    setup(workspace_dir, server.url)

    result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")

    assert result.exit_code == 0, result.output
    out = result.output
    for expected in (
        f"Issue        {SAMPLE_SLUG}",
        "Subject      ClusterPoliSEE nr. 3",
        "Lists        news",
        "Recipients   6 (subscribed, suppressed addresses left out)",
        f"SMTP         {server.url} (STARTTLS when offered)",
        "Rate         no limit",
        "Connections  2",
        f"Done: {SAMPLE_SLUG} is sent.",
    ):
        assert expected in out, out
    assert len(server.messages) == 6

    again = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")

    assert again.exit_code == 0
    assert "Already sent: 6 sent, 0 failed; nothing to do." in again.output
    assert len(server.messages) == 6


def test_without_yes_and_without_a_terminal_nothing_is_sent(
    workspace_dir: Path, server: FaultServer
) -> None:
    db = setup(workspace_dir, server.url)
    result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news")
    assert result.exit_code == 1
    assert "confirmation is needed and standard input is not a terminal" in result.output
    assert "Add --yes" in result.output
    assert ledger_size(db) == (0, 0) and server.sessions == 0


def test_dry_run_builds_every_message_and_writes_samples(
    workspace_dir: Path, server: FaultServer
) -> None:
    db = setup(workspace_dir, server.url, n=5)

    result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "Dry run: built 5 messages" in result.output
    samples = sorted((workspace_dir / "out" / f"{SAMPLE_SLUG}-dry-run").glob("*.eml"))
    assert len(samples) == 3
    msg = parse(samples[0].read_bytes())
    assert str(msg["Subject"]) == SUBJECT
    assert msg["To"].addresses[0].addr_spec == email_of(0)
    assert server.sessions == 0 and ledger_size(db) == (0, 0)


def test_test_sends_go_only_to_the_given_addresses_and_leave_the_ledger_alone(
    workspace_dir: Path, server: FaultServer
) -> None:
    db = setup(workspace_dir, server.url)

    result = bulletin(
        workspace_dir,
        "send",
        SAMPLE_SLUG,
        "--list",
        "news",
        "--test",
        "redactor@example.org",
        "--test",
        email_of(1),
    )

    assert result.exit_code == 0, result.output
    assert "Sent a test to redactor@example.org" in result.output
    received = by_recipient(server.messages)
    assert sorted(received) == sorted(["redactor@example.org", email_of(1)])
    for (message,) in received.values():
        msg = parse(message.data)
        assert str(msg["Subject"]) == TEST_PREFIX + SUBJECT
        assert ".test-" in str(msg["Message-ID"])
    assert ledger_size(db) == (0, 0)
    # The real send afterwards still goes to everyone, with other Message-IDs.
    real = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
    assert real.exit_code == 0 and ledger_size(db) == (1, 6)


def test_check_errors_stop_the_send(workspace_dir: Path, server: FaultServer) -> None:
    db = setup(workspace_dir, server.url)
    issue = workspace_dir / "issues" / SAMPLE_SLUG / "issue.yaml"
    issue.write_text(
        issue.read_text(encoding="utf-8").replace("template: default", "template: nosuch"),
        encoding="utf-8",
    )
    result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
    assert result.exit_code == 1
    assert "bulletin check found 1 error" in result.output
    assert "nothing was sent" in result.output
    assert "layout 'nosuch' not found" in result.output
    assert server.sessions == 0 and ledger_size(db) == (0, 0)


def test_nobody_listening_says_how_to_start_the_sink(workspace_dir: Path) -> None:
    with FaultServer() as gone:
        url = gone.url
    db = setup(workspace_dir, url)
    port = url.rpartition(":")[2]
    result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
    assert result.exit_code == 1
    assert f"No SMTP server answers at 127.0.0.1:{port}" in result.output
    assert f"bulletin sink --port {port}" in result.output
    assert ledger_size(db) == (0, 0)


def test_deferred_recipients_end_with_exit_75_and_status_shows_them(
    workspace_dir: Path, server: FaultServer
) -> None:
    setup(workspace_dir, server.url, backoff=60.0, backoff_cap=600.0, max_wait=0.5)
    server.fault("RCPT", "550 5.1.1 mailbox unavailable", address=email_of(2))
    server.fault("RCPT", "451 4.7.1 greylisted", address=email_of(4))

    result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")

    assert result.exit_code == 75, result.output
    assert "1 recipients are deferred" in result.output
    assert f"bulletin send {SAMPLE_SLUG} --list news" in result.output

    status = bulletin(workspace_dir, "status", SAMPLE_SLUG)
    assert status.exit_code == 0
    out = status.output
    assert f"{SAMPLE_SLUG} to news: waiting" in out
    assert "Failed and deferred" in out
    assert "mailbox unavailable" in out and "greylisted" in out
    assert "Next retry due at" in out

    table = bulletin(workspace_dir, "status", SAMPLE_SLUG, "--list", "news", "--csv")
    rows = list(csv.DictReader(io.StringIO(table.output)))
    assert len(rows) == 6
    by_email = {r["email"]: r for r in rows}
    assert by_email[email_of(2)]["state"] == "failed"
    assert by_email[email_of(2)]["code"] == "550"
    assert by_email[email_of(4)]["state"] == "deferred"
    assert by_email[email_of(4)]["next_attempt_utc"]
    assert by_email[email_of(0)]["message_id"].startswith(f"<{SAMPLE_SLUG}.")

    failed = bulletin(workspace_dir, "status", SAMPLE_SLUG, "--failed", "--csv")
    assert sorted(r["email"] for r in csv.DictReader(io.StringIO(failed.output))) == [
        email_of(2),
        email_of(4),
    ]


def test_a_test_send_needs_no_list(workspace_dir: Path, server: FaultServer) -> None:
    import re

    from bulletin.tokens import TokenSigner

    db = setup(workspace_dir, server.url)

    result = bulletin(
        workspace_dir, "send", SAMPLE_SLUG, "--test", "redactor@example.org", "--test", email_of(1)
    )

    assert result.exit_code == 0, result.output
    received = by_recipient(server.messages)
    assert sorted(received) == sorted(["redactor@example.org", email_of(1)])
    # The subscriber gets their own unsubscribe link, good for every list (none was named).
    (message,) = received[email_of(1)]
    unsubscribe = parse(message.data)["List-Unsubscribe"]
    token = re.search(r"/u/([^>/]+)", str(unsubscribe))
    assert token is not None, unsubscribe
    verified = TokenSigner([KEY]).verify_unsubscribe(token.group(1))
    assert verified is not None and verified.list_id is None
    assert ledger_size(db) == (0, 0)
    # A real send still needs its list.
    real = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--yes")
    assert real.exit_code == 2 and "Missing option '--list'" in real.output
    assert ledger_size(db) == (0, 0) and len(server.messages) == 2


def test_status_without_an_issue_lists_every_send(workspace_dir: Path, server: FaultServer) -> None:
    db = setup(workspace_dir, server.url, n=3)
    populate(db, "other", 2, start=10, folder=workspace_dir)
    empty = bulletin(workspace_dir, "status")
    assert empty.exit_code == 0 and "No issue has been sent yet." in empty.output

    for slug in ("news", "other"):
        sent = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", slug, "--yes")
        assert sent.exit_code == 0, sent.output

    result = bulletin(workspace_dir, "status")

    assert result.exit_code == 0, result.output
    assert "Sends: 2" in result.output
    rows = [x.split() for x in result.output.splitlines() if SAMPLE_SLUG in x]
    # issue, list, state, sent, failed, open, total, started date and time, finished date, time
    assert [r[1:7] for r in rows] == [
        ["news", "done", "3", "0", "0", "3"],
        ["other", "done", "2", "0", "0", "2"],
    ], result.output


def test_status_of_an_issue_never_sent(workspace_dir: Path) -> None:
    result = bulletin(workspace_dir, "status", SAMPLE_SLUG)
    assert result.exit_code == 1
    assert f"Issue {SAMPLE_SLUG} has not been sent." in result.output


def test_a_bad_rate_is_a_usage_error(workspace_dir: Path) -> None:
    result = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--rate", "fast")
    assert result.exit_code == 2
    assert "give messages per second, e.g. 10 or 10/s" in result.output


def test_send_config_is_validated_with_the_rest(workspace_dir: Path) -> None:
    path = workspace_dir / "bulletin.toml"
    path.write_text(
        path.read_text(encoding="utf-8") + "\n[send]\nconnections = 0\nrate = 'fast'\n",
        encoding="utf-8",
    )
    result = bulletin(workspace_dir, "status", SAMPLE_SLUG)
    assert result.exit_code == 1
    assert "send.connections: input should be greater than or equal to 1" in result.output
    assert "send.rate: expected a number, got 'fast'" in result.output
