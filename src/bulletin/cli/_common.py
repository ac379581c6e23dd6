"""What every command module shares: the consoles, the per-invocation context, the store."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.text import Text

from bulletin import workspace as ws
from bulletin.store.normalise import CONTROL_CHARACTERS

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

    def close(self) -> None:
        """Close the store's connections (when the command ends, however it ends)."""
        if self._engine is not None:
            self._engine.dispose()

    def database_problem(self, exc: Exception) -> DatabaseProblem | None:
        """What ``exc`` means for the user if it is trouble with the store; None otherwise."""
        if self._engine is None:  # nothing opened the store, so it cannot be about it
            return None
        from bulletin.store.db import database_problem

        return database_problem(exc, self._engine)


pass_ctx = click.make_pass_decorator(Context)

_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    code = ord(ch)
    return _ESCAPES.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: object, *, lines: bool = False) -> Text:
    """Stored or received text, safe to print: shown, never obeyed.

    A name, a list name or a bounce's diagnostic may hold ESC sequences that move the cursor
    or retitle the terminal, or U+202E that reverses what follows; they are shown as escapes
    (``\\x1b``, ``\\u202e``). ``[`` is never rich markup. With ``lines``, line breaks are
    kept (a multi-line error message).
    """
    s = str(text)
    if CONTROL_CHARACTERS.search(s) is not None:
        if lines:
            s = "\n".join(CONTROL_CHARACTERS.sub(_escape, part) for part in s.split("\n"))
        else:
            s = CONTROL_CHARACTERS.sub(_escape, s)
    return Text(s)


def examples(*lines: str) -> str:
    """A command's epilog: its examples, one a line, kept as written by click."""
    head = "Example:" if len(lines) == 1 else "Examples:"
    return f"{head}\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def print_summary(
    title: str, rows: Iterable[tuple[str, int]], *, dry_run: bool = False, unit: str = "count"
) -> None:
    """A finished operation's title (marked as a dry run if it was one) and its counts table."""
    from rich.table import Table

    if dry_run:
        title += " (dry run: nothing was changed)"
    console.print(visible(title), soft_wrap=True)
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column(unit, justify="right")
    for label, n in rows:
        table.add_row(label, f"{n:,}")
    console.print(table)
