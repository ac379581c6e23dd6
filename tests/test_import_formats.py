"""Moving from Mailchimp and listmonk, and files of suppressions, through `subscribers import`.

The fixture files in tests/data/exports are written by hand in the tools' export formats
(Mailchimp's audience zip members with a BOM and CRLF; listmonk's Go CSV writer and Go time
strings) with messy rows. Whatever the order of the files: no unsubscribed, cleaned,
blocklisted or blocked person ends up subscribed, and importing again changes nothing.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulletin import workspace as wsm
from bulletin.cli import cli
from bulletin.store.schema import consents, lists, subscribers, subscriptions
from test_engine import (
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    open_store,
)
from test_import_cli import summary

EXPORTS = Path(__file__).parent / "data" / "exports"
MAILCHIMP = (
    "subscribed_members_export_4f1a2b.csv",
    "unsubscribed_members_export_4f1a2b.csv",
    "cleaned_members_export_4f1a2b.csv",
    "nonsubscribed_members_export_4f1a2b.csv",
)
LISTMONK = "listmonk-subscribers.csv"


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def bulletin(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(root), *args])
    return result.exit_code, result.output


def place(root: Path, name: str) -> Path:
    target = root / "subscribers" / name
    shutil.copy(EXPORTS / name, target)
    return target


def import_(root: Path, name: str, *extra: str) -> tuple[int, str]:
    return bulletin(root, "subscribers", "import", str(place(root, name)), *extra)


def state(root: Path) -> dict[str, tuple[str, str | None]]:
    """Every stored address: (global status, status on the list `news` or None)."""
    db = open_store(wsm.load(root).database_url())
    news = sa.select(lists.c.id).where(lists.c.slug == "news").scalar_subquery()
    on = sa.and_(subscriptions.c.subscriber_id == subscribers.c.id, subscriptions.c.list_id == news)
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(
                subscribers.c.email_key, subscribers.c.status, subscriptions.c.status
            ).select_from(subscribers.outerjoin(subscriptions, on))
        ).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def receiving(root: Path) -> set[str]:
    return {k for k, (g, s) in state(root).items() if g == "active" and s == "subscribed"}


EXPECTED_RECEIVING = {
    "ana.popescu@example.ro",
    "stefan@exemplu.ro",
    "ioana@example.ro",
}
NEVER = {
    "ion@example.ro",  # unsubscribed in Mailchimp
    "plecat@example.org",  # unsubscribed in Mailchimp
    "maria@example.org",  # in the subscribed file, and cleaned
    "vechi@example.com",  # cleaned
    "blocat@example.net",  # subscribed in Mailchimp, blocklisted in listmonk
    "oprit@example.org",  # disabled in listmonk
    "cumparator@example.org",  # non-subscribed in Mailchimp
}


@pytest.mark.parametrize("order", ["as exported", "reversed"])
def test_no_opt_out_is_lost_whatever_the_order_and_again_changes_nothing(
    workspace_dir: Path, order: str
) -> None:
    assert bulletin(workspace_dir, "lists", "create", "news")[0] == 0
    # ion was subscribed here before the move: his Mailchimp unsubscribe must win.
    assert bulletin(workspace_dir, "subscribers", "add", "ion@example.ro", "--list", "news")[0] == 0
    files = [*MAILCHIMP, LISTMONK]
    if order == "reversed":
        files.reverse()
    for name in files:
        code, out = import_(workspace_dir, name, "--list", "news")
        assert code == 0, out

    assert receiving(workspace_dir) == EXPECTED_RECEIVING
    found = state(workspace_dir)
    assert not NEVER & receiving(workspace_dir)
    assert found["ion@example.ro"] == ("active", "unsubscribed")
    assert found["plecat@example.org"] == ("active", "unsubscribed")
    assert found["maria@example.org"][0] == "bounced"
    assert found["vechi@example.com"][0] == "bounced"
    assert found["blocat@example.net"][0] == "blocked"
    assert "cumparator@example.org" not in found
    assert "oprit@example.org" not in found or found["oprit@example.org"][1] != "subscribed"

    # Every file again, in the other order: nothing changes, and the counts say so.
    for name in reversed(files):
        code, out = import_(workspace_dir, name, "--list", "news")
        assert code == 0, out
        counts = summary(out)
        assert counts["added"] == 0 and counts["updated"] == 0, (name, out)
        for status in ("unsubscribed", "bounced", "blocked"):
            assert status not in counts, (name, out)
    assert state(workspace_dir) == found


def test_mailchimp_subscribed_file_summary_consents_and_dropped_columns(
    workspace_dir: Path,
) -> None:
    code, out = import_(workspace_dir, MAILCHIMP[0], "--list", "news", "--create-list")
    assert code == 0, out
    assert "Recognised a Mailchimp export of subscribed members." in out
    counts = summary(out)
    assert counts["read"] == 6 and counts["added"] == 4 and counts["rejected"] == 1
    assert counts["duplicates merged"] == 1
    assert "Dropped mailchimp bookkeeping columns: MEMBER_RATING, LATITUDE, LONGITUDE" in out
    assert "LEID, EUID" in out and "TAGS (--tags-as-lists)" in out
    assert "OPTIN_IP (privacy.store_ip is off)" in out

    db = open_store(wsm.load(workspace_dir).database_url())
    with db.connect() as conn:
        ana = conn.execute(
            sa.select(subscribers).where(subscribers.c.email_key == "ana.popescu@example.ro")
        ).one()
        # The later duplicate row's non-empty values win; bookkeeping is not an attribute.
        assert ana.attributes["first_name"] == "Ana"
        assert ana.attributes["last_name"] == "Popescu-Ionescu"
        assert ana.attributes["address"] == "Str. Lungă 5, Iași 700001"
        assert not {"leid", "euid", "member_rating", "latitude", "tags", "optin_time"} & set(
            ana.attributes
        )
        stefan = conn.execute(
            sa.select(subscribers).where(subscribers.c.email_key == "stefan@exemplu.ro")
        ).one()
        assert stefan.name == "Ștefan Țurcanu"
        rows = {
            r.subscriber_id: r
            for r in conn.execute(sa.select(consents).where(consents.c.source == "import"))
        }
    assert len(rows) == 4
    given = rows[ana.id]
    assert given.detail == f"mailchimp {MAILCHIMP[0]}"
    assert given.given_at == datetime(2021, 3, 4, 10, 11, 12, tzinfo=UTC)
    assert given.confirmed_at == datetime(2021, 3, 4, 10, 15, tzinfo=UTC)
    assert given.ip is None  # privacy.store_ip is off
    assert rows[stefan.id].given_at == datetime(2022, 11, 30, 23, 59, 59, tzinfo=UTC)


def test_listmonk_statuses_attributes_and_times(workspace_dir: Path) -> None:
    code, out = import_(workspace_dir, LISTMONK, "--list", "news", "--create-list")
    assert code == 0, out
    assert "Recognised a listmonk subscriber export." in out
    counts = summary(out)
    assert counts["blocked"] == 1 and counts["not subscribed"] == 1
    assert counts["added"] == 2 and counts["rejected"] == 1
    assert "attributes is not JSON" in out

    db = open_store(wsm.load(workspace_dir).database_url())
    with db.connect() as conn:
        ioana = conn.execute(
            sa.select(subscribers).where(subscribers.c.email_key == "ioana@example.ro")
        ).one()
        consent = conn.execute(
            sa.select(consents).where(consents.c.subscriber_id == ioana.id)
        ).one()
    assert ioana.name == "Ioana Șerban"
    assert ioana.status == "active"
    attrs = ioana.attributes
    assert attrs["city"] == "Timișoara"
    assert attrs["age"] == "34" and attrs["vip"] == "true"
    assert json.loads(attrs["projects"]) == ["a", "b"]
    assert json.loads(attrs["meta"]) == {"k": 1}
    # listmonk's own columns are not attributes, nor may an attribute pose as the address.
    assert not {"uuid", "status", "created_at", "updated_at", "email", "empty"} & set(attrs)
    # 07:08:09.123456789 at +03:00 is 04:08:09.123456 UTC (nanoseconds cut to micro).
    assert consent.given_at == datetime(2022, 5, 6, 4, 8, 9, 123456, tzinfo=UTC)
    assert consent.detail == f"listmonk {LISTMONK}"
    assert state(workspace_dir)["blocat@example.net"] == ("blocked", None)


def test_listmonk_subscription_status_column(workspace_dir: Path) -> None:
    assert bulletin(workspace_dir, "lists", "create", "news")[0] == 0
    assert (
        bulletin(workspace_dir, "subscribers", "add", "ana.popescu@example.ro", "--list", "news")[0]
        == 0
    )
    code, out = import_(workspace_dir, "listmonk-list-status.csv", "--list", "news")
    assert code == 0, out
    found = state(workspace_dir)
    assert found["ana.popescu@example.ro"] == ("active", "unsubscribed")
    assert "nou@example.org" not in found  # unconfirmed: never confirmed a double opt-in
    assert found["confirmat@example.org"] == ("active", "subscribed")


def test_status_imports_suppressions_that_no_later_import_lifts(workspace_dir: Path) -> None:
    people = workspace_dir / "subscribers" / "people.csv"
    people.write_text(
        "email,name\nana@example.org,Ana\nbogdan@example.org,Bogdan\ncristi@example.org,C\n",
        encoding="utf-8",
    )
    bad = workspace_dir / "subscribers" / "bounces.csv"
    bad.write_text("Email\nBOGDAN@example.org\nnou@example.org\n", encoding="utf-8")
    left = workspace_dir / "subscribers" / "left.csv"
    left.write_text("email\nana@example.org\n", encoding="utf-8")

    code, out = bulletin(
        workspace_dir, "subscribers", "import", str(people), "--list", "news", "--create-list"
    )
    assert code == 0, out
    code, out = bulletin(workspace_dir, "subscribers", "import", str(bad), "--status", "bounced")
    assert code == 0, out
    assert "Import of bounces.csv\n" in out or "Import of bounces.csv " in out
    assert summary(out)["bounced"] == 2
    assert "Every address in the file is imported as bounced (every list)." in out
    code, out = bulletin(
        workspace_dir,
        "subscribers",
        "import",
        str(left),
        "--list",
        "news",
        "--status",
        "unsubscribed",
    )
    assert code == 0, out
    assert summary(out)["unsubscribed"] == 1

    # The same people again as subscribers: nobody comes back.
    code, out = bulletin(workspace_dir, "subscribers", "import", str(people), "--list", "news")
    assert code == 0, out
    assert summary(out)["suppressed-skipped"] == 2
    assert receiving(workspace_dir) == {"cristi@example.org"}
    found = state(workspace_dir)
    assert found["nou@example.org"] == ("bounced", None)

    # Without --list, unsubscribed means every list; then blocked is stronger still.
    code, out = bulletin(
        workspace_dir, "subscribers", "import", str(people), "--status", "unsubscribed"
    )
    assert code == 0, out
    assert summary(out)["unsubscribed from all"] == 2  # bogdan is bounced: stronger already
    assert summary(out)["unchanged"] == 1
    assert receiving(workspace_dir) == set()


def test_subscribed_import_needs_a_list(workspace_dir: Path) -> None:
    path = place(workspace_dir, LISTMONK)
    code, out = bulletin(workspace_dir, "subscribers", "import", str(path))
    assert code == 2
    assert "Give --list SLUG" in out


def test_dry_run_reports_exactly_what_the_import_does(workspace_dir: Path) -> None:
    assert bulletin(workspace_dir, "lists", "create", "news")[0] == 0
    assert import_(workspace_dir, MAILCHIMP[0], "--list", "news")[0] == 0
    before = state(workspace_dir)
    code, dry = import_(workspace_dir, LISTMONK, "--list", "news", "--dry-run")
    assert code == 0, dry
    assert state(workspace_dir) == before
    code, real = import_(workspace_dir, LISTMONK, "--list", "news")
    assert code == 0, real
    assert summary(dry) == summary(real)
    assert summary(real)["blocked"] == 1


def test_tags_as_lists_makes_private_lists_and_keeps_their_opt_outs(workspace_dir: Path) -> None:
    code, out = import_(
        workspace_dir, MAILCHIMP[0], "--list", "news", "--create-list", "--tags-as-lists"
    )
    assert code == 0, out
    assert "List 'cititori-fideli' was created (private) for a Mailchimp tag." in out
    assert "List 'ro' was created (private) for a Mailchimp tag." in out
    assert "List 'fideli' was created (private) for a Mailchimp tag." in out
    assert "3 subscription(s) to tag lists were added." in out
    db = open_store(wsm.load(workspace_dir).database_url())

    def members(slug: str) -> set[str]:
        with db.connect() as conn:
            return set(
                conn.scalars(
                    sa.select(subscribers.c.email_key)
                    .select_from(subscriptions.join(subscribers).join(lists))
                    .where(lists.c.slug == slug, subscriptions.c.status == "subscribed")
                )
            )

    assert members("cititori-fideli") == {"ana.popescu@example.ro"}
    assert members("fideli") == {"stefan@exemplu.ro"}
    with db.connect() as conn:
        row = conn.execute(sa.select(lists).where(lists.c.slug == "cititori-fideli")).one()
    assert row.name == "Cititori fideli" and row.public is False

    # Ștefan leaves the tag's list; importing the file again neither adds nor brings back.
    assert (
        bulletin(
            workspace_dir, "subscribers", "unsubscribe", "stefan@exemplu.ro", "--list", "fideli"
        )[0]
        == 0
    )
    code, out = import_(workspace_dir, MAILCHIMP[0], "--list", "news", "--tags-as-lists")
    assert code == 0, out
    assert "tag lists were added" not in out and "created (private)" not in out
    assert members("fideli") == set()


def test_client_addresses_only_with_store_ip(workspace_dir: Path) -> None:
    from bulletin.store.importer import import_file

    db = open_store(wsm.load(workspace_dir).database_url())
    path = place(workspace_dir, MAILCHIMP[0])
    import_file(db, path, "news", create_list_if_missing=True, store_ip=True)
    with db.connect() as conn:
        ips = dict(
            conn.execute(
                sa.select(subscribers.c.email_key, consents.c.ip).select_from(
                    consents.join(subscribers)
                )
            ).all()
        )
    # CONFIRM_IP first (the address that confirmed), else OPTIN_IP, else none.
    assert ips["ana.popescu@example.ro"] == "198.51.100.8"
    assert ips["stefan@exemplu.ro"] is None


def test_consent_records_come_from_files_that_carry_consent(workspace_dir: Path) -> None:
    """A plain CSV writes none (its subscription rows say where and when); bulletin's own
    export --consent and the tools' exports write one per subscription, once."""
    people = workspace_dir / "subscribers" / "people.csv"
    people.write_text("email,name\nana@example.org,Ana\nIon@example.org,Ion\n", encoding="utf-8")
    own = workspace_dir / "subscribers" / "own.csv"
    own.write_text(
        "email,name,language,consent_source,consent_given_at,consent_confirmed_at,"
        "consent_version\nana@example.org,Ana,,form,2025-01-02T03:04:05+00:00,"
        "2025-01-02T03:10:00+00:00,3\n",
        encoding="utf-8",
    )
    for _ in range(2):
        for path, slug in ((people, "news"), (own, "other")):
            code, out = bulletin(
                workspace_dir, "subscribers", "import", str(path), "--list", slug, "--create-list"
            )
            assert code == 0, out
    db = open_store(wsm.load(workspace_dir).database_url())
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(
                subscribers.c.email_key,
                lists.c.slug,
                consents.c.source,
                consents.c.detail,
                consents.c.given_at,
                consents.c.confirmed_at,
            )
            .select_from(consents.join(subscribers).join(lists))
            .order_by(subscribers.c.email_key)
        ).all()
        ana = conn.execute(
            sa.select(subscribers.c.attributes).where(subscribers.c.email_key == "ana@example.org")
        ).scalar_one()
    assert [tuple(r) for r in rows] == [
        (
            "ana@example.org",
            "other",
            "import",
            "own.csv",
            datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
            datetime(2025, 1, 2, 3, 10, tzinfo=UTC),
        ),
    ]
    assert not any(k.startswith("consent") for k in ana)


