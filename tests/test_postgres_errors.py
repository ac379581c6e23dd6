"""PostgreSQL trouble through the command line: no driver, no server, wrong credentials.

Each case sets ``database.url`` as a user would get it wrong, against the session's real
server (or a port where nothing listens), runs real commands, and checks that the exit is 1
with no traceback, that the message names the server and says what is wrong and what to do,
and that a password in the URL is never printed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bulletin.cli import cli
from conftest import set_config

BULLETIN = Path(sys.executable).parent / "bulletin"
PASSWORD = "s3cret-Pa55"
"""The password of the role that needs one; it must never appear in any output."""


def split_password(url: str) -> tuple[str, str | None]:
    """``postgresql+psycopg://user:pw@host/db`` -> (the URL without ``:pw``, ``pw``)."""
    scheme, rest = url.split("://", 1)
    userinfo, at, hostpart = rest.partition("@")
    if not at or ":" not in userinfo:
        return url, None
    user, password = userinfo.split(":", 1)
    return f"{scheme}://{user}@{hostpart}", password


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_user_error(output: str, exit_code: int, *phrases: str) -> None:
    assert exit_code == 1, output
    assert "Traceback" not in output, output
    assert "sqlalchemy" not in output.lower() and "psycopg." not in output, output
    assert PASSWORD not in output and "wrong-one" not in output, output
    joined = " ".join(output.split())  # rich wraps long lines
    for phrase in phrases:
        assert phrase in joined, f"{phrase!r} not in:\n{output}"


