"""Shared fixtures: a temporary copy of the repository's workspace, and its database.

The suite runs on SQLite by default and on PostgreSQL with ``--db=postgresql`` (``make test``
does both). On PostgreSQL the session starts a private server (:mod:`pgserver`) and every
test gets a new, empty schema: ``database_url`` gives its URL, and ``workspace_dir`` writes it
into the workspace's bulletin.toml. Tests that are about SQLite itself (its files, locks and
pragmas) are marked ``sqlite_only`` and skipped on the PostgreSQL pass; tests that need
PostgreSQL itself are marked ``postgresql_only`` and run on that pass only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

REPO = Path(__file__).resolve().parent.parent
SAMPLE_SLUG = "2014-10-clusterpolisee-03"
ENGINES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=ENGINES,
        default=os.environ.get("BULLETIN_TEST_DB", "sqlite"),
        help="The database engine the store tests run on (default: sqlite).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgresql_only: needs PostgreSQL itself (several machines' senders, SKIP LOCKED, "
        "out-of-order commits); runs on the --db=postgresql pass only",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    engine = config.getoption("--db")
    skip = pytest.mark.skip(reason=f"SQLite-only test; this pass runs on {engine}")
    skip_pg = pytest.mark.skip(reason="PostgreSQL-only test; run the suite with --db=postgresql")
    for item in items:
        if engine != "sqlite" and item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)
        if engine != "postgresql" and item.get_closest_marker("postgresql_only"):
            item.add_marker(skip_pg)


@pytest.fixture(scope="session")
def db_engine(pytestconfig: pytest.Config) -> str:
    """``sqlite`` or ``postgresql``: the engine this pass of the suite runs on."""
    return str(pytestconfig.getoption("--db"))


@pytest.fixture(scope="session")
def pg_server(db_engine: str) -> Iterator[object]:
    """The session's PostgreSQL server (only on the PostgreSQL pass)."""
    if db_engine != "postgresql":
        pytest.skip("PostgreSQL tests run on the --db=postgresql pass")
    from pgserver import PgServer

    server = PgServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, db_engine: str, tmp_path: Path) -> str:
    """A URL of an empty store for this test: a SQLite file, or a new PostgreSQL schema."""
    if db_engine == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'bulletin.db'}"
    server = request.getfixturevalue("pg_server")
    url: str = server.new_url()  # type: ignore[attr-defined]
    return url


@pytest.fixture
def new_database_url(
    request: pytest.FixtureRequest, db_engine: str, tmp_path: Path
) -> Callable[[str], str]:
    """Makes URLs of further empty stores for tests that compare two: ``new_database_url("a")``.

    A SQLite file ``<name>.db`` in the test's folder, or a new PostgreSQL schema.
    """
    if db_engine == "sqlite":
        return lambda name: f"sqlite:///{tmp_path / 'stores' / f'{name}.db'}"
    server = request.getfixturevalue("pg_server")
    return lambda name: str(server.new_url())  # type: ignore[attr-defined]


@pytest.fixture
def open_connections(
    request: pytest.FixtureRequest, db_engine: str, database_url: str
) -> Callable[[], int]:
    """Counts the connections to this test's database open right now, from any code.

    SQLite: this process's file descriptors on the database file. PostgreSQL: the server's
    connections carrying the test's schema as application_name.
    """
    from urllib.parse import parse_qs, urlsplit

    if db_engine == "sqlite":
        path = Path(database_url.removeprefix("sqlite:///"))

        def count_files() -> int:
            fds = Path("/proc/self/fd")
            found = 0
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(fd)) == path:
                        found += 1
            return found

        return count_files
    server = request.getfixturevalue("pg_server")
    (name,) = parse_qs(urlsplit(database_url).query)["application_name"]
    return lambda: int(server.connections(name))  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    """Every engine a test connected with is disposed when the test ends.

    Tests open stores freely and leave them to the garbage collector; a PostgreSQL
    connection collected later warns (an error under ``filterwarnings = error``) in whichever
    test happens to run then. Only connections back in their pool are closed here: one still
    checked out at the end of a test is a real leak, and still warns.
    """
    # Strong references: an engine the test dropped must not be collected, connections
    # and all, before it is disposed.
    opened: set[Engine] = set()

    def record(conn: Connection) -> None:
        opened.add(conn.engine)

    sa.event.listen(Engine, "engine_connect", record)
    try:
        yield
    finally:
        sa.event.remove(Engine, "engine_connect", record)
        for engine in list(opened):
            engine.dispose()


def pass_database_url(request: pytest.FixtureRequest) -> str | None:
    """For fixtures of any scope: a new PostgreSQL schema's URL on that pass, else None
    (the workspace keeps its own SQLite file)."""
    if request.config.getoption("--db") == "sqlite":
        return None
    server = request.getfixturevalue("pg_server")
    return str(server.new_url())  # type: ignore[attr-defined]


@pytest.fixture
def workspace_dir(tmp_path: Path, db_engine: str, request: pytest.FixtureRequest) -> Path:
    """A fresh workspace: the repository's bulletin.toml, templates/ and issues/ copied.

    On the PostgreSQL pass its database.url names a new schema of the session's server.
    """
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "bulletin.toml", root / "bulletin.toml")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "issues", root / "issues")
    (root / "subscribers").mkdir()
    if db_engine != "sqlite":
        set_config(root, "database", url=request.getfixturevalue("database_url"))
    return root


def set_config(root: Path, section: str, **values: str | int | float | bool) -> None:
    """Set keys of one ``[section]`` in ``root/bulletin.toml``, replacing lines already there.

    Keeps the file as the user would edit it (comments and order stay); values are written as
    TOML scalars. The section must exist.
    """
    import json
    import re

    path = root / "bulletin.toml"
    text = path.read_text(encoding="utf-8")
    header = f"[{section}]\n"
    start = text.index(header) + len(header)
    nxt = re.search(r"^\[", text[start:], re.M)
    end = start + nxt.start() if nxt else len(text)
    body = text[start:end]
    for key in values:
        body = re.sub(rf"^{re.escape(key)}\s*=.*\n", "", body, flags=re.M)
    lines = "".join(
        f"{key} = {str(v).lower() if isinstance(v, bool) else json.dumps(v, ensure_ascii=False)}\n"
        for key, v in values.items()
    )
    path.write_text(text[:start] + lines + body + text[end:], encoding="utf-8")


CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (installed by `make system-deps`); Playwright drives it, never downloads."""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine's network is closed: background fetches would only fail, many at a time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Remote images in emails fail at once instead of waiting on DNS: browser tests depend
    # on nothing but servers on 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
