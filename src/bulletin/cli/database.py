"""``bulletin db``: the store as a whole (copying it to another engine)."""

from __future__ import annotations

from pathlib import Path

import click

from bulletin.cli._common import Context, console, err_console, examples, pass_ctx, print_summary


@click.group(
    "db",
    epilog=examples("bulletin db copy subscribers/bulletin.db"),
)
def db_group() -> None:
    """The subscriber store as a whole: move it to another database."""


@db_group.command(
    "copy",
    epilog=examples(
        "bulletin db copy subscribers/bulletin.db",
        "bulletin db copy sqlite:////srv/old-workspace/subscribers/bulletin.db",
    ),
)
@click.argument("source")
@pass_ctx
def copy_cmd(ctx: Context, source: str) -> None:
    """Copy every subscriber, list, event and send from SOURCE into database.url.

    SOURCE is a SQLite file or a database URL; the target is this workspace's database
    (database.url, or BULLETIN_DATABASE_URL), which must be empty: point it at a new
    PostgreSQL database, then copy the old SQLite file into it. Everything is copied as it
    is -- opt-outs, bounces and complaints, the ledger of who got which issue, the history --
    in one transaction: a failure leaves the target empty. Stop senders first; a source with
    senders at work is refused.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bulletin.store.copy import source_url
    from bulletin.store.operations import copy_into

    url = source_url(source, Path.cwd())
    engine = ctx.store()
    columns = (TextColumn("Copying {task.fields[table]}"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, console=err_console, transient=True, disable=not err_console.is_terminal
    ) as bar:
        task = bar.add_task("copy", total=None, table="")

        def on_start(rows: int) -> None:
            bar.update(task, total=rows)

        def on_progress(table: str, rows: int) -> None:
            bar.update(task, advance=rows, table=table)

        report = copy_into(engine, url, on_start=on_start, progress=on_progress)
    print_summary(
        f"Copied {report.source} into {report.target}.",
        ((table, n) for table, n in report.rows.items()),
        unit="rows",
    )
    console.print("Run `bulletin lists` to see the lists in their new home.", highlight=False)


COMMANDS = (db_group,)
