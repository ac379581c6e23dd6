"""`kill -9` at random points of a real `bulletin send`, then resume: nobody is lost.

A subprocess sends the sample issue to 300 recipients through a FaultServer that takes a
few milliseconds per message, and is killed with SIGKILL several times at random moments
(some during start-up and the freezing of the recipients, most mid-send). The same command
then runs to completion. Every recipient must have the issue; a recipient may have it twice
only if the ledger counted them *in doubt* (their message was allowed on the wire when a
kill landed), and both copies carry the same Message-ID.

The in-doubt count never undercounts (it is at least the duplicates the server received)
and stays small: each kill leaves at most ``SendOptions.in_doubt_limit`` recipients
``sending`` -- the promotion window, a few per connection, more only at a rate that needs
it -- however many were claimed (``queued``) ahead of the wire. Run once without a rate
limit (small batches) and once at 100 messages/s with the default batch of 200, where a
kill used to leave every claimed recipient in doubt.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bulletin.dispatch.plan import SendOptions
from bulletin.store import ledger
from bulletin.store.schema import deliveries
from bulletin.tokens import TokenSigner
from conftest import SAMPLE_SLUG
from smtpfaults import FaultServer
from test_engine import (
    KEY,
    by_recipient,
    check_message,
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    configure,
    open_store,
    populate,
)

RECIPIENTS = 300
BATCH = 20
CONNECTIONS = 4


def _env() -> dict[str, str]:
    return {**os.environ, "BULLETIN_SECRET_KEY": KEY, "COLUMNS": "200"}


def _command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bulletin", "-w", str(root), *args]


def _send(rate: str, batch: int) -> tuple[str, ...]:
    return (
        *("send", SAMPLE_SLUG, "--list", "crash", "--yes"),
        *("--connections", str(CONNECTIONS), "--batch-size", str(batch), "--rate", rate),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rate", "batch"), [("0", BATCH), ("100", SendOptions.batch_size)], ids=["no-limit", "100/s"]
)
def test_sigkill_at_random_points_then_resume_delivers_everyone(
    workspace_dir: Path, tmp_path: Path, rate: str, batch: int
) -> None:
    send_args = _send(rate, batch)
    seed = int(os.environ.get("BULLETIN_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    print(f"crash test seed: {seed} (set BULLETIN_CRASH_SEED to replay)")
    with FaultServer() as server:
        # A little time per message, so that kills land while messages are on the wire.
        server.fault("DATA_END", delay=0.004)
        workspace = configure(
            workspace_dir,
            server.url,
            send={"backoff": 0.05, "backoff_cap": 0.2, "max_wait": 5.0},
        )
        db = open_store(workspace.database_url())
        emails = populate(db, "crash", RECIPIENTS, folder=tmp_path)
        log = tmp_path / "send.log"

        kills = 0
        for attempt in range(rng.randint(3, 5)):
            before = len(server.messages)
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    _command(workspace_dir, *send_args), env=_env(), stdout=out, stderr=out
                )
            if attempt == 0 and rng.random() < 0.5:
                # During start-up: check, render, freezing the recipients, first claims.
                time.sleep(rng.uniform(0.05, 1.0))
            else:
                server.wait_for_messages(before + rng.randint(1, 40), timeout=30)
                time.sleep(rng.uniform(0, 0.02))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(30)
        assert kills >= 3, f"the send finished before the kills (seed {seed})"

        final = subprocess.run(
            _command(workspace_dir, *send_args),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert final.returncode == 0, final.stdout + final.stderr
        assert "Done: " in final.stdout

        # Everyone got it; duplicates only among the in-doubt, with one Message-ID each.
        received = by_recipient(server.messages)
        assert sorted(received) == sorted(emails)
        with db.connect() as conn:
            (send,) = ledger.sends_of_issue(conn, SAMPLE_SLUG)
            rows = {r.email: r for r in conn.execute(sa.select(deliveries))}
            counts = ledger.counts(conn, send.id)
        assert counts["sent"] == RECIPIENTS and send.state == "done"
        duplicates = sum(len(v) - 1 for v in received.values())
        options = SendOptions(connections=CONNECTIONS, batch_size=batch, rate=float(rate))
        bound = options.in_doubt_limit
        print(f"kills {kills}, in doubt {send.in_doubt}, duplicates {duplicates}, bound {bound}")
        assert duplicates <= send.in_doubt <= kills * bound
        signer = TokenSigner([KEY])
        for email, messages in received.items():
            ids = {check_message(m.data, email, db, signer, "crash") for m in messages}
            assert ids == {rows[email].message_id}, email

        # status reports the in-doubt count.
        status = subprocess.run(
            _command(workspace_dir, "status", SAMPLE_SLUG),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        doubt_line = next(ln for ln in status.stdout.splitlines() if ln.startswith("in doubt"))
        assert doubt_line.split()[-1] == f"{send.in_doubt:,}"
        n = send.in_doubt
        said = (
            f"In doubt: {n:,} messages were on their way when a run stopped; they were sent "
            f"again with the same Message-ID, so at most {n:,} people may have two copies."
            if n != 1
            else "In doubt: 1 message was on its way when a run stopped; it was sent again "
            "with the same Message-ID, so at most 1 person may have two copies."
        )
        assert said in " ".join(status.stdout.split()), status.stdout
        assert f"{send.runs} run(s)" in status.stdout

        # Running it once more sends nothing.
        total = len(server.messages)
        again = subprocess.run(
            _command(workspace_dir, *send_args),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0
        assert f"Already sent: {RECIPIENTS} sent, 0 failed; nothing to do." in again.stdout
        time.sleep(0.2)
        assert len(server.messages) == total
