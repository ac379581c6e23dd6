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
    name, attributes = "", None
    if subscriber is not None:
        from bulletin.store.subscribers import find_subscriber

        with _store(ctx).connect() as conn:
            found = find_subscriber(conn, subscriber)
        if found is None:
            err_console.print(
                f"note: {subscriber} is not in the subscriber store; only the address is filled.",
                markup=False,
            )
        else:
            name, attributes = found.name, found.attributes
    result = write_rendered(
        workspace, loaded, output, email=subscriber, name=name, attributes=attributes
    )
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
    # "since" is when the status last changed; the History below says who changed it.
    lists_table = Table(
        "list", "status", "since", "joined", "joined via", title="Lists", title_justify="left"
    )
    for m in info.memberships:
        lists_table.add_row(
            m.list_slug,
            m.effective,
            f"{m.updated_at:%Y-%m-%d}",
            f"{m.created_at:%Y-%m-%d}",
            m.source,
        )
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


# --- sending (bulletin.dispatch) --------------------------------------------------------


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


@cli.command(
    "send",
    epilog="Examples:\n\n\b\n  bulletin send 2014-10-clusterpolisee-03 --list demo --dry-run\n"
    "  bulletin send 2014-10-clusterpolisee-03 --list demo --test ana@example.org\n"
    "  bulletin send 2014-10-clusterpolisee-03 --list demo --rate 10 --yes\n\n"
    "Exit status: 0 sent (or nothing left to send), 1 error, 75 not finished yet (paused, or "
    "deferred recipients to retry later: run the same command again), 130 interrupted.",
)
@click.argument("issue")
@click.option(
    "--list",
    "list_slugs",
    multiple=True,
    required=True,
    metavar="SLUG",
    help="List to send to; repeat for several (each person gets one copy).",
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
    yes: bool,
) -> None:
    """Send ISSUE to the subscribers of a list, resumably.

    First runs `bulletin check` (errors stop the send), then shows the plan and asks for
    confirmation. Every recipient's state is kept in a ledger: run the same command again
    after a crash, Ctrl-C or a pause and it carries on where it stopped; once the send is
    complete it says so and sends nothing. Defaults for the options come from [send] in
    bulletin.toml.
    """
    import sys

    from bulletin.dispatch.plan import SendOptions, prepare_send

    if dry_run and test_addresses:
        raise click.UsageError("Give either --dry-run or --test, not both.")
    workspace = ctx.workspace
    options = SendOptions.from_config(
        workspace.config.send,
        connections=connections,
        rate=None if rate is None else _rate(rate),
        rate_hour=rate_hour,
        batch_size=batch_size,
    )
    db = _store(ctx)
    plan = prepare_send(workspace, db, issue, list_slugs, options, test=bool(test_addresses))
    for problem in plan.warnings:
        err_console.print(f"warning: {problem}", markup=False, soft_wrap=True)
    if test_addresses:
        _send_test(plan, db, test_addresses)
        return
    if plan.done:
        assert plan.existing is not None
        _print_already_done(db, plan.existing.id, plan.issue_slug)
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
        click.confirm(f"Send to {plan.recipients:,} recipients?", abort=True)
    _run_send(plan, db, transport, issue)


def _transport(workspace: ws.Workspace) -> Any:
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


def _print_already_done(db: Any, send_id: int, slug: str) -> None:
    from bulletin.store import ledger

    with db.connect() as conn:
        counts = ledger.counts(conn, send_id)
    console.print(
        f"Already sent: {counts['sent']:,} sent, {counts['failed']:,} failed"
        + (f", {counts['skipped']:,} skipped" if counts["skipped"] else "")
        + f"; nothing to do. Details: bulletin status {slug}",
        markup=False,
        soft_wrap=True,
    )


def _send_test(plan: Any, db: Any, addresses: tuple[str, ...]) -> None:
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


def _dry_run(plan: Any, db: Any) -> None:
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


