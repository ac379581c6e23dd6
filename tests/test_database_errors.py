"""Database trouble through the real command line: foreign, damaged, read-only and full files.

Each case breaks a real SQLite file the way it breaks on a user's machine, runs the real
``bulletin`` executable in a subprocess for the commands that touch the store (``lists``,
``subscribers count``, ``subscribers import``, ``subscribers add``, ``send``, ``status``), and
checks three things: the exit code is 1 with no traceback; the message names the file, says
what is wrong and what to do; the data is as it was (the failed change is not there, nothing
half-written, the file not "repaired" behind the user's back).

Read-only: the tests run as root in CI, and root writes through any permission bits. So
when root, the command runs as ``nobody`` (``setpriv``), over a workspace in a folder that
user can read; as a normal user, the modes alone do it. A full disk: the command runs with
RLIMIT_FSIZE (SIGXFSZ ignored), which fails writes past the limit with EFBIG, as a quota
does (SQLite says "disk I/O error"); where this machine lets us mount a small tmpfs, a
really full file system gives SQLite's own "database or disk is full" too.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

import oldschema
from bulletin import workspace as ws
from bulletin.store.db import (
    connect,
    database_problem,
    migrate,
    open_store,
    write_transaction,
)
from bulletin.store.migrations import MIGRATIONS
from conftest import REPO, SAMPLE_SLUG, set_config
from smtpfaults import FaultServer

pytestmark = pytest.mark.sqlite_only  # PostgreSQL's trouble: test_postgres_errors.py

BULLETIN = Path(sys.executable).parent / "bulletin"
KEY = "database-errors-test-signing-key-0123456789"

COMMANDS: dict[str, tuple[str, ...]] = {
    "lists": ("lists",),
    "count": ("subscribers", "count"),
    "import": ("subscribers", "import", "new.csv", "--list", "news"),
    "add": ("subscribers", "add", "new@example.org", "--list", "news"),
    "send": ("send", SAMPLE_SLUG, "--list", "news", "--yes"),
    "status": ("status", SAMPLE_SLUG),
}
"""The commands the issue names, as a user types them (run inside the workspace)."""

WRITERS = ("import", "add", "send")
READERS = ("lists", "count", "status")

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


# -- the workspace ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """A folder every user may read (pytest's own temporary folders are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="bulletin-db-errors-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir() and not sub.is_symlink():
            sub.chmod(0o755)
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def smtp() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]

    @property
    def db(self) -> Path:
        return self.root / "subscribers" / "bulletin.db"

    @property
    def backup(self) -> Path:
        return self.root / "subscribers" / "bulletin.db-before-v2"


_counter = iter(range(1_000_000))


@pytest.fixture
def workspace(shared_dir: Path, smtp: FaultServer) -> Workspace:
    """A workspace whose store was upgraded from the first schema (so a backup sits beside it),
    with three subscribers on ``news`` and a CSV of two new ones."""
    root = shared_dir / f"ws{next(_counter)}"
    root.mkdir()
    config = (REPO / "bulletin.toml").read_text(encoding="utf-8")
    config = config.replace('url = "smtp://127.0.0.1:2525"', f'url = "{smtp.url}"')
    assert smtp.url in config
    (root / "bulletin.toml").write_text(config, encoding="utf-8")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "issues", root / "issues")
    (root / "subscribers").mkdir()
    (root / "new.csv").write_text(
        "email,name\nnou1@example.org,Nou Unu\nnou2@example.org,Nou Doi\n", encoding="utf-8"
    )
    url = ws.load(root).database_url()
    first = connect(url)
    migrate(first, target=1, migrations=MIGRATIONS)
    with write_transaction(first) as conn:
        news = oldschema.add_list(conn, "news", "News")
        people = [(f"cititor{i}@example.org", f"Cititor {i}") for i in range(3)]
        oldschema.add_subscribers(conn, news, people)
    first.dispose()
    open_store(url).dispose()  # the upgrade to the current schema keeps a copy beside it
    space = Workspace(root, {**os.environ, "BULLETIN_SECRET_KEY": KEY, "COLUMNS": "200"})
    assert space.backup.exists()
    assert not space.db.with_name("bulletin.db-wal").exists(), "closed cleanly: no WAL left"
    return space


