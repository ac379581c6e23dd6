"""The ``bulletin`` command line: one module per command group, as thin as possible.

Each command turns its options into one library call and prints the result. Only this
package imports click. User errors (:class:`bulletin.errors.BulletinError`) are printed
without a traceback and exit with their code; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from bulletin import __version__
from bulletin.cli import compose, inbound, lists, send, sink, subscribers, web
from bulletin.cli._common import Context, err_console, examples
from bulletin.errors import BulletinError


class BulletinGroup(click.Group):
    """A group that turns BulletinError into a clean message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BulletinError as exc:
            # The message may quote the user's file: print it as text, not as console markup.
            message = escape(exc.message)
            err_console.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)
            if exc.hint:
                err_console.print(exc.hint, markup=False)
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


for _module in (compose, subscribers, lists, send, inbound, sink, web):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bulletin")
