"""The ``bulletin`` command line. Each command turns options into one library call and prints.

Only this module imports click. User errors (:class:`bulletin.errors.BulletinError`) are
printed without a traceback and exit with their code; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from bulletin import __version__
from bulletin import workspace as ws
from bulletin.errors import BulletinError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class Context:
    """Per-invocation state: the --workspace option, loaded lazily."""

    def __init__(self, workspace_dir: Path | None) -> None:
        self.workspace_dir = workspace_dir
        self._ws: ws.Workspace | None = None

    @property
    def workspace(self) -> ws.Workspace:
        if self._ws is None:
            self._ws = ws.load(self.workspace_dir)
        return self._ws


pass_ctx = click.make_pass_decorator(Context)


class BulletinGroup(click.Group):
    """A group that turns BulletinError into a clean message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BulletinError as exc:
            err_console.print(f"[bold red]Error:[/] {exc.message}", markup=True, highlight=False)
            if exc.hint:
                err_console.print(exc.hint, markup=False)
            ctx.exit(exc.exit_code)


@click.group(
    cls=BulletinGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example:\n\n\b\n  bulletin init my-newsletter && cd my-newsletter\n"
    "  bulletin check 2014-10-clusterpolisee-03\n  bulletin preview 2014-10-clusterpolisee-03",
)
@click.version_option(__version__, "--version", prog_name="bulletin")
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Workspace folder (default: nearest folder upwards holding bulletin.toml).",
)
@click.pass_context
def cli(ctx: click.Context, workspace: Path | None) -> None:
    """Compose, check, preview and send email newsletters.

    A workspace is a folder with bulletin.toml, issues/, templates/ and subscribers/.
    """
    ctx.obj = Context(workspace)


@cli.command(
    "init",
    epilog="Example:\n\n\b\n  bulletin init my-newsletter\n  cd my-newsletter && bulletin check"
    " 2014-10-clusterpolisee-03",
)
@click.argument("directory", type=click.Path(path_type=Path))
def init_cmd(directory: Path) -> None:
    """Create a workspace in DIRECTORY with the default templates and an example issue.

    DIRECTORY may be missing or empty; a folder that already holds bulletin.toml is refused.
    """
    from bulletin.scaffold import init_workspace

    result = init_workspace(directory)
    console.print(f"Created a bulletin workspace in {result.root}", markup=False)
    console.print("Edit the placeholders marked EDIT in bulletin.toml, then run:", markup=False)
    console.print(f"  {result.next_commands(str(directory))}", markup=False, soft_wrap=True)


@cli.command(
    "preview",
    epilog="Examples:\n\n\b\n  bulletin preview 2014-10-clusterpolisee-03\n"
    "  bulletin preview 2014-10-clusterpolisee-03 --port 8001 --no-open",
)
@click.argument("issue")
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port on 127.0.0.1 (0 picks any free port).",
)
@click.option("--no-open", is_flag=True, help="Do not open a browser tab.")
@pass_ctx
def preview_cmd(ctx: Context, issue: str, port: int, no_open: bool) -> None:
    """Serve a live preview of ISSUE (a slug under issues/ or a folder) in the browser.

    Shows the email at desktop and mobile widths, the plain text and a summary with the
    check findings. Saving issue.yaml, its Markdown files or a template reloads the page.
    """
    from bulletin.web.preview import serve_preview

    workspace = ctx.workspace
    serve_preview(workspace, workspace.issue_dir(issue), port=port, open_browser=not no_open)


@cli.command(
    "check",
    epilog="Example:\n\n\b\n  bulletin check 2014-10-clusterpolisee-03 --strict",
)
@click.argument("issue")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1 on any finding).")
@pass_ctx
def check_cmd(ctx: Context, issue: str, strict: bool) -> None:
    """Check ISSUE (a slug under issues/ or a folder) before sending it.

    Validates issue.yaml, renders it, lints the MJML the templates produce and checks the
    result: HTML size (Gmail clips over ~102 KB), links, image alt text, empty sections,
    subject and preheader, the unsubscribe link, Romanian diacritics. Every finding is
    printed with its file:line. Exits 1 when there are errors (with --strict, any finding).
    """
    from rich.text import Text

    from bulletin.render.checks import run_check

    workspace = ctx.workspace
    report = run_check(workspace, workspace.issue_dir(issue), strict=strict)
    for problem in report.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        line = Text(f"{problem.severity}: ", style=f"bold {colour}")
        line.append(str(problem))
        console.print(line, soft_wrap=True)
    if report.errors:
        console.print(Text(report.summary(), style="bold red"))
        click.get_current_context().exit(1)
    console.print(Text(report.summary(), style="yellow" if report.warnings else "green"))


