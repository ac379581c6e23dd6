"""Reading mail files: a Maildir folder, an mbox file or a single message.

:func:`open_mailbox` looks at PATH and picks the format: a folder with ``cur/`` or ``new/``
is a Maildir, a file whose first line starts with ``From `` is an mbox, any other file is one
message (``.eml``). Messages come out one at a time, numbered from 1 in a stable order
(Maildir: file names, which start with the delivery time; mbox: file order), so a problem
can be reported as "PATH: message N" and a large mbox is never held in memory at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bulletin.errors import BulletinError

MailboxKind = Literal["Maildir", "mbox", "message"]

_MBOX_SEPARATOR = b"From "
# mboxrd quotes body lines that look like a separator with one more ">"; remove one again.
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.M)


@dataclass(frozen=True)
class MailItem:
    """One message read from a mailbox, or why it could not be read.

    ``number`` counts from 1 in the mailbox's order; ``where`` names it for people ("message
    3 (new/1413271267.M1P2.host)", "message 12 (line 840)").
    """

    number: int
    where: str
    data: bytes | None
    error: str | None = None


class Mailbox:
    """A mail file or folder that yields :class:`MailItem` s; see :func:`open_mailbox`."""

    def __init__(self, path: Path, kind: MailboxKind) -> None:
        self.path = path
        self.kind: MailboxKind = kind

    def __repr__(self) -> str:
        return f"<Mailbox {self.kind} {str(self.path)!r}>"

    def count(self) -> int:
        """How many messages the mailbox holds (a quick scan, for progress bars)."""
        if self.kind == "message":
            return 1
        if self.kind == "Maildir":
            return len(self._maildir_files())
        n = 0
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    if line.startswith(_MBOX_SEPARATOR):
                        n += 1
        except OSError as exc:
            raise _unreadable(self.path, exc) from None
        return n

    def __iter__(self) -> Iterator[MailItem]:
        if self.kind == "message":
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                raise _unreadable(self.path, exc) from None
            yield MailItem(1, "message 1", data)
        elif self.kind == "Maildir":
            yield from self._iter_maildir()
        else:
            yield from self._iter_mbox()

    def _maildir_files(self) -> list[Path]:
        files: list[Path] = []
        for sub in ("new", "cur"):
            folder = self.path / sub
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _unreadable(folder, exc) from None
            # Dot files are not messages (Dovecot and others keep state in them).
            files.extend(folder / name for name in names if not name.startswith("."))
        # Maildir names start with the delivery time: sorting by name reads oldest first.
        files.sort(key=lambda p: (p.name, p.parent.name))
        return files

    def _iter_maildir(self) -> Iterator[MailItem]:
        for number, file in enumerate(self._maildir_files(), 1):
            where = f"message {number} ({file.parent.name}/{file.name})"
            try:
                data = file.read_bytes()
            except OSError as exc:
                # One unreadable file (moved by a mail client meanwhile, wrong permissions)
                # does not stop the others.
                yield MailItem(number, where, None, exc.strerror or str(exc))
                continue
            yield MailItem(number, where, data)

    def _iter_mbox(self) -> Iterator[MailItem]:
        number = start_line = lineno = 0
        lines: list[bytes] = []
        try:
            with open(self.path, "rb") as f:
                for lineno, line in enumerate(f, 1):
                    if line.startswith(_MBOX_SEPARATOR):
                        if number:
                            yield _mbox_item(number, start_line, lines)
                        number += 1
                        start_line = lineno
                        lines = []
                    elif number:
                        lines.append(line)
        except OSError as exc:
            if not lineno:
                raise _unreadable(self.path, exc) from None
            raise BulletinError(
                f"{self.path}: cannot read message {number} (after line {lineno}): "
                f"{exc.strerror or exc}.",
                hint="Check the file (a disk error?); the messages before it were processed "
                "and a new run skips them.",
            ) from None
        if number:
            yield _mbox_item(number, start_line, lines)


def _mbox_item(number: int, start_line: int, lines: list[bytes]) -> MailItem:
    data = b"".join(lines)
    if data.endswith(b"\n\n"):
        data = data[:-1]  # the blank line that separates messages in an mbox
    data = _QUOTED_FROM.sub(rb"\1", data)
    return MailItem(number, f"message {number} (line {start_line})", data)


def _unreadable(path: Path, exc: OSError) -> BulletinError:
    return BulletinError(
        f"Cannot read {path}: {exc.strerror or exc}.",
        hint="Check the path and its permissions.",
    )


def open_mailbox(path: Path) -> Mailbox:
    """The mailbox at ``path``: a Maildir folder, an mbox file or one message file."""
    path = Path(path)
    if path.is_dir():
        if (path / "cur").is_dir() or (path / "new").is_dir():
            return Mailbox(path, "Maildir")
        hint = "Give a Maildir folder (holding cur/ and new/), an mbox file or a .eml file."
        if path.name in ("cur", "new", "tmp") and (path.parent / "cur").is_dir():
            hint = f"Give the Maildir folder itself: {path.parent}"
        raise BulletinError(f"{path} is a folder but not a Maildir (no cur/ or new/).", hint=hint)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_MBOX_SEPARATOR))
    except FileNotFoundError:
        raise BulletinError(
            f"{path} does not exist.",
            hint="Give a Maildir folder, an mbox file or a single message (.eml) file.",
        ) from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return Mailbox(path, "mbox" if head == _MBOX_SEPARATOR else "message")
