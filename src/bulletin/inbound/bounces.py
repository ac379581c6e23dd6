"""``bulletin bounces import``: bounces and spam complaints into the subscriber store.

Whom a message is about, most trustworthy first:

1. a VERP token (``sender.return_path = "bounces+{token}@..."``) in the address the report
   was delivered to, or in the original's ``Return-Path`` / ARF ``Original-Mail-From``,
   verified as a bounce token (or an unsubscribe token). A report that came to a VERP
   address whose token does not verify is *invalid* and changes nothing: that is how
   forged or mangled bounces are told apart once VERP is on;
2. the addresses the report names (``Final-Recipient``, flufl.bounce's findings, ARF
   ``Original-Rcpt-To``, the original's ``To``) that are in the store;
3. an unsubscribe token in the original's ``List-Unsubscribe`` (feedback loops often
   redact the recipient's address but leave that header).

What happens: a hard bounce or a complaint suppresses the address at once (``bounced`` /
``complained`` for every list); a soft bounce is recorded, dated by the report's ``Date``,
and suppresses once ``bounces.soft_limit`` of them fall within ``bounces.soft_window_days``.
Every event keeps the server's diagnostic, which ``bulletin subscribers show`` prints, and
the report's Message-ID as its source, so importing the same mailbox again changes nothing.

Those rules are :func:`record_bounce` and :func:`record_complaint`, the one home of them for
every intake: mailboxes here, provider webhooks (:mod:`bulletin.inbound.webhooks`) and any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Connection, Engine

from bulletin.errors import Problem
from bulletin.inbound import runner
from bulletin.inbound.addresses import TokenAddress, addresses, header_values
from bulletin.inbound.addresses import unsubscribe_tokens as list_unsubscribe_tokens
from bulletin.inbound.mailboxes import MailItem, open_mailbox
from bulletin.inbound.reports import Failure, Report, analyse, message_key, parse
from bulletin.store.schema import utcnow
from bulletin.store.subscribers import (
    Subscriber,
    count_events,
    find_subscriber,
    get_subscriber_by_id,
    has_event_from,
    last_event_at,
    record_event,
    suppress,
)
from bulletin.tokens import TokenData, TokenSigner
from bulletin.workspace import Workspace

SOFT_BOUNCE = "soft-bounce"
"""The event kind of a soft bounce (hard bounces and complaints are the suppression events
``bounced`` and ``complained`` themselves)."""

SAMPLE_SIZE = 100
"""Findings kept in the report for the command to list."""

FindingKind = Literal["hard", "soft", "complaint", "unknown", "invalid", "already"]


@dataclass(frozen=True)
class BounceSettings:
    """What the import needs from the workspace: keys, the VERP pattern and the soft limit."""

    signer: TokenSigner
    return_path: str | None = None
    soft_limit: int = 3
    soft_window: timedelta = timedelta(days=30)

    @property
    def limits(self) -> SoftLimit:
        """The soft-bounce limit (:func:`record_bounce`)."""
        return SoftLimit(self.soft_limit, self.soft_window)

    @classmethod
    def from_workspace(cls, workspace: Workspace) -> BounceSettings:
        config = workspace.config
        return cls(
            signer=TokenSigner.from_workspace(workspace),
            return_path=config.sender.return_path,
            soft_limit=config.bounces.soft_limit,
            soft_window=timedelta(days=config.bounces.soft_window_days),
        )


@dataclass(frozen=True)
class Finding:
    """One subscriber-level outcome, for the command's list."""

    email: str
    outcome: FindingKind
    detail: str
    suppressed: bool = False
    where: str = ""


@dataclass
class BounceReport:
    """What an import did (or, with ``dry_run``, would do).

    ``read`` counts messages; ``hard``, ``soft``, ``complaints``, ``already`` and
    ``unknown`` count recipients (a report can name several); ``suppressed`` counts
    addresses whose status changed now.
    """

    path: Path | str
    kind: str
    dry_run: bool
    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    suppressed: int = 0
    already: int = 0
    ignored: int = 0
    not_bounces: int = 0
    unknown: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def unreadable(self) -> int:
        return len(self.problems)

    def summary_rows(self) -> list[tuple[str, int]]:
        """(label, count) rows of the summary table, in order."""
        return [
            ("messages read", self.read),
            ("hard bounces", self.hard),
            ("soft bounces", self.soft),
            ("complaints", self.complaints),
            ("suppressed now", self.suppressed),
            ("already imported", self.already),
            ("ignored (delays, receipts)", self.ignored),
            ("not a bounce", self.not_bounces),
            ("unknown recipients", self.unknown),
            ("invalid tokens", self.invalid),
            ("unreadable", self.unreadable),
        ]

    def add_finding(self, finding: Finding) -> None:
        """Keep ``finding`` for the command's list (the first :data:`SAMPLE_SIZE`)."""
        if len(self.findings) < SAMPLE_SIZE:
            self.findings.append(finding)


@dataclass(frozen=True)
class _Prepared:
    where: str
    key: str
    report: Report