@cli.command(
    "render",
    epilog="Examples:\n\n\b\n  bulletin render 2014-10-clusterpolisee-03\n"
    "  bulletin render 2014-10-clusterpolisee-03 -o out/nr3.html --eml out/nr3.eml\n"
    "  bulletin render 2014-10-clusterpolisee-03 --subscriber ana@example.org",
)
@click.argument("issue")
@click.option(
    "--output",
    "-o",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write; the text goes beside it as .txt (default: out/<slug>.html).",
)
@click.option(
    "--subscriber",
    metavar="EMAIL",
    default=None,
    help="Fill the per-reader values for this address (default: a sample reader).",
)
@click.option(
    "--eml",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the complete message (headers, text and HTML parts) as an .eml file.",
)
@pass_ctx
def render_cmd(
    ctx: Context, issue: str, output: Path | None, subscriber: str | None, eml: Path | None
) -> None:
    """Render ISSUE (a slug under issues/ or a folder) to HTML and plain text files.

    The files are what one reader receives, filled with sample values or for --subscriber.
    """
    from bulletin.content.loader import load_issue
    from bulletin.render.pipeline import write_rendered

    workspace = ctx.workspace
    loaded = load_issue(workspace, workspace.issue_dir(issue))
    result = write_rendered(workspace, loaded, output, email=subscriber)
    for problem in result.rendered.problems:
        err_console.print(f"{problem.severity}: {problem}", markup=False, soft_wrap=True)
    console.print(
        f"HTML {result.html_bytes / 1024:.1f} KB -> {result.html_path}\n"
        f"Text {result.text_bytes / 1024:.1f} KB -> {result.text_path}",
        markup=False,
        soft_wrap=True,
    )
    if eml is not None:
        from bulletin.mail.compose import Recipient, build_message_template

        message = build_message_template(workspace.config, result.rendered)
        to_email = subscriber or result.values["email"]
        data = message.personalise(Recipient(to_email, "", result.values))
        try:
            eml.parent.mkdir(parents=True, exist_ok=True)
            eml.write_bytes(data)
        except OSError as exc:
            raise BulletinError(f"Cannot write {eml}: {exc.strerror}.") from None
        console.print(f"Message {len(data) / 1024:.1f} KB -> {eml}", markup=False, soft_wrap=True)


# --- subscribers and lists (bulletin.store) ---------------------------------------------


def _store(ctx: Context) -> Any:
    """The workspace's subscriber store, migrated to the current schema."""
    from bulletin.store.db import open_store

    return open_store(ctx.workspace.database_url())


@cli.group(
    "subscribers",
    epilog="Examples:\n\n\b\n  bulletin subscribers import contacts.csv --list "
    "newsletter-ro --create-list\n  bulletin subscribers show ion@example.ro",
)
def subscribers_group() -> None:
    """Import, export, add, remove, unsubscribe, show and count subscribers.

    Subscribers live in the database named by database.url in bulletin.toml (by default
    subscribers/bulletin.db). An address that unsubscribed, bounced or complained is never
    subscribed again unless --resubscribe is given.
    """


