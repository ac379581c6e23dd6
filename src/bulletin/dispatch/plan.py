"""Before a send: the options, the plan shown for confirmation, dry runs and test sends.

:func:`prepare_send` does everything a send needs before the first message: it runs
``bulletin check`` (errors stop it), renders the issue, finds the send in the ledger (to
resume it, or to say it is done) and counts the recipients. The :class:`SendPlan` it
returns is what the command shows and asks about, and what :mod:`bulletin.dispatch.engine`
runs.

Each recipient's message is made by :class:`~bulletin.dispatch.composer.Composer`.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from bulletin.dispatch.composer import Composer, composer_for
from bulletin.dispatch.ratelimit import describe
from bulletin.dispatch.transport import Delivery, Transport
from bulletin.errors import BulletinError, Problem, ProblemsError
from bulletin.mail.compose import InvalidRecipient, Recipient
from bulletin.preflight import refuse_unless_ready
from bulletin.render.types import RenderedIssue
from bulletin.render.values import sample_values
from bulletin.store import ledger
from bulletin.workspace import SendConfig, Workspace

TEST_PREFIX = "[TEST] "

_CLAIM_AHEAD = 1.0
"""Seconds of work a sender claims at a time (see :meth:`SendOptions.claim_size`)."""


class CheckFailed(ProblemsError):
    """``bulletin check`` found errors in the issue: nothing is sent."""


class IssueChanged(BulletinError):
    """The issue (or the sender settings) changed after its send started."""


class NoRecipients(BulletinError):
    """The lists have nobody to send to."""


@dataclass(frozen=True)
class SendOptions:
    """How a send runs: ``[send]`` in bulletin.toml, overridden by command-line options."""

    connections: int = 4
    rate: float = 20.0
    """Messages per second over all connections; 0: no limit."""
    rate_hour: int = 0
    batch_size: int = 200
    max_attempts: int = 5
    max_age: float = 48 * 3600.0
    """Seconds after the first try when a deferred recipient is given up."""
    backoff: float = 60.0
    backoff_cap: float = 3600.0
    max_wait: float = 300.0
    pause_after: int = 10
    reconnect_delay: float = 0.5
    """First wait before connecting again after a failed attempt (doubles, up to 30 s)."""
    commit_interval: float = 0.05
    """Longest time a result waits before it is committed to the ledger. A kill loses the
    results not yet committed (those recipients get the message twice), so short; one
    SQLite commit costs well under a millisecond."""
    lease_seconds: float = 60.0
    """How long a sender holds the recipients it claimed without renewing the lease."""
    join: bool = True
    """Join the send when other senders run it (False: refuse, :class:`SendBusy`)."""

    @classmethod
    def from_config(cls, config: SendConfig, **overrides: Any) -> SendOptions:
        """The ``[send]`` settings with ``overrides`` (None values are ignored) on top."""
        options = cls(
            connections=config.connections,
            rate=config.rate,
            rate_hour=config.rate_hour,
            batch_size=config.batch_size,
            max_attempts=config.max_attempts,
            max_age=config.max_age_hours * 3600.0,
            backoff=config.backoff,
            backoff_cap=config.backoff_cap,
            max_wait=config.max_wait,
            pause_after=config.pause_after,
            lease_seconds=config.lease_seconds,
        )
        return replace(options, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def batch(self) -> int:
        """Recipients claimed at a time: ``batch_size``, but enough to keep every
        connection busy while the next batch is claimed."""
        return max(self.batch_size, 2 * self.connections)

    def window(self, rate: float) -> int:
        """Most recipients allowed on the wire (``sending``) at once, at ``rate`` messages/s.

        Promotions ride on the result commits, one per ``commit_interval``: between two of
        them the workers take ``rate * commit_interval`` jobs, and two per connection are
        left so that none waits for the next promotion. Never more than a batch; the
        configured rate caps the measured one. This is also the most a crash can leave in
        doubt at that rate: on the wire, waiting for a rate-limit slot, or sent and not
        yet recorded.
        """
        if self.rate:
            rate = min(rate, self.rate)
        wanted = 2 * self.connections + rate * self.commit_interval
        return self.batch if wanted >= self.batch else math.ceil(wanted)

    def claim_size(self, rate: float) -> int:
        """Recipients to claim at once at ``rate`` messages/s (this sender's, measured).

        About a second of work -- at least two per connection, at most a batch -- so that
        claims stay few when a sender goes fast, and a sender never sits on much more than
        it can send soon while other senders of the send run out of work.
        """
        if self.rate:
            rate = min(rate, self.rate)
        return max(2 * self.connections, min(self.batch, math.ceil(rate * _CLAIM_AHEAD)))

    @property
    def in_doubt_limit(self) -> int:
        """The most recipients a crash can leave in doubt: the window at the fastest rate."""
        return self.window(self.rate or math.inf)

    def describe_rate(self) -> str:
        return describe(self.rate, self.rate_hour)


def fingerprint(workspace: Workspace, rendered: RenderedIssue) -> str:
    """What a send's messages are made of, hashed: a resume must send the same thing.

    The rendered HTML and text (static parts and slots), the subject and the settings that
    go into headers (newsletter, sender, DKIM identity; never a secret).
    """
    digest = hashlib.sha256()
    config = workspace.config

    def add(text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)

    add(rendered.subject)
    add(rendered.from_name)
    for compiled in (rendered.html, rendered.text):
        add(compiled.escape)
        for chunk in compiled.chunks:
            add(chunk)
        for slot in compiled.slots:
            add(f"{slot.name}\x00{slot.fallback}")
    settings = {
        "newsletter": config.newsletter.model_dump(mode="json"),
        "sender": config.sender.model_dump(mode="json"),
        "dkim": [config.dkim.selector, config.dkim.domain, config.dkim.headers],
    }
    add(json.dumps(settings, sort_keys=True))
    return digest.hexdigest()


@dataclass(frozen=True)
class SendPlan:
    """What a send will do, shown before asking for confirmation."""

    workspace: Workspace
    issue_slug: str
    subject: str
    lists: tuple[str, ...]
    list_ids: tuple[int, ...]
    options: SendOptions
    rendered: RenderedIssue | None
    """None only when the send is already done (nothing is rendered then)."""
    fingerprint: str = ""
    warnings: tuple[Problem, ...] = ()
    existing: ledger.SendRow | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    """For an existing send: recipients by state."""
    recipients: int = 0
    """Recipients this run will deal with (for a resume: those not finished yet)."""
    covered: int = 0
    """List members left out because another send of this issue already reached them."""
    senders: tuple[ledger.WorkerRow, ...] = ()
    """The senders running the send right now, oldest first: this run will join them."""
    headers: tuple[tuple[str, str], ...] = ()
    """From, Reply-To and List-Unsubscribe as one recipient's message has them (shown in
    the plan so that a placeholder or a wrong address is seen before anything goes out)."""

    @property
    def done(self) -> bool:
        return self.existing is not None and self.existing.state == "done"

    @property
    def resuming(self) -> bool:
        return self.existing is not None and not self.done

    @property
    def joining(self) -> bool:
        return bool(self.senders) and not self.done

    def composer(self, subject_prefix: str = "") -> Composer:
        """A composer for this issue (``subject_prefix`` e.g. for test messages)."""
        assert self.rendered is not None, "a finished send has nothing to compose"
        return composer_for(self.workspace, self.rendered, subject_prefix=subject_prefix)

    def summary_rows(self, smtp: str) -> list[tuple[str, str]]:
        """The plan as label/value rows; ``smtp`` describes the relay."""
        rows = [
            ("Issue", self.issue_slug),
            ("Subject", self.subject),
            ("Lists", ", ".join(self.lists)),
        ]
        if self.resuming:
            c = self.counts
            finished = c.get("sent", 0) + c.get("failed", 0) + c.get("skipped", 0)
            how = "joining" if self.joining else "resuming"
            rows.append(
                (
                    "Recipients",
                    f"{self.recipients:,} left of {sum(c.values()):,} "
                    f"({how}: {c.get('sent', 0):,} sent, {finished:,} finished)",
                )
            )
        else:
            text = f"{self.recipients:,} (subscribed, suppressed addresses left out)"
            if self.covered:
                text += f"; {self.covered:,} more already got this issue from another send"
            rows.append(("Recipients", text))
        config = self.workspace.config
        heads = dict(self.headers)
        rows += [
            ("From", heads.get("From", "")),
            ("Reply-To", heads.get("Reply-To", "none (replies go to From)")),
            ("Links", config.newsletter.base_url),
        ]
        if "List-Unsubscribe" in heads:
            rows.append(("Unsubscribe", f"{heads['List-Unsubscribe']} (one recipient's)"))
        rows += [
            ("SMTP", smtp),
            ("Rate", self.options.describe_rate() + (" for all senders" if self.joining else "")),
            ("Connections", str(self.options.connections)),
        ]
        if self.joining:
            rows.append(("Senders", f"joining {describe_senders(self.senders)}"))
        return rows


def describe_senders(senders: Sequence[ledger.WorkerRow]) -> str:
    """``process 4242 on mail-2`` or ``3 senders: process 4242 on mail-2, ...``."""
    each = ", ".join(f"process {w.pid} on {w.host}" for w in senders)
    return each if len(senders) == 1 else f"{len(senders)} senders: {each}"


def _senders(
    conn: Connection, send: ledger.SendRow | None, options: SendOptions
) -> tuple[ledger.WorkerRow, ...]:
    """The senders running ``send`` now; :class:`SendBusy` if there are and we may not join."""
    if send is None or send.state == "done":
        return ()
    live = ledger.live_workers(conn, send.id, ledger.database_now(conn))
    if live and not options.join:
        raise ledger.busy(live)
    return tuple(live)


def prepare_send(
    workspace: Workspace,
    engine: Engine,
    issue: str,
    list_slugs: tuple[str, ...] | list[str],
    options: SendOptions,
    *,
    test: bool = False,
) -> SendPlan:
    """Check, render and count: everything before the confirmation prompt.

    Raises :class:`CheckFailed` when ``bulletin check`` finds errors, :class:`IssueChanged`
    when resuming a send of an issue edited since, :class:`NoRecipients` when there is
    nobody to send to, :class:`~bulletin.store.ledger.SendBusy` when other senders run the
    send and ``options.join`` is off (otherwise the plan's ``senders`` are the ones this run
    will join), :class:`~bulletin.preflight.NotReady` when the relay is not on loopback
    and the workspace or the issue is not ready for real readers (placeholders, base_url,
    a future date), and :class:`~bulletin.store.subscribers.UnknownList`. With ``test``
    (for :func:`send_test`) the ledger is not looked at and nobody is counted.

    The ledger is read twice: first so that a finished or running send is reported before
    the issue is checked and rendered, then again after that, because another process may
    have started the send meanwhile (two runs started at once).
    """
    from bulletin.render.checks import run_check

    if not list_slugs and not test:
        raise BulletinError("Name at least one list to send to (--list SLUG).")
    issue_dir = workspace.issue_dir(issue)
    slugs = tuple(sorted(set(list_slugs)))
    with engine.connect() as conn:
        ids = ledger.list_ids(conn, slugs)
        slug = issue_dir.name
        existing = None if test else ledger.find_send(conn, slug, slugs)
        counts = ledger.counts(conn, existing.id) if existing is not None else {}
        senders = _senders(conn, existing, options)
    base = SendPlan(
        workspace=workspace,
        issue_slug=slug,
        subject=existing.subject if existing else "",
        lists=slugs,
        list_ids=tuple(ids[s] for s in slugs),
        options=options,
        rendered=None,
        existing=existing,
        counts=counts,
        senders=senders,
    )
    if base.done:
        return base

    report = run_check(workspace, issue_dir)
    if report.errors:
        raise CheckFailed(
            [p for p in report.problems if p.severity == "error"],
            summary=f"bulletin check found {report.summary()} in {report.issue_path}; "
            "nothing was sent.",
            hint=f"Fix them (see `bulletin check {issue}`) and run the send again.",
        )
    # The check loaded and rendered the issue already; its result is what gets sent.
    rendered = report.rendered
    assert rendered is not None, "a check without errors has rendered the issue"
    slug = rendered.loaded.slug
    printed = fingerprint(workspace, rendered)
    plan = replace(
        base,
        issue_slug=slug,
        subject=rendered.subject,
        rendered=rendered,
        fingerprint=printed,
        warnings=tuple(p for p in report.problems if p.severity == "warning"),
    )
    if test:
        return plan
    # The check found them as warnings; mail to real people waits until they are fixed.
    refuse_unless_ready(workspace, list(plan.warnings), slug)
    with engine.connect() as conn, conn.begin():
        existing = ledger.find_send(conn, slug, slugs)
        if existing is not None:
            counts = ledger.counts(conn, existing.id)
            senders = _senders(conn, existing, options)
        else:
            # Not "covered by another send" if a process creates this one meanwhile: the
            # count leaves this send's own recipients in, and the engine's start then finds
            # it running (and joins it) or done.
            ledger.refresh_statistics(conn, *ledger.RECIPIENT_TABLES)
            n, covered = ledger.count_eligible(conn, slug, slugs)
    if existing is not None:
        plan = replace(plan, existing=existing, counts=counts, senders=senders)
        if plan.done:
            return plan
        if existing.fingerprint != printed:
            raise IssueChanged(
                f"Issue {slug} changed since its send to {', '.join(slugs)} started "
                f"({counts.get('sent', 0):,} of {existing.total:,} recipients already have "
                "it), so the rest would get different content.",
                hint="Undo the change (the content, the subject or the [newsletter]/[sender] "
                "settings) and run the same command again to finish the send.",
            )
        left = sum(counts.get(s, 0) for s in ledger.OPEN_STATES)
        plan = replace(plan, recipients=left)
        return replace(plan, headers=_sample_headers(plan, engine))
    if n == 0:
        raise NoRecipients(
            f"Nobody to send {slug} to on {', '.join(slugs)}"
            + (f": all {covered:,} members already got it from another send." if covered else "."),
            hint="Add subscribers with `bulletin subscribers import FILE --list SLUG`."
            if not covered
            else "See `bulletin status " + slug + "`.",
        )
    plan = replace(plan, recipients=n, covered=covered)
    return replace(plan, headers=_sample_headers(plan, engine))


def _sample_headers(plan: SendPlan, engine: Engine) -> tuple[tuple[str, str], ...]:
    """From, Reply-To and List-Unsubscribe of the first recipient's message, as built."""
    from email import message_from_bytes, policy

    composer = plan.composer()
    with engine.connect() as conn:
        first = next(iter(_dry_run_recipients(plan, conn)), None)
    if first is None:
        return ()
    values = composer.values(
        first.subscriber_id, first.list_id, first.email, first.name, first.attributes
    )
    try:
        envelope = composer.envelope(
            Recipient(first.email, first.name, values), composer.message_id_for(first.email)
        )
    except InvalidRecipient:
        return ()  # the send reports that recipient; the plan shows what it can
    message = message_from_bytes(envelope.data, policy=policy.default)
    wanted = ("From", "Reply-To", "List-Unsubscribe")
    return tuple((name, str(message[name])) for name in wanted if message[name] is not None)


