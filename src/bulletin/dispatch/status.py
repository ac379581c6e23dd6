"""What ``bulletin status`` reports: each send of an issue, its counts, senders and problems."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy.engine import Engine

from bulletin.errors import BulletinError
from bulletin.store import ledger

PROBLEM_STATES = ("failed", "deferred")


@dataclass(frozen=True)
class SendStatus:
    """One send: its ledger row, recipients by state, and the failed or deferred ones."""

    send: ledger.SendRow
    counts: dict[str, int]
    problems: list[ledger.DeliveryRow]
    """Failed and deferred recipients (the first ``limit`` of them, by address)."""
    senders: list[ledger.WorkerRow] = field(default_factory=list)
    """The senders working on it now (not stopped, heard of within their lease)."""
    read_at: datetime | None = None
    """The database's clock when this was read (heartbeat ages are measured from it)."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def state(self) -> str:
        """Where the send stands, from its recipients and its live senders.

        ``done`` once no recipient is open, whatever was recorded last; ``running`` while a
        sender works on it; a send recorded running with no sender left was stopped
        without a word (killed): ``interrupted``.
        """
        if not any(self.counts[s] for s in ledger.OPEN_STATES):
            return "done"
        if self.senders:
            return "running"
        if self.send.state in ("running", "done"):
            return "interrupted"
        return self.send.state

    @property
    def open_count(self) -> int:
        """Recipients not finished yet (pending, claimed, on their way or deferred)."""
        return sum(self.counts[s] for s in ledger.OPEN_STATES)

    @property
    def problem_count(self) -> int:
        return sum(self.counts[s] for s in PROBLEM_STATES)

    @property
    def rate(self) -> float:
        """Messages accepted per second of sending (all runs together)."""
        seconds = self.send.active_seconds
        return self.counts["sent"] / seconds if seconds > 0 else 0.0


def issue_slug(issue: str) -> str:
    """The slug named by an ISSUE argument (a slug, or a path to the issue's folder)."""
    path = Path(issue.rstrip("/"))
    if path.name == "issue.yaml":
        path = path.parent
    return path.name


def send_status(
    engine: Engine, issue: str | None, list_slug: str | None = None, *, limit: int | None = 20
) -> list[SendStatus]:
    """Every send of ``issue`` (to lists including ``list_slug``, if given), oldest first.

    ``limit`` caps the failed/deferred recipients listed per send (None: all of them).
    With ``issue`` None: the sends of every issue, and an empty list when there are none
    (not an error: a new workspace has sent nothing yet).
    """
    slug = None if issue is None else issue_slug(issue)
    with engine.connect() as conn, conn.begin():
        found = ledger.sends_of_issue(conn, slug, list_slug)
        if not found and slug is not None:
            where = f" to {list_slug}" if list_slug else ""
            raise BulletinError(
                f"Issue {slug} has not been sent{where}.",
                hint=f"Send it with `bulletin send {slug} --list SLUG`.",
            )
        now = ledger.database_now(conn)
        return [
            SendStatus(
                s,
                ledger.counts(conn, s.id),
                list(ledger.delivery_rows(conn, s.id, PROBLEM_STATES, limit)),
                ledger.live_workers(conn, s.id, now),
                now,
            )
            for s in found
        ]


CSV_COLUMNS = (
    "lists",
    "email",
    "state",
    "attempts",
    "code",
    "reply",
    "next_attempt_utc",
    "message_id",
    "updated_utc",
)


def write_csv(
    engine: Engine, sends: list[ledger.SendRow], out: TextIO, *, problems_only: bool = False
) -> int:
    """Write the sends' recipients as CSV (failed and deferred only, if asked); row count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    n = 0
    states = PROBLEM_STATES if problems_only else None
    with engine.connect() as conn:
        for send in sends:
            lists = ",".join(send.lists)
            for r in ledger.delivery_rows(conn, send.id, states):
                writer.writerow(
                    (
                        lists,
                        r.email,
                        r.state,
                        r.attempts,
                        "" if r.last_code is None else r.last_code,
                        r.last_reply,
                        f"{r.next_attempt_at:%Y-%m-%d %H:%M:%S}"
                        if r.next_attempt_at and r.state == "deferred"
                        else "",
                        r.message_id or "",
                        f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
                    )
                )
                n += 1
    return n
