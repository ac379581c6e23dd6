"""`bulletin db copy`: a SQLite store moved whole into the workspace's database.

The source is always a real SQLite file (what a user moves away from); the target is the
pass's database, so on the PostgreSQL pass this is the real SQLite -> PostgreSQL move.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from bulletin.cli import cli
from bulletin.store import db, ledger
from bulletin.store.copy import TABLES
from bulletin.store.schema import utcnow, workers
from bulletin.store.subscribers import (
    add_subscriber,
    create_list,
    find_subscriber,
    suppress,
    unsubscribe,
)


def bulletin(root: Path, *args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["-w", str(root), *args])


def everything(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every copied table, in primary-key order."""
    with engine.connect() as conn:
        return {
            t.name: [
                tuple(r)
                for r in conn.execute(sa.select(t).order_by(*(t.primary_key.columns or t.columns)))
            ]
            for t in TABLES
        }


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A SQLite store with what must survive a move: opt-outs, a bounce, a finished send."""
    path = tmp_path / "old" / "bulletin.db"
    path.parent.mkdir()
    engine = db.open_store(f"sqlite:///{path}")
    with db.write_transaction(engine) as conn:
        create_list(conn, "stiri", name="Știri ClusterPoliSEE")
        create_list(conn, "evenimente")
        for n, name in enumerate(("Ștefan Țiriac", "Ioana Mureșan", "Ana Popescu", "Dan Ion")):
            email = f"p{n}@example.ro"
            add_subscriber(conn, email, "stiri", name=name, attributes={"oraș": "Timișoara"})
        add_subscriber(conn, "p0@example.ro", "evenimente")
        unsubscribe(conn, find_subscriber(conn, "p1@example.ro").id, None, "one-click")
        suppress(conn, find_subscriber(conn, "p2@example.ro").id, "bounced", "bounce")
        ids = ledger.list_ids(conn, ("stiri",))
        send = ledger.create_send(
            conn,
            issue_slug="2014-10-clusterpolisee-03",
            list_slugs=("stiri",),
            ids=list(ids.values()),
            subject="Newsletter nr. 3 — ședințe și știri",
            fingerprint="f" * 64,
        )
    engine.dispose()
    assert send.total == 2  # the unsubscribed and the bounced are not recipients
    return path


def test_a_copy_moves_every_row_and_opt_outs_stay_opt_outs(
    workspace_dir: Path, old_store: Path
) -> None:
    source = db.open_store(f"sqlite:///{old_store}")
    before = everything(source)
    source.dispose()

    result = bulletin(workspace_dir, "db", "copy", str(old_store))

    assert result.exit_code == 0, result.output
    assert "Copied sqlite:///" in result.output and "subscribers" in result.output
    target = db.open_store(bulletin_url(workspace_dir))
    try:
        assert everything(target) == before  # ids, texts with ș/ț, times, the ledger
        # The opt-outs are still opt-outs: the same command a new user runs says so.
        shown = bulletin(workspace_dir, "subscribers", "show", "p1@example.ro").output
        assert "unsubscribed" in shown
        # New rows continue after the copied ids (PostgreSQL's sequences were moved on).
        added = bulletin(workspace_dir, "subscribers", "add", "nou@example.ro", "--list", "stiri")
        assert added.exit_code == 0, added.output
        with target.connect() as conn:
            new = find_subscriber(conn, "nou@example.ro")
            assert new is not None and new.id == max(r[0] for r in before["subscribers"]) + 1
            # And an import can still not bring the unsubscribed address back.
        csv = workspace_dir / "again.csv"
        csv.write_text("email\np1@example.ro\np2@example.ro\n", encoding="utf-8")
        imported = bulletin(workspace_dir, "subscribers", "import", str(csv), "--list", "stiri")
        assert imported.exit_code == 0, imported.output
        with target.connect() as conn:
            assert find_subscriber(conn, "p1@example.ro").status == "unsubscribed"
            assert find_subscriber(conn, "p2@example.ro").status == "bounced"
    finally:
        target.dispose()


def test_a_target_that_is_not_empty_is_refused_and_left_as_it_was(
    workspace_dir: Path, old_store: Path
) -> None:
    assert bulletin(workspace_dir, "lists", "create", "mine").exit_code == 0
    target = db.open_store(bulletin_url(workspace_dir))
    before = everything(target)
    result = bulletin(workspace_dir, "db", "copy", str(old_store))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "already holds lists; a copy goes only into an empty store" in flat(result.output)
    assert everything(target) == before
    target.dispose()


def test_a_copy_that_fails_half_way_leaves_the_target_empty(
    workspace_dir: Path, old_store: Path
) -> None:
    # A row the target cannot take (a ledger row of a subscriber who does not exist, which
    # the old file was tampered into holding): the copy stops there and nothing stays.
    import sqlite3

    raw = sqlite3.connect(old_store)
    raw.execute("PRAGMA foreign_keys = OFF")
    raw.execute(
        "INSERT INTO deliveries (send_id, subscriber_id, list_id, email, state, attempts,"
        " last_reply, updated_at) VALUES (1, 999, 1, 'ghost@example.ro', 'pending', 0, '',"
        " '2026-01-01 00:00:00')"
    )
    raw.commit()
    raw.close()
    result = bulletin(workspace_dir, "db", "copy", str(old_store))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "deliveries table holds rows the target refuses" in flat(result.output)
    assert "nothing was copied" in flat(result.output)
    target = db.open_store(bulletin_url(workspace_dir))
    assert all(rows == [] for rows in everything(target).values())
    target.dispose()


def test_a_missing_source_file_is_named_and_nothing_is_created(workspace_dir: Path) -> None:
    result = bulletin(workspace_dir, "db", "copy", "old/bulletin.db")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "There is no SQLite file" in flat(result.output)
    assert not (Path.cwd() / "old" / "bulletin.db").exists()


def test_a_source_with_senders_at_work_is_refused(workspace_dir: Path, old_store: Path) -> None:
    # Another machine's sender, heard of 5 s ago with a 60 s lease.
    engine = db.open_store(f"sqlite:///{old_store}")
    heard = utcnow() - timedelta(seconds=5)
    with db.write_transaction(engine) as conn:
        conn.execute(
            workers.insert().values(
                id="a" * 32,
                send_id=1,
                host="sender-2.example.org",
                pid=4242,
                lease_seconds=60.0,
                started_at=heard,
                heartbeat_at=heard,
                state="running",
            )
        )
    engine.dispose()
    result = bulletin(workspace_dir, "db", "copy", str(old_store))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Senders are at work" in flat(result.output)
    assert "sender-2.example.org (process 4242)" in flat(result.output)


@pytest.mark.sqlite_only  # the pass's database is the same file only on SQLite
def test_copying_a_store_onto_itself_is_refused(workspace_dir: Path) -> None:
    path = workspace_dir / "subscribers" / "bulletin.db"
    assert bulletin(workspace_dir, "lists").exit_code == 0
    result = bulletin(workspace_dir, "db", "copy", str(path))
    assert result.exit_code == 1 and "are the same database" in flat(result.output)


def bulletin_url(root: Path) -> str:
    from bulletin import workspace as ws

    return ws.load(root).database_url()


def flat(text: str) -> str:
    return " ".join(text.split())
