"""User-facing errors.

A :class:`BulletinError` is something the user can fix: its message says what happened and
what to do, and the CLI prints it without a traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Location:
    """Where a problem is: a file (relative to the workspace when possible), line and column."""

    path: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        out = self.path
        if self.line is not None:
            out += f":{self.line}"
            if self.column is not None:
                out += f":{self.column}"
        return out


@dataclass(frozen=True)
class Problem:
    """One finding: an error or a warning, located where possible.

    ``code`` is a short stable identifier (``schema``, ``yaml``, ``mjml.unknown-tag``,
    ``check.size``...) that tests and ``--strict`` filtering can rely on.
    """

    message: str
    location: Location | None = None
    severity: Severity = "error"
    code: str = "error"

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        return f"{prefix}{self.message}"

    def as_error(self) -> Problem:
        """The same finding promoted to an error (``--strict``)."""
        return Problem(self.message, self.location, "error", self.code)


class BulletinError(Exception):
    """An error the user can fix. ``str()`` is the whole message, hint included."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n{hint}")


class ProblemsError(BulletinError):
    """Several located problems found at once (the whole file is checked, then we abort once)."""

    def __init__(
        self, problems: Iterable[Problem], *, summary: str = "", hint: str | None = None
    ) -> None:
        self.problems: Sequence[Problem] = list(problems)
        lines = [summary] if summary else []
        lines += [str(p) for p in self.problems]
        super().__init__("\n".join(lines), hint=hint)


class ConfigError(ProblemsError):
    """bulletin.toml is missing, unreadable or invalid."""


class ContentError(ProblemsError):
    """An issue folder (issue.yaml and the files it references) is invalid."""


class TemplateError(ProblemsError):
    """A template is missing, fails to render, or produces invalid MJML."""


class WorkspaceNotFound(BulletinError):
    """No bulletin.toml in the current folder or any parent."""
