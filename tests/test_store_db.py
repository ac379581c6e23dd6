"""The store's database: SQLite settings, migrations, upgrades from the first schema.

Migrations run on both engines; what is about SQLite itself (WAL, pragmas, the file kept
beside the database before an upgrade, its lock) is marked ``sqlite_only``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

import oldschema
from bulletin.errors import BulletinError
from bulletin.store import db, schema
from bulletin.store.migrations import MIGRATIONS, Migration
from bulletin.store.subscribers import add_subscriber, create_list, details

V1 = MIGRATIONS[:1]
"""The first schema: the example migrations below come after it, as version 2."""
V1_TABLES = ("lists", "subscribers", "subscriptions", "events")


def url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.mark.sqlite_only
def test_open_store_creates_the_folder_and_a_wal_database_with_foreign_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "subscribers" / "bulletin.db"
    engine = db.open_store(url(path))
    assert path.is_file()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS
        assert db.schema_version(conn) == MIGRATIONS[-1].version
    engine.dispose()


def test_foreign_keys_are_enforced(database_url: str) -> None:
    engine = db.open_store(database_url)
    with pytest.raises(sa.exc.IntegrityError), db.write_transaction(engine) as conn:
        conn.execute(
            schema.subscriptions.insert().values(
                subscriber_id=999,
                list_id=999,
                status="subscribed",
                source="",
                created_at=schema.utcnow(),
                updated_at=schema.utcnow(),
            )
        )
    engine.dispose()


def _columns(conn: Connection) -> dict[str, dict[str, tuple[bool, bool]]]:
    insp = sa.inspect(conn)
    return {
        table: {c["name"]: (bool(c["nullable"]), bool(c.get("primary_key"))) for c in cols}
        for table in insp.get_table_names()
        for cols in [insp.get_columns(table)]
    }


def test_migrations_build_exactly_the_schema_the_code_queries(
    new_database_url: Callable[[str], str],
) -> None:
    migrated = db.open_store(new_database_url("migrated"))
    reference = db.connect(new_database_url("reference"))
    schema.metadata.create_all(reference)
    with migrated.connect() as a, reference.connect() as b:
        assert _columns(a) == _columns(b)
        for table in schema.metadata.tables:
            ia = {i["name"]: i["column_names"] for i in sa.inspect(a).get_indexes(table)}
            ib = {i["name"]: i["column_names"] for i in sa.inspect(b).get_indexes(table)}
            assert ia == ib, table
    migrated.dispose()
    reference.dispose()


def _dump(
    engine: sa.Engine, columns: dict[str, set[str]] | None = None
) -> dict[str, list[tuple[object, ...]]]:
    """The first schema's tables, row by row, in the ``columns`` given (default: all there are).

    Later migrations add columns; comparing the columns a first-schema store had shows that
    an upgrade kept every value.
    """
    with engine.connect() as conn:
        dump = {}
        for name in V1_TABLES:
            t = schema.metadata.tables[name]
            present = {c["name"] for c in sa.inspect(conn).get_columns(name)}
            keep = present if columns is None else columns[name]
            rows = conn.execute(
                sa.select(*(c for c in t.columns if c.name in keep)).order_by(*t.primary_key)
            )
            dump[name] = [tuple(r) for r in rows]
        return dump


def _column_names(engine: sa.Engine) -> dict[str, set[str]]:
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        return {name: {c["name"] for c in insp.get_columns(name)} for name in V1_TABLES}


def _v1_with_data(database_url: str) -> sa.Engine:
    engine = db.connect(database_url)
    db.migrate(engine, target=1)
    with db.write_transaction(engine) as conn:
        news = oldschema.add_list(conn, "newsletter-ro", "Newsletter (română)")
        oldschema.add_subscribers(
            conn,
            news,
            [("Ion.Popescu@example.ro", "Ion Popescu"), ("ștefan@example.ro", "Ștefan Țiriac")],
        )
    return engine


def _m2_example(conn: Connection) -> None:
    # What a later migration looks like: a new table and a new column with a default.
    md = sa.MetaData()
    sa.Table("subscribers", md, sa.Column("id", sa.Integer, primary_key=True))  # for the FK
    sa.Table(
        "deliveries",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    ).create(conn)
    conn.exec_driver_sql("ALTER TABLE subscribers ADD COLUMN score INTEGER NOT NULL DEFAULT 0")


def test_upgrade_from_the_first_schema_keeps_every_row(database_url: str) -> None:
    engine = _v1_with_data(database_url)
    before = _dump(engine)
    migrations = (*V1, Migration(2, "deliveries, subscribers.score", _m2_example))

    report = db.migrate(engine, migrations=migrations)

    assert (report.before, report.after) == (1, 2)
    with engine.connect() as conn:
        assert db.schema_version(conn) == 2
        assert conn.exec_driver_sql("SELECT count(*) FROM deliveries").scalar() == 0
        scores = conn.exec_driver_sql("SELECT email, score FROM subscribers ORDER BY id").all()
        assert scores == [("Ion.Popescu@example.ro", 0), ("ștefan@example.ro", 0)]
    after = _dump(engine)
    assert after == before  # the tables the code knows kept every row unchanged
    with engine.connect() as conn:
        subscribed = conn.exec_driver_sql(
            "SELECT s.email FROM subscriptions t JOIN subscribers s ON s.id = t.subscriber_id"
            " WHERE t.status = 'subscribed' ORDER BY s.id"
        ).scalars()
        assert list(subscribed) == ["Ion.Popescu@example.ro", "ștefan@example.ro"]
    # Running again is a no-op.
    assert db.migrate(engine, migrations=migrations) == db.MigrationReport(2, 2)
    engine.dispose()


def test_the_lifecycle_migration_keeps_every_list_and_gives_it_the_quiet_defaults(
    database_url: str,
) -> None:
    # Migration 4 (issue 10): lists existing before it stay private, double opt-in, with the
    # default consent text; nobody gains a consent record or a pending sign-up.
    engine = _v1_with_data(database_url)
    db.migrate(engine, target=3)
    columns = _column_names(engine)
    before = _dump(engine, columns)

    report = db.migrate(engine)

    assert (report.before, report.after) == (3, MIGRATIONS[-1].version)
    assert _dump(engine, columns) == before
    with engine.connect() as conn:
        row = conn.execute(sa.select(schema.lists)).one()
        assert (row.name, row.description, row.public, row.opt_in) == (
            "Newsletter (română)",
            "",
            False,
            "double",
        )
        assert (row.language, row.consent_text, row.consent_version) == ("", "", 1)
        for table in (schema.consents, schema.signups, schema.blocked_domains):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    engine.dispose()


@pytest.mark.sqlite_only
def test_an_upgrade_of_a_sqlite_file_keeps_a_copy_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "bulletin.db"
    engine = _v1_with_data(url(path))
    migrations = (*V1, Migration(2, "deliveries, subscribers.score", _m2_example))

    report = db.migrate(engine, migrations=migrations)

    assert report.backup == tmp_path / "bulletin.db-before-v2"
    backup = sqlite3.connect(report.backup)
    assert backup.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
    assert backup.execute("SELECT count(*) FROM subscribers").fetchone() == (2,)
    backup.close()
    engine.dispose()


def test_a_failing_migration_leaves_the_database_at_the_previous_version(
    database_url: str,
) -> None:
    engine = _v1_with_data(database_url)
    before = _dump(engine)

    def broken(conn: Connection) -> None:
        _m2_example(conn)
        raise RuntimeError("disk on fire half-way through")

    with pytest.raises(RuntimeError, match="half-way"):
        db.migrate(engine, migrations=(*V1, Migration(2, "broken", broken)))
    with engine.connect() as conn:
        assert db.schema_version(conn) == 1
        assert not sa.inspect(conn).has_table("deliveries")
        columns = {c["name"] for c in sa.inspect(conn).get_columns("subscribers")}
        assert "score" not in columns
    assert _dump(engine) == before
    engine.dispose()


def test_opening_a_database_from_a_newer_bulletin_is_refused(database_url: str) -> None:
    engine = _v1_with_data(database_url)
    with db.write_transaction(engine) as conn:
        conn.execute(
            schema.schema_version.insert().values(
                version=99, description="future", applied_at=schema.utcnow()
            )
        )
    engine.dispose()
    with pytest.raises(BulletinError, match="schema version 99, newer than this bulletin"):
        db.open_store(database_url)


def test_a_foreign_database_is_refused(database_url: str) -> None:
    other = db.connect(database_url)
    with other.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE subscribers (id INTEGER PRIMARY KEY, mail TEXT)")
    other.dispose()
    with pytest.raises(BulletinError, match="not created by bulletin"):
        db.open_store(database_url)


def test_bad_urls_and_missing_drivers_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(BulletinError, match="is not a database URL"):
        db.connect("not a url")
    with pytest.raises(BulletinError, match="the PostgreSQL driver nosuchdriver, which is not"):
        db.connect("postgresql+nosuchdriver://u@localhost/x")
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(BulletinError):
        db.open_store(url(blocked / "sub" / "bulletin.db"))


@pytest.mark.sqlite_only
def test_workspace_database_url_resolves_under_the_workspace(workspace_dir: Path) -> None:
    from bulletin import workspace as ws

    loaded = ws.load(workspace_dir)
    engine = db.open_store(loaded.database_url())
    assert db.sqlite_path(engine) == (workspace_dir / "subscribers" / "bulletin.db").resolve()
    with db.write_transaction(engine) as conn:
        create_list(conn, "x")
        add_subscriber(conn, "ana@example.org", "x")
        assert details(conn, "ANA@example.org").subscriber.email == "ana@example.org"
    engine.dispose()


@pytest.mark.sqlite_only
def test_opening_an_up_to_date_store_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    # bulletin serve (a few seconds of patience) starting while an import saves.
    path = tmp_path / "bulletin.db"
    importer = db.open_store(url(path))
    with db.write_transaction(importer):
        started = time.monotonic()
        impatient = db.open_store(url(path), busy_timeout_ms=100)
        assert time.monotonic() - started < 1
        with impatient.connect() as conn:
            assert db.schema_version(conn) == MIGRATIONS[-1].version
    impatient.dispose()
    importer.dispose()


@pytest.mark.sqlite_only
def test_a_write_with_a_deadline_waits_only_that_long(tmp_path: Path) -> None:
    path = tmp_path / "bulletin.db"
    holder = db.open_store(url(path))
    engine = db.open_store(url(path))  # the usual 30 s for everyone else
    with db.write_transaction(holder):
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError), db.write_transaction(engine, wait=0.2):
            pass
        assert time.monotonic() - started < 2
    # The pooled connection is back to the engine's own patience for the next user.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS
    with db.write_transaction(engine, wait=0.2) as conn:
        create_list(conn, "news")
    holder.dispose()
    engine.dispose()


def test_a_write_with_a_deadline_waits_only_that_long_on_postgresql(
    database_url: str, pg_server: object
) -> None:
    # PostgreSQL has no database-wide write lock: a row lock held by another program is what
    # makes a writer wait (an import updating that subscriber, a person in psql).
    engine = db.open_store(database_url)
    holder = db.open_store(database_url)
    with db.write_transaction(engine) as conn:
        create_list(conn, "news")
    with db.write_transaction(holder) as locked:
        locked.execute(sa.select(schema.lists.c.id).with_for_update())
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as late:
            with db.write_transaction(engine, wait=0.2) as conn:
                conn.execute(sa.update(schema.lists).values(name="News"))
        assert time.monotonic() - started < 2
    problem = db.database_problem(late.value, engine)
    assert problem is not None and problem.kind == "busy"
    assert "kept what this needs locked for too long" in problem.message
    assert problem.hint and "nothing was changed" in problem.hint
    # The pooled connection is back to the engine's own patience for the next user.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
    with db.write_transaction(engine, wait=0.2) as conn:
        conn.execute(sa.update(schema.lists).values(name="News"))
    holder.dispose()
    engine.dispose()


def test_serve_s_connections_bound_every_statement_on_postgresql(
    database_url: str, pg_server: object
) -> None:
    served = db.open_store(database_url, busy_timeout_ms=1500, statement_timeout_ms=1500)
    with served.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "1400ms"
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as slow:
            conn.exec_driver_sql("SELECT pg_sleep(10)")
        assert time.monotonic() - started < 5
    problem = db.database_problem(slow.value, served)
    assert problem is not None and problem.kind == "busy"
    assert "did not answer in time" in problem.message
    served.dispose()


def test_mistakes_in_queries_stay_bugs(database_url: str) -> None:
    engine = db.open_store(database_url)
    with pytest.raises(sa.exc.DBAPIError) as missing, engine.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    with pytest.raises(sa.exc.IntegrityError) as duplicate, db.write_transaction(engine) as conn:
        create_list(conn, "news")
        conn.exec_driver_sql(
            "INSERT INTO lists (slug, name, created_at) SELECT slug, name, created_at FROM lists"
        )
    assert db.database_problem(missing.value, engine) is None
    assert db.database_problem(duplicate.value, engine) is None
    assert db.database_problem(RuntimeError("a bug"), engine) is None
    engine.dispose()
