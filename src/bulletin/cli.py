"""The ``bulletin`` command line. Each command turns options into one library call and prints.

Only this module imports click. User errors (:class:`bulletin.errors.BulletinError`) are
printed without a traceback and exit with their code; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bulletin")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