@subscribers_group.command(
    "import",
    epilog="Example:\n\n\b\n  bulletin subscribers import contacts.csv --list newsletter-ro "
    "--create-list --dry-run",
)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--list", "list_slug", required=True, metavar="SLUG", help="List to import into.")
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@click.option("--encoding", metavar="ENC", help="File encoding (default: detected).")
@click.option("--create-list", is_flag=True, help="Create the list if it does not exist.")
@click.option(
    "--resubscribe",
    is_flag=True,
    help="Subscribe again addresses that unsubscribed, bounced or complained (only if they "
    "asked to be).",
)
@click.option("--check-dns", is_flag=True, help="Also check that each domain accepts mail.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write rejected rows (default: FILE's name + .rejects.csv beside it).",
)
@pass_ctx
def subscribers_import_cmd(
    ctx: Context,
    file: Path,
    list_slug: str,
    dry_run: bool,
    encoding: str | None,
    create_list: bool,
    resubscribe: bool,
    check_dns: bool,
    rejects: Path | None,
) -> None:
    """Import subscribers from FILE (CSV, TSV or semicolon-separated) into a list.

    The header names the columns: email (or e-mail, Email Address), name or first name +
    last name, language; any other column becomes an attribute usable in templates. Rows
    with an invalid address are written to a rejects file; the rest is imported in one
    transaction. Exits 1 if the file as a whole cannot be imported (nothing is changed).
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from bulletin.store.importer import import_file

    engine = _store(ctx)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(
        *columns, console=err_console, transient=True, disable=not err_console.is_terminal
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = {"read": f"Reading {file.name}", "save": "Saving"}.get(phase, phase)
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        report = import_file(
            engine,
            file,
            list_slug,
            dry_run=dry_run,
            encoding=encoding,
            create_list_if_missing=create_list,
            resubscribe=resubscribe,
            check_dns=check_dns,
            rejects_path=rejects,
            progress=on_progress,
        )
    _print_import_report(report)


def _print_import_report(report: Any) -> None:
    from rich.table import Table

    title = f"Import of {report.path.name} into {report.list_slug}"
    if report.dry_run:
        title += " (dry run: nothing was changed)"
    console.print(title, markup=False, soft_wrap=True)
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("rows", justify="right")
    for label, n in report.summary_rows():
        table.add_row(label, f"{n:,}")
    console.print(table)
    for note in report.notes():
        console.print(note, markup=False, soft_wrap=True)
    for r in report.rejected_sample:
        console.print(f"  rejected line {r.line}: {r.reason}", markup=False, soft_wrap=True)
    if report.rejects_path is not None:
        console.print(
            f"All {report.rejected:,} rejected rows, with reasons: {report.rejects_path}",
            markup=False,
            soft_wrap=True,
        )
    for email, was in report.suppressed_sample:
        console.print(f"  skipped {email} ({was})", markup=False, soft_wrap=True)
    for email, was in report.resubscribed_sample:
        console.print(f"  re-subscribed {email} (was {was})", markup=False, soft_wrap=True)
    more = report.resubscribed - len(report.resubscribed_sample)
    if more > 0:
        console.print(f"  ... and {more:,} more re-subscribed", markup=False)


@subscribers_group.command(
    "add",
    epilog='Example:\n\n\b\n  bulletin subscribers add "Ion Popescu <ion@example.ro>" '
    "--list newsletter-ro",
)
@click.argument("email")
@click.option("--list", "list_slug", required=True, metavar="SLUG", help="List to subscribe to.")
@click.option("--name", default=None, help="The subscriber's name.")
@click.option("--language", default=None, help="Language code, e.g. ro or en.")
@click.option("--resubscribe", is_flag=True, help="Subscribe again after an unsubscribe/bounce.")
@pass_ctx
def subscribers_add_cmd(
    ctx: Context,
    email: str,
    list_slug: str,
    name: str | None,
    language: str | None,
    resubscribe: bool,
) -> None:
    """Subscribe EMAIL to a list (accepts 'Name <address>')."""
    from bulletin.store.db import write_transaction
    from bulletin.store.subscribers import add_subscriber

    with write_transaction(_store(ctx)) as conn:
        result = add_subscriber(
            conn, email, list_slug, name=name, language=language, resubscribe=resubscribe
        )
    what = {"added": "Subscribed", "resubscribed": "Re-subscribed", "already": "Already on"}
    extra = f" (was {result.was})" if result.was else ""
    console.print(
        f"{what[result.outcome]} {result.subscriber.email} to {list_slug}{extra}.", markup=False
    )


@subscribers_group.command(
    "remove",
    epilog="Example:\n\n\b\n  bulletin subscribers remove ion@example.ro --yes",
)
@click.argument("email")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def subscribers_remove_cmd(ctx: Context, email: str, yes: bool) -> None:
    """Delete EMAIL with its subscriptions and history (erasure on request).

    The address is forgotten, so a later import may add it again; to keep someone from
    receiving mail, use `bulletin subscribers unsubscribe EMAIL --all` instead.
    """
    from bulletin.store.db import write_transaction
    from bulletin.store.subscribers import get_subscriber, remove_subscriber

    with write_transaction(_store(ctx)) as conn:
        sub = get_subscriber(conn, email)
        if not yes:
            click.confirm(f"Delete {sub.email} and all its history?", abort=True)
        remove_subscriber(conn, sub.id)
    console.print(f"Removed {sub.email}.", markup=False)


@subscribers_group.command(
    "unsubscribe",
    epilog="Example:\n\n\b\n  bulletin subscribers unsubscribe ion@example.ro --list newsletter-ro",
)
@click.argument("email")
@click.option("--list", "list_slug", metavar="SLUG", help="Unsubscribe from this list only.")
@click.option("--all", "all_lists", is_flag=True, help="Unsubscribe from every list, for good.")
@pass_ctx
def subscribers_unsubscribe_cmd(
    ctx: Context, email: str, list_slug: str | None, all_lists: bool
) -> None:
    """Unsubscribe EMAIL from one list (--list SLUG) or from everything (--all)."""
    from bulletin.store.db import write_transaction
    from bulletin.store.subscribers import get_subscriber, unsubscribe

    if bool(list_slug) == all_lists:
        raise click.UsageError("Give either --list SLUG or --all.")
    with write_transaction(_store(ctx)) as conn:
        sub = get_subscriber(conn, email)
        changed = unsubscribe(conn, sub.id, None if all_lists else list_slug, "cli")
    where = "every list" if all_lists else list_slug
    state = f"Unsubscribed {sub.email} from {where}" if changed or all_lists else "No change"
    console.print(f"{state} ({changed} subscription(s) changed).", markup=False)


@subscribers_group.command(
    "show",
    epilog="Example:\n\n\b\n  bulletin subscribers show ion@example.ro",
)
@click.argument("email")
@pass_ctx
def subscribers_show_cmd(ctx: Context, email: str) -> None:
    """Show EMAIL's details, lists, statuses and history."""
    from rich.table import Table

    from bulletin.store.subscribers import details

    with _store(ctx).begin() as conn:
        info = details(conn, email)
    sub = info.subscriber
    card = Table(show_header=False, box=None)
    card.add_column(style="bold")
    card.add_column()
    smtputf8 = " (non-ASCII local part: needs SMTPUTF8)" if sub.smtputf8 else ""
    for label, value in (
        ("email", sub.email + smtputf8),
        ("id", str(sub.id)),
        ("name", sub.name),
        ("language", sub.language),
        ("status", sub.status),
        ("source", sub.source),
        ("created", f"{sub.created_at:%Y-%m-%d %H:%M} UTC"),
        ("updated", f"{sub.updated_at:%Y-%m-%d %H:%M} UTC"),
        *((f"attr.{k}", str(v)) for k, v in sorted(sub.attributes.items())),
    ):
        card.add_row(label, value)
    console.print(card)
    lists_table = Table("list", "status", "since", "source", title="Lists", title_justify="left")
    for m in info.memberships:
        lists_table.add_row(m.list_slug, m.effective, f"{m.updated_at:%Y-%m-%d}", m.source)
    console.print(lists_table)
    history = Table("when (UTC)", "event", "list", "detail", "source", title="History")
    history.title_justify = "left"
    for e in info.history:
        history.add_row(f"{e.at:%Y-%m-%d %H:%M}", e.kind, e.list_slug or "", e.detail, e.source)
    console.print(history)