# --- dry run ------------------------------------------------------------------------------


@dataclass
class DryRunReport:
    """What a dry run built: message count and size, problems, sample files."""

    messages: int = 0
    bytes: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    """The first problems: ``(address, reason)``."""
    samples: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def dry_run(
    plan: SendPlan,
    engine: Engine,
    out_dir: Path,
    *,
    samples: int = 3,
    keep_failures: int = 20,
    on_progress: Callable[[int, int], None] | None = None,
) -> DryRunReport:
    """Build every message of the send without sending any, and write a few as .eml.

    Every personalisation problem surfaces (an address or value that cannot go in a
    message); the ledger is not touched. Recipients are read page by page and each message
    is dropped once measured, so memory stays flat on any list size.
    """
    composer = plan.composer()
    report = DryRunReport()
    started = time.perf_counter()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*.eml"):
            old.unlink()
    except OSError as exc:
        raise BulletinError(f"Cannot write the samples to {out_dir}: {exc.strerror}.") from None
    with engine.connect() as conn:
        for n, r in enumerate(_dry_run_recipients(plan, conn), 1):
            values = composer.values(r.subscriber_id, r.list_id, r.email, r.name, r.attributes)
            recipient = Recipient(r.email, r.name, values)
            try:
                envelope = composer.envelope(recipient, composer.message_id_for(r.email))
            except InvalidRecipient as exc:
                report.failed += 1
                if len(report.failures) < keep_failures:
                    report.failures.append((r.email, exc.reason))
                continue
            report.messages += 1
            report.bytes += len(envelope.data)
            if len(report.samples) < samples:
                path = out_dir / f"{len(report.samples) + 1:02d}-{_file_safe(r.email)}.eml"
                path.write_bytes(envelope.data)
                report.samples.append(path)
            if on_progress is not None and n % 500 == 0:
                on_progress(n, plan.recipients)
    report.seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(report.messages + report.failed, plan.recipients)
    return report


