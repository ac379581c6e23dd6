"""Mailto unsubscribes: a reader's mail to List-Unsubscribe's address, imported from a mailbox.

The address comes from a real composed message (List-Unsubscribe with a signed token); the
request travels over SMTP into the capture sink's Maildir, as a mail client's message would
arrive at the newsletter's mailbox.
"""

from __future__ import annotations

import mailbox
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulletin import workspace as ws
from bulletin.cli import cli
from bulletin.content.loader import load_issue
from bulletin.inbound.unsubscribes import UnsubscribeSettings, import_unsubscribes
from bulletin.mail.compose import Recipient, build_message_template
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values
from bulletin.sink import start_sink
from bulletin.store import schema
from bulletin.store.db import open_store, write_transaction
from bulletin.store.subscribers import (
    add_subscriber,
    create_list,
    details,
    find_subscriber,
    get_list,
    recipients,
    remove_subscriber,
)
from bulletin.tokens import TokenSigner
from conftest import set_config

DOMAIN = "clusterpolisee.example.org"
KEY = "mailto-tests-signing-key-4b8d2f6a1c"
SLUG = "2014-10-clusterpolisee-03"
ANA = "ana.popescu@example.ro"
ION = "ion.ionescu@example.net"


@pytest.fixture
def workspace(workspace_dir: Path, monkeypatch: pytest.MonkeyPatch) -> ws.Workspace:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    set_config(workspace_dir, "sender", unsubscribe_mailto=f"unsubscribe@{DOMAIN}")
    return ws.load(workspace_dir)


@pytest.fixture
def engine(workspace: ws.Workspace) -> Iterator[sa.Engine]:
    engine = open_store(workspace.database_url())
    with write_transaction(engine) as conn:
        create_list(conn, "newsletter-ro", "Newsletter în română")
        create_list(conn, "evenimente")
        for address in (ANA, ION):
            add_subscriber(conn, address, "newsletter-ro")
            add_subscriber(conn, address, "evenimente")
    yield engine
    engine.dispose()


def ids(engine: sa.Engine, email: str, slug: str | None) -> tuple[int, int | None]:
    with engine.begin() as conn:
        sub = find_subscriber(conn, email)
        assert sub is not None
        return sub.id, get_list(conn, slug).id if slug else None


def mailto_of_a_real_message(
    workspace: ws.Workspace, engine: sa.Engine, email: str, slug: str | None
) -> str:
    """The mailto address in List-Unsubscribe of the message the composer makes for ``email``."""
    loaded = load_issue(workspace, workspace.issue_dir(SLUG))
    template = build_message_template(workspace.config, render_issue(workspace, loaded))
    token = TokenSigner.from_workspace(workspace).unsubscribe_token(*ids(engine, email, slug))
    values = {
        **sample_values(workspace, loaded.slug, email=email),
        "unsubscribe_url": f"{workspace.config.newsletter.base_url}/u/{token}",
        "unsubscribe_token": token,
    }
    data = template.personalise(Recipient(email, "", values))
    header = re.search(rb"List-Unsubscribe: (.*?)\r\n(?! )", data, re.S)
    assert header is not None
    found = re.search(rb"<mailto:([^>?]+)>", header.group(1))
    assert found is not None
    return found.group(1).decode("ascii")


