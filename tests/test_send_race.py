"""Two `bulletin send` processes of the same send started in the same instant.

Both are real processes on one SQLite workspace, sending through a FaultServer that takes
a little time per message so that the first one is still running when the second one
looks at the ledger. Whichever loses must say that the send is already running and by
which process, and change nothing; exactly one send happens and nobody gets two copies.
Started back to back with Popen, the two are within milliseconds of each other: both
check and render the issue side by side, so the loser reads the ledger around the moment
the winner creates the send -- before it, while it commits, or just after.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from bulletin.store import ledger
from bulletin.store.db import open_store
from bulletin.store.schema import deliveries
from conftest import SAMPLE_SLUG
from smtpfaults import FaultServer
from test_engine import KEY, by_recipient, configure, populate

TRIALS = 5
RECIPIENTS = 40


def _env() -> dict[str, str]:
    return {**os.environ, "BULLETIN_SECRET_KEY": KEY, "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.mark.slow
def test_two_sends_started_at_once_run_once_and_the_loser_says_who_runs_it(
    workspace_dir: Path, tmp_path: Path
) -> None:
    host = socket.gethostname()
    with FaultServer() as server:
        # 40 messages at 0.1 s each over 2 connections: the winner runs for ~2 s.
        server.fault("DATA_END", delay=0.1)
        workspace = configure(workspace_dir, server.url)
        db = open_store(workspace.database_url())
        for trial in range(TRIALS):
            slug = f"race{trial}"
            # Other people on each list: a send to one list never covers another's.
            emails = populate(db, slug, RECIPIENTS, start=trial * RECIPIENTS, folder=tmp_path)
            command = [
                *(sys.executable, "-m", "bulletin", "-w", str(workspace_dir)),
                *("send", SAMPLE_SLUG, "--list", slug, "--yes"),
                *("--connections", "2", "--rate", "0"),
            ]
            procs = [
                subprocess.Popen(
                    command,
                    env=_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    encoding="utf-8",
                )
                for _ in range(2)
            ]
            outputs = [p.communicate(timeout=120)[0] for p in procs]
            codes = [p.returncode for p in procs]
            what = f"trial {trial}: exit codes {codes}\n" + "\n---\n".join(outputs)
            assert sorted(codes) == [0, 1], what
            winner = codes.index(0)
            loser = 1 - winner
            assert f"Done: {SAMPLE_SLUG} is sent." in outputs[winner], what
            busy = f"Error: This send is already running (process {procs[winner].pid} on {host})."
            assert busy in outputs[loser], what
            assert "Traceback" not in outputs[loser], what

            with db.connect() as conn:
                (send,) = [s for s in ledger.sends_of_issue(conn, SAMPLE_SLUG, slug)]
                rows = conn.execute(
                    sa.select(deliveries.c.email, deliveries.c.state).where(
                        deliveries.c.send_id == send.id
                    )
                ).all()
            # One run of one send: the loser neither took it over nor counted anything.
            assert (send.state, send.runs, send.in_doubt) == ("done", 1, 0), what
            assert sorted(e for e, _ in rows) == sorted(emails)
            assert {s for _, s in rows} == {"sent"}
            received = by_recipient([m for m in server.messages if m.rcpt_tos[0] in emails])
            assert sorted(received) == sorted(emails)
            assert all(len(copies) == 1 for copies in received.values()), what