def run(
    space: Workspace,
    command: str,
    *,
    prefix: list[str] | None = None,
    preexec: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), str(BULLETIN), *COMMANDS[command]],
        cwd=space.root,
        env=space.env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        preexec_fn=preexec,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit 1, no traceback, and every phrase in the output; the output with lines joined."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert "sqlalchemy" not in output.lower() and "sqlite3." not in output, output
    joined = " ".join(output.split())  # rich wraps long lines
    for phrase in phrases:
        assert phrase in joined, f"{phrase!r} not in:\n{output}"
    return joined


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(db: Path, query: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def integrity(db: Path) -> str:
    """SQLite's own verdict on the file: "ok", or what is wrong with it."""
    try:
        return "; ".join(str(r[0]) for r in rows(db, "PRAGMA integrity_check"))
    except sqlite3.DatabaseError as exc:
        return str(exc)


def subscriber_emails(db: Path) -> list[str]:
    return [str(r[0]) for r in rows(db, "SELECT email FROM subscribers ORDER BY id")]


ORIGINAL = [f"cititor{i}@example.org" for i in range(3)]


# -- not a database ----------------------------------------------------------------------------

JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + bytes(range(256)) * 40
TEXT = b"email,name\nana@example.org,Ana\n" * 100


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("content", [JPEG, TEXT], ids=["jpeg", "text"])
def test_a_file_that_is_not_a_database(workspace: Workspace, command: str, content: bytes):
    workspace.db.write_bytes(content)

    result = run(workspace, command)

    assert_user_error(
        result,
        f"{workspace.db} is not a SQLite database",
        "database.url in bulletin.toml",
        "bulletin.db-before-v2",
    )
    assert workspace.db.read_bytes() == content, "the file was changed"


# -- a damaged database -------------------------------------------------------------------------


def corrupt(db: Path) -> None:
    """Overwrite the page headers of every table and index but the first two pages.

    Page 1 is SQLite's own schema and page 2 the schema_version table, so the store opens;
    each command then reads a damaged page of the table it needs.
    """
    page_size = rows(db, "PRAGMA page_size")[0][0]
    assert isinstance(page_size, int)
    data = bytearray(db.read_bytes())
    pages = len(data) // page_size
    assert pages > 10
    for page in range(2, pages):
        start = page * page_size
        data[start : start + 48] = b"\xa5" * 48
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_database(workspace: Workspace, command: str):
    corrupt(workspace.db)
    assert integrity(workspace.db) != "ok"  # the damage is real, SQLite itself says so
    before = digest(workspace.db)

    result = run(workspace, command)

    assert_user_error(
        result,
        f"The database {workspace.db} is damaged",
        "bulletin.db-before-v2",
        "Move the damaged file aside",
    )
    assert digest(workspace.db) == before


def test_a_damaged_database_without_a_backup_says_so(workspace: Workspace):
    workspace.backup.unlink()
    corrupt(workspace.db)
    result = run(workspace, "lists")
    assert_user_error(result, f"The database {workspace.db} is damaged", "no copy beside it")


# -- read-only ----------------------------------------------------------------------------------


def unprivileged(space: Workspace) -> list[str]:
    """The command prefix that runs bulletin as a user who cannot write root's files."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed")
    probe = subprocess.run(
        [*AS_NOBODY, str(BULLETIN), "--version"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run {BULLETIN}: {probe.stderr.strip()}")
    return AS_NOBODY


def read_only(*paths: Path) -> None:
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)


def read_only_file(space: Workspace) -> None:
    """The database file read-only, its folder writable (by nobody too, when root)."""
    space.db.parent.chmod(0o777)
    read_only(space.db)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_read_only_database_folder(workspace: Workspace, command: str):
    prefix = unprivileged(workspace)
    read_only(workspace.db, workspace.db.parent)
    before = digest(workspace.db)

    result = run(workspace, command, prefix=prefix)

    assert_user_error(
        result,
        f"The database {workspace.db} cannot be written",
        "read-only",
        "bulletin.db-wal",
    )
    assert digest(workspace.db) == before
    assert subscriber_emails(workspace.db) == ORIGINAL


@pytest.mark.parametrize("command", WRITERS)
def test_a_read_only_database_file_refuses_changes(workspace: Workspace, command: str):
    prefix = unprivileged(workspace)
    read_only_file(workspace)

    result = run(workspace, command, prefix=prefix)

    assert_user_error(
        result, f"The database {workspace.db} cannot be written", "read-only", "permissions"
    )
    assert subscriber_emails(workspace.db) == ORIGINAL
    assert rows(workspace.db, "SELECT count(*) FROM sends") == [(0,)]


@pytest.mark.parametrize("command", READERS)
def test_a_read_only_database_file_can_still_be_read(workspace: Workspace, command: str):
    prefix = unprivileged(workspace)
    read_only_file(workspace)
    result = run(workspace, command, prefix=prefix)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    # status of an issue never sent is a user error that comes from reading the store.
    assert result.returncode == (1 if command == "status" else 0), output
    assert {"lists": "news", "count": "3", "status": "has not been sent"}[command] in output


@pytest.mark.parametrize(
    ("locked", "why"),
    [
        ("folder", "its folder {folder} cannot be entered by"),
        ("file", "the file cannot be read by"),
    ],
)
def test_a_database_that_cannot_be_opened(workspace: Workspace, locked: str, why: str):
    prefix = unprivileged(workspace)
    target = workspace.db.parent if locked == "folder" else workspace.db
    target.chmod(0o000)
    try:
        result = run(workspace, "count", prefix=prefix)
    finally:
        target.chmod(0o755 if locked == "folder" else 0o644)
    assert_user_error(
        result,
        f"Cannot open the database {workspace.db}: " + why.format(folder=workspace.db.parent),
        "Fix the permissions",
    )
    assert subscriber_emails(workspace.db) == ORIGINAL


def test_a_database_folder_that_cannot_be_created(workspace: Workspace):
    prefix = unprivileged(workspace)
    shutil.rmtree(workspace.db.parent)
    read_only(workspace.root)
    result = run(workspace, "lists", prefix=prefix)
    assert_user_error(
        result,
        f"Cannot create the folder {workspace.db.parent} for the database",
        "Permission denied",
        "writable",
    )


# -- a full disk --------------------------------------------------------------------------------


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: writes past ``limit`` bytes fail with EFBIG instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("command", COMMANDS)
def test_no_room_even_to_open_the_database(workspace: Workspace, command: str):
    # Below 32 KiB SQLite cannot size its shared-memory file: nothing can be read or written,
    # as on a disk with no space left at all.
    before = digest(workspace.db)

    result = run(workspace, command, preexec=file_size_limit(16 * 1024))

    assert_user_error(
        result,
        f"The database {workspace.db} could not be read or written",
        "disk is full",
        "Free some space",
    )
    assert digest(workspace.db) == before
    assert integrity(workspace.db) == "ok"


def many_subscribers(space: Workspace, n: int) -> None:
    lines = "".join(f"leitor{i:05d}@example.org,Leitor {i},Cluj\n" for i in range(n))
    (space.root / "new.csv").write_text("email,name,city\n" + lines, encoding="utf-8")


def test_an_import_that_does_not_fit_saves_nothing(workspace: Workspace):
    many_subscribers(workspace, 3000)

    result = run(workspace, "import", preexec=file_size_limit(64 * 1024))

    assert_user_error(result, f"The database {workspace.db} could not be", "Free some space")
    assert integrity(workspace.db) == "ok"
    assert subscriber_emails(workspace.db) == ORIGINAL  # all or nothing: nothing


def test_a_send_whose_ledger_does_not_fit_sends_nothing(workspace: Workspace, smtp: FaultServer):
    many_subscribers(workspace, 3000)
    assert run(workspace, "import").returncode == 0
    sent_before = len(smtp.messages)

    result = run(workspace, "send", preexec=file_size_limit(64 * 1024))

    assert_user_error(result, f"The database {workspace.db} could not be", "Free some space")
    assert integrity(workspace.db) == "ok"
    assert len(smtp.messages) == sent_before
    assert rows(workspace.db, "SELECT count(*) FROM deliveries") == [(0,)]


@pytest.fixture
def small_disk(shared_dir: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, where the machine allows mounting one (root with CAP_SYS_ADMIN)."""
    mount_point = shared_dir / f"disk{next(_counter)}"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_really_full_disk(workspace: Workspace, small_disk: Path):
    # The store moves to the small disk; a file fills what is left but a little.
    db = small_disk / "bulletin.db"
    shutil.copy(workspace.db, db)
    set_config(workspace.root, "database", url=f"sqlite:///{db}")
    stats = os.statvfs(small_disk)
    free = stats.f_bavail * stats.f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 100 * 1024))
    many_subscribers(workspace, 3000)

    result = run(workspace, "import")

    assert_user_error(result, f"The disk that holds the database {db} is full", "Free some space")
    assert integrity(db) == "ok"
    assert subscriber_emails(db) == ORIGINAL