def bulletin(root: Path, *args: str, password: str | None = None) -> tuple[int, str]:
    env = {"COLUMNS": "200", "BULLETIN_DATABASE_PASSWORD": password}
    result = CliRunner(env=env).invoke(cli, ["-w", str(root), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture(scope="module")
def password_user(pg_server: Any) -> str:
    """A role that must give :data:`PASSWORD` (the session's own role is trusted)."""
    pg_server.add_password_user("bulletin_pw", PASSWORD)
    return "bulletin_pw"


def _url(user: str, port: int, database: str = "postgres", host: str = "127.0.0.1") -> str:
    return f"postgresql+psycopg://{user}@{host}:{port}/{database}"


Case = Callable[[Any, str], tuple[str, tuple[str, ...]]]
"""(server, password user) -> (database.url, phrases the error must hold).

A password goes where bulletin takes it from, BULLETIN_DATABASE_PASSWORD: the URL itself
"user:password@..." here is split by the test before it reaches bulletin.toml.
"""


def _no_server(server: Any, pw_user: str) -> tuple[str, tuple[str, ...]]:
    port = _free_port()
    return _url("bulletin", port), (
        f"No PostgreSQL server answers at 127.0.0.1:{port}",
        "Start the database server",
        "database.url",
    )


def _unknown_host(server: Any, pw_user: str) -> tuple[str, tuple[str, ...]]:
    return _url("bulletin", 5432, host="db.nosuchhost.invalid"), (
        "The database host db.nosuchhost.invalid in database.url cannot be found",
        "Correct the host",
    )


def _wrong_password(server: Any, pw_user: str) -> tuple[str, tuple[str, ...]]:
    return _url(f"{pw_user}:wrong-one", server.port), (
        f"The PostgreSQL server at 127.0.0.1:{server.port} refused the password of user {pw_user}",
        "Correct the password in BULLETIN_DATABASE_PASSWORD",
    )


def _no_password(server: Any, pw_user: str) -> tuple[str, tuple[str, ...]]:
    return _url(pw_user, server.port), (
        f"asks for a password for user {pw_user}, and none was given",
        "~/.pgpass",
    )


def _no_database(server: Any, pw_user: str) -> tuple[str, tuple[str, ...]]:
    return _url("bulletin", server.port, "no_such_news"), (
        f"The PostgreSQL server at 127.0.0.1:{server.port} has no database no_such_news",
        "createdb --owner=bulletin no_such_news",
    )


def _no_role(server: Any, pw_user: str) -> tuple[str, tuple[str, ...]]:
    return _url("ghost", server.port), (
        f"The PostgreSQL server at 127.0.0.1:{server.port} has no user ghost",
        "createuser --pwprompt ghost",
    )


CASES: dict[str, Case] = {
    "no-server": _no_server,
    "unknown-host": _unknown_host,
    "wrong-password": _wrong_password,
    "no-password": _no_password,
    "no-database": _no_database,
    "no-role": _no_role,
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_database_that_cannot_be_reached_is_a_user_error(
    workspace_dir: Path, pg_server: Any, password_user: str, case: str
) -> None:
    url, phrases = CASES[case](pg_server, password_user)
    url, password = split_password(url)
    set_config(workspace_dir, "database", url=url)
    for command in (("lists",), ("subscribers", "add", "ana@example.org", "--list", "news")):
        code, output = bulletin(workspace_dir, *command, password=password)
        assert_user_error(output, code, *phrases)


def test_the_password_user_works_with_its_password(
    workspace_dir: Path, pg_server: Any, password_user: str
) -> None:
    # The cases above fail for the reason they name, not for one this role always has.
    database = pg_server.new_database("pw")
    pg_server.execute(f'ALTER DATABASE "{database.rsplit("/", 1)[1]}" OWNER TO {password_user}')
    name = database.rsplit("/", 1)[1]
    set_config(workspace_dir, "database", url=_url(password_user, pg_server.port, name))
    code, output = bulletin(workspace_dir, "lists", "create", "news", password=PASSWORD)
    assert code == 0, output
    # From a 0600 file named in bulletin.toml instead of the environment.
    secret = workspace_dir.parent / "db-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    set_config(workspace_dir, "database", password_file=str(secret))
    code, output = bulletin(workspace_dir, "lists")
    assert code == 0 and "news" in output, output


def test_a_user_without_rights_on_the_database_is_told_what_to_grant(
    workspace_dir: Path, pg_server: Any
) -> None:
    # Since PostgreSQL 15 a user may not create tables in another owner's "public" schema.
    database = pg_server.new_database("ro").rsplit("/", 1)[1]
    pg_server.execute(
        "DO $$ BEGIN CREATE ROLE reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    set_config(workspace_dir, "database", url=_url("reader", pg_server.port, database))
    code, output = bulletin(workspace_dir, "lists")
    assert_user_error(
        output,
        code,
        f"The PostgreSQL user reader may not create or change tables in database {database}",
        "permission denied",
        f"ALTER DATABASE {database} OWNER TO reader",
    )


def test_a_missing_driver_says_how_to_install_it(workspace_dir: Path, tmp_path: Path) -> None:
    # The real executable, with psycopg made unimportable the way a plain `pip install
    # bulletin` leaves it: an import hook in a sitecustomize on PYTHONPATH.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoPsycopg:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'psycopg' or name.startswith('psycopg.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, NoPsycopg())\n",
        encoding="utf-8",
    )
    set_config(workspace_dir, "database", url="postgresql+psycopg://news@db.example.org/news")
    env = {
        **os.environ,
        "PYTHONPATH": str(hook),
        "COLUMNS": "200",
        "BULLETIN_DATABASE_PASSWORD": PASSWORD,
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import psycopg"], env=env, capture_output=True, text=True
    )
    assert "No module named 'psycopg'" in probe.stderr  # the hook works
    result = subprocess.run(
        [str(BULLETIN), "lists"],
        cwd=workspace_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_user_error(
        result.stdout + result.stderr,
        result.returncode,
        "needs the PostgreSQL driver (psycopg), which is not installed",
        "pip install 'bulletin[postgres]'",
    )


def test_a_url_from_the_environment_is_named_as_such_and_its_password_never_shown(
    workspace_dir: Path,
) -> None:
    port = _free_port()
    url = f"postgresql+psycopg://news:{PASSWORD}@127.0.0.1:{port}/news"
    result = CliRunner(env={"COLUMNS": "200", "BULLETIN_DATABASE_URL": url}).invoke(
        cli, ["-w", str(workspace_dir), "lists"]
    )
    assert_user_error(
        result.stdout + result.stderr,
        result.exit_code,
        f"No PostgreSQL server answers at 127.0.0.1:{port}",
        "BULLETIN_DATABASE_URL's, which overrides database.url",
    )