def request(sender: str, to: str, subject: str = "unsubscribe") -> bytes:
    """What a mail client sends when the reader presses "unsubscribe"."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<req.{abs(hash((sender, to, subject)))}@client.example>"
    msg.set_content("Vă rog să mă dezabonați. Mulțumesc!")
    return msg.as_bytes()


def deliver(maildir: Path, rcpt: str, data: bytes) -> None:
    """Deliver over SMTP into ``maildir`` like the receiving server (Delivered-To on top)."""
    with (
        start_sink(maildir, port=0) as sink,
        smtplib.SMTP(sink.host, sink.port, timeout=5) as client,
    ):
        assert client.sendmail("someone@example.ro", [rcpt], data) == {}


def statuses(engine: sa.Engine, email: str) -> tuple[str, dict[str, str]]:
    with engine.begin() as conn:
        info = details(conn, email)
    return info.subscriber.status, {m.list_slug: m.effective for m in info.memberships}


def bulletin(workspace_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), *args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_mailto_unsubscribe_end_to_end(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine
) -> None:
    address = mailto_of_a_real_message(workspace, engine, ANA, "newsletter-ro")
    assert re.fullmatch(rf"unsubscribe\+[A-Za-z0-9_-]{{26,50}}@{re.escape(DOMAIN)}", address)
    inbox = tmp_path / "Unsubscribe"
    deliver(inbox, address, request(ANA, address))

    code, out, err = bulletin(workspace.root, "unsubscribes", "import", str(inbox), "--dry-run")
    assert code == 0, err
    assert "(dry run: nothing was changed)" in out
    assert statuses(engine, ANA) == (
        "active",
        {"evenimente": "subscribed", "newsletter-ro": "subscribed"},
    )

    code, out, err = bulletin(workspace.root, "unsubscribes", "import", str(inbox))
    assert code == 0, err
    assert re.search(r"unsubscribed now\s*│\s*1\b", out)
    assert f"unsubscribed {ANA} from newsletter-ro" in out
    # Only the list the token names; the subscriber stays on the other one.
    assert statuses(engine, ANA) == (
        "active",
        {"evenimente": "subscribed", "newsletter-ro": "unsubscribed"},
    )
    with engine.begin() as conn:
        assert ANA not in {r.email for r in recipients(conn, "newsletter-ro")}
        assert ANA in {r.email for r in recipients(conn, "evenimente")}
        events = [e for e in details(conn, ANA).history if e.kind == "unsubscribed"]
    assert [(e.list_slug, e.source) for e in events] == [("newsletter-ro", "mailto")]
    assert events[0].detail.startswith("mail <req.")

    code, out, err = bulletin(workspace.root, "subscribers", "show", ANA)
    assert code == 0 and "mailto" in out

    # Again: nothing new happens.
    code, out, err = bulletin(workspace.root, "unsubscribes", "import", str(inbox))
    assert code == 0, err
    assert re.search(r"already unsubscribed\s*│\s*1\b", out)
    assert re.search(r"unsubscribed now\s*│\s*0\b", out)


def test_a_token_for_every_list_unsubscribes_from_everything(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine
) -> None:
    address = mailto_of_a_real_message(workspace, engine, ION, None)
    inbox = tmp_path / "Unsubscribe"
    deliver(inbox, address, request(ION, address))
    report = import_unsubscribes(engine, inbox, UnsubscribeSettings.from_workspace(workspace))
    assert (report.unsubscribed, report.invalid, report.done) == (1, 0, [(ION, "every list")])
    assert statuses(engine, ION) == (
        "unsubscribed",
        {"evenimente": "unsubscribed", "newsletter-ro": "unsubscribed"},
    )
    assert statuses(engine, ANA)[0] == "active"
    again = import_unsubscribes(engine, inbox, UnsubscribeSettings.from_workspace(workspace))
    assert (again.unsubscribed, again.already) == (0, 1)


def test_messages_without_a_valid_token_change_nothing(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine
) -> None:
    good = mailto_of_a_real_message(workspace, engine, ANA, "newsletter-ro")
    token = good.split("+", 1)[1].split("@")[0]
    tampered = good.replace(token, token[:-3] + ("xyz" if token[-3:] != "xyz" else "abc"))
    sub_id, _ = ids(engine, ANA, None)
    # A real token, but for bounces: the purposes never mix.
    bounce = TokenSigner.from_workspace(workspace).bounce_token(sub_id, None)
    inbox = tmp_path / "Unsubscribe"
    for to in (
        tampered,
        f"unsubscribe@{DOMAIN}",
        f"unsubscribe+{bounce}@{DOMAIN}",
        f"unsubscribe+hello@{DOMAIN}",
        f"newsletter@{DOMAIN}",
    ):
        deliver(inbox, to, request(ANA, to))
    with engine.begin() as conn:
        before = conn.execute(sa.select(schema.events)).all()
    report = import_unsubscribes(engine, inbox, UnsubscribeSettings.from_workspace(workspace))
    assert (report.read, report.invalid, report.unsubscribed, report.unknown) == (5, 5, 0, 0)
    with engine.begin() as conn:
        assert conn.execute(sa.select(schema.events)).all() == before
    assert statuses(engine, ANA)[1]["newsletter-ro"] == "subscribed"


def test_tokens_of_erased_subscribers_are_unknown(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine
) -> None:
    address = mailto_of_a_real_message(workspace, engine, ION, "evenimente")
    with write_transaction(engine) as conn:
        remove_subscriber(conn, ids(engine, ION, None)[0])
    inbox = tmp_path / "Unsubscribe"
    deliver(inbox, address, request(ION, address))
    report = import_unsubscribes(engine, inbox, UnsubscribeSettings.from_workspace(workspace))
    assert (report.unknown, report.unsubscribed, report.invalid) == (1, 0, 0)


def test_mbox_input_and_any_plus_address_without_configuration(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine
) -> None:
    address = mailto_of_a_real_message(workspace, engine, ANA, "evenimente")
    path = tmp_path / "unsubscribe.mbox"
    box = mailbox.mbox(path, create=True)
    box.add(mailbox.mboxMessage(request(ANA, "Dezabonare <" + address + ">", "Dezabonare")))
    box.add(mailbox.mboxMessage(request(ION, f"unsubscribe@{DOMAIN}")))
    box.flush()
    box.close()
    # The mailbox was renamed in bulletin.toml since: the signature still decides.
    settings = UnsubscribeSettings(TokenSigner.from_workspace(workspace), mailto=None)
    dry = import_unsubscribes(engine, path, settings, dry_run=True)
    assert (dry.kind, dry.read, dry.unsubscribed, dry.invalid) == ("mbox", 2, 1, 1)
    assert statuses(engine, ANA)[1]["evenimente"] == "subscribed"
    report = import_unsubscribes(engine, path, settings)
    assert (report.read, report.unsubscribed, report.invalid) == (2, 1, 1)
    assert statuses(engine, ANA)[1]["evenimente"] == "unsubscribed"
