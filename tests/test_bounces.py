"""Bounce processing: DSNs and complaints read from Maildir/mbox into the subscriber store.

The samples in tests/data/dsn are Postfix, Exim and Gmail bounces, a delay warning, an ARF
complaint and an out-of-office reply; the store is a real SQLite file.
"""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulletin import workspace as ws
from bulletin.cli import cli
from bulletin.content.loader import load_issue
from bulletin.errors import BulletinError
from bulletin.inbound.bounces import SOFT_BOUNCE, BounceSettings, import_bounces
from bulletin.inbound.mailboxes import open_mailbox
from bulletin.inbound.reports import analyse, parse, severity
from bulletin.mail.compose import Recipient, build_message_template
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values
from bulletin.store import schema
from bulletin.store.db import open_store, write_transaction
from bulletin.store.subscribers import (
    add_subscriber,
    create_list,
    details,
    find_subscriber,
    get_list,
    recipients,
)
from bulletin.tokens import TokenSigner
from conftest import set_config

DATA = Path(__file__).parent / "data" / "dsn"
DOMAIN = "clusterpolisee.example.org"
KEY = "bounce-tests-signing-key-7f3a9c1e5b"
LIST = "newsletter-ro"
SLUG = "2014-10-clusterpolisee-03"

SUBSCRIBERS = (
    "ana.popescu@example.ro",
    "ion.ionescu@example.net",
    "mihai.pop@example.net",
    "cristina.marin@example.org",
    "andrei.stan@example.com",
    "elena.dumitru@example.ro",
    "stefan.raducanu@example.ro",
    "gabriel.ilie@example.org",
    "radu.stoica@example.net",
    "ioana.vasilescu@example.ro",
)

# file, verdict, address, severity, status, words of the diagnostic
CASES = [
    (
        "postfix-hard-user-unknown.eml",
        "bounce",
        "ana.popescu@example.ro",
        "hard",
        "5.1.1",
        "Recipient address rejected: User unknown in virtual mailbox table",
    ),
    (
        "exim-hard-x-failed-recipients.eml",
        "bounce",
        "ion.ionescu@example.net",
        "hard",
        "5.1.1",
        "User unknown in local recipient table",
    ),
    (
        "exim-hard-no-x-failed-recipients.eml",
        "bounce",
        "mihai.pop@example.net",
        "hard",
        "5.1.1",
        "User unknown in virtual mailbox table",
    ),
    (
        "exim-soft-retry-timeout.eml",
        "bounce",
        "cristina.marin@example.org",
        "soft",
        "4.2.2",
        "Mailbox is full, try again later retry timeout exceeded",
    ),
    (
        "gmail-hard-address-not-found.eml",
        "bounce",
        "andrei.stan@example.com",
        "hard",
        "5.1.1",
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces.",
    ),
    (
        "postfix-soft-mailbox-full.eml",
        "bounce",
        "elena.dumitru@example.ro",
        "soft",
        "4.2.2",
        "452 4.2.2 <elena.dumitru@example.ro>: Mailbox full",
    ),
    (
        "postfix-soft-global-romanian.eml",
        "bounce",
        "stefan.raducanu@example.ro",
        "soft",
        "4.2.2",
        "452 4.2.2 Cutia poștală a destinatarului este plină; încercați mai târziu",
    ),
    ("postfix-delayed.eml", "delayed", "", "", "", ""),
    ("arf-complaint-abuse.eml", "complaint", "radu.stoica@example.net", "", "", "abuse"),
    ("auto-reply-out-of-office.eml", "auto-reply", "", "", "", ""),
]

