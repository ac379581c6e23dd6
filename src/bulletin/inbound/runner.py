"""Run through a mailbox in batches: parse outside the transaction, write inside it.

Each batch of messages is written in one transaction, so a crash or Ctrl-C keeps every
batch before it and loses at most one; the importers record what they processed, so a new
run skips it and carries on. A dry run writes everything in one transaction and rolls it
back: the counts are exactly what a real run would produce, and nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

from bulletin.errors import Location, Problem
from bulletin.inbound.mailboxes import Mailbox, MailItem
from bulletin.store.db import begin_write, write_transaction

T = TypeVar("T")

ProgressCallback = Callable[[int, int], None]
"""Called with (messages done, messages in the mailbox) as the import goes."""

BATCH_SIZE = 200
"""Messages per transaction: big enough that commits cost little, small enough that the
write lock is held for well under a second."""


@dataclass(frozen=True)
class Intake(Generic[T]):
    """One importer's rules, for any reader (a mail file here, an IMAP folder in :mod:`.imap`).

    ``prepare`` parses a message outside any transaction; ``apply`` acts on it inside one;
    ``key`` names the message across runs (its Message-ID, else a hash); ``recognised`` says
    whether the importer handles this kind of message at all (a bounce, a complaint, an
    auto-reply, a tokened unsubscribe): a reader that can leave other mail alone does so.
    """

    prepare: Callable[[MailItem], T]
    apply: Callable[[Connection, T], None]
    key: Callable[[T], str]
    recognised: Callable[[T], bool]


def run(
    engine: Engine,
    box: Mailbox,
    intake: Intake[T],
    *,
    dry_run: bool,
    batch_size: int = BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> list[Problem]:
    """Call the intake's ``prepare`` on every readable message and its ``apply`` on the
    results, in batches.

    Returns a located problem for each message that could not be read.
    """
    prepare, apply = intake.prepare, intake.apply
    total = box.count() if progress is not None else 0
    problems: list[Problem] = []
    done = 0

    def prepared() -> list[T]:
        nonlocal done
        batch: list[T] = []
        for item in items:
            done += 1
            if item.data is None:
                problems.append(
                    Problem(f"{item.where}: cannot read it: {item.error}.", Location(str(box.path)))
                )
            else:
                batch.append(prepare(item))
            if len(batch) >= batch_size:
                break
        return batch

    items = iter(box)
    if dry_run:
        with engine.connect() as conn:
            transaction = begin_write(conn)
            try:
                while batch := prepared():
                    for value in batch:
                        apply(conn, value)
                    if progress is not None:
                        progress(done, max(total, done))
            finally:
                transaction.rollback()
    else:
        while batch := prepared():
            with write_transaction(engine) as conn:
                for value in batch:
                    apply(conn, value)
            if progress is not None:
                progress(done, max(total, done))
    if progress is not None:
        progress(done, max(total, done))
    return problems
