"""Copy a whole store into an empty one: a SQLite file into PostgreSQL (or back).

Moving to PostgreSQL must keep everything the SQLite file knows -- opt-outs, bounces and
complaints above all, the ledger of who got which issue, the history of events -- so the
copy is table by table, row by row, ids kept, and nothing is re-decided on the way (an
import would apply its rules; a copy must not). Both stores are first brought to the
current schema, so their tables match. The target must be empty and the copy is one
transaction there: it is whole or it is not. The source is read in one snapshot, and a
source with senders at work is refused (their later writes would be left behind).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from bulletin.errors import BulletinError
from bulletin.store import db, ledger
from bulletin.store.schema import lists, metadata, schema_version, sends, subscribers
from bulletin.store.schema import workers as workers_table

CHUNK = 5_000
"""Rows read and written at a time: memory stays flat whatever the store's size."""

TABLES = tuple(t for t in metadata.sorted_tables if t is not schema_version)
"""Every table but the schema version (each store has its own), parents before children."""

Progress = Callable[[str, int], None]
"""``progress(table, rows)``: called as each chunk of ``rows`` of ``table`` is written."""


@dataclass
class CopyReport:
    source: str
    """The source, as shown to the user (never with a password)."""
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    """Rows copied, by table, in copy order."""


def source_url(text: str, cwd: Path) -> str:
    """A URL from what the user typed: a database URL, or the path of a SQLite file.

    A SQLite source must exist: opening a mistyped path would create an empty database and
    "copy" nothing.
    """
    if "://" not in text:
        path = (cwd / text).resolve()
        url = f"sqlite:///{path}"
    else:
        try:
            parsed = make_url(text)
        except (sa.exc.ArgumentError, ValueError):
            raise BulletinError(
                f"{text!r} is neither a database URL nor a file.",
                hint="Give the SQLite file (subscribers/bulletin.db) or a URL such as "
                "postgresql+psycopg://user@host/dbname.",
            ) from None
        if parsed.get_backend_name() != "sqlite":
            return text
        path = Path(parsed.database or "")
        path = path if path.is_absolute() else (cwd / path).resolve()
        url = f"sqlite:///{path}"
    if not path.is_file():
        raise BulletinError(
            f"There is no SQLite file {path} to copy from.",
            hint="Check the path (the workspace's store is subscribers/bulletin.db).",
        )
    return url


def shown(url: str | URL) -> str:
    """A URL as it may be printed: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def copy_store(source: Engine, target: Engine, *, progress: Progress | None = None) -> CopyReport:
    """Copy every row of ``source`` into the empty store ``target``; both migrated already."""
    report = CopyReport(source=shown(source.url), target=shown(target.url))
    if _same_database(source, target):
        raise BulletinError(
            f"The source and the target are the same database ({report.target}).",
            hint="Name the old store to copy from; the target is the workspace's database.url.",
        )
    with source.connect() as src:
        if src.dialect.name == "postgresql":
            src.execution_options(isolation_level="REPEATABLE READ")  # one snapshot
        with src.begin():
            _refuse_senders_at_work(src, report.source)
            with db.write_transaction(target) as dst:
                _refuse_unless_empty(dst, report.target)
                for table in TABLES:
                    report.rows[table.name] = _copy_table(src, dst, table, progress)
                if dst.dialect.name == "postgresql":
                    _advance_sequences(dst)
    return report


def _same_database(source: Engine, target: Engine) -> bool:
    a, b = source.url, target.url
    if a.get_backend_name() == "sqlite" and b.get_backend_name() == "sqlite":
        return (
            bool(a.database and b.database)
            and Path(a.database or "").resolve() == Path(b.database or "").resolve()
        )
    return (a.host, a.port, a.database, a.query.get("options")) == (
        b.host,
        b.port,
        b.database,
        b.query.get("options"),
    ) and a.get_backend_name() == b.get_backend_name()


def _refuse_senders_at_work(conn: Connection, where: str) -> None:
    now = ledger.database_now(conn)
    open_sends = conn.scalars(
        sa.select(workers_table.c.send_id).where(workers_table.c.stopped_at.is_(None)).distinct()
    ).all()
    live = [w for send_id in open_sends for w in ledger.live_workers(conn, send_id, now)]
    if live:
        who = ", ".join(f"{w.host} (process {w.pid})" for w in live)
        raise BulletinError(
            f"Senders are at work on {where}: {who}.",
            hint="Let the send finish or stop its senders (Ctrl-C), then copy: rows they "
            "write after the copy would be left behind.",
        )


def _refuse_unless_empty(conn: Connection, where: str) -> None:
    for table in (lists, subscribers, sends):
        if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
            raise BulletinError(
                f"The target database {where} already holds {table.name}; a copy goes only "
                "into an empty store.",
                hint="Point database.url (or BULLETIN_DATABASE_URL) at a new, empty database.",
            )


def _copy_table(
    src: Connection, dst: Connection, table: sa.Table, progress: Progress | None
) -> int:
    columns = [c.name for c in table.columns]
    order = list(table.primary_key.columns) or list(table.columns)
    result = src.execution_options(yield_per=CHUNK).execute(sa.select(table).order_by(*order))
    copied = 0
    for chunk in result.partitions():
        try:
            dst.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in chunk])
        except sa.exc.IntegrityError as exc:
            said = str(exc.orig).strip().splitlines()[0]
            raise BulletinError(
                f"The source's {table.name} table holds rows the target refuses ({said}); "
                "nothing was copied.",
                hint="The source store is inconsistent: check it (sqlite3 FILE 'PRAGMA "
                "foreign_key_check') and repair or remove those rows, then copy again.",
            ) from None
        copied += len(chunk)
        if progress is not None:
            progress(table.name, len(chunk))
    return copied


def _advance_sequences(conn: Connection) -> None:
    """Make PostgreSQL's id sequences continue after the copied ids."""
    for table in TABLES:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, sa.Integer) or pk[0].autoincrement is False:
            continue
        name = table.name
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{name}', '{pk[0].name}'), "
            f"COALESCE(MAX({pk[0].name}), 1), MAX({pk[0].name}) IS NOT NULL) FROM {name}"
        )


def count_rows(engine: Engine) -> int:
    """How many rows a copy of ``engine`` moves (for a progress bar)."""
    with engine.connect() as conn:
        return sum(
            conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in TABLES
        )
