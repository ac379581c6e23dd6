"""The ``bulletin`` command line: one module per command group, as thin as possible.

Each command turns its options into one library call and prints the result. Only this
package imports click. User errors (:class:`bulletin.errors.BulletinError`) are printed
without a traceback and exit with their code; so is database trouble (a damaged, read-only
or full store: :func:`bulletin.store.db.database_problem` says which), for every command in
this one place. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from bulletin import __version__
from bulletin.cli import compose, database, inbound, lists, send, sink, subscribers, web
from bulletin.cli._common import Context, err_console, examples, visible
from bulletin.errors import BulletinError


class BulletinGroup(click.Group):
    """A group that turns BulletinError and database trouble into a clean message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BulletinError as exc:
            _fail(ctx, _say_where_the_url_came_from(exc))
        except Exception as exc:
            problem = ctx.obj.database_problem(exc) if isinstance(ctx.obj, Context) else None
            if problem is None:
                raise
            _fail(ctx, _say_where_the_url_came_from(problem))


def _say_where_the_url_came_from(exc: BulletinError) -> BulletinError:
    """Database messages speak of database.url; add that BULLETIN_DATABASE_URL overrode it."""
    import os

    from bulletin.store.db import DatabaseProblem

    if not isinstance(exc, DatabaseProblem) or not os.environ.get("BULLETIN_DATABASE_URL"):
        return exc
    hint = (exc.hint + " " if exc.hint else "") + (
        "(The database here is BULLETIN_DATABASE_URL's, which overrides database.url.)"
    )
    return DatabaseProblem(exc.message, hint=hint, kind=exc.kind)


def _fail(ctx: click.Context, exc: BulletinError) -> None:
    # Messages quote paths and what users typed: shown as text, never as markup, and with
    # control characters made visible.
    message = visible(exc.message, lines=True)
    err_console.print(Text.assemble(("Error:", "bold red"), " ", message), soft_wrap=True)
    if exc.hint:
        err_console.print(visible(exc.hint, lines=True), soft_wrap=True)
    ctx.exit(exc.exit_code)


@click.group(
    cls=BulletinGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=examples(
        "bulletin init my-newsletter && cd my-newsletter",
        "bulletin check 2014-10-clusterpolisee-03",
        "bulletin preview 2014-10-clusterpolisee-03",
    ),
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
    # A process exiting closes its connections anyway; a caller running commands in-process
    # (tests, a scheduler) would otherwise collect a PostgreSQL connection per command.
    ctx.call_on_close(ctx.obj.close)


for _module in (compose, subscribers, lists, send, inbound, sink, web, database):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bulletin")
