"""``bulletin bounces import`` and ``bulletin unsubscribes import``: mail that comes back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from bulletin.cli._common import Context, console, err_console, pass_ctx, print_summary, visible

if TYPE_CHECKING:
    from bulletin.inbound.bounces import BounceReport
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
    report: BounceReport | UnsubscribeReport, title: str, lines: list[str]
) -> None:
    """Summary table, then what was done to whom, then unreadable messages (exit 1)."""
    print_summary(title, report.summary_rows(), dry_run=report.dry_run)
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
    lines = []
    for f in report.findings:
        what = f"{f.outcome:<9} {f.email or f.where}"
        if f.detail:
            what += f": {f.detail}"
        if f.suppressed:
            what += " (suppressed)"
        lines.append(what)
    _print_mail_report(report, f"Bounces in {report.path} ({report.kind})", lines)


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


COMMANDS = (
    bounces_group,
    unsubscribes_group,
)