def _run_send(plan: Any, db: Any, transport: Any, issue: str) -> None:
    import signal

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from bulletin.dispatch.engine import SendEngine

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

        def on_progress(p: Any) -> None:
            detail = f"{p.rate:,.0f}/s  sent {p.sent:,}"
            if p.deferred:
                detail += f"  deferred {p.deferred:,}"
            if p.failed:
                detail += f"  failed {p.failed:,}"
            if p.note:
                detail += f"  ({p.note})"
            bar.update(task, completed=p.processed, detail=detail)

        engine = SendEngine(plan, db, transport, on_progress=on_progress)
        presses = 0

        def on_signal(signum: int, frame: object) -> None:
            nonlocal presses
            presses += 1
            if presses > 1:
                raise KeyboardInterrupt
            engine.stop("interrupted")
            err_console.print(
                "Stopping: finishing the messages on the wire; the rest waits for the next "
                "run (Ctrl-C again to quit at once)...",
                markup=False,
            )

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            result = engine.run()
        except KeyboardInterrupt:
            err_console.print(
                f"Stopped at once. Run `{resume}` to resume; the messages that were on the "
                "wire will be sent again (same Message-ID).",
                markup=False,
                soft_wrap=True,
            )
            click.get_current_context().exit(130)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    _print_send_result(result, plan.issue_slug, resume)


def _print_send_result(result: Any, slug: str, resume: str) -> None:
    from rich.table import Table

    c = result.counts
    table = Table("state", "recipients", box=None, pad_edge=False, header_style="bold")
    table.columns[1].justify = "right"
    for state in ("sent", "failed", "skipped", "deferred", "pending", "sending"):
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
        console.print(
            f"{result.in_doubt:,} recipients were in doubt after an interruption and were sent "
            "again with the same Message-ID.",
            markup=False,
            soft_wrap=True,
        )
    if c["failed"]:
        console.print(
            f"{c['failed']:,} failed; see why with `bulletin status {slug} --failed`.",
            markup=False,
            soft_wrap=True,
        )
    ctx = click.get_current_context()
    if result.state == "done":
        console.print(f"Done: {slug} is sent.", markup=False)
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
        err_console.print(f"When it is fixed, run `{resume}` to resume.", markup=False)
        ctx.exit(75)
    else:
        console.print(
            f"Interrupted. Run `{resume}` to resume where it stopped.", markup=False, soft_wrap=True
        )
        ctx.exit(130)


@cli.command(
    "status",
    epilog="Examples:\n\n\b\n  bulletin status 2014-10-clusterpolisee-03\n"
    "  bulletin status 2014-10-clusterpolisee-03 --list demo --failed\n"
    "  bulletin status 2014-10-clusterpolisee-03 --csv > recipients.csv",
)
@click.argument("issue")
@click.option("--list", "list_slug", metavar="SLUG", help="Only sends to this list.")
@click.option(
    "--failed", "failed_only", is_flag=True, help="List every failed or deferred recipient."
)
@click.option(
    "--csv", "as_csv", is_flag=True, help="Print the recipients as CSV (with --failed: only those)."
)
@pass_ctx
def status_cmd(
    ctx: Context, issue: str, list_slug: str | None, failed_only: bool, as_csv: bool
) -> None:
    """Show how the sends of ISSUE went: counts by state, rate, start and end, problems.

    Each failed or deferred recipient is listed with the relay's reply (the first 20;
    --failed for all). "In doubt" counts recipients that were being sent when a send was
    killed: they were sent again with the same Message-ID, so at most that many people
    may have two copies.
    """
    import sys

    from bulletin.dispatch.status import send_status, write_csv

    db = _store(ctx)
    found = send_status(db, issue, list_slug, limit=None if failed_only else 20)
    if as_csv:
        write_csv(db, [s.send for s in found], sys.stdout, problems_only=failed_only)
        return
    for s in found:
        _print_status(s)


def _print_status(s: Any) -> None:
    from rich.table import Table

    send = s.send
    console.print(
        f"[bold]{send.issue_slug}[/] to {', '.join(send.lists)}: [bold]{send.state}[/]",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"Subject: {send.subject}", markup=False, soft_wrap=True)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for state in ("sent", "failed", "deferred", "skipped", "pending", "sending"):
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
    if send.in_doubt:
        console.print(
            f"In doubt: {send.in_doubt:,} recipients were being sent when a run was killed and "
            "were sent again with the same Message-ID (at most that many duplicates).",
            markup=False,
            soft_wrap=True,
        )
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


