"""Two `bulletin send` processes of the same send started in the same instant.

Both are real processes on one workspace (a SQLite file, or PostgreSQL on that pass),
sending through a FaultServer that takes a little time per message so that the first one is
still running when the second one looks at the ledger. Started back to back with Popen, the
two are within milliseconds of each other: both check and render the issue side by side, so
the second reads the ledger around the moment the first creates the send -- before it,
while it commits, or just after. On PostgreSQL both may even insert the send: the unique
(issue, lists) key refuses one, which then finds the send and joins it.

Either way there is one send. By default the second *joins* it: both work on it, both exit
0, nobody gets two copies. With ``--no-join`` the second refuses, says which process runs
the send, and changes nothing.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
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


def _env() -> dict[str, str]:
    return {**os.environ, "BULLETIN_SECRET_KEY": KEY, "COLUMNS": "200", "NO_COLOR": "1"}


def _race(root: Path, slug: str, *extra: str) -> tuple[list[subprocess.Popen[str]], list[str]]:
    command = [
        *(sys.executable, "-m", "bulletin", "-w", str(root)),
        *("send", SAMPLE_SLUG, "--list", slug, "--yes"),
        *("--connections", "2", "--rate", "0", *extra),
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
    return procs, [p.communicate(timeout=120)[0] for p in procs]


def _one_send_one_copy_each(
    db: Engine, server: FaultServer, slug: str, emails: list[str], what: str
) -> ledger.SendRow:
    with db.connect() as conn:
        (send,) = ledger.sends_of_issue(conn, SAMPLE_SLUG, slug)
        rows = conn.execute(
            sa.select(deliveries.c.email, deliveries.c.state).where(deliveries.c.send_id == send.id)
        ).all()
    assert (send.state, send.in_doubt) == ("done", 0), what
    assert sorted(e for e, _ in rows) == sorted(emails)
    assert {s for _, s in rows} == {"sent"}
    received = by_recipient([m for m in server.messages if m.rcpt_tos[0] in emails])
    assert sorted(received) == sorted(emails)
    assert all(len(copies) == 1 for copies in received.values()), what
    return send


@pytest.mark.slow
def test_two_sends_started_at_once_make_one_send_with_two_senders(
    workspace_dir: Path, tmp_path: Path
) -> None:
    host = socket.gethostname()
    with FaultServer() as server:
        # 40 messages at 0.1 s each over 2 connections: the first one runs for ~2 s.
        server.fault("DATA_END", delay=0.1)
        workspace = configure(workspace_dir, server.url)
        db = open_store(workspace.database_url())
        try:
            for trial in range(3):
                slug = f"race{trial}"
                # Other people on each list: a send to one list never covers another's.
                emails = populate(db, slug, RECIPIENTS, start=trial * RECIPIENTS, folder=tmp_path)
                procs, outputs = _race(workspace_dir, slug)
                codes = [p.returncode for p in procs]
                what = f"trial {trial}: exit codes {codes}\n" + "\n---\n".join(outputs)
                assert codes == [0, 0], what
                assert all("Traceback" not in out for out in outputs), what
                joiners = [i for i, out in enumerate(outputs) if "Joining the send" in out]
                assert len(joiners) == 1, what
                joiner = joiners[0]
                first = procs[1 - joiner].pid
                assert (
                    f"Joining the send of {SAMPLE_SLUG} started by process {first} on {host} "
                    "(2 senders)."
                ) in outputs[joiner], what
                sent = [
                    int(re.search(r"This run: (\d+) sent", out).group(1))  # type: ignore[union-attr]
                    for out in outputs
                ]
                # Both worked on it: two seconds of work, shared.
                assert sum(sent) == RECIPIENTS and min(sent) > 0, what
                assert all(
                    f"Done: {SAMPLE_SLUG} is sent." in out or "the last recipients are with" in out
                    for out in outputs
                ), what
                send = _one_send_one_copy_each(db, server, slug, emails, what)
                assert send.runs == 2, what
                with db.connect() as conn:
                    senders = ledger.workers_of(conn, send.id)
                assert sorted(w.pid for w in senders) == sorted(p.pid for p in procs), what
                assert all(w.stopped_at is not None for w in senders), what
                assert sum(w.sent for w in senders) == RECIPIENTS, what
        finally:
            db.dispose()


@pytest.mark.slow
def test_with_no_join_the_second_refuses_and_says_who_runs_it(
    workspace_dir: Path, tmp_path: Path
) -> None:
    host = socket.gethostname()
    with FaultServer() as server:
        server.fault("DATA_END", delay=0.1)
        workspace = configure(workspace_dir, server.url)
        db = open_store(workspace.database_url())
        try:
            for trial in range(3):
                slug = f"solo{trial}"
                emails = populate(db, slug, RECIPIENTS, start=trial * RECIPIENTS, folder=tmp_path)
                procs, outputs = _race(workspace_dir, slug, "--no-join")
                codes = [p.returncode for p in procs]
                what = f"trial {trial}: exit codes {codes}\n" + "\n---\n".join(outputs)
                assert sorted(codes) == [0, 1], what
                winner = codes.index(0)
                loser = 1 - winner
                assert f"Done: {SAMPLE_SLUG} is sent." in outputs[winner], what
                busy = (
                    f"Error: This send is already running (process {procs[winner].pid} on {host})."
                )
                assert busy in outputs[loser], what
                assert "Traceback" not in outputs[loser], what
                send = _one_send_one_copy_each(db, server, slug, emails, what)
                # One run of one send: the loser neither joined nor counted anything.
                assert send.runs == 1, what
        finally:
            db.dispose()
