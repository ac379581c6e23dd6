"""A private PostgreSQL server for the test session (and benchmarks), in a temporary folder.

Like Chromium and the SMTP servers, PostgreSQL in tests is the real thing: Debian's
``postgresql`` binaries (``make test`` installs the package when it is missing), a cluster
made with ``initdb`` in a folder of our own, started with ``pg_ctl`` on a free loopback port
and removed at the end. ``initdb`` refuses to run as root, so when the tests run as root (as
in CI) the cluster belongs to the ``postgres`` user the package creates, and the server
commands run as that user.

Each test gets its own schema (``new_url``): creating one takes milliseconds where a
database takes a quarter of a second, and the URL's ``options=-csearch_path=...`` makes every
unqualified table name land there. Durability is switched off (``fsync=off``...): a test
cluster that loses its data in a power cut loses nothing of value, and commits are several
times faster.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

USER = "bulletin"
"""The database superuser the cluster is made with (trust authentication on loopback)."""


def binaries() -> Path | None:
    """The folder of PostgreSQL's server programs (newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A running PostgreSQL cluster of our own; stop it with :meth:`stop`."""

    def __init__(self, root: Path | None = None) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL is not installed (no pg_ctl): `make test` installs Debian's "
                "postgresql package; or run the suite with --db=sqlite"
            )
        self.bin = bin_dir
        self.root = Path(root or tempfile.mkdtemp(prefix="bulletin-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse root; the package's system user runs them.
            self._as_owner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self.root.chmod(0o700)
        self._schemas = itertools.count(1)
        self._initdb()
        self.start()

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as_owner, *args], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stderr}{result.stdout}\n{tail}")

    def _initdb(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server (again, after :meth:`halt`) on its port, with its data."""
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c max_connections=300",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c shared_buffers=128MB",
            ]
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D", str(self.data),
            "-l", str(self.root / "server.log"),
            "-o", options,
            "-w",
            "start",
        )  # fmt: skip

    def url(self, database: str = "postgres", *, schema: str | None = None) -> str:
        """A SQLAlchemy URL for ``database`` (and ``schema`` first on the search path).

        The schema is also the connections' application_name, so a test can count the
        connections its own code left open (:meth:`connections`).
        """
        url = f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"
        if schema is not None:
            url += "?options=" + quote(f"-csearch_path={schema}", safe="")
            url += "&application_name=" + quote(schema, safe="")
        return url

    def connections(self, application_name: str) -> int:
        """How many connections with this application_name the server has open now."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True
        ) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            ).fetchone()
        return int(row[0]) if row else 0

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE DATABASE cannot run inside one)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname=database, autocommit=True
        ) as conn:
            conn.execute(sql.encode("utf-8"))

    def new_url(self, prefix: str = "t") -> str:
        """A URL whose tables live in a new, empty schema of the ``postgres`` database."""
        schema = f"{prefix}{next(self._schemas)}_{os.getpid()}"
        self.execute(f'CREATE SCHEMA "{schema}"')
        return self.url(schema=schema)

    def add_password_user(self, name: str, password: str) -> None:
        """A role that must give ``password`` to connect over TCP (everyone else is trusted)."""
        self.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        hba = self.data / "pg_hba.conf"
        # The first matching line wins: this one before initdb's "trust" for everyone.
        line = f"host all {name} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(line + hba.read_text())
        self.execute("SELECT pg_reload_conf()")
        import psycopg

        # The reload is a signal the server acts on shortly after: wait until it asks.
        for _ in range(100):
            try:
                psycopg.connect(
                    host="127.0.0.1", port=self.port, user=name, dbname="postgres"
                ).close()
            except psycopg.OperationalError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the server never asked {name} for a password")

    def new_database(self, prefix: str = "db") -> str:
        """A URL of a new, empty database (for what a schema cannot isolate)."""
        name = f"{prefix}{next(self._schemas)}_{os.getpid()}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def halt(self) -> None:
        """Stop the server, keeping its data (a restart's first half).

        A fast shutdown: sessions are ended at once, and what was committed is written out
        first (with synchronous_commit off, an immediate stop could lose the last commits).
        """
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")

    def stop(self) -> None:
        """Stop the server at once and remove its folder."""
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except RuntimeError:
            pass  # already gone: the folder goes anyway
        for _ in range(50):
            try:
                shutil.rmtree(self.root)
                return
            except OSError:
                time.sleep(0.1)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