def import_bounces(
    engine: Engine,
    path: Path,
    settings: BounceSettings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: runner.ProgressCallback | None = None,
    batch_size: int = runner.BATCH_SIZE,
) -> BounceReport:
    """Read the bounces in ``path`` (Maildir, mbox or one message) and act on them.

    ``now`` (default: the current time) is the clock: a report dated later counts as sent
    now. With ``dry_run`` the store is left exactly as it was.
    """
    box = open_mailbox(path)
    report = BounceReport(path=box.path, kind=box.kind, dry_run=dry_run)
    intake = bounce_intake(settings, report, now)
    report.problems = runner.run(
        engine, box, intake, dry_run=dry_run, batch_size=batch_size, progress=progress
    )
    return report


def bounce_intake(
    settings: BounceSettings, report: BounceReport, now: datetime | None = None
) -> runner.Intake[_Prepared]:
    """The rules of ``bounces import``, counting into ``report``, for any mail reader.

    Recognised: delivery reports (bounces, delays, receipts), complaints and auto-replies;
    anything else (a person's reply) is not this importer's business.
    """
    importer = _Importer(settings, report, now or utcnow())
    return runner.Intake(
        importer.prepare,
        importer.apply,
        key=lambda prepared: prepared.key,
        recognised=lambda prepared: prepared.report.verdict != "other",
    )


class _Importer:
    def __init__(self, settings: BounceSettings, report: BounceReport, now: datetime) -> None:
        self.settings = settings
        self.report = report
        self.now = now
        self.verp = (
            TokenAddress.from_template(settings.return_path) if settings.return_path else None
        )

    def prepare(self, item: MailItem) -> _Prepared:
        assert item.data is not None
        msg = parse(item.data)
        return _Prepared(item.where, message_key(msg, item.data), analyse(msg))

    def apply(self, conn: Connection, prepared: _Prepared) -> None:
        report = self.report
        report.read += 1
        analysis = prepared.report
        if analysis.verdict in ("auto-reply", "other"):
            report.not_bounces += 1
            return
        if analysis.verdict not in ("bounce", "complaint"):
            report.ignored += 1
            return
        verp = self._verp_tokens(analysis)
        if verp:
            self._by_verp(conn, prepared, verp)
        elif analysis.verdict == "complaint":
            self._complaint_by_address(conn, prepared)
        else:
            self._bounce_by_address(conn, prepared)

    # --- whom ---------------------------------------------------------------------------

    def _verp_tokens(self, analysis: Report) -> list[str]:
        if self.verp is None:
            return []
        candidates = list(analysis.head.delivered_to) + list(analysis.original_mail_from)
        if analysis.head.original is not None:
            candidates += addresses(header_values(analysis.head.original, "return-path"))
        return self.verp.tokens(candidates)

    def _by_verp(self, conn: Connection, prepared: _Prepared, tokens: list[str]) -> None:
        signer = self.settings.signer
        # A bounce token, or an unsubscribe token from a message composed without one: both
        # prove that we sent the message to that subscriber.
        verified: list[TokenData] = []
        for token in tokens:
            found = signer.verify_bounce(token) or signer.verify_unsubscribe(token)
            if found is not None:
                verified.append(found)
        if not verified:
            self.report.invalid += 1
            self._note("", "invalid", "VERP token does not verify", prepared)
            return
        for subscriber_id in dict.fromkeys(v.subscriber_id for v in verified):
            sub = get_subscriber_by_id(conn, subscriber_id)
            if sub is None:
                self._unknown(f"subscriber #{subscriber_id}", prepared)
                continue
            analysis = prepared.report
            if analysis.verdict == "complaint":
                self._complain(conn, sub, prepared)
            else:
                worst = analysis.worst()
                assert worst is not None
                self._bounce(conn, sub, worst, prepared)

    def _bounce_by_address(self, conn: Connection, prepared: _Prepared) -> None:
        analysis = prepared.report
        known: list[tuple[Subscriber, Failure]] = []
        missing: list[Failure] = []
        for failure in analysis.failures:
            sub = find_subscriber(conn, failure.address) if failure.address else None
            if sub is None:
                missing.append(failure)
            elif all(s.id != sub.id for s, _ in known):
                known.append((sub, failure))
        if not known and analysis.head.original is not None:
            # No address matched (an alias, a forward): the token in the returned message's
            # List-Unsubscribe still says whom we sent it to.
            sub = self._by_list_unsubscribe(conn, analysis.head.original)
            worst = analysis.worst()
            if sub is not None and worst is not None:
                known.append((sub, worst))
                missing = []
        for sub, failure in known:
            self._bounce(conn, sub, failure, prepared)
        for failure in missing:
            self._unknown(failure.address or "(no address)", prepared)

    def _complaint_by_address(self, conn: Connection, prepared: _Prepared) -> None:
        analysis = prepared.report
        sub = None
        if analysis.head.original is not None:
            sub = self._by_list_unsubscribe(conn, analysis.head.original)
        for address in analysis.complaint_addresses:
            if sub is not None:
                break
            sub = find_subscriber(conn, address)
        if sub is None:
            shown = ", ".join(analysis.complaint_addresses) or "(no address)"
            self._unknown(shown, prepared)
            return
        self._complain(conn, sub, prepared)

    def _by_list_unsubscribe(self, conn: Connection, original: Message) -> Subscriber | None:
        signer = self.settings.signer
        for token in list_unsubscribe_tokens(header_values(original, "list-unsubscribe")):
            verified = signer.verify_unsubscribe(token)
            if verified is not None:
                return get_subscriber_by_id(conn, verified.subscriber_id)
        return None

    def _unknown(self, shown: str, prepared: _Prepared) -> None:
        self.report.unknown += 1
        self._note(shown, "unknown", "not in the store", prepared)

    def _note(
        self,
        email: str,
        outcome: FindingKind,
        detail: str,
        prepared: _Prepared,
        suppressed: bool = False,
    ) -> None:
        self.report.add_finding(Finding(email, outcome, detail, suppressed, prepared.where))

    # --- what ---------------------------------------------------------------------------

    def _source(self, prepared: _Prepared) -> str:
        kind = "complaint" if prepared.report.verdict == "complaint" else "bounce"
        return f"{kind} {prepared.key}"

    def _seen(self, conn: Connection, sub: Subscriber, source: str, prepared: _Prepared) -> bool:
        """Whether this report was imported for this subscriber before (then count it)."""
        if not has_event_from(conn, sub.id, source):
            return False
        self.report.already += 1
        self._note(sub.email, "already", "imported before", prepared)
        return True

    def _complain(self, conn: Connection, sub: Subscriber, prepared: _Prepared) -> None:
        source = self._source(prepared)
        if self._seen(conn, sub, source, prepared):
            return
        detail = prepared.report.complaint_detail
        changed = record_complaint(conn, sub, source, detail)
        self.report.complaints += 1
        self.report.suppressed += changed
        self._note(sub.email, "complaint", detail, prepared, changed)

    def _bounce(
        self, conn: Connection, sub: Subscriber, failure: Failure, prepared: _Prepared
    ) -> None:
        source = self._source(prepared)
        if self._seen(conn, sub, source, prepared):
            return
        when = min(prepared.report.head.date or self.now, self.now)
        changed = record_bounce(
            conn, sub, failure.severity, failure.diagnostic, source, when, self.settings.limits
        )
        if failure.severity == "hard":
            self.report.hard += 1
        else:
            self.report.soft += 1
        self.report.suppressed += changed
        self._note(sub.email, failure.severity, failure.diagnostic, prepared, changed)


