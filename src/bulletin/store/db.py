"""Opening the database: engine setup, SQLite pragmas, transactions and migrations.

SQLite is the default (one file under ``subscribers/``, WAL mode so readers never wait for an
import, foreign keys on). PostgreSQL (``postgresql+psycopg://``, ``pip install
'bulletin[postgres]'``) is the other engine, tested as much: every connection gets a
lock_timeout (and, for ``bulletin serve``, a statement_timeout) so nothing waits without end
behind another program's lock, and pooled connections are checked before use so a server
restart costs no request. Everything is SQLAlchemy Core.

Transactions are explicit: :func:`write_transaction` for changes (``BEGIN IMMEDIATE`` on SQLite,
so a writer takes the lock up front instead of failing half-way with "database is locked"),
``engine.begin()`` or ``engine.connect()`` for reads. Migrations take the schema to themselves
(SQLite's write lock; a PostgreSQL advisory lock), so processes starting together on an
empty database create it once.

Database trouble that is no bug -- a file that is not SQLite, a damaged one, a read-only file
or folder, a full disk, a lock held too long; a PostgreSQL server that is down, unknown,
refuses the password or has no such database or user -- is turned into a
:class:`DatabaseProblem` here and only here (:func:`database_problem`): the command line
prints it for every command, and ``bulletin serve`` logs it behind its 503 page. Its message
names the file or the server (never a password) and what is wrong, its hint what to do,
including which backup :func:`migrate` kept beside a SQLite file. Anything it does not
recognise (a missing table, a bad query) stays a bug with its traceback.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, RootTransaction, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bulletin.errors import BulletinError
from bulletin.store import schema
from bulletin.store.migrations import MIGRATIONS, Migration

BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another writer (an import holds the lock while it saves)."""

POOL_TIMEOUT = 30.0
"""How long a thread waits for a free connection of the engine's pool (seconds)."""

_BEGIN_OPTION = "bulletin_sqlite_begin"
_BUSY_INFO = "bulletin_busy_timeout_ms"


