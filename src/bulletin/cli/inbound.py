"""``bulletin bounces`` and ``bulletin unsubscribes``: mail that comes back, from files or IMAP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from bulletin.cli._common import Context, console, err_console, pass_ctx, print_summary, visible

if TYPE_CHECKING:
    from bulletin.inbound.bounces import BounceReport
    from bulletin.inbound.imap import FetchResult, IntakeFactory, Purpose
    from bulletin.inbound.unsubscribes import UnsubscribeReport


class _MailProgress:
    """A progress bar on stderr (only on a terminal), fed by (done, total) callbacks."""

    def __init__(self, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        self._bar = Progress(
            *columns, console=err_console, transient=True, disable=not err_console.is_terminal
        )
        self._task = self._bar.add_task(label, total=None)

    def __enter__(self) -> _MailProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def __call__(self, done: int, total: int) -> None:
        self._bar.update(self._task, completed=done, total=total)


def _print_mail_report(
    report: BounceReport | UnsubscribeReport,
    title: str,
    lines: list[str],
    more_rows: list[tuple[str, int]] | None = None,
) -> None:
    """Summary table, then what was done to whom, then unreadable messages (exit 1)."""
    print_summary(title, report.summary_rows() + (more_rows or []), dry_run=report.dry_run)
    shown = 20
    for line in lines[:shown]:  # they quote the diagnostics of other people's servers
        console.print(visible(f"  {line}"), soft_wrap=True)
    if len(lines) > shown:
        console.print(f"  ... and {len(lines) - shown:,} more", markup=False)
    for problem in report.problems:
        err_console.print(visible(f"error: {problem}"), soft_wrap=True)
    if report.problems:
        err_console.print(
            "The other messages were processed; fix or remove the unreadable ones and run "
            "the import again (what is done already is skipped).",
            markup=False,
            soft_wrap=True,
        )
        click.get_current_context().exit(1)


@click.group(
    "bounces",
    epilog="Example:\n\n\b\n  bulletin bounces import ~/Maildir/.Bounces --dry-run",
)
def bounces_group() -> None:
    """Process bounced mail and spam complaints: stop mailing addresses that fail."""


@bounces_group.command(
    "import",
    epilog="Examples:\n\n\b\n  bulletin bounces import ~/Maildir/.Bounces\n"
    "  bulletin bounces import bounces.mbox --dry-run",
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@pass_ctx
def bounces_import_cmd(ctx: Context, path: Path, dry_run: bool) -> None:
    """Import bounces and complaints from PATH (a Maildir folder, an mbox file or one message).

    Delivery status notifications (Postfix, Exim, Gmail and other formats) and spam
    complaints (ARF feedback reports) are matched to subscribers by the VERP token of
    sender.return_path, else by the addresses they name. A hard bounce (5.x.x, e.g. user
    unknown) or a complaint suppresses the address for every list at once; a soft bounce
    (4.x.x, e.g. mailbox full) is recorded, and bounces.soft_limit of them within
    bounces.soft_window_days suppress it. Delays, receipts and auto-replies change nothing.
    Each event is kept with the server's diagnostic (see `bulletin subscribers show`);
    importing the same mail again changes nothing. Exits 1 if a message cannot be read.
    """
    from bulletin.inbound.bounces import BounceSettings, import_bounces

    workspace = ctx.workspace
    settings = BounceSettings.from_workspace(workspace)
    engine = ctx.store()
    with _MailProgress(f"Reading {path.name}") as progress:
        report = import_bounces(engine, path, settings, dry_run=dry_run, progress=progress)
    _print_mail_report(report, f"Bounces in {report.path} ({report.kind})", _bounce_lines(report))


def _bounce_lines(report: BounceReport) -> list[str]:
    lines = []
    for f in report.findings:
        what = f"{f.outcome:<9} {f.email or f.where}"
        if f.detail:
            what += f": {f.detail}"
        if f.suppressed:
            what += " (suppressed)"
        lines.append(what)
    return lines


_FETCH_EPILOG = (
    "URL is imaps://user@host/Folder (port 993) or imap://user@host:port/Folder (STARTTLS, "
    "required unless the host is loopback); without it, imap.{key}_url from bulletin.toml. "
    "The password comes from BULLETIN_IMAP_PASSWORD or imap.password_file, never the URL."
)


def _fetch(ctx: Context, purpose: Purpose, url: str | None, dry_run: bool, watch: bool) -> None:
    """Shared by both fetch commands: settings, one pass or a watch, the summaries."""
    from bulletin.dispatch.engine import stop_on_signals
    from bulletin.inbound import imap

    if watch and dry_run:
        raise click.UsageError("--watch changes the store as mail arrives; it has no --dry-run.")
    workspace = ctx.workspace
    settings = imap.ImapSettings.from_workspace(workspace, purpose, url)
    make_intake = _intakes(ctx, purpose)
    engine = ctx.store()
    if not watch:
        with _MailProgress(f"Reading {settings.url.folder}") as progress:
            result = imap.fetch(
                engine, settings, purpose, make_intake, dry_run=dry_run, progress=progress
            )
        _print_fetch(result, purpose)
        return
    watcher = imap.Watcher()

    def on_pass(result: FetchResult) -> None:
        if result.fetch.recognised:  # quiet while only people's mail sits there
            _print_fetch(result, purpose)

    def on_wait(message: str) -> None:
        err_console.print(visible(f"warning: {message}"), soft_wrap=True)

    err_console.print(
        visible(f"Watching {settings.url} (Ctrl-C or SIGTERM stops)."), soft_wrap=True
    )
    with stop_on_signals(watcher):
        watcher.watch(engine, settings, purpose, make_intake, on_pass=on_pass, on_wait=on_wait)
    err_console.print("Stopped.", markup=False)


def _intakes(ctx: Context, purpose: Purpose) -> IntakeFactory:
    from bulletin.inbound import imap
    from bulletin.inbound.bounces import BounceSettings
    from bulletin.inbound.unsubscribes import UnsubscribeSettings

    if purpose == "bounces":
        return imap.bounce_intakes(BounceSettings.from_workspace(ctx.workspace))
    return imap.unsubscribe_intakes(UnsubscribeSettings.from_workspace(ctx.workspace))


def _print_fetch(result: FetchResult, purpose: Purpose) -> None:
    report = result.report
    rows = result.fetch.summary_rows()
    if purpose == "bounces":
        title = f"Bounces in {report.path}"
        _print_mail_report(report, title, _bounce_lines(report), rows)
    else:
        title = f"Unsubscribe requests in {report.path}"
        lines = [f"unsubscribed {email} from {where}" for email, where in report.done]
        _print_mail_report(report, title, lines, rows)


@bounces_group.command(
    "fetch",
    epilog="Examples:\n\n\b\n  bulletin bounces fetch imaps://bounces@mail.example.org/INBOX\n"
    "  bulletin bounces fetch --watch    (imap.bounces_url from bulletin.toml)\n\n"
    + _FETCH_EPILOG.format(key="bounces"),
)
@click.argument("url", required=False)
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@click.option(
    "--watch", is_flag=True, help="Keep running: process new mail as it arrives (a service)."
)
@pass_ctx
def bounces_fetch_cmd(ctx: Context, url: str | None, dry_run: bool, watch: bool) -> None:
    """Fetch bounces and complaints from an IMAP folder and process them like `bounces import`.

    What the import recognises (delivery reports, complaints, auto-replies) is processed and
    then moved to imap.processed_folder (or flagged, with imap.processed_action = "flag");
    every other message (a person's reply) stays where it is, unread, flags untouched.
    Running it twice, or twice at once, counts nothing twice; a run that was killed is
    completed by the next one.
    """
    _fetch(ctx, "bounces", url, dry_run, watch)


@click.group(
    "unsubscribes",
    epilog="Example:\n\n\b\n  bulletin unsubscribes import ~/Maildir/.Unsubscribe",
)
def unsubscribes_group() -> None:
    """Process mail sent to the List-Unsubscribe mailto address."""


@unsubscribes_group.command(
    "import",
    epilog="Examples:\n\n\b\n  bulletin unsubscribes import ~/Maildir/.Unsubscribe\n"
    "  bulletin unsubscribes import unsubscribe.mbox --dry-run",
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@pass_ctx
def unsubscribes_import_cmd(ctx: Context, path: Path, dry_run: bool) -> None:
    """Unsubscribe everyone who wrote to the mailto unsubscribe address, from PATH.

    PATH is a Maildir folder, an mbox file or one message received at sender.unsubscribe_mailto
    with a token added (unsubscribe+TOKEN@...). A valid token unsubscribes its subscriber
    from its list (or from every list); other messages are counted as invalid and change
    nothing. Importing the same mail again changes nothing. Exits 1 if a message cannot be
    read.
    """
    from bulletin.inbound.unsubscribes import UnsubscribeSettings, import_unsubscribes

    workspace = ctx.workspace
    settings = UnsubscribeSettings.from_workspace(workspace)
    engine = ctx.store()
    with _MailProgress(f"Reading {path.name}") as progress:
        report = import_unsubscribes(engine, path, settings, dry_run=dry_run, progress=progress)
    lines = [f"unsubscribed {email} from {where}" for email, where in report.done]
    _print_mail_report(report, f"Unsubscribe requests in {report.path} ({report.kind})", lines)


@unsubscribes_group.command(
    "fetch",
    epilog="Examples:\n\n\b\n"
    "  bulletin unsubscribes fetch imaps://unsubscribe@mail.example.org/INBOX\n"
    "  bulletin unsubscribes fetch --watch    (imap.unsubscribes_url from bulletin.toml)\n\n"
    + _FETCH_EPILOG.format(key="unsubscribes"),
)
@click.argument("url", required=False)
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@click.option(
    "--watch", is_flag=True, help="Keep running: process new mail as it arrives (a service)."
)
@pass_ctx
def unsubscribes_fetch_cmd(ctx: Context, url: str | None, dry_run: bool, watch: bool) -> None:
    """Fetch mailto unsubscribes from an IMAP folder and process them like `unsubscribes import`.

    Messages with a valid token are processed, then moved to imap.processed_folder (or
    flagged); every other message stays where it is, unread, flags untouched. Running it
    twice, or twice at once, counts nothing twice.
    """
    _fetch(ctx, "unsubscribes", url, dry_run, watch)


COMMANDS = (
    bounces_group,
    unsubscribes_group,
)