def _dry_run_recipients(plan: SendPlan, conn: Any) -> Iterator[ledger.EligibleRecipient]:
    if plan.existing is not None:
        return ledger.iter_open(conn, plan.existing.id)
    return ledger.iter_eligible(conn, plan.issue_slug, plan.lists)


def _file_safe(email: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in email)
    return keep[:60]


# --- test sends -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """What happened to one test message."""

    __test__ = False  # not a pytest test class, despite the name

    address: str
    delivery: Delivery
    message_id: str


def send_test(
    plan: SendPlan, engine: Engine, transport: Transport, addresses: list[str]
) -> list[TestResult]:
    """Send the issue to ``addresses`` only, subject prefixed ``[TEST]``, ledger untouched.

    An address that is a subscriber gets their own values (name, attributes, a working
    unsubscribe link); any other gets a sample unsubscribe link. Each message has a fresh
    Message-ID, so a mail client never takes the real one, later, for a duplicate of it.
    Raises the transport's ConnectFailed-derived BulletinError if the relay is down.
    """
    from bulletin.dispatch.transport import ConnectFailed
    from bulletin.store.subscribers import find_subscriber

    composer = plan.composer(subject_prefix=TEST_PREFIX)
    domain = composer.template.from_email.rpartition("@")[2]
    recipients: list[tuple[str, Recipient]] = []
    with engine.connect() as conn:
        for address in addresses:
            sub = find_subscriber(conn, address)
            if sub is not None:
                # A test needs no list; its unsubscribe link then covers every list (None).
                list_id = plan.list_ids[0] if plan.list_ids else None
                values = composer.values(sub.id, list_id, sub.email, sub.name, sub.attributes)
                recipients.append((address, Recipient(sub.email, sub.name, values)))
                continue
            values = sample_values(plan.workspace, plan.issue_slug, email=address, name="")
            recipients.append((address, Recipient(address, "", values)))
    try:
        connection = transport.connect()
    except ConnectFailed as exc:
        raise BulletinError(exc.reply, hint="No test message was sent.") from None
    results: list[TestResult] = []
    try:
        for address, recipient in recipients:
            message_id = f"<{plan.issue_slug[:40]}.test-{secrets.token_hex(8)}@{domain}>"
            try:
                envelope = composer.envelope(recipient, message_id)
            except InvalidRecipient as exc:
                results.append(TestResult(address, Delivery("failed", None, exc.reason), ""))
                continue
            delivery = connection.send(envelope)
            results.append(TestResult(address, delivery, message_id))
            if delivery.reconnect:
                connection.close()
                try:
                    connection = transport.connect()
                except ConnectFailed as exc:
                    left = recipients[len(results) :]
                    results += [
                        TestResult(a, Delivery("deferred", exc.code, exc.reply), "")
                        for a, _ in left
                    ]
                    break
    finally:
        connection.close()
    return results