def test_any_file_with_a_status_column_keeps_its_opt_outs(workspace_dir: Path) -> None:
    # A spreadsheet from some other tool: its status column was stored as an attribute and
    # every row subscribed, the unsubscribed and the blocklisted included.
    assert bulletin(workspace_dir, "lists", "create", "news")[0] == 0
    path = workspace_dir / "subscribers" / "din-alt-program.csv"
    path.write_text(
        "email,name,Status\n"
        "abonat@example.ro,Ana Abonată,Subscribed\n"
        "gol@example.ro,Fără Stare,\n"
        "plecat@example.ro,Ion Plecat,unsubscribed\n"
        "respins@example.ro,Maria Respinsă,bounced\n"
        "interzis@example.ro,Dan Interzis,Blocklisted\n"
        "neconfirmat@example.ro,Eva Neconfirmată,unconfirmed\n"
        "ciudat@example.ro,Ștefan Ciudat,maybe later\n",
        encoding="utf-8",
    )
    code, out = bulletin(workspace_dir, "subscribers", "import", str(path), "--list", "news")
    assert code == 0, out
    assert receiving(workspace_dir) == {"abonat@example.ro", "gol@example.ro"}
    found = state(workspace_dir)
    assert found["plecat@example.ro"] == ("active", "unsubscribed")
    assert found["respins@example.ro"][0] == "bounced"
    assert found["interzis@example.ro"][0] == "blocked"
    assert "neconfirmat@example.ro" not in found
    # A word it cannot read subscribes nobody: the row is rejected with the reason.
    assert "ciudat@example.ro" not in found
    rejects = (path.parent / "din-alt-program.rejects.csv").read_text(encoding="utf-8")
    assert "maybe later" in rejects and "not a status bulletin knows" in rejects
    # The status is not kept as an attribute.
    db = open_store(wsm.load(workspace_dir).database_url())
    with db.connect() as conn:
        attrs = conn.scalar(
            sa.select(subscribers.c.attributes).where(
                subscribers.c.email_key == "abonat@example.ro"
            )
        )
    assert "status" not in {k.lower() for k in attrs}
