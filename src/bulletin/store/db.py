"""Opening the database: engine setup, SQLite pragmas, transactions and migrations.

SQLite is the default (one file under ``subscribers/``, WAL mode so readers never wait for an
import, foreign keys on). Everything else is SQLAlchemy Core, so a PostgreSQL URL works too.

Transactions are explicit: :func:`write_transaction` for changes (``BEGIN IMMEDIATE`` on SQLite,
so a writer takes the lock up front instead of failing half-way with "database is locked"),
``engine.begin()`` or ``engine.connect()`` for reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RootTransaction, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from bulletin.errors import BulletinError
from bulletin.store import schema
from bulletin.store.migrations import MIGRATIONS, Migration

BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another writer (an import holds the lock while it saves)."""

_BEGIN_OPTION = "bulletin_sqlite_begin"


# Readable Unicode in the database (ș stays ș, not \u0219) and a stable key order. One encoder
# instance: json.dumps with options builds a new encoder per call, a cost per imported row.
_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module (which does not BEGIN before
    # SELECT or DDL); SQLAlchemy's "begin" event below emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # NORMAL is durable across application crashes in WAL mode; only a power loss can lose
    # the last transactions, never corrupt the file.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "")
    conn.exec_driver_sql(f"BEGIN {mode}".rstrip())


def sqlite_path(engine: Engine) -> Path | None:
    """The database file of a SQLite engine, or None (in-memory or another database)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def connect(url: str) -> Engine:
    """An engine for ``url`` (from ``Workspace.database_url()``), without migrating."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BulletinError(
            f"database.url {url!r} is not a database URL.",
            hint="Use e.g. sqlite:///subscribers/bulletin.db or "
            "postgresql+psycopg://user@host/dbname in bulletin.toml.",
        ) from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BulletinError(
                f"Cannot create the folder {folder} for the database: {exc.strerror}.",
                hint="Check database.url in bulletin.toml.",
            ) from None
    try:
        engine = sa.create_engine(parsed, json_serializer=_json_dumps)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise BulletinError(
            f"database.url {parsed.render_as_string(hide_password=True)!r} needs a database "
            f"driver that is not installed ({exc}).",
            hint="Install the driver into bulletin's environment, e.g. `pip install psycopg`.",
        ) from None
    if is_sqlite:
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def begin_write(conn: Connection) -> RootTransaction:
    """Begin a transaction on ``conn`` that will write (``BEGIN IMMEDIATE`` on SQLite).

    Taking the write lock up front means a busy database makes us wait (busy_timeout) rather
    than fail after reading, when a deferred transaction tries to upgrade its lock.
    """
    conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
    return conn.begin()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction that will write (committed unless it raises)."""
    with engine.connect() as conn, begin_write(conn):
        yield conn


def schema_version(conn: Connection) -> int:
    """The schema version of the database (0 for an empty database)."""
    if not sa.inspect(conn).has_table(schema.schema_version.name):
        return 0
    return int(conn.scalar(sa.select(sa.func.max(schema.schema_version.c.version))) or 0)


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did: the version before and after, and a backup if one was made."""

    before: int
    after: int
    backup: Path | None = None


def migrate(
    engine: Engine,
    *,
    target: int | None = None,
    migrations: Sequence[Migration] = MIGRATIONS,
    backup: bool = True,
) -> MigrationReport:
    """Bring the database up to ``target`` (default: the latest version).

    Each migration runs in its own transaction with its ``schema_version`` row, and the version
    is re-read inside it, so two processes opening an old database at once upgrade it once.
    Before upgrading a SQLite database that already holds data, a copy is kept beside it.
    """
    latest = migrations[-1].version if migrations else 0
    target = latest if target is None else target
    with write_transaction(engine) as conn:
        before = schema_version(conn)
        if before == 0 and sa.inspect(conn).has_table(schema.subscribers.name):
            raise BulletinError(
                f"{_describe(engine)} has a subscribers table but no schema_version: "
                "it was not created by bulletin.",
                hint="Point database.url in bulletin.toml at a new file.",
            )
        if before == 0:
            schema.schema_version.create(conn)
    if before > latest:
        raise BulletinError(
            f"{_describe(engine)} has schema version {before}, newer than this bulletin "
            f"knows ({latest}).",
            hint="Upgrade bulletin (pip install -U bulletin) before using this database.",
        )
    pending = [m for m in migrations if before < m.version <= target]
    if not pending:
        return MigrationReport(before, before)
    backup_path = None
    path = sqlite_path(engine)
    if backup and before > 0 and path is not None:
        backup_path = path.with_name(f"{path.name}-before-v{pending[0].version}")
        _sqlite_backup(engine, backup_path)
    for migration in pending:
        with write_transaction(engine) as conn:
            if schema_version(conn) >= migration.version:
                continue  # another process got there first
            migration.apply(conn)
            conn.execute(
                schema.schema_version.insert().values(
                    version=migration.version,
                    description=migration.description,
                    applied_at=schema.utcnow(),
                )
            )
    return MigrationReport(before, pending[-1].version, backup_path)


def _sqlite_backup(engine: Engine, dest: Path) -> None:
    # VACUUM INTO writes a consistent copy even while other connections read; it cannot run
    # inside a transaction, and our connections run without the sqlite3 module's implicit ones.
    if dest.exists():
        dest.unlink()
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute("VACUUM INTO ?", (str(dest),))  # type: ignore[union-attr]
    finally:
        raw.close()


def _describe(engine: Engine) -> str:
    path = sqlite_path(engine)
    return f"The database {path}" if path else "The database"


def open_store(url: str) -> Engine:
    """Connect to the store and apply any pending migrations: the normal way in."""
    engine = connect(url)
    try:
        migrate(engine)
    except OperationalError as exc:
        engine.dispose()
        raise BulletinError(
            f"Cannot open the database {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}.",
            hint="Check database.url in bulletin.toml and that the folder is writable.",
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return engine
