"""``bulletin unsubscribes import``: mailto unsubscribes into the subscriber store.

Every message carries ``List-Unsubscribe: <https://.../u/TOKEN>, <mailto:unsubscribe+TOKEN@...>``
when ``sender.unsubscribe_mailto`` is set. A mail client's "unsubscribe" button may send a
message to that address; whatever its subject and body, the token in the address it was
delivered to says who and from which list (or every list), and its signature proves we
issued it. A message without a token that verifies is counted as invalid and changes
nothing; the report never says why a token failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Connection, Engine

from bulletin.errors import Problem
from bulletin.inbound import runner
from bulletin.inbound.addresses import TokenAddress, recipients
from bulletin.inbound.mailboxes import MailItem, open_mailbox
from bulletin.inbound.reports import message_key, parse
from bulletin.store.subscribers import unsubscribe, unsubscribe_target
from bulletin.tokens import TokenSigner, UnsubscribeToken
from bulletin.workspace import Workspace

SOURCE = "mailto"
"""The source recorded with each unsubscribe (``subscribers show`` prints it)."""

SAMPLE_SIZE = 100
"""Unsubscribes kept in the report for the command to list."""


@dataclass(frozen=True)
class UnsubscribeSettings:
    """What the import needs from the workspace: the keys and the mailto address."""

    signer: TokenSigner
    mailto: str | None = None

    @classmethod
    def from_workspace(cls, workspace: Workspace) -> UnsubscribeSettings:
        return cls(
            signer=TokenSigner.from_workspace(workspace),
            mailto=workspace.config.sender.unsubscribe_mailto,
        )


@dataclass
class UnsubscribeReport:
    """What an import did (or, with ``dry_run``, would do); every message counted once."""

    path: Path | str
    kind: str
    dry_run: bool
    read: int = 0
    unsubscribed: int = 0
    already: int = 0
    unknown: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)
    done: list[tuple[str, str]] = field(default_factory=list)
    """(address, "every list" or the list slug) of the first unsubscribes made now."""

    @property
    def unreadable(self) -> int:
        return len(self.problems)

    def summary_rows(self) -> list[tuple[str, int]]:
        """(label, count) rows of the summary table, in order."""
        return [
            ("messages read", self.read),
            ("unsubscribed now", self.unsubscribed),
            ("already unsubscribed", self.already),
            ("unknown recipients", self.unknown),
            ("invalid tokens", self.invalid),
            ("unreadable", self.unreadable),
        ]


@dataclass(frozen=True)
class _Prepared:
    key: str
    tokens: tuple[UnsubscribeToken, ...]


def import_unsubscribes(
    engine: Engine,
    path: Path,
    settings: UnsubscribeSettings,
    *,
    dry_run: bool = False,
    progress: runner.ProgressCallback | None = None,
    batch_size: int = runner.BATCH_SIZE,
) -> UnsubscribeReport:
    """Unsubscribe everyone who mailed a tokened unsubscribe address in ``path``.

    ``path`` is a Maildir folder, an mbox file or one message. Idempotent: a second import
    of the same mail finds everyone already unsubscribed. With ``dry_run`` the store is
    left exactly as it was.
    """
    box = open_mailbox(path)
    report = UnsubscribeReport(path=box.path, kind=box.kind, dry_run=dry_run)
    intake = unsubscribe_intake(settings, report)
    report.problems = runner.run(
        engine, box, intake, dry_run=dry_run, batch_size=batch_size, progress=progress
    )
    return report


def unsubscribe_intake(
    settings: UnsubscribeSettings, report: UnsubscribeReport
) -> runner.Intake[_Prepared]:
    """The rules of ``unsubscribes import``, counting into ``report``, for any mail reader.

    Recognised: a message holding a token that verifies; anything else (a person writing to
    the address) is left to people.
    """
    # Without a configured mailbox, any plus-address is a candidate: the signature decides.
    matcher = TokenAddress.plus(settings.mailto)
    signer = settings.signer

    def prepare(item: MailItem) -> _Prepared:
        assert item.data is not None
        msg = parse(item.data)
        candidates = matcher.tokens(recipients(msg))
        verified = [v for v in map(signer.verify_unsubscribe, candidates) if v is not None]
        return _Prepared(message_key(msg, item.data), tuple(dict.fromkeys(verified)))

    def apply(conn: Connection, prepared: _Prepared) -> None:
        report.read += 1
        if not prepared.tokens:
            report.invalid += 1
            return
        for token in prepared.tokens:
            _apply_token(conn, report, token, prepared.key)

    return runner.Intake(prepare, apply, key=lambda p: p.key, recognised=lambda p: bool(p.tokens))


def _apply_token(
    conn: Connection, report: UnsubscribeReport, token: UnsubscribeToken, key: str
) -> None:
    target = unsubscribe_target(conn, token.subscriber_id, token.list_id)
    if target is None:
        report.unknown += 1  # erased since, or its list deleted: nothing left to stop
        return
    slug = target.list_slug
    already = target.list_done if slug is not None else target.all_done
    unsubscribe(conn, target.subscriber.id, slug, SOURCE, detail=f"mail {key}")
    if already:
        report.already += 1
        return
    report.unsubscribed += 1
    if len(report.done) < SAMPLE_SIZE:
        report.done.append((target.subscriber.email, slug or "every list"))