@subscribers_group.command(
    "count",
    epilog="Example:\n\n\b\n  bulletin subscribers count --list newsletter-ro --status "
    "unsubscribed",
)
@click.option("--list", "list_slug", metavar="SLUG", help="Count the members of this list.")
@click.option(
    "--status",
    default="subscribed",
    show_default=True,
    type=click.Choice(["subscribed", "unsubscribed", "bounced", "complained", "blocked", "all"]),
    help="Which members to count.",
)
@pass_ctx
def subscribers_count_cmd(ctx: Context, list_slug: str | None, status: str) -> None:
    """Print how many subscribers (on a list) are in a status."""
    from bulletin.store.subscribers import count

    with _store(ctx).begin() as conn:
        console.print(str(count(conn, list_slug, status)))


@subscribers_group.command(
    "export",
    epilog="Example:\n\n\b\n  bulletin subscribers export --list newsletter-ro -o "
    "newsletter-ro.csv",
)
@click.option("--list", "list_slug", required=True, metavar="SLUG", help="List to export.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to write (default: standard output).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["subscribed", "unsubscribed", "bounced", "complained", "blocked", "all"]),
    help="Members to export; repeat for several (default: subscribed).",
)
@pass_ctx
def subscribers_export_cmd(
    ctx: Context, list_slug: str, output: Path | None, statuses: tuple[str, ...]
) -> None:
    """Export a list as CSV that `subscribers import` reads back unchanged.

    Cells that a spreadsheet would run as a formula get a leading apostrophe.
    """
    import sys

    from bulletin.store.export import export_csv

    wanted = statuses or ("subscribed",)
    with _store(ctx).begin() as conn:
        if output is None:
            export_csv(conn, list_slug, sys.stdout, statuses=wanted)
            return
        try:
            with open(output, "w", encoding="utf-8-sig", newline="") as f:
                n = export_csv(conn, list_slug, f, statuses=wanted)
        except OSError as exc:
            raise BulletinError(f"Cannot write {output}: {exc.strerror}.") from None
    err_console.print(f"Exported {n:,} subscribers of {list_slug} to {output}.", markup=False)