# --- the rules, for every intake (mailboxes, IMAP, webhooks) ------------------------------


@dataclass(frozen=True)
class SoftLimit:
    """When soft bounces suppress: ``count`` of them within ``window``."""

    count: int = 3
    window: timedelta = timedelta(days=30)

    @classmethod
    def from_workspace(cls, workspace: Workspace) -> SoftLimit:
        bounces = workspace.config.bounces
        return cls(bounces.soft_limit, timedelta(days=bounces.soft_window_days))


def record_complaint(conn: Connection, sub: Subscriber, source: str, detail: str) -> bool:
    """A spam complaint about ``sub``: suppressed at once; whether its status changed."""
    return suppress(conn, sub.id, "complained", source, detail=detail)


def record_bounce(
    conn: Connection,
    sub: Subscriber,
    severity: Literal["hard", "soft"],
    diagnostic: str,
    source: str,
    when: datetime,
    limit: SoftLimit,
) -> bool:
    """A bounce for ``sub`` (``when``: its date, never later than now); whether it suppressed.

    A hard bounce suppresses at once; a soft one is recorded at ``when`` and suppresses once
    ``limit.count`` of them fall within ``limit.window`` since the last re-subscription.
    The caller makes sure the same report is not recorded twice (its ``source``).
    """
    if severity == "hard":
        return suppress(conn, sub.id, "bounced", source, detail=diagnostic)
    record_event(conn, sub.id, SOFT_BOUNCE, detail=diagnostic, source=source, at=when)
    count = _soft_count(conn, sub.id, when, limit)
    # Only an address still mailed (or unsubscribed, which "bounced" outranks) changes.
    if count < limit.count or sub.status not in ("active", "unsubscribed"):
        return False
    days = limit.window.days
    detail = f"{count} soft bounces within {days} days; last: {diagnostic}"
    return suppress(conn, sub.id, "bounced", source, detail=detail)


def _soft_count(conn: Connection, subscriber_id: int, when: datetime, limit: SoftLimit) -> int:
    """Soft bounces in the window ending at ``when``, since the last re-subscription.

    Someone re-subscribed after a bounce starts with a clean slate.
    """
    since = when - limit.window
    resubscribed = last_event_at(conn, subscriber_id, "resubscribed")
    if resubscribed is not None and resubscribed > since:
        since = resubscribed
    return count_events(conn, subscriber_id, SOFT_BOUNCE, since=since, until=when)
