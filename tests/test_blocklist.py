"""The blocklist: `subscribers block EMAIL|@DOMAIN`, `unblock @DOMAIN`, and what it keeps out
(sends through a real SMTP server, imports, `subscribers add`, list counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bulletin.cli import cli
from bulletin.store import subscribers as subs
from conftest import SAMPLE_SLUG
from smtpfaults import FaultServer
from test_engine import (
    KEY,
    by_recipient,
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    configure,
    open_store,
)

FAST_SEND = {"rate": 0, "connections": 2, "backoff": 0.05, "backoff_cap": 0.2, "max_wait": 5.0}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def server() -> Any:
    with FaultServer() as s:
        yield s


def bulletin(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-w", str(root), *args])


def write_csv(root: Path, name: str, text: str) -> Path:
    path = root / "subscribers" / name
    path.write_text(text, encoding="utf-8")
    return path


PEOPLE = (
    "email,name\n"
    "ana@example.org,Ana Ionescu\n"
    "ștefan@spam.example,Ștefan Țurcanu\n"
    "Bogdan@SPAM.example,Bogdan\n"
    "cristi@example.org,Cristi\n"
    "dana@notspam.example,Dana\n"
    "elena@mail.spam.example,Elena\n"
)


def test_a_send_leaves_out_a_blocked_domain_and_a_blocked_address(
    workspace_dir: Path, server: FaultServer
) -> None:
    configure(workspace_dir, server.url, send=FAST_SEND)
    path = write_csv(workspace_dir, "people.csv", PEOPLE)
    assert (
        bulletin(
            workspace_dir, "subscribers", "import", str(path), "--list", "news", "--create-list"
        ).exit_code
        == 0
    )

    blocked = bulletin(workspace_dir, "subscribers", "block", "@Spam.Example", "cristi@example.org")
    assert blocked.exit_code == 0, blocked.output
    assert "Blocked domain spam.example." in blocked.output
    assert "Blocked address cristi@example.org." in blocked.output
    again = bulletin(workspace_dir, "subscribers", "block", "@spam.example")
    assert "Already blocked: domain spam.example." in again.output

    lists = bulletin(workspace_dir, "lists")
    row = next(line for line in lists.output.splitlines() if line.startswith("news"))
    # subscribed, unsubscribed, bounced, complained, blocked, total
    assert row.split()[-6:] == ["2", "0", "0", "0", "4", "6"], lists.output

    counted = bulletin(
        workspace_dir, "subscribers", "count", "--list", "news", "--status", "blocked"
    )
    assert counted.output.strip() == "4"
    exported = bulletin(workspace_dir, "subscribers", "export", "--list", "news")
    assert sorted(line.split(",")[0] for line in exported.output.splitlines()[1:]) == [
        "ana@example.org",
        "dana@notspam.example",
    ]

    sent = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
    assert sent.exit_code == 0, sent.output
    assert "Recipients   2 " in sent.output
    # mail.spam.example is under the blocked domain; notspam.example only shares letters.
    assert sorted(by_recipient(server.messages)) == ["ana@example.org", "dana@notspam.example"]

    shown = bulletin(workspace_dir, "subscribers", "show", "bogdan@spam.example")
    assert "domain spam.example" in shown.output and "blocked" in shown.output

    listed = bulletin(workspace_dir, "subscribers", "blocked")
    assert "spam.example" in listed.output and "  3  " in listed.output, listed.output


def test_blocked_domain_refuses_add_and_import_until_unblocked(workspace_dir: Path) -> None:
    assert bulletin(workspace_dir, "lists", "create", "news").exit_code == 0
    assert bulletin(workspace_dir, "subscribers", "block", "@spam.example").exit_code == 0

    add = bulletin(workspace_dir, "subscribers", "add", "x@SPAM.example", "--list", "news")
    assert add.exit_code == 1
    assert "the domain spam.example is blocked" in add.output
    assert "Traceback" not in add.output

    path = write_csv(workspace_dir, "more.csv", "email\ny@spam.example\nz@sub.spam.example\n")
    imported = bulletin(workspace_dir, "subscribers", "import", str(path), "--list", "news")
    assert imported.exit_code == 0, imported.output
    assert "skipped y@spam.example (domain spam.example is blocked)" in imported.output
    assert "skipped z@sub.spam.example (domain spam.example is blocked)" in imported.output
    db = open_store(_url(workspace_dir))
    with db.connect() as conn:
        assert subs.count(conn, "news", "all") == 0
        assert subs.is_blocked(conn, "anyone@spam.example")
        assert subs.is_blocked(conn, "Anyone@Spam.Example")
        assert subs.is_blocked(conn, "anyone@lists.spam.example")
        assert not subs.is_blocked(conn, "anyone@notspam.example")
        assert not subs.is_blocked(conn, "anyone@example.org")
        assert not subs.is_blocked(conn, "not an address")

    unblock_address = bulletin(workspace_dir, "subscribers", "unblock", "x@spam.example")
    assert unblock_address.exit_code == 1
    assert "only domains can be unblocked" in unblock_address.output

    unblocked = bulletin(workspace_dir, "subscribers", "unblock", "@spam.example")
    assert "Unblocked domain spam.example." in unblocked.output
    add = bulletin(workspace_dir, "subscribers", "add", "x@spam.example", "--list", "news")
    assert add.exit_code == 0, add.output
    with db.connect() as conn:
        assert not subs.is_blocked(conn, "x@spam.example")


def test_a_blocked_address_stays_blocked_when_its_domain_is_unblocked(workspace_dir: Path) -> None:
    assert bulletin(workspace_dir, "lists", "create", "news").exit_code == 0
    assert bulletin(workspace_dir, "subscribers", "block", "ion@spam.example").exit_code == 0
    assert bulletin(workspace_dir, "subscribers", "block", "@spam.example").exit_code == 0
    assert bulletin(workspace_dir, "subscribers", "unblock", "@spam.example").exit_code == 0
    db = open_store(_url(workspace_dir))
    with db.connect() as conn:
        assert subs.is_blocked(conn, "ion@spam.example")
        assert not subs.is_blocked(conn, "maria@spam.example")
    add = bulletin(
        workspace_dir, "subscribers", "add", "ion@spam.example", "--list", "news", "--resubscribe"
    )
    assert add.exit_code == 1 and "Blocked addresses are never subscribed" in add.output


def test_a_bad_domain_is_a_user_error(workspace_dir: Path) -> None:
    result = bulletin(workspace_dir, "subscribers", "block", "@not a domain")
    assert result.exit_code == 1
    assert "'@not a domain' is not a domain name like example.org" in result.output
    assert "Write a domain as @example.org." in result.output


def _url(root: Path) -> str:
    from bulletin import workspace as wsm

    return wsm.load(root).database_url()