@cli.group(
    "lists",
    invoke_without_command=True,
    epilog="Examples:\n\n\b\n  bulletin lists\n  bulletin lists create newsletter-ro --name "
    '"Newsletter (RO)"',
)
@click.pass_context
def lists_group(click_ctx: click.Context) -> None:
    """Show the mailing lists with member counts by status (or create one)."""
    if click_ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from bulletin.store.subscribers import EFFECTIVE_STATUSES, list_counts

    assert isinstance(click_ctx.obj, Context)
    with _store(click_ctx.obj).begin() as conn:
        rows = list_counts(conn)
    if not rows:
        console.print("No lists yet. Create one with `bulletin lists create SLUG`.", markup=False)
        return
    table = Table("list", "name", box=None, pad_edge=False, header_style="bold")
    for status in (*EFFECTIVE_STATUSES, "total"):
        table.add_column(status, justify="right", min_width=len(status))
    for c in rows:
        counts = (f"{c.counts[s]:,}" for s in EFFECTIVE_STATUSES)
        table.add_row(c.slug, c.name, *counts, f"{c.total:,}")
    console.print(table)


@lists_group.command(
    "create",
    epilog='Example:\n\n\b\n  bulletin lists create newsletter-ro --name "Newsletter în română"',
)
@click.argument("slug")
@click.option("--name", default=None, help="Display name (default: the slug).")
@pass_ctx
def lists_create_cmd(ctx: Context, slug: str, name: str | None) -> None:
    """Create the list SLUG (lower-case letters, digits, dashes)."""
    from bulletin.store.db import write_transaction
    from bulletin.store.subscribers import create_list

    with write_transaction(_store(ctx)) as conn:
        created = create_list(conn, slug, name)
    console.print(f"Created list {created.slug} ({created.name}).", markup=False)


# --- local mail capture (bulletin.sink) -------------------------------------------------


@cli.command(
    "sink",
    epilog="Examples:\n\n\b\n  bulletin sink\n  bulletin sink --port 2526 --maildir /tmp/captured",
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=2525,
    show_default=True,
    help="Port to listen on (0 picks any free port).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Maildir folder for the messages (default: mail/sink in the workspace).",
)
@pass_ctx
def sink_cmd(ctx: Context, port: int, host: str, maildir: Path | None) -> None:
    """Capture mail locally: an SMTP server that stores every message, delivers none.

    With smtp.url = "smtp://127.0.0.1:2525" (the default) an issue can be sent for real
    without reaching anyone. Each message is stored once per recipient in a Maildir, with
    X-Bulletin-Envelope-From and Delivered-To header lines added; any mail client opens it.
    Ctrl-C stops the server and prints how many messages it captured.
    """
    import signal
    import time

    from bulletin.sink import start_sink

    configured: str | None = None
    if maildir is None:
        workspace = ctx.workspace
        maildir = workspace.root / "mail" / "sink"
        configured = workspace.config.smtp.url
    handle = start_sink(maildir, host, port)
    console.print(
        f"Capturing mail at {handle.url} into {maildir} (Ctrl-C to stop)",
        markup=False,
        soft_wrap=True,
    )
    if configured is not None and configured.rstrip("/") != handle.url:
        console.print(
            f'Note: bulletin.toml sends to {configured}; set smtp.url = "{handle.url}" '
            "to send here.",
            markup=False,
            soft_wrap=True,
        )

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A process manager's SIGTERM stops the sink like Ctrl-C, with the summary.
    previous = signal.signal(signal.SIGTERM, terminate)
    seen = 0
    try:
        while True:
            count = handle.wait(seen, timeout=1.0)
            if count == seen:
                continue
            if count == seen + 1 and handle.last is not None:
                rcpt, subject = handle.last
                console.print(f"{count:>7,}  {rcpt}  {subject}", markup=False, soft_wrap=True)
            else:
                console.print(f"{count:>7,}  (+{count - seen:,} messages)", markup=False)
            seen = count
            # One line per half second at most: a big send is summarised, not listed.
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
        signal.signal(signal.SIGTERM, previous)
    noun = "message" if handle.count == 1 else "messages"
    console.print(
        f"Stopped. Captured {handle.count:,} {noun} in {maildir}.", markup=False, soft_wrap=True
    )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bulletin")


if __name__ == "__main__":  # pragma: no cover
    main()