# -- the one place that tells trouble from bugs ------------------------------------------------


def test_a_lock_held_too_long_and_a_full_pool_are_busy(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'bulletin.db'}"
    holder = open_store(url)
    impatient = open_store(url, busy_timeout_ms=200, pool_timeout=0.2)
    with write_transaction(holder):  # another process saving an import
        with pytest.raises(sa.exc.OperationalError) as locked:
            with write_transaction(impatient):
                pass
    problem = database_problem(locked.value, impatient)
    assert problem is not None and problem.kind == "busy"
    assert f"The database {tmp_path / 'bulletin.db'} stayed locked" in problem.message
    assert problem.hint and "run this command again" in problem.hint

    # Every connection of the pool (5 + 10 overflow) in use: the next one times out.
    taken = [impatient.connect() for _ in range(15)]
    with pytest.raises(sa.exc.TimeoutError) as no_connection:
        impatient.connect()
    for conn in taken:
        conn.close()
    problem = database_problem(no_connection.value, impatient)
    assert problem is not None and problem.kind == "busy"
    holder.dispose()
    impatient.dispose()


def test_a_workspace_where_the_signing_key_cannot_be_created(workspace: Workspace):
    """Without BULLETIN_SECRET_KEY a send creates .bulletin/secret_key; an unwritable
    workspace used to give a PermissionError traceback."""
    prefix = unprivileged(workspace)
    workspace.env.pop("BULLETIN_SECRET_KEY")
    read_only_file(workspace)
    workspace.db.chmod(0o666)  # the store is fine: only the key cannot be written
    read_only(workspace.root)

    result = run(workspace, "send", prefix=prefix)

    assert_user_error(result, "Cannot create the signing key .bulletin/secret_key", "writable")
    assert rows(workspace.db, "SELECT count(*) FROM sends") == [(0,)]
