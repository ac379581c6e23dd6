"""What every command module shares: the consoles, the per-invocation context, the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from bulletin import workspace as ws

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bulletin.store.db import DatabaseProblem

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class Context:
    """Per-invocation state: the --workspace option, loaded lazily."""

    def __init__(self, workspace_dir: Path | None) -> None:
        self.workspace_dir = workspace_dir
        self._ws: ws.Workspace | None = None
        self._engine: Engine | None = None

    @property
    def workspace(self) -> ws.Workspace:
        if self._ws is None:
            self._ws = ws.load(self.workspace_dir)
        return self._ws

    def store(self) -> Engine:
        """The workspace's subscriber store, migrated to the current schema."""
        from bulletin.store.db import open_store

        self._engine = open_store(self.workspace.database_url())
        return self._engine

    def database_problem(self, exc: Exception) -> DatabaseProblem | None:
        """What ``exc`` means for the user if it is trouble with the store; None otherwise."""
        if self._engine is None:  # nothing opened the store, so it cannot be about it
            return None
        from bulletin.store.db import database_problem

        return database_problem(exc, self._engine)


pass_ctx = click.make_pass_decorator(Context)


def examples(*lines: str) -> str:
    """A command's epilog: its examples, one a line, kept as written by click."""
    head = "Example:" if len(lines) == 1 else "Examples:"
    return f"{head}\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