# Readable Unicode in the database (ș stays ș, not \u0219) and a stable key order. One encoder
# instance: json.dumps with options builds a new encoder per call, a cost per imported row.
_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def _sqlite_settings(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    """The "connect" listener that sets up each new SQLite connection."""

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        record.info[_BUSY_INFO] = busy_timeout_ms  # what write_transaction(wait=) restores
        # Take transaction control away from the sqlite3 module (which does not BEGIN before
        # SELECT or DDL); SQLAlchemy's "begin" event below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # First, so that a locked database waits here too instead of failing at once.
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        _wal_mode(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable across application crashes in WAL mode; only a power loss can
        # lose the last transactions, never corrupt the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def _wal_mode(cursor: Any, wait: float) -> None:
    """Put the file in WAL mode (it stays so), riding out other processes doing the same.

    Changing the journal mode needs the file to itself, and SQLite answers "database is
    locked" at once, without its busy handler, when another connection holds it -- or, in
    the instant a second process is creating the WAL index, "disk I/O error". Many processes
    opening a new file together (senders, serve and cron starting at once) meet that; they
    wait their turn here. A file already in WAL mode needs no change, so later opens are a
    single read of the mode. A real I/O error is raised after a few tries.
    """
    deadline = time.monotonic() + wait
    io_errors = 0
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code == _SQLITE_IOERR:
                io_errors += 1
                if io_errors > 5:
                    raise
            elif code not in (_SQLITE_BUSY, _SQLITE_LOCKED) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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


def _postgres_settings(
    lock_timeout_ms: int, statement_timeout_ms: int | None
) -> Callable[[Any, Any], None]:
    """The "connect" listener that sets up each new PostgreSQL connection."""

    if statement_timeout_ms is not None:
        lock_timeout_ms = min(lock_timeout_ms, _lock_within(statement_timeout_ms))

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        # Session settings, so they hold through a pooler in session mode as well (startup
        # options would not).
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {max(1, lock_timeout_ms)}")
            if statement_timeout_ms is not None:
                cursor.execute(f"SET statement_timeout = {max(1, statement_timeout_ms)}")
        dbapi_connection.commit()

    return on_connect


def _lock_within(statement_timeout_ms: int) -> int:
    """A lock_timeout that ends a lock wait just before the statement's own timeout would,
    so the error says a lock was the reason."""
    return max(1, statement_timeout_ms - min(100, statement_timeout_ms // 10))


def connect(
    url: str,
    *,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    pool_timeout: float = POOL_TIMEOUT,
    statement_timeout_ms: int | None = None,
) -> Engine:
    """An engine for ``url`` (from ``Workspace.database_url()``), without migrating.

    ``busy_timeout_ms`` is how long a statement waits for another writer's lock (SQLite's
    busy_timeout, PostgreSQL's lock_timeout; also how long a connection to a PostgreSQL
    server may take) and ``pool_timeout`` how long a thread waits for a free connection;
    commands wait long (an import may hold the lock a while), ``bulletin serve`` only a few
    seconds. ``statement_timeout_ms`` bounds every PostgreSQL statement (serve's; commands
    have none: freezing a million recipients takes a while).
    """
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
                hint="Check database.url in bulletin.toml, and that the user running "
                f"bulletin ({_user()}) may create that folder (its parent must be writable).",
            ) from None
    options: dict[str, Any] = {}
    connect_args: dict[str, Any] = {}
    is_postgres = parsed.get_backend_name() == "postgresql"
    if not is_sqlite:
        # A server restarted since a connection was pooled: notice before using it, so the
        # first request after a restart does not fail.
        options["pool_pre_ping"] = True
    if is_postgres and "connect_timeout" not in parsed.query:
        # libpq waits for TCP's own timeout (minutes) for a host that drops packets.
        connect_args["connect_timeout"] = max(2, -(-busy_timeout_ms // 1000))
    try:
        engine = sa.create_engine(
            parsed,
            json_serializer=_json_dumps,
            pool_timeout=pool_timeout,
            connect_args=connect_args,
            **options,
        )
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise _missing_driver(parsed, exc) from None
    if is_sqlite:
        sa.event.listen(engine, "connect", _sqlite_settings(busy_timeout_ms))
        sa.event.listen(engine, "begin", _sqlite_begin)
    elif is_postgres:
        settings = _postgres_settings(busy_timeout_ms, statement_timeout_ms)
        sa.event.listen(engine, "connect", settings)
    return engine


def _missing_driver(url: URL, exc: Exception) -> BulletinError:
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "postgresql":
        if url.get_driver_name() in ("psycopg", ""):
            return BulletinError(
                f"database.url ({shown}) needs the PostgreSQL driver (psycopg), which is "
                "not installed.",
                hint="Install it into bulletin's environment: pip install 'bulletin[postgres]'",
            )
        return BulletinError(
            f"database.url ({shown}) asks for the PostgreSQL driver "
            f"{url.get_driver_name()}, which is not installed ({exc}).",
            hint="bulletin is made and tested with psycopg: write the URL as "
            "postgresql+psycopg://user@host/dbname and pip install 'bulletin[postgres]'",
        )
    return BulletinError(
        f"database.url {shown!r} needs a database driver that is not installed ({exc}).",
        hint="Install the driver into bulletin's environment.",
    )


def begin_write(conn: Connection) -> RootTransaction:
    """Begin a transaction on ``conn`` that will write (``BEGIN IMMEDIATE`` on SQLite).

    Taking the write lock up front means a busy database makes us wait (busy_timeout) rather
    than fail after reading, when a deferred transaction tries to upgrade its lock.
    """
    conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
    return conn.begin()


@contextmanager
def write_transaction(engine: Engine, *, wait: float | None = None) -> Iterator[Connection]:
    """A connection inside one transaction that will write (committed unless it raises).

    ``wait`` (seconds) bounds how long this transaction waits for another writer's lock,
    instead of the engine's busy timeout: a web request has a deadline, a command has not.
    """
    with engine.connect() as conn:
        if wait is not None and engine.dialect.name == "postgresql":
            # For this transaction only: each statement waits at most that long for a lock
            # or an answer (a transaction of a few statements, like an unsubscribe, a few
            # times that at worst).
            ms = max(1, int(wait * 1000))
            with begin_write(conn):
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {_lock_within(ms)}")
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
                yield conn
            return
        if wait is None or engine.dialect.name != "sqlite":
            with begin_write(conn):
                yield conn
            return
        # On the driver's connection: through SQLAlchemy the PRAGMA would begin the
        # transaction before BEGIN IMMEDIATE does.
        driver = conn.connection.driver_connection
        assert driver is not None
        usual = conn.connection.info.get(_BUSY_INFO, BUSY_TIMEOUT_MS)
        driver.execute(f"PRAGMA busy_timeout={max(0, int(wait * 1000))}")
        try:
            with begin_write(conn):
                yield conn
        finally:
            # Back to the engine's setting for the next user of this pooled connection; a
            # connection too broken for that is discarded by the pool anyway.
            with suppress(sqlite3.Error):
                driver.execute(f"PRAGMA busy_timeout={usual}")


def ping(engine: Engine) -> None:
    """Ask the database a trivial question (``SELECT 1``); raises if it cannot answer."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


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
    is re-read inside it with the schema to itself (see :func:`_migration_transaction`), so
    any number of processes opening an old or empty database at once upgrade it once.
    Before upgrading a SQLite database that already holds data, a copy is kept beside it.
    A PostgreSQL database gets no copy (``backup`` stays None): there the server's own
    backups, or a ``pg_dump`` before upgrading bulletin, are the copy; the README says so.
    """
    latest = migrations[-1].version if migrations else 0
    target = latest if target is None else target
    # Versions only grow, so an up-to-date database is known without the write lock: a
    # command that only reads then works while an import holds the lock, and on a
    # read-only file.
    with engine.connect() as conn, conn.begin():
        current = schema_version(conn)
    if current >= target and current <= latest and current > 0:
        return MigrationReport(current, current)
    with _migration_transaction(engine) as conn:
        before = schema_version(conn)
        if before == 0 and sa.inspect(conn).has_table(schema.subscribers.name):
            raise BulletinError(
                f"{_describe(engine)} has a subscribers table but no schema_version: "
                "it was not created by bulletin.",
                hint="Point database.url in bulletin.toml at a new file"
                + (" (or an empty database)." if sqlite_path(engine) is None else "."),
            )
        if before == 0:
            # Another process may have created the table and not yet run the first migration.
            schema.schema_version.create(conn, checkfirst=True)
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
        backup_path = backup_name(path, pending[0].version)
        _sqlite_backup(engine, backup_path)
    for migration in pending:
        with _migration_transaction(engine) as conn:
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


MIGRATION_LOCK = 0x62756C6C6574696E  # "bulletin" in ASCII
"""The PostgreSQL advisory lock that lets one process at a time change the schema."""


@contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction in which this process alone checks and changes the schema.

    SQLite's BEGIN IMMEDIATE already lets one writer in. PostgreSQL lets two transactions
    both see no ``schema_version`` table and both create it (the loser fails with
    DuplicateTable), so there a transaction-scoped advisory lock serialises them; whoever
    waited re-reads the version once it has the lock, and finds the work done.
    """
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        yield conn


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


def backup_name(path: Path, version: int) -> Path:
    """Where :func:`migrate` keeps the copy of ``path`` taken before upgrading to ``version``."""
    return path.with_name(f"{path.name}-before-v{version}")


_BACKUP = re.compile(r"-before-v(\d+)\Z")


def backups(path: Path) -> list[Path]:
    """The copies :func:`migrate` kept beside ``path``, newest first."""
    found: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(f"{path.name}-before-v*"):
        match = _BACKUP.search(candidate.name)
        if match and candidate.is_file():
            found.append((int(match.group(1)), candidate))
    return [p for _, p in sorted(found, reverse=True)]


def _describe(engine: Engine) -> str:
    path = sqlite_path(engine)
    if path is not None:
        return f"The database {path}"
    url = engine.url
    if url.get_backend_name() == "sqlite" or not url.host:
        return "The database"
    return f"The database {url.database} at {url.host}:{url.port or 5432}"


def open_store(
    url: str,
    *,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    pool_timeout: float = POOL_TIMEOUT,
    statement_timeout_ms: int | None = None,
) -> Engine:
    """Connect to the store and apply any pending migrations: the normal way in.

    The waits are :func:`connect`'s. Database trouble on the way in (see
    :func:`database_problem`) is a :class:`DatabaseProblem`.
    """
    engine = connect(
        url,
        busy_timeout_ms=busy_timeout_ms,
        pool_timeout=pool_timeout,
        statement_timeout_ms=statement_timeout_ms,
    )
    try:
        migrate(engine)
    except Exception as exc:
        engine.dispose()
        problem = database_problem(exc, engine)
        if problem is not None:
            raise problem from None
        raise
    except BaseException:
        engine.dispose()
        raise
    return engine


# --- database trouble as user errors ----------------------------------------------------


ProblemKind = Literal[
    "foreign", "damaged", "read-only", "cannot-open", "full", "io", "busy", "unavailable"
]


class DatabaseProblem(BulletinError):
    """The database cannot be read or written now; nothing was half-done.

    ``kind`` says which trouble (``foreign``: not a SQLite file; ``damaged``; ``read-only``
    (also: a PostgreSQL user without the rights, a standby); ``cannot-open`` (also: a wrong
    password, host, user or database name); ``full``: no space left; ``io``: the disk refused
    a read or write; ``busy``: locked, too slow or no connection free in time;
    ``unavailable``: a database server did not answer, or went away). ``busy`` and
    ``unavailable`` may pass by themselves; the others need someone to act.
    """

    def __init__(self, message: str, *, hint: str, kind: ProblemKind) -> None:
        super().__init__(message, hint=hint)
        self.kind: ProblemKind = kind


# SQLite's primary result codes (the low byte of the extended codes sqlite3 reports).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_PROTOCOL = 15
_SQLITE_NOTADB = 26


def database_problem(exc: BaseException, engine: Engine) -> DatabaseProblem | None:
    """What ``exc``, raised while using ``engine``, means for the user; None if it is a bug.

    Recognised: SQLite's own errors for a foreign, damaged, read-only, unopenable or full
    file, a disk I/O error and a lock held too long (by result code, not by message text);
    a connection pool with no connection free in time; and an OperationalError from a
    database server (it did not answer, or refused).
    """
    if isinstance(exc, PoolTimeout):
        return DatabaseProblem(
            f"{_describe(engine)} is busy: no connection came free in time.",
            hint="Too many requests wait for the database at once; try again shortly.",
            kind="busy",
        )
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(orig, sqlite3.Error) and isinstance(code, int):
        return _sqlite_problem(orig, code, engine)
    if engine.dialect.name == "postgresql" and isinstance(exc, DBAPIError):
        return _postgres_problem(exc, engine)
    if isinstance(exc, OperationalError) and engine.dialect.name != "sqlite":
        where = engine.url.render_as_string(hide_password=True)
        said = str(orig).strip().rstrip(".")
        return DatabaseProblem(
            f"The database {where} did not answer or refused the work: {said}.",
            hint="Check that the database server runs and accepts connections, and "
            "database.url in bulletin.toml; then run the command again.",
            kind="unavailable",
        )
    return None


# PostgreSQL's SQLSTATE codes for trouble that is no bug (errors once connected).
_PG_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout
_PG_QUERY_CANCELED = "57014"  # statement_timeout
_PG_TOO_MANY_CONNECTIONS = ("53300", "53400")
_PG_SHUTTING_DOWN = ("57P01", "57P02", "57P03")  # admin/crash shutdown, cannot connect now
_PG_DISK_FULL = "53100"
_PG_READ_ONLY = "25006"  # a standby, or default_transaction_read_only
_PG_NO_PRIVILEGE = "42501"

# Connection failures carry no SQLSTATE, only libpq's and the server's words; these are
# their English forms (a server set to another language falls through to the general case,
# which still quotes what it said).
_PG_CONNECT_MESSAGES: tuple[tuple[str, str], ...] = (
    ("failed to resolve host", "host"),
    ("could not translate host name", "host"),
    ("Connection refused", "refused"),
    ("No such file or directory", "refused"),  # a Unix socket nobody listens on
    ("timeout expired", "timeout"),
    ("Connection timed out", "timeout"),
    ("password authentication failed", "password"),
    ("no password supplied", "no-password"),
    ("no pg_hba.conf entry", "hba"),
    ("too many connections", "full-house"),
    ("remaining connection slots are reserved", "full-house"),
    ("the database system is", "starting"),  # starting up, shutting down, in recovery
    ("server closed the connection", "gone"),
    ("terminating connection", "gone"),
    ("consuming input failed", "gone"),
    ("the connection is lost", "gone"),
    ("the connection is closed", "gone"),
)
_PG_DOES_NOT_EXIST = re.compile(r'(database|role) "([^"]*)" does not exist')


def _postgres_problem(exc: DBAPIError, engine: Engine) -> DatabaseProblem | None:
    """What a PostgreSQL error means for the user, naming the server, never the password."""
    url = engine.url
    host = url.host or "localhost"
    where = host if host.startswith("/") else f"{host}:{url.port or 5432}"
    server = f"The PostgreSQL server at {where}"
    database = url.database or url.username or _user()
    user = url.username or _user()
    said = str(exc.orig).strip().split("\n", 1)[0].strip().rstrip(".")
    shown = url.render_as_string(hide_password=True)
    again = "then run the command again."
    unchanged = "then run the command again; nothing was changed."
    code = getattr(exc.orig, "sqlstate", None)
    if code == _PG_LOCK_NOT_AVAILABLE:
        return DatabaseProblem(
            f"The database {database} at {where} kept what this needs locked for too long "
            f"(the server says: {said}).",
            hint="Another bulletin command (an import, a send) or a database tool holds the "
            f"lock. Wait until it is done, {unchanged}",
            kind="busy",
        )
    if code == _PG_QUERY_CANCELED:
        return DatabaseProblem(
            f"The database {database} at {where} did not answer in time (the server says: {said}).",
            hint=f"The server is overloaded or a lock is held long. Wait a little, {unchanged}",
            kind="busy",
        )
    if code in _PG_TOO_MANY_CONNECTIONS:
        return DatabaseProblem(
            f"{server} accepts no more connections (the server says: {said}).",
            hint="Too many programs are connected: wait, or raise max_connections on the "
            f"server; {again}",
            kind="busy",
        )
    if code in _PG_SHUTTING_DOWN:
        return DatabaseProblem(
            f"{server} stopped or restarted while bulletin used it (the server says: {said}).",
            hint=f"Wait until it is back, {again}",
            kind="unavailable",
        )
    if code == _PG_DISK_FULL:
        return DatabaseProblem(
            f"{server} has no space left for the database {database}: the change was not saved.",
            hint="Ask the database administrator to free space on the server; what was saved "
            "before is intact, and `bulletin send` carries on where it stopped.",
            kind="full",
        )
    if code == _PG_READ_ONLY:
        return DatabaseProblem(
            f"{server} only allows reading the database {database} (the server says: {said}).",
            hint="database.url in bulletin.toml must name the primary server, not a "
            "read-only standby.",
            kind="read-only",
        )
    if code == _PG_NO_PRIVILEGE:
        return DatabaseProblem(
            f"The PostgreSQL user {user} may not create or change tables in database "
            f"{database} (the server says: {said}).",
            hint=f"Make the user the database's owner (ALTER DATABASE {database} OWNER TO "
            f"{user}), or grant it what bulletin needs (GRANT CREATE, USAGE ON SCHEMA public "
            f"TO {user}); see the README's PostgreSQL section.",
            kind="read-only",
        )
    if not isinstance(exc, OperationalError) or code is not None:
        return None
    kind = next((k for text, k in _PG_CONNECT_MESSAGES if text in said), "")
    if missing := _PG_DOES_NOT_EXIST.search(said):
        what, name = missing.groups()
        if what == "database":
            return DatabaseProblem(
                f"{server} has no database {name} (database.url: {shown}).",
                hint=f"Create it (createdb --owner={user} {name}, as the server's "
                "administrator), or correct the database name in database.url in bulletin.toml.",
                kind="cannot-open",
            )
        return DatabaseProblem(
            f"{server} has no user {name} (database.url: {shown}).",
            hint=f"Correct the user in database.url in bulletin.toml, or create it "
            f"(createuser --pwprompt {name}, as the server's administrator).",
            kind="cannot-open",
        )
    if kind == "host":
        return DatabaseProblem(
            f"The database host {host} in database.url cannot be found ({said}).",
            hint="Correct the host in database.url in bulletin.toml, or check this machine's "
            "name resolution (DNS, /etc/hosts).",
            kind="cannot-open",
        )
    if kind == "refused":
        return DatabaseProblem(
            f"No PostgreSQL server answers at {where} (database.url: {shown}).",
            hint="Start the database server, or correct the host and port in database.url in "
            f"bulletin.toml; {again}",
            kind="unavailable",
        )
    if kind == "timeout":
        return DatabaseProblem(
            f"{server} did not answer in time (database.url: {shown}).",
            hint="Check that the server runs and that no firewall drops the connection; " + again,
            kind="unavailable",
        )
    if kind == "password":
        return DatabaseProblem(
            f"{server} refused the password of user {user}.",
            hint="Correct the password in BULLETIN_DATABASE_PASSWORD, in the file named by "
            "database.password_file or in ~/.pgpass, or ask the database administrator for it.",
            kind="cannot-open",
        )
    if kind == "no-password":
        return DatabaseProblem(
            f"{server} asks for a password for user {user}, and none was given.",
            hint="Set BULLETIN_DATABASE_PASSWORD, or name a file holding it (mode 0600, "
            "outside git) in database.password_file, or put it in ~/.pgpass of the user "
            "running bulletin.",
            kind="cannot-open",
        )
    if kind == "hba":
        return DatabaseProblem(
            f"{server} does not let user {user} connect to database {database} from this "
            f"machine (the server says: {said}).",
            hint="Ask the database administrator to allow it in pg_hba.conf, or correct "
            "database.url in bulletin.toml.",
            kind="cannot-open",
        )
    if kind == "full-house":
        return DatabaseProblem(
            f"{server} accepts no more connections (the server says: {said}).",
            hint="Too many programs are connected: wait, or raise max_connections on the "
            f"server; {again}",
            kind="busy",
        )
    if kind in ("starting", "gone"):
        return DatabaseProblem(
            f"{server} stopped, restarted or dropped the connection (the server says: {said}).",
            hint=f"Wait until it is back, {again}",
            kind="unavailable",
        )
    return DatabaseProblem(
        f"{server} did not answer or refused the work: {said} (database.url: {shown}).",
        hint="Check that the database server runs and accepts connections, and "
        f"database.url in bulletin.toml; {again}",
        kind="unavailable",
    )


def _sqlite_problem(orig: sqlite3.Error, code: int, engine: Engine) -> DatabaseProblem | None:
    path = sqlite_path(engine)
    the_db = _describe(engine)
    said = str(orig).strip().rstrip(".")
    primary = code & 0xFF
    if primary == _SQLITE_NOTADB:
        name = str(path) if path else "The database"
        return DatabaseProblem(
            f"{name} is not a SQLite database: something else was written over it, or "
            "database.url names the wrong file.",
            hint="If database.url in bulletin.toml names the wrong file, correct it. "
            f"Otherwise move this file aside and {_restore_advice(path)}.",
            kind="foreign",
        )
    if primary == _SQLITE_CORRUPT:
        keep = f" (keep it: `sqlite3 {path.name} .recover` may save rows from it)" if path else ""
        return DatabaseProblem(
            f"{the_db} is damaged (SQLite says: {said}).",
            hint="Stop every bulletin command and `bulletin serve` that use it. Move the "
            f"damaged file aside{keep}, then {_restore_advice(path)}.",
            kind="damaged",
        )
    if primary in (_SQLITE_READONLY, _SQLITE_PERM):
        return DatabaseProblem(
            f"{the_db} cannot be written: {_read_only_part(path)} is read-only for the user "
            f"running bulletin ({_user()}).",
            hint=_permissions_advice(path),
            kind="read-only",
        )
    if primary == _SQLITE_CANTOPEN:
        return DatabaseProblem(
            f"Cannot open the database{f' {path}' if path else ''}: {_unopenable_part(path)}.",
            hint="Check database.url in bulletin.toml. " + _permissions_advice(path),
            kind="cannot-open",
        )
    if primary == _SQLITE_FULL:
        disk = f"The disk that holds the database {path}" if path else "The database's disk"
        return DatabaseProblem(
            f"{disk} is full: the change was not saved.",
            hint=_space_advice(path),
            kind="full",
        )
    if primary == _SQLITE_IOERR:
        return DatabaseProblem(
            f"{the_db} could not be read or written: the system refused ({said}). Most often "
            "the disk is full or a quota or file size limit is reached; it can also be a "
            "failing disk.",
            hint=_space_advice(path) + " If there is space, have the disk checked before going on.",
            kind="io",
        )
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_PROTOCOL):
        return DatabaseProblem(
            f"{the_db} stayed locked by another program for too long (SQLite says: {said}).",
            hint="Another bulletin command (an import or a send, say) or a database tool is "
            "writing to it. Wait until it is done, then run this command again; nothing was "
            "changed.",
            kind="busy",
        )
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. in a container)
        return f"uid {os.getuid()}"


def _restore_advice(path: Path | None) -> str:
    if path is None:
        return "restore it from your backups"
    found = backups(path)
    if found:
        newest = found[0]
        when = datetime.fromtimestamp(newest.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        return (
            f"copy {newest.name} (kept beside it before bulletin upgraded the database, "
            f"{when}) to {path.name}; changes made since then are not in that copy"
        )
    return (
        f"restore {path.name} from your own backups (there is no copy beside it: bulletin "
        f"keeps one, {path.name}-before-vN, only when it upgrades the database)"
    )


def _read_only_part(path: Path | None) -> str:
    if path is None:
        return "the database"
    file_locked = path.exists() and not os.access(path, os.W_OK)
    folder_locked = not os.access(path.parent, os.W_OK)
    if file_locked and folder_locked:
        return f"the file and its folder {path.parent}"
    if file_locked:
        return "the file"
    if folder_locked:
        return f"its folder {path.parent}"
    return "the file or its disk"


def _unopenable_part(path: Path | None) -> str:
    if path is None:
        return "it cannot be opened"
    user = _user()
    if not path.parent.is_dir():
        return f"its folder {path.parent} does not exist"
    if not os.access(path.parent, os.R_OK | os.X_OK):
        return f"its folder {path.parent} cannot be entered by {user}"
    if path.exists() and not os.access(path, os.R_OK):
        return f"the file cannot be read by {user}"
    if not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} is not writable for {user}"
    return "the file or its folder cannot be opened"


def _permissions_advice(path: Path | None) -> str:
    if path is None:
        return "Fix the permissions so that the user running bulletin may write the database."
    return (
        f"Fix the permissions so that the user running bulletin may write {path.name} and "
        f"its folder (SQLite also writes {path.name}-wal and {path.name}-shm beside it): "
        "e.g. `chown` them to that user, or run bulletin as the user that owns them."
    )


def _space_advice(path: Path | None) -> str:
    where = f" (`df -h {path.parent}` shows how much is left)" if path else ""
    return (
        f"Free some space on that disk{where}, then run the command again. What was saved "
        "before is intact, and `bulletin send` carries on where it stopped."
    )
