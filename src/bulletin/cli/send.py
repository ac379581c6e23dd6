"""``bulletin send`` and ``bulletin status``: delivering an issue and seeing how it went."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from bulletin import workspace as ws
from bulletin.cli._common import Context, console, err_console, pass_ctx
from bulletin.errors import BulletinError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bulletin.dispatch.engine import SendResult
    from bulletin.dispatch.plan import SendPlan
    from bulletin.dispatch.smtp import SmtpTransport
    from bulletin.dispatch.status import SendStatus


def _rate(value: str) -> float:
    """``--rate`` as messages per second: ``10``, ``10/s``, ``2.5`` (0: no limit)."""
    text = value.strip().lower().removesuffix("/s").strip()
    try:
        rate = float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give messages per second, e.g. 10 or 10/s") from None
    if rate < 0 or rate != rate:
        raise click.BadParameter("must be 0 (no limit) or more")
    return rate


def _resume_command(issue: str, lists: tuple[str, ...]) -> str:
    import shlex

    return "bulletin send " + " ".join(
        shlex.quote(a) for a in (issue, *(x for s in lists for x in ("--list", s)))
    )


@click.command(
    "send",
    epilog="Examples:\n\n\b\n  bulletin send 2014-10-clusterpolisee-03 --list demo --dry-run\n"
    "  bulletin send 2014-10-clusterpolisee-03 --test ana@example.org\n"
    "  bulletin send 2014-10-clusterpolisee-03 --list demo --rate 10 --yes\n\n"
    "Exit status: 0 sent (or nothing left to send), 1 error, 75 not finished yet (paused, or "
    "deferred recipients to retry later: run the same command again), 130 interrupted.\n\n"
    "Several senders: run the same command on another machine sharing the database (or in "
    "another terminal) while a send runs, and it joins in; --rate and --rate-hour limit the "
    "whole send, and the last sender started sets them for all.",
)
@click.argument("issue")
@click.option(
    "--list",
    "list_slugs",
    multiple=True,
    metavar="SLUG",
    help="List to send to; repeat for several (each person gets one copy). Not needed with --test.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Build every message and write a few as .eml under out/; send nothing.",
)
@click.option(
    "--test",
    "test_addresses",
    multiple=True,
    metavar="EMAIL",
    help="Send only to EMAIL (repeatable), subject prefixed [TEST]; the ledger is untouched.",
)
@click.option(
    "--connections", type=click.IntRange(1, 64), metavar="N", help="SMTP connections at once."
)
@click.option("--rate", metavar="R/s", help="Most messages per second (0: no limit).")
@click.option("--rate-hour", type=click.IntRange(0), metavar="R", help="Most messages per hour.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    metavar="N",
    help="Recipients claimed from the ledger at a time.",
)
@click.option(
    "--no-join",
    is_flag=True,
    help="Refuse to run when other senders are running this send, instead of joining them.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def send_cmd(
    ctx: Context,
    issue: str,
    list_slugs: tuple[str, ...],
    dry_run: bool,
    test_addresses: tuple[str, ...],
    connections: int | None,
    rate: str | None,
    rate_hour: int | None,
    batch_size: int | None,
    no_join: bool,
    yes: bool,
) -> None:
    """Send ISSUE to the subscribers of a list, resumably.

    First runs `bulletin check` (errors stop the send), then shows the plan and asks for
    confirmation. Every recipient's state is kept in a ledger: run the same command again
    after a crash, Ctrl-C or a pause and it carries on where it stopped; once the send is
    complete it says so and sends nothing. Run while the send is running (here or on
    another machine with the same database), it joins the senders at work. Defaults for the
    options come from [send] in bulletin.toml.
    """
    import sys

    from bulletin.dispatch.plan import SendOptions, prepare_send

    if dry_run and test_addresses:
        raise click.UsageError("Give either --dry-run or --test, not both.")
    if not list_slugs and not test_addresses:
        raise click.UsageError("Missing option '--list': name the list to send to.")
    workspace = ctx.workspace
    options = SendOptions.from_config(
        workspace.config.send,
        connections=connections,
        rate=None if rate is None else _rate(rate),
        rate_hour=rate_hour,
        batch_size=batch_size,
        join=False if no_join else None,
    )
    db = ctx.store()
    # Its connections closed when the command ends (a PostgreSQL session each).
    click.get_current_context().call_on_close(db.dispose)
    plan = prepare_send(workspace, db, issue, list_slugs, options, test=bool(test_addresses))
    for problem in plan.warnings:
        err_console.print(f"warning: {problem}", markup=False, soft_wrap=True)
    if test_addresses:
        _send_test(plan, db, test_addresses)
        return
    if plan.done:
        assert plan.existing is not None
        _print_already_done(plan)
        return
    if dry_run:
        _dry_run(plan, db)
        return
    transport = _transport(workspace)
    _print_plan(plan.summary_rows(transport.description))
    if not yes:
        if not sys.stdin.isatty():
            raise BulletinError(
                "Not sending: confirmation is needed and standard input is not a terminal.",
                hint="Add --yes to send without asking (e.g. in a script or cron job).",
            )
        question = f"Send to {plan.recipients:,} recipients?"
        if plan.joining:
            question = "Join the senders at work on this send?"
        click.confirm(question, abort=True)
    _run_send(plan, db, transport, issue)


def _transport(workspace: ws.Workspace) -> SmtpTransport:
    from bulletin.dispatch.smtp import SmtpTransport

    return SmtpTransport(workspace.config.smtp, password=workspace.smtp_password())


def _print_plan(rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def _print_already_done(plan: SendPlan) -> None:
    counts = plan.counts
    console.print(
        f"Already sent: {counts.get('sent', 0):,} sent, {counts.get('failed', 0):,} failed"
        + (f", {counts['skipped']:,} skipped" if counts.get("skipped") else "")
        + f"; nothing to do. Details: bulletin status {plan.issue_slug}",
        markup=False,
        soft_wrap=True,
    )


def _send_test(plan: SendPlan, db: Engine, addresses: tuple[str, ...]) -> None:
    from bulletin.dispatch.plan import send_test

    transport = _transport(plan.workspace)
    results = send_test(plan, db, transport, list(addresses))
    failed = 0
    for r in results:
        if r.delivery.outcome == "sent":
            console.print(f"Sent a test to {r.address}: {r.delivery.reply}", markup=False)
        else:
            failed += 1
            console.print(
                f"Not sent to {r.address} ({r.delivery.outcome}): {r.delivery.reply}",
                markup=False,
                soft_wrap=True,
            )
    console.print(f"Test messages via {transport.description}; the ledger is unchanged.")
    if failed:
        click.get_current_context().exit(1)


def _dry_run(plan: SendPlan, db: Engine) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bulletin.dispatch.plan import dry_run

    out_dir = plan.workspace.root / "out" / f"{plan.issue_slug}-dry-run"
    _print_plan(plan.summary_rows("none (dry run)"))
    columns = (TextColumn("Building messages"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, console=err_console, transient=True, disable=not err_console.is_terminal
    ) as bar:
        task = bar.add_task("build", total=plan.recipients)
        report = dry_run(
            plan, db, out_dir, on_progress=lambda done, total: bar.update(task, completed=done)
        )
    console.print(
        f"Dry run: built {report.messages:,} messages ({report.bytes / 1e6:,.1f} MB, "
        f"{report.per_second:,.0f}/s); nothing was sent and the ledger is unchanged.",
        markup=False,
        soft_wrap=True,
    )
    for path in report.samples:
        console.print(f"  sample: {plan.workspace.relpath(path)}", markup=False, soft_wrap=True)
    if report.failed:
        for email, reason in report.failures:
            console.print(f"  cannot build for {email}: {reason}", markup=False, soft_wrap=True)
        more = report.failed - len(report.failures)
        if more:
            console.print(f"  ... and {more:,} more", markup=False)
        click.get_current_context().exit(1)


def _run_send(plan: SendPlan, db: Engine, transport: SmtpTransport, issue: str) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from bulletin.dispatch.engine import Progress as SendProgress
    from bulletin.dispatch.engine import SendEngine, Started, stop_on_signals
    from bulletin.dispatch.ratelimit import describe

    resume = _resume_command(issue, plan.lists)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(
        *columns, console=err_console, transient=True, disable=not err_console.is_terminal
    ) as bar:
        task = bar.add_task("Sending", total=plan.recipients, detail="")

        def on_start(started: Started) -> None:
            if started.joined:
                first = started.joined[0]
                console.print(
                    f"Joining the send of {plan.issue_slug} started by process {first.pid} on "
                    f"{first.host} ({len(started.joined) + 1} senders).",
                    markup=False,
                    soft_wrap=True,
                )
            if started.rate_was is not None:
                was, now = describe(*started.rate_was), plan.options.describe_rate()
                console.print(
                    f"The send's rate limit was {was}; it is now {now}, for all its senders.",
                    markup=False,
                    soft_wrap=True,
                )

        def on_progress(p: SendProgress) -> None:
            detail = f"{p.rate:,.0f}/s  sent {p.sent:,}"
            if p.senders > 1:
                detail += f"  ({p.senders} senders)"
            if p.deferred:
                detail += f"  deferred {p.deferred:,}"
            if p.failed:
                detail += f"  failed {p.failed:,}"
            if p.note:
                detail += f"  ({p.note})"
            bar.update(task, completed=p.processed, detail=detail)

        def on_stopping() -> None:
            err_console.print(
                "Stopping: finishing the messages on the wire; the rest waits for the next "
                "run (Ctrl-C again to quit at once)...",
                markup=False,
            )

        engine = SendEngine(plan, db, transport, on_progress=on_progress, on_start=on_start)
        try:
            with stop_on_signals(engine, on_stopping):
                result = engine.run()
        except KeyboardInterrupt:
            err_console.print(
                f"Stopped at once. Run `{resume}` to resume; the messages that were on the "
                "wire will be sent again (same Message-ID).",
                markup=False,
                soft_wrap=True,
            )
            click.get_current_context().exit(130)
    _print_send_result(result, plan.issue_slug, resume)


def _print_send_result(result: SendResult, slug: str, resume: str) -> None:
    from rich.table import Table

    from bulletin.dispatch.engine import in_doubt_note

    c = result.counts
    table = Table("state", "recipients", box=None, pad_edge=False, header_style="bold")
    table.columns[1].justify = "right"
    for state in ("sent", "failed", "skipped", "deferred", "pending", "queued", "sending"):
        if c.get(state) or state == "sent":
            table.add_row(state, f"{c[state]:,}")
    table.add_row("total", f"{result.total:,}")
    console.print(table)
    console.print(
        f"This run: {result.sent_this_run:,} sent in {result.elapsed:,.1f} s "
        f"({result.rate:,.1f} messages/s).",
        markup=False,
    )
    if result.in_doubt:
        console.print(in_doubt_note(result.in_doubt), markup=False, soft_wrap=True)
    if c["failed"]:
        console.print(
            f"{c['failed']:,} failed; see why with `bulletin status {slug} --failed`.",
            markup=False,
            soft_wrap=True,
        )
    ctx = click.get_current_context()
    others = "1 other sender" if result.others == 1 else f"{result.others} other senders"
    if result.state == "done":
        console.print(f"Done: {slug} is sent.", markup=False)
    elif result.state == "running":
        console.print(
            f"Nothing is left for this sender; the last recipients are with {others}. "
            f"See `bulletin status {slug}`.",
            markup=False,
            soft_wrap=True,
        )
    elif result.state == "waiting":
        when = f"{result.retry_at:%Y-%m-%d %H:%M} UTC" if result.retry_at else "later"
        console.print(
            f"{c['deferred']:,} recipients are deferred (their relay said: try later); the "
            f"next retry falls due at {when}. Run `{resume}` again then.",
            markup=False,
            soft_wrap=True,
        )
        ctx.exit(75)
    elif result.state == "paused":
        err_console.print(f"[bold red]Paused:[/] {result.note}", soft_wrap=True)
        if result.others:
            err_console.print(
                f"This sender stopped; the send carries on with {others}.", markup=False
            )
        err_console.print(f"When it is fixed, run `{resume}` to resume.", markup=False)
        ctx.exit(75)
    elif result.others:
        console.print(
            f"Interrupted: this sender stopped; the send carries on with {others}. Run "
            f"`{resume}` to join them again.",
            markup=False,
            soft_wrap=True,
        )
        ctx.exit(130)
    else:
        console.print(
            f"Interrupted. Run `{resume}` to resume where it stopped.", markup=False, soft_wrap=True
        )
        ctx.exit(130)


@click.command(
    "status",
    epilog="Examples:\n\n\b\n  bulletin status 2014-10-clusterpolisee-03\n"
    "  bulletin status 2014-10-clusterpolisee-03 --list demo --failed\n"
    "  bulletin status 2014-10-clusterpolisee-03 --csv > recipients.csv\n"
    "  bulletin status                     # every send, one line each",
)
@click.argument("issue", required=False)
@click.option("--list", "list_slug", metavar="SLUG", help="Only sends to this list.")
@click.option(
    "--failed", "failed_only", is_flag=True, help="List every failed or deferred recipient."
)
@click.option(
    "--csv", "as_csv", is_flag=True, help="Print the recipients as CSV (with --failed: only those)."
)
@pass_ctx
def status_cmd(
    ctx: Context, issue: str | None, list_slug: str | None, failed_only: bool, as_csv: bool
) -> None:
    """Show how the sends of ISSUE went: counts by state, rate, start and end, problems.

    Without ISSUE: every send of every issue, one line each, oldest first.

    Each failed or deferred recipient is listed with the relay's reply (the first 20;
    --failed for all). "Queued" recipients are claimed by a running sender, "sending" ones
    are on their way. "In doubt" counts messages that were on their way when a sender was
    killed or stopped: they were sent again with the same Message-ID, so at most that many
    people may have two copies. While senders work on a send (on this machine or others
    sharing the database), a table lists them: host, process, messages sent, rate and last
    heartbeat.
    """
    import sys

    from bulletin.dispatch.status import send_status, write_csv

    db = ctx.store()
    click.get_current_context().call_on_close(db.dispose)
    if issue is None and not (failed_only or as_csv):
        _print_overview(send_status(db, None, list_slug, limit=0))
        return
    found = send_status(db, issue, list_slug, limit=None if failed_only else 20)
    if as_csv:
        write_csv(db, [s.send for s in found], sys.stdout, problems_only=failed_only)
        return
    for s in found:
        _print_status(s)


def _print_overview(found: list[SendStatus]) -> None:
    from rich.table import Table

    if not found:
        console.print(
            "No issue has been sent yet. Send one with `bulletin send ISSUE --list SLUG`.",
            markup=False,
        )
        return
    table = Table(
        "issue",
        "lists",
        "state",
        "sent",
        "failed",
        "open",
        "total",
        "started (UTC)",
        "finished",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    table.title = f"Sends: {len(found)}"
    table.title_justify = "left"
    for column in table.columns[3:7]:
        column.justify = "right"
    for s in found:
        send = s.send
        table.add_row(
            send.issue_slug,
            ", ".join(send.lists),
            s.state,
            f"{s.counts['sent']:,}",
            f"{s.counts['failed']:,}",
            f"{s.open_count:,}",
            f"{s.total:,}",
            f"{send.started_at:%Y-%m-%d %H:%M}" if send.started_at else "-",
            f"{send.finished_at:%Y-%m-%d %H:%M}" if send.finished_at else "-",
        )
    console.print(table)
    console.print("Details of one: bulletin status ISSUE", markup=False)


def _print_status(s: SendStatus) -> None:
    from rich.table import Table

    from bulletin.dispatch.engine import in_doubt_note

    send = s.send
    console.print(
        f"[bold]{send.issue_slug}[/] to {', '.join(send.lists)}: [bold]{s.state}[/]",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"Subject: {send.subject}", markup=False, soft_wrap=True)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for state in ("sent", "failed", "deferred", "skipped", "pending", "queued", "sending"):
        table.add_row(state, f"{s.counts[state]:,}")
    table.add_row("total", f"{s.total:,}")
    table.add_row("in doubt", f"{send.in_doubt:,}")
    console.print(table)
    started = f"{send.started_at:%Y-%m-%d %H:%M:%S} UTC" if send.started_at else "-"
    finished = f"{send.finished_at:%Y-%m-%d %H:%M:%S} UTC" if send.finished_at else "-"
    console.print(
        f"Started {started}, finished {finished}; {send.runs} run(s), "
        f"{send.active_seconds:,.1f} s sending, {s.rate:,.1f} messages/s.",
        markup=False,
        soft_wrap=True,
    )
    if s.senders:
        _print_senders(s)
    if send.in_doubt:
        console.print(f"In doubt: {in_doubt_note(send.in_doubt)}", markup=False, soft_wrap=True)
    if send.note:
        console.print(f"Note: {send.note}", markup=False, soft_wrap=True)
    if send.state == "waiting" and send.retry_at:
        console.print(
            f"Next retry due at {send.retry_at:%Y-%m-%d %H:%M} UTC.", markup=False, soft_wrap=True
        )
    if s.problems:
        problems = Table(
            "email", "state", "tries", "reply", "next try (UTC)", title="Failed and deferred"
        )
        problems.title_justify = "left"
        for r in s.problems:
            when = f"{r.next_attempt_at:%m-%d %H:%M}" if r.state == "deferred" else ""
            problems.add_row(r.email, r.state, str(r.attempts), r.last_reply, when)
        console.print(problems)
        more = s.problem_count - len(s.problems)
        if more > 0:
            console.print(f"... and {more:,} more (--failed lists them all)", markup=False)
    console.print()


def _print_senders(s: SendStatus) -> None:
    from rich.table import Table

    table = Table("host", "process", "sent", "rate", "last heartbeat", box=None, pad_edge=False)
    table.title = f"Senders at work: {len(s.senders)}"
    table.title_justify = "left"
    for column in table.columns[1:4]:
        column.justify = "right"
    for w in s.senders:
        ago = (s.read_at - w.heartbeat_at).total_seconds() if s.read_at else 0.0
        table.add_row(
            w.host, str(w.pid), f"{w.sent:,}", f"{w.rate:,.1f}/s", f"{max(0.0, ago):.0f} s ago"
        )
    console.print(table)


COMMANDS = (
    send_cmd,
    status_cmd,
)