# --- bounces and mailto unsubscribes (bulletin.inbound) ---------------------------------


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


def _print_mail_report(report: Any, title: str, lines: list[str]) -> None:
    """Summary table, then what was done to whom, then unreadable messages (exit 1)."""
    from rich.table import Table

    if report.dry_run:
        title += " (dry run: nothing was changed)"
    console.print(title, markup=False, soft_wrap=True)
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, n in report.summary_rows():
        table.add_row(label, f"{n:,}")
    console.print(table)
    shown = 20
    for line in lines[:shown]:
        console.print(f"  {line}", markup=False, soft_wrap=True)
    if len(lines) > shown:
        console.print(f"  ... and {len(lines) - shown:,} more", markup=False)
    for problem in report.problems:
        err_console.print(f"error: {problem}", markup=False, soft_wrap=True)
    if report.problems:
        err_console.print(
            "The other messages were processed; fix or remove the unreadable ones and run "
            "the import again (what is done already is skipped).",
            markup=False,
            soft_wrap=True,
        )
        click.get_current_context().exit(1)


@cli.group(
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
    engine = _store(ctx)
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


@cli.group(
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
    engine = _store(ctx)
    with _MailProgress(f"Reading {path.name}") as progress:
        report = import_unsubscribes(engine, path, settings, dry_run=dry_run, progress=progress)
    lines = [f"unsubscribed {email} from {where}" for email, where in report.done]
    _print_mail_report(report, f"Unsubscribe requests in {report.path} ({report.kind})", lines)


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

    from bulletin.sink import DEFAULT_MAILDIR, start_sink

    configured: str | None = None
    if maildir is None:
        workspace = ctx.workspace
        maildir = workspace.root / DEFAULT_MAILDIR
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


# --- the public web service and archive (bulletin.web.public, bulletin.web.archive) ------


@cli.command(
    "serve",
    epilog="Examples:\n\n\b\n  bulletin serve\n  bulletin serve --host 127.0.0.1 --port 8080",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (keep 127.0.0.1 behind a reverse proxy on the same host).",
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0 picks any free port).",
)
@pass_ctx
def serve_cmd(ctx: Context, host: str, port: int) -> None:
    """Serve the public pages: one-click unsubscribe and the archive of issues.

    GET /u/TOKEN shows a confirmation page and changes nothing; POST /u/TOKEN (its button,
    or a mail provider's RFC 8058 one-click request) unsubscribes at once. /archive/ lists
    the published issues; /healthz answers ok for a proxy. Run it behind a reverse proxy
    with HTTPS at newsletter.base_url (see README, "Deploying bulletin serve").
    """
    from bulletin.web.public import serve_public

    serve_public(ctx.workspace, host=host, port=port)


@cli.group(
    "archive",
    epilog="Example:\n\n\b\n  bulletin archive build public/archive",
)
def archive_group() -> None:
    """The public archive of issues (also served by `bulletin serve` at /archive/).

    Every issue under issues/ is published from its date on, unless archive.exclude in
    bulletin.toml lists it. Archive copies hold no personal data.
    """


@archive_group.command(
    "build",
    epilog="Example:\n\n\b\n  bulletin archive build public/archive\n"
    "  rsync -a public/archive/ web:/srv/www/news/archive/",
)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
def archive_build_cmd(ctx: Context, out: Path) -> None:
    """Write the archive as static files into OUT: index.html and SLUG/index.html.

    The files are the pages `bulletin serve` answers at /archive/ and /archive/SLUG, so
    OUT can be published at <base_url>/archive/ by any web server instead.
    """
    from bulletin.web.archive import build_archive

    report = build_archive(ctx.workspace, out)
    for slug, reason in report.skipped:
        console.print(f"  not published: {slug} ({reason})", markup=False, soft_wrap=True)
    noun = "issue" if len(report.entries) == 1 else "issues"
    console.print(
        f"Wrote the archive of {len(report.entries)} {noun} to {out} "
        f"({len(report.written)} files).",
        markup=False,
        soft_wrap=True,
    )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bulletin")


if __name__ == "__main__":  # pragma: no cover
    main()