HARD = {"ana.popescu@example.ro", "ion.ionescu@example.net", "mihai.pop@example.net"}
HARD |= {"andrei.stan@example.com"}
SOFT = {"cristina.marin@example.org", "elena.dumitru@example.ro", "stefan.raducanu@example.ro"}


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def workspace(workspace_dir: Path, monkeypatch: pytest.MonkeyPatch) -> ws.Workspace:
    """The sample workspace with VERP and a mailto unsubscribe address configured."""
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    set_config(
        workspace_dir,
        "sender",
        return_path=f"bounces+{{token}}@{DOMAIN}",
        unsubscribe_mailto=f"unsubscribe@{DOMAIN}",
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


@pytest.fixture
def settings(workspace: ws.Workspace) -> BounceSettings:
    return BounceSettings.from_workspace(workspace)


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def all_samples() -> list[bytes]:
    return [sample(case[0]) for case in CASES]


def make_maildir(folder: Path, messages: list[bytes]) -> Path:
    """A Maildir (folders made by the standard library) holding ``messages`` in order."""
    mailbox.Maildir(folder, create=True)
    for i, data in enumerate(messages):
        # Maildir names start with the delivery time, which orders the messages.
        (folder / "new" / f"{1413000000 + i}.M{i}P1.test").write_bytes(data)
    return folder


def make_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.mbox(path, create=True)
    for data in messages:
        box.add(mailbox.mboxMessage(data))
    box.flush()
    box.close()
    return path


def status(engine: sa.Engine, email: str) -> str:
    with engine.begin() as conn:
        sub = find_subscriber(conn, email)
        assert sub is not None
        return sub.status


def history(engine: sa.Engine, email: str) -> list[tuple[str, str, str]]:
    with engine.begin() as conn:
        events = details(conn, email).history
    # Sorted by date: the sample reports (2014) come before the subscription (today).
    return [(e.kind, e.detail, e.source) for e in events if e.kind != "subscribed"]


def snapshot(engine: sa.Engine) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every subscriber's status and every event: what an import may change."""
    with engine.begin() as conn:
        subs = conn.execute(
            sa.select(schema.subscribers.c.email, schema.subscribers.c.status).order_by(
                schema.subscribers.c.id
            )
        ).all()
        events = conn.execute(sa.select(schema.events).order_by(schema.events.c.id)).all()
    return [tuple(r) for r in subs], [tuple(r) for r in events]


def mailing(engine: sa.Engine) -> set[str]:
    with engine.begin() as conn:
        return {r.email for r in recipients(conn, LIST)}


def subscriber_and_list(engine: sa.Engine, email: str) -> tuple[int, int]:
    with engine.begin() as conn:
        sub = find_subscriber(conn, email)
        assert sub is not None
        return sub.id, get_list(conn, LIST).id


def verp_address(workspace: ws.Workspace, engine: sa.Engine, email: str) -> str:
    """The envelope sender the composer gives ``email``'s message, with a real bounce token."""
    loaded = load_issue(workspace, workspace.issue_dir(SLUG))
    template = build_message_template(workspace.config, render_issue(workspace, loaded))
    signer = TokenSigner.from_workspace(workspace)
    sub_id, list_id = subscriber_and_list(engine, email)
    values = {
        **sample_values(workspace, loaded.slug, email=email),
        "unsubscribe_token": signer.unsubscribe_token(sub_id, list_id),
        "bounce_token": signer.bounce_token(sub_id, list_id),
    }
    return template.envelope_from(Recipient(email, "", values))


def delivered_to(data: bytes, address: str) -> bytes:
    """A report as it arrives at ``address`` (the headers a receiving server sets)."""
    data = re.sub(rb"(?m)^Delivered-To: .*$", b"Delivered-To: " + address.encode(), data)
    return re.sub(rb"(?m)^To: newsletter@.*$", b"To: " + address.encode(), data)


# --- classification ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "verdict", "address", "level", "code", "words"), CASES)
def test_each_sample_is_classified(
    name: str, verdict: str, address: str, level: str, code: str, words: str
) -> None:
    report = analyse(parse(sample(name)))
    assert report.verdict == verdict
    if verdict == "bounce":
        assert len(report.failures) == 1
        failure = report.failures[0]
        assert failure.address == address
        assert failure.severity == level
        assert failure.status == code
        assert words in failure.diagnostic
        assert code in failure.diagnostic
    elif verdict == "complaint":
        assert report.complaint_type == words
        assert report.complaint_addresses[0] == address
        assert "Feedback-Type: abuse" in report.complaint_detail
    else:
        assert report.failures == ()


def test_gmail_multiline_reply_reads_as_one_line() -> None:
    failure = analyse(parse(sample("gmail-hard-address-not-found.eml"))).failures[0]
    assert failure.diagnostic.count("5.1.1") == 1  # "550-5.1.1" continuations removed
    assert failure.diagnostic.endswith("?p=NoSuchUser d7si1234567qkb.123 - gsmtp")
    assert "\n" not in failure.diagnostic and "  " not in failure.diagnostic


def test_reports_keep_the_returned_message_headers() -> None:
    report = analyse(parse(sample("postfix-hard-user-unknown.eml")))
    assert report.head.original is not None
    assert report.head.original["Message-ID"] == (
        "<2014-10-clusterpolisee-03.6f1c2ab94e0d8a7c5b31@clusterpolisee.example.org>"
    )
    assert report.head.date == datetime(2014, 10, 14, 7, 21, 7, tzinfo=UTC)
    exim = analyse(parse(sample("exim-hard-x-failed-recipients.eml")))
    assert exim.head.original is not None  # quoted in the text after Exim's marker line
    assert exim.head.original["To"] == "Ion Ionescu <ion.ionescu@example.net>"


@pytest.mark.parametrize(
    ("status", "diagnostic", "expected"),
    [
        ("5.1.1", "", "hard"),
        ("5.1.10", "", "hard"),
        ("5.4.4", "", "hard"),
        ("4.4.1", "", "soft"),
        ("5.2.2", "", "soft"),  # mailbox full: a persistent transient failure (RFC 3463)
        ("5.3.1", "", "soft"),
        ("5.4.7", "", "soft"),  # delivery time expired
        ("5.7.1", "", "soft"),  # a policy rejection judges the sender, not the address
        ("", "550 no such user", "hard"),
        ("", "452 try later", "soft"),
        ("", "", "hard"),
    ],
)
def test_severity_rules(status: str, diagnostic: str, expected: str) -> None:
    assert severity(status, diagnostic) == expected


def test_ip_addresses_are_not_status_codes() -> None:
    data = sample("postfix-hard-user-unknown.eml").replace(b"Status: 5.1.1", b"Status: x")
    data = data.replace(b"550 5.1.1 <ana", b"550 host 10.4.5.6 <ana")
    failure = analyse(parse(data)).failures[0]
    assert failure.status == ""  # not "4.5.6" out of the IP address
    assert failure.severity == "hard"


# --- importing ---------------------------------------------------------------------------


def test_maildir_import_acts_on_each_sample(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    assert mailing(engine) == set(SUBSCRIBERS)
    box = make_maildir(tmp_path / "Bounces", all_samples())
    report = import_bounces(engine, box, settings)
    assert report.kind == "Maildir"
    assert report.summary_rows() == [
        ("messages read", 10),
        ("hard bounces", 4),
        ("soft bounces", 3),
        ("complaints", 1),
        ("suppressed now", 5),
        ("already imported", 0),
        ("ignored (delays, receipts)", 1),
        ("not a bounce", 1),
        ("unknown recipients", 0),
        ("invalid tokens", 0),
        ("unreadable", 0),
    ]
    for email in HARD:
        assert status(engine, email) == "bounced"
    assert status(engine, "radu.stoica@example.net") == "complained"
    for email in SOFT | {"gabriel.ilie@example.org", "ioana.vasilescu@example.ro"}:
        assert status(engine, email) == "active"
    # Suppressed addresses receive nothing any more; the others still do.
    assert mailing(engine) == set(SUBSCRIBERS) - HARD - {"radu.stoica@example.net"}

    kind, detail, source = history(engine, "ana.popescu@example.ro")[0]
    assert kind == "bounced"
    assert detail == (
        "550 5.1.1 <ana.popescu@example.ro>: Recipient address rejected: User unknown in "
        "virtual mailbox table"
    )
    assert source == "bounce <20141014072107.4F2A81C0D3B@mail.clusterpolisee.example.org>"
    assert history(engine, "stefan.raducanu@example.ro") == [
        (
            SOFT_BOUNCE,
            "452 4.2.2 Cutia poștală a destinatarului este plină; încercați mai târziu",
            "bounce <20141022061540.6B7C8D9E0F@mail.clusterpolisee.example.org>",
        )
    ]
    assert history(engine, "radu.stoica@example.net")[0][:2] == (
        "complained",
        "spam complaint (Feedback-Type: abuse, ExampleFBL/2.1)",
    )
    # The delay warning and the out-of-office reply left no trace.
    assert history(engine, "gabriel.ilie@example.org") == []
    assert history(engine, "ioana.vasilescu@example.ro") == []


def test_a_soft_bounce_is_dated_by_the_report(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    box = make_maildir(tmp_path / "Bounces", [sample("postfix-soft-mailbox-full.eml")])
    import_bounces(engine, box, settings)
    with engine.begin() as conn:
        info = details(conn, "elena.dumitru@example.ro")
    assert [(e.kind, e.at) for e in info.history if e.kind == SOFT_BOUNCE] == [
        (SOFT_BOUNCE, datetime(2014, 10, 21, 7, 22, 15, tzinfo=UTC))
    ]


def test_importing_the_same_mail_again_changes_nothing(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    box = make_maildir(tmp_path / "Bounces", all_samples())
    import_bounces(engine, box, settings)
    after_first = snapshot(engine)
    again = import_bounces(engine, box, settings)
    assert snapshot(engine) == after_first
    assert (again.read, again.already, again.hard, again.soft, again.complaints) == (10, 8, 0, 0, 0)
    assert again.suppressed == 0
    # The same bounce arriving a second time, in another mailbox, is still the same bounce.
    copy = make_maildir(tmp_path / "Copy", [sample("exim-soft-retry-timeout.eml")])
    assert import_bounces(engine, copy, settings).already == 1
    assert snapshot(engine) == after_first


def test_mbox_and_single_files_give_the_same_result(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    messages = all_samples()
    # A body line starting with "From " must survive mbox quoting and not split a message.
    messages[-1] = messages[-1].replace(b"Cu stim", b"From the office of\nCu stim")
    path = make_mbox(tmp_path / "bounces.mbox", messages)
    assert b"\n>From the office of\n" in path.read_bytes()
    box = open_mailbox(path)
    assert box.kind == "mbox" and box.count() == 10
    read = list(box)
    assert [item.number for item in read] == list(range(1, 11))
    assert b"\nFrom the office of\n" in (read[-1].data or b"")
    report = import_bounces(engine, path, settings)
    assert (report.kind, report.read, report.hard, report.soft, report.complaints) == (
        "mbox",
        10,
        4,
        3,
        1,
    )
    assert (report.ignored, report.not_bounces, report.suppressed) == (1, 1, 5)

    single = tmp_path / "one.eml"
    single.write_bytes(sample("postfix-hard-user-unknown.eml"))
    again = import_bounces(engine, single, settings)
    assert (again.kind, again.read, again.already) == ("message", 1, 1)


def test_unknown_addresses_are_counted(
    tmp_path: Path, workspace: ws.Workspace, settings: BounceSettings
) -> None:
    engine = open_store(workspace.database_url())
    try:
        report = import_bounces(engine, make_maildir(tmp_path / "B", all_samples()), settings)
        assert (report.unknown, report.hard, report.soft, report.complaints) == (8, 0, 0, 0)
        assert {f.email for f in report.findings} == HARD | SOFT | {"radu.stoica@example.net"}
        with engine.begin() as conn:
            # Nothing was added to the store for addresses it never had.
            assert conn.scalar(sa.select(sa.func.count()).select_from(schema.subscribers)) == 0
    finally:
        engine.dispose()


# --- VERP --------------------------------------------------------------------------------


def test_verp_token_names_the_subscriber(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine, settings: BounceSettings
) -> None:
    address = verp_address(workspace, engine, "ana.popescu@example.ro")
    assert re.fullmatch(rf"bounces\+[A-Za-z0-9_-]{{26,50}}@{re.escape(DOMAIN)}", address)
    # Ana's mail was forwarded: the DSN names an address the store has never seen.
    data = sample("postfix-hard-user-unknown.eml").replace(
        b"ana.popescu@example.ro", b"ana.p@forward.example"
    )
    report = import_bounces(engine, _one(tmp_path, delivered_to(data, address)), settings)
    assert (report.hard, report.unknown, report.invalid, report.suppressed) == (1, 0, 0, 1)
    assert status(engine, "ana.popescu@example.ro") == "bounced"
    assert "ana.p@forward.example" in history(engine, "ana.popescu@example.ro")[0][1]


def test_verp_decides_over_the_addresses_in_the_report(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine, settings: BounceSettings
) -> None:
    # Delivered to Ion's VERP address, though the report names Ana: the token wins.
    address = verp_address(workspace, engine, "ion.ionescu@example.net")
    data = delivered_to(sample("postfix-hard-user-unknown.eml"), address)
    import_bounces(engine, _one(tmp_path, data), settings)
    assert status(engine, "ion.ionescu@example.net") == "bounced"
    assert status(engine, "ana.popescu@example.ro") == "active"


def test_tampered_verp_token_is_ignored(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine, settings: BounceSettings
) -> None:
    address = verp_address(workspace, engine, "ana.popescu@example.ro")
    token = address.split("+", 1)[1].split("@")[0]
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    forged = address.replace(token, flipped)
    before = snapshot(engine)
    data = delivered_to(sample("postfix-hard-user-unknown.eml"), forged)
    report = import_bounces(engine, _one(tmp_path, data), settings)
    assert (report.invalid, report.hard, report.unknown) == (1, 0, 0)
    # The report names Ana, a subscriber, but came to a VERP address we never issued.
    assert snapshot(engine) == before
    assert status(engine, "ana.popescu@example.ro") == "active"


def test_a_token_signed_with_another_key_is_ignored(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    sub_id, list_id = subscriber_and_list(engine, "ana.popescu@example.ro")
    foreign = TokenSigner(["someone-elses-key-0123456789"]).bounce_token(sub_id, list_id)
    data = delivered_to(sample("postfix-hard-user-unknown.eml"), f"bounces+{foreign}@{DOMAIN}")
    report = import_bounces(engine, _one(tmp_path, data), settings)
    assert report.invalid == 1 and status(engine, "ana.popescu@example.ro") == "active"


def _one(tmp_path: Path, data: bytes, name: str = "in") -> Path:
    return make_maildir(tmp_path / name, [data])


# --- soft bounces ------------------------------------------------------------------------


def soft_bounce(day: datetime, n: int) -> bytes:
    """Elena's mailbox-full bounce, sent on ``day`` with its own Message-ID."""
    data = sample("postfix-soft-mailbox-full.eml")
    data = re.sub(rb"(?m)^Date: .*$", b"Date: " + format_datetime(day).encode(), data, count=1)
    return data.replace(b"<20141021072215.8C1F2A0E11@", f"<soft{n}.8C1F2A0E11@".encode())


def test_soft_bounces_suppress_after_the_limit_within_the_window(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    assert (settings.soft_limit, settings.soft_window) == (3, timedelta(days=30))
    start = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    now = start + timedelta(days=60)
    email = "elena.dumitru@example.ro"

    def bounce_on(day: int, n: int) -> int:
        box = _one(tmp_path, soft_bounce(start + timedelta(days=day), n), f"b{n}")
        report = import_bounces(engine, box, settings, now=now)
        assert report.soft == 1
        return report.suppressed

    # Days 0, 20, 40: three soft bounces, but never three within 30 days.
    assert [bounce_on(0, 1), bounce_on(20, 2), bounce_on(40, 3)] == [0, 0, 0]
    assert status(engine, email) == "active"
    # Day 45: days 20, 40 and 45 fall within 30 days.
    assert bounce_on(45, 4) == 1
    assert status(engine, email) == "bounced"
    kinds = [kind for kind, _, _ in history(engine, email)]
    assert kinds == [SOFT_BOUNCE] * 4 + ["bounced"]
    assert history(engine, email)[-1][1].startswith("3 soft bounces within 30 days; last: 452")
    assert email not in mailing(engine)


def test_soft_limit_and_window_come_from_the_settings(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    strict = replace(settings, soft_limit=1)
    day = datetime(2024, 3, 1, tzinfo=UTC)
    report = import_bounces(engine, _one(tmp_path, soft_bounce(day, 1)), strict, now=day)
    assert (report.soft, report.suppressed) == (1, 1)
    assert status(engine, "elena.dumitru@example.ro") == "bounced"


def test_soft_bounces_in_one_mailbox_count_together_and_future_dates_are_now(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    now = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    days = [now - timedelta(days=2), now - timedelta(days=1), now + timedelta(days=365)]
    box = make_maildir(tmp_path / "B", [soft_bounce(d, i) for i, d in enumerate(days)])
    report = import_bounces(engine, box, settings, now=now)
    assert (report.soft, report.suppressed) == (3, 1)
    with engine.begin() as conn:
        info = details(conn, "elena.dumitru@example.ro")
    dates = [e.at for e in info.history if e.kind == SOFT_BOUNCE]
    assert dates == [days[0], days[1], now]  # a report from the future counts as now


def test_a_resubscribed_address_starts_with_a_clean_slate(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    email = "elena.dumitru@example.ro"
    start = datetime.now(UTC) - timedelta(days=10)
    box = make_maildir(
        tmp_path / "B", [soft_bounce(start + timedelta(hours=i), i) for i in range(3)]
    )
    import_bounces(engine, box, settings)
    assert status(engine, email) == "bounced"
    with write_transaction(engine) as conn:
        add_subscriber(conn, email, LIST, resubscribe=True)
    later = _one(tmp_path, soft_bounce(datetime.now(UTC), 9), "later")
    assert import_bounces(engine, later, settings).suppressed == 0
    assert status(engine, email) == "active"


# --- complaints --------------------------------------------------------------------------


def test_complaint_suppresses_at_once(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    report = import_bounces(engine, _one(tmp_path, sample("arf-complaint-abuse.eml")), settings)
    assert (report.complaints, report.suppressed) == (1, 1)
    assert status(engine, "radu.stoica@example.net") == "complained"
    assert "radu.stoica@example.net" not in mailing(engine)


def test_complaint_with_redacted_addresses_is_found_by_its_unsubscribe_token(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine, settings: BounceSettings
) -> None:
    signer = TokenSigner.from_workspace(workspace)
    sub_id, list_id = subscriber_and_list(engine, "radu.stoica@example.net")
    token = signer.unsubscribe_token(sub_id, list_id)
    data = sample("arf-complaint-abuse.eml")
    # Feedback loops often redact the recipient but keep List-Unsubscribe.
    data = data.replace(b"Original-Rcpt-To: <radu.stoica@example.net>\n", b"")
    data = data.replace(b"To: Radu Stoica <radu.stoica@example.net>", b"To: redacted@example.net")
    data = data.replace(
        b"<http://127.0.0.1:8080/u/not-a-real-token-in-this-sample-file>",
        f"<http://127.0.0.1:8080/u/{token}>,\n <mailto:unsubscribe+{token}@{DOMAIN}>".encode(),
    )
    assert b"radu.stoica" not in data
    report = import_bounces(engine, _one(tmp_path, data), settings)
    assert (report.complaints, report.unknown) == (1, 0)
    assert status(engine, "radu.stoica@example.net") == "complained"


def test_complaint_is_found_by_the_verp_original_mail_from(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine, settings: BounceSettings
) -> None:
    address = verp_address(workspace, engine, "radu.stoica@example.net")
    data = sample("arf-complaint-abuse.eml")
    data = data.replace(
        b"Original-Mail-From: <newsletter@clusterpolisee.example.org>",
        f"Original-Mail-From: <{address}>".encode(),
    )
    data = data.replace(b"radu.stoica@example.net", b"redacted@example.net")
    report = import_bounces(engine, _one(tmp_path, data), settings)
    assert (report.complaints, report.unknown, report.invalid) == (1, 0, 0)
    assert status(engine, "radu.stoica@example.net") == "complained"


def test_an_auto_reply_to_the_verp_address_is_not_a_bounce(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine, settings: BounceSettings
) -> None:
    address = verp_address(workspace, engine, "ioana.vasilescu@example.ro")
    data = delivered_to(sample("auto-reply-out-of-office.eml"), address)
    data = data.replace(b"To: ClusterPoliSEE <newsletter@", b"To: ClusterPoliSEE <x@")
    report = import_bounces(engine, _one(tmp_path, data), settings)
    assert (report.not_bounces, report.hard, report.soft, report.invalid) == (1, 0, 0, 0)
    assert history(engine, "ioana.vasilescu@example.ro") == []


def test_not_spam_feedback_is_ignored(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    data = sample("arf-complaint-abuse.eml").replace(
        b"Feedback-Type: abuse", b"Feedback-Type: not-spam"
    )
    report = import_bounces(engine, _one(tmp_path, data), settings)
    assert (report.ignored, report.complaints) == (1, 0)
    assert status(engine, "radu.stoica@example.net") == "active"


# --- dry runs, errors and the command ------------------------------------------------------


def test_dry_run_changes_nothing(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    box = make_maildir(tmp_path / "Bounces", all_samples())
    before = snapshot(engine)
    dry = import_bounces(engine, box, settings, dry_run=True)
    assert snapshot(engine) == before
    assert dry.dry_run
    real = import_bounces(engine, box, settings)
    # The dry run predicted exactly what the real run did.
    assert dry.summary_rows() == real.summary_rows()
    assert snapshot(engine) != before


def test_small_batches_give_the_same_result(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    box = make_maildir(tmp_path / "Bounces", all_samples())
    seen: list[tuple[int, int]] = []
    report = import_bounces(
        engine, box, settings, batch_size=3, progress=lambda done, total: seen.append((done, total))
    )
    assert (report.hard, report.soft, report.complaints, report.suppressed) == (4, 3, 1, 5)
    assert seen[-1] == (10, 10)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_an_unreadable_message_is_located_and_the_others_are_processed(
    tmp_path: Path, engine: sa.Engine, settings: BounceSettings
) -> None:
    box = make_maildir(tmp_path / "Bounces", all_samples()[:2])
    # A folder where a message file should be: unreadable, whoever runs the test.
    (box / "new" / "1413000000.M9P1.broken").mkdir()
    report = import_bounces(engine, box, settings)
    assert report.read == 2 and report.hard == 2
    assert len(report.problems) == 1
    text = str(report.problems[0])
    assert text.startswith(f"{box}: message 2 (new/1413000000.M9P1.broken): cannot read it")


def test_paths_that_are_no_mailbox_are_refused(tmp_path: Path, engine: sa.Engine) -> None:
    settings = BounceSettings(TokenSigner([KEY]))
    with pytest.raises(BulletinError, match="does not exist"):
        import_bounces(engine, tmp_path / "missing", settings)
    (tmp_path / "folder").mkdir()
    with pytest.raises(BulletinError, match="is a folder but not a Maildir"):
        import_bounces(engine, tmp_path / "folder", settings)
    box = make_maildir(tmp_path / "md", [])
    with pytest.raises(BulletinError) as excinfo:
        import_bounces(engine, box / "cur", settings)
    assert f"Give the Maildir folder itself: {box}" in str(excinfo.value)


def bulletin(workspace_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), *args], env={"COLUMNS": "250"})
    return result.exit_code, result.stdout, result.stderr


def test_command_imports_and_show_prints_the_diagnostic(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine
) -> None:
    box = make_maildir(tmp_path / "Bounces", all_samples())
    code, out, err = bulletin(workspace.root, "bounces", "import", str(box), "--dry-run")
    assert code == 0, err
    assert "(dry run: nothing was changed)" in out
    assert status(engine, "ana.popescu@example.ro") == "active"

    code, out, err = bulletin(workspace.root, "bounces", "import", str(box))
    assert code == 0, err
    assert re.search(r"hard bounces\s*│\s*4\b", out)
    assert re.search(r"suppressed now\s*│\s*5\b", out)
    assert "hard      ana.popescu@example.ro: 550 5.1.1" in out
    assert "(suppressed)" in out

    code, out, err = bulletin(workspace.root, "subscribers", "show", "ana.popescu@example.ro")
    assert code == 0, err
    assert "bounced" in out
    assert "Recipient address rejected: User unknown in virtual mailbox table" in out
    code, out, err = bulletin(workspace.root, "subscribers", "show", "stefan.raducanu@example.ro")
    assert code == 0, err
    assert SOFT_BOUNCE in out
    assert "Cutia poștală a destinatarului este plină" in out


def test_command_exits_1_when_a_message_cannot_be_read(
    tmp_path: Path, workspace: ws.Workspace, engine: sa.Engine
) -> None:
    box = make_maildir(tmp_path / "Bounces", [sample("postfix-hard-user-unknown.eml")])
    (box / "cur" / "1413999999.M1P1.broken").mkdir()
    code, out, err = bulletin(workspace.root, "bounces", "import", str(box))
    assert code == 1
    assert "message 2 (cur/1413999999.M1P1.broken): cannot read it" in err
    assert status(engine, "ana.popescu@example.ro") == "bounced"  # the readable one counted
    code, out, err = bulletin(workspace.root, "bounces", "import", str(tmp_path / "nowhere"))
    assert code == 1
    assert "does not exist" in err and "Traceback" not in err
