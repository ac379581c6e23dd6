"""Many processes opening an empty database at the same instant: it is migrated once.

Several senders, ``bulletin serve`` and a cron job may all start against a new database
together. Each process here is the real command line (``bulletin lists``), held at a barrier
after its imports until every one is ready, so the migrations really race.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bulletin.store import db, schema
from bulletin.store.migrations import MIGRATIONS
from conftest import set_config

RACER = """
import sys, time
from pathlib import Path
from bulletin.cli import main
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
sys.argv = ["bulletin", "-w", sys.argv[3], "lists"]
ready.touch()
while not go.exists():
    time.sleep(0.001)
main()
"""


@pytest.mark.parametrize("processes", [5, 12])
def test_processes_opening_an_empty_database_at_once_migrate_it_once(
    workspace_dir: Path, database_url: str, tmp_path: Path, processes: int
) -> None:
    set_config(workspace_dir, "database", url=database_url)
    go = tmp_path / "go"
    racers = []
    for n in range(processes):
        ready = tmp_path / f"ready{n}"
        command = [sys.executable, "-c", RACER, str(ready), str(go), str(workspace_dir)]
        racer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        racers.append((ready, racer))
    deadline = time.monotonic() + 60
    while not all(ready.exists() for ready, _ in racers):
        assert time.monotonic() < deadline, "the racers never got ready"
        assert all(r.poll() is None for _, r in racers), "a racer died before the start"
        time.sleep(0.01)
    go.touch()
    outputs = []
    for _, racer in racers:
        out, err = racer.communicate(timeout=120)
        outputs.append((racer.returncode, out.decode(), err.decode()))
    for code, out, err in outputs:
        assert code == 0 and "Traceback" not in err, err
        assert out.startswith("No lists yet."), out
    engine = db.connect(database_url)
    with engine.connect() as conn:
        versions = conn.scalars(
            sa.select(schema.schema_version.c.version).order_by(schema.schema_version.c.version)
        ).all()
    engine.dispose()
    assert versions == [m.version for m in MIGRATIONS]
