"""A person's data: `subscribers show EMAIL --json` (an access request) and
`subscribers export --consent`, after a real import and a real send."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulletin import workspace as wsm
from bulletin.cli import cli
from bulletin.store.schema import lists, signups
from conftest import SAMPLE_SLUG
from smtpfaults import FaultServer
from test_engine import (
    KEY,
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    configure,
    open_store,
)

EXPORTS = Path(__file__).parent / "data" / "exports"
MAILCHIMP = "subscribed_members_export_4f1a2b.csv"
FAST_SEND = {"rate": 0, "connections": 1, "backoff": 0.05, "backoff_cap": 0.2, "max_wait": 5.0}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def server() -> Any:
    with FaultServer() as s:
        yield s


def bulletin(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-w", str(root), *args])
    return result.exit_code, result.stdout, result.stderr


def imported(root: Path) -> None:
    target = root / "subscribers" / MAILCHIMP
    shutil.copy(EXPORTS / MAILCHIMP, target)
    code, out, err = bulletin(
        root, "subscribers", "import", str(target), "--list", "news", "--create-list"
    )
    assert code == 0, out + err


def test_show_json_gives_everything_stored_about_the_person(
    workspace_dir: Path, server: FaultServer
) -> None:
    configure(workspace_dir, server.url, send=FAST_SEND)
    imported(workspace_dir)
    code, out, err = bulletin(workspace_dir, "send", SAMPLE_SLUG, "--list", "news", "--yes")
    assert code == 0, out + err
    code, out, err = bulletin(
        workspace_dir, "subscribers", "unsubscribe", "stefan@exemplu.ro", "--list", "news"
    )
    assert code == 0, out + err
    db = open_store(wsm.load(workspace_dir).database_url())
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    with db.begin() as conn:
        news = conn.scalar(sa.select(lists.c.id).where(lists.c.slug == "news"))
        conn.execute(
            signups.insert().values(
                list_id=news,
                email="Stefan@exemplu.ro",
                email_key="stefan@exemplu.ro",
                name="Ștefan Țurcanu",
                language="ro",
                consent_text="Vreau newsletterul.",
                consent_version=2,
                ip=None,
                created_at=now,
                mailed_at=now,
            )
        )

    code, out, err = bulletin(workspace_dir, "subscribers", "show", "STEFAN@exemplu.ro", "--json")
    assert code == 0, err
    data = json.loads(out)

    assert set(data) == {
        "subscriber",
        "subscriptions",
        "consents",
        "events",
        "deliveries",
        "signups",
    }
    person = data["subscriber"]
    assert person["email"] == "stefan@exemplu.ro"
    assert person["name"] == "Ștefan Țurcanu"  # comma-below letters, byte for byte
    # Mailchimp's NOTES (an officer's words about the person) are not carried over.
    assert "notes" not in person["attributes"]
    assert person["attributes"]["first_name"] == "Ștefan"
    assert person["status"] == "active" and person["domain_blocked"] is False
    assert [(s["list"], s["status"]) for s in data["subscriptions"]] == [("news", "unsubscribed")]
    [consent] = data["consents"]
    assert consent["source"] == "import"
    assert consent["detail"] == f"mailchimp {MAILCHIMP}"
    assert consent["given_at"] == "2022-11-30T23:59:59+00:00"
    assert consent["confirmed_at"] == "2022-12-01T00:00:30+00:00"
    assert [e["kind"] for e in data["events"]] == ["subscribed", "unsubscribed"]
    [delivery] = data["deliveries"]
    assert delivery["issue"] == SAMPLE_SLUG and delivery["state"] == "sent"
    assert delivery["through_list"] == "news" and delivery["email"] == "stefan@exemplu.ro"
    assert delivery["message_id"]
    [pending] = data["signups"]
    assert pending["list"] == "news" and pending["consent_version"] == 2
    assert pending["created_at"] == "2026-12-01T09:00:00+00:00"


def test_show_json_of_an_unknown_address_is_a_user_error(workspace_dir: Path) -> None:
    code, out, err = bulletin(workspace_dir, "subscribers", "show", "nimeni@example.org", "--json")
    assert code == 1
    assert "nimeni@example.org is not in the subscriber store." in out + err
    assert "Traceback" not in out + err


def test_export_consent_columns_and_they_import_back(workspace_dir: Path) -> None:
    imported(workspace_dir)
    code, out, err = bulletin(workspace_dir, "subscribers", "export", "--list", "news", "--consent")
    assert code == 0, err
    rows = {r["email"]: r for r in csv.DictReader(io.StringIO(out))}
    assert list(next(iter(rows.values())))[:7] == [
        "email",
        "name",
        "language",
        "consent_source",
        "consent_given_at",
        "consent_confirmed_at",
        "consent_version",
    ]
    ana = rows["ana.popescu@example.ro"]
    assert ana["consent_source"] == "import"
    assert ana["consent_given_at"] == "2021-03-04T10:11:12+00:00"
    assert ana["consent_confirmed_at"] == "2021-03-04T10:15:00+00:00"
    assert ana["consent_version"] == "0"
    assert rows["maria@example.org"]["consent_confirmed_at"] == ""

    # Into another list: the consent times travel, the columns do not become attributes.
    moved = workspace_dir / "subscribers" / "moved.csv"
    moved.write_text(out, encoding="utf-8")
    code, out2, err = bulletin(
        workspace_dir, "subscribers", "import", str(moved), "--list", "other", "--create-list"
    )
    assert code == 0, out2 + err
    code, shown, err = bulletin(
        workspace_dir, "subscribers", "show", "ana.popescu@example.ro", "--json"
    )
    data = json.loads(shown)
    assert not any(k.startswith("consent") for k in data["subscriber"]["attributes"])
    other = [c for c in data["consents"] if c["list"] == "other"]
    assert [c["given_at"] for c in other] == ["2021-03-04T10:11:12+00:00"]


def test_a_plain_csv_import_shows_where_and_when_each_subscription_began(
    workspace_dir: Path,
) -> None:
    # A plain CSV carries no opt-in time or text: the consent shown is the subscription's own.
    import json

    from click.testing import CliRunner

    from bulletin.cli import cli

    csv = workspace_dir / "plain.csv"
    csv.write_text("email,name\nioana@example.ro,Ioana Mureșan\n", encoding="utf-8")
    runner = CliRunner(env={"COLUMNS": "200"})
    args = ["-w", str(workspace_dir), "subscribers"]
    imported = runner.invoke(cli, [*args, "import", str(csv), "--list", "news", "--create-list"])
    assert imported.exit_code == 0, imported.output
    shown = runner.invoke(cli, [*args, "show", "ioana@example.ro", "--json"])
    assert shown.exit_code == 0, shown.output
    [consent] = json.loads(shown.stdout)["consents"]
    assert consent["list"] == "news" and consent["source"] == "import"
    assert consent["recorded"] is False and "plain.csv" in consent["detail"]
    assert consent["given_at"]
