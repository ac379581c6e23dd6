"""Ctrl-C and SIGTERM during a real `bulletin send` process: stop gracefully, or at once.

The send runs through a FaultServer that holds each message a while, so the signals land
while messages are on the wire. The first signal lets those finish and be recorded and
puts the rest back; a second one quits at once, leaving the messages on the wire in doubt.
Either way the same command then finishes the send, and nobody is lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bulletin.store import ledger
from bulletin.store.schema import deliveries
from conftest import SAMPLE_SLUG
from smtpfaults import FaultServer
from test_engine import (
    KEY,
    by_recipient,
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    configure,
    open_store,
    populate,
)

RECIPIENTS = 40
CONNECTIONS = 2
RESUME = f"bulletin send {SAMPLE_SLUG} --list news"


def _send(root: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "bulletin", "-w", str(root)),
        *("send", SAMPLE_SLUG, "--list", "news", "--yes"),
        *("--connections", str(CONNECTIONS), "--rate", "0"),
    ]


def _start(root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "BULLETIN_SECRET_KEY": KEY, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.Popen(
        _send(root),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def _states(db: Engine) -> dict[str, int]:
    with db.connect() as conn:
        (send,) = ledger.sends_of_issue(conn, SAMPLE_SLUG)
        return ledger.counts(conn, send.id)


def _finish_and_check(
    root: Path, db: Engine, server: FaultServer, emails: list[str]
) -> tuple[int, str]:
    """Run the same command to the end; everyone has the issue. The in-doubt count, output."""
    server.clear_faults()
    proc = _start(root)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert f"Done: {SAMPLE_SLUG} is sent." in out
    received = by_recipient(server.messages)
    assert sorted(received) == sorted(emails)
    with db.connect() as conn:
        (send,) = ledger.sends_of_issue(conn, SAMPLE_SLUG)
    duplicates = sum(len(copies) - 1 for copies in received.values())
    assert duplicates <= send.in_doubt
    return send.in_doubt, out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_finishes_the_messages_on_the_wire_and_stops(
    workspace_dir: Path, tmp_path: Path, signum: int
) -> None:
    with FaultServer() as server:
        server.fault("DATA_END", delay=0.05)
        workspace = configure(workspace_dir, server.url)
        db = open_store(workspace.database_url())
        emails = populate(db, "news", RECIPIENTS, folder=tmp_path)

        proc = _start(workspace_dir)
        try:
            server.wait_for_messages(5, timeout=30)
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:  # pragma: no cover - hung
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130, out + err
        assert "Stopping: finishing the messages on the wire" in err
        assert f"Interrupted. Run `{RESUME}` to resume where it stopped." in out
        assert "Traceback" not in err
        # Everything that left was recorded; nothing is left claimed or on its way.
        states = _states(db)
        assert states["sent"] == len(server.messages) < RECIPIENTS
        assert states["queued"] == states["sending"] == 0
        in_doubt, out = _finish_and_check(workspace_dir, db, server, emails)
        assert in_doubt == 0 and "on their way" not in out
        assert all(len(c) == 1 for c in by_recipient(server.messages).values())


def test_a_second_signal_quits_at_once_and_the_wire_is_in_doubt(
    workspace_dir: Path, tmp_path: Path
) -> None:
    with FaultServer() as server:
        # Each message waits 30 s for its final reply: stopping gracefully would take that.
        server.fault("DATA_END", delay=0.02, times=4)
        server.fault("DATA_END", delay=30.0)
        workspace = configure(workspace_dir, server.url)
        db = open_store(workspace.database_url())
        emails = populate(db, "news", RECIPIENTS, folder=tmp_path)

        proc = _start(workspace_dir)
        try:
            server.wait_for_messages(4, timeout=30)
            deadline = time.monotonic() + 30
            while server.count("DATA") < 4 + CONNECTIONS and time.monotonic() < deadline:
                time.sleep(0.01)
            # Both connections are now held in DATA; the first signal waits for them.
            proc.send_signal(signal.SIGTERM)
            assert proc.stderr is not None
            assert "Stopping:" in proc.stderr.readline()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:  # pragma: no cover - hung
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130, out + err
        assert f"Stopped at once. Run `{RESUME}` to resume" in err
        assert "Traceback" not in err
        # The results received were recorded on the way out; only the two messages held
        # on the wire are in doubt. The rest of the claimed batch never left: pending.
        states = _states(db)
        assert (states["sent"], states["sending"], states["queued"]) == (4, CONNECTIONS, 0)
        assert states["pending"] == RECIPIENTS - 4 - CONNECTIONS
        in_doubt, out = _finish_and_check(workspace_dir, db, server, emails)
        assert in_doubt == CONNECTIONS == 2
        assert (
            "2 messages were on their way when a run stopped; they were sent again with the "
            "same Message-ID, so at most 2 people may have two copies."
        ) in out
        with db.connect() as conn:
            rows = conn.execute(sa.select(deliveries.c.state)).all()
        assert {r.state for r in rows} == {"sent"}
