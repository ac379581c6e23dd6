"""Reading subscriber spreadsheets: encodings, delimiters, header names, spreadsheet quirks.

A :class:`CsvReader` streams records from a file of any size in constant memory. It accepts
what spreadsheets actually export:

* UTF-8 with or without BOM, UTF-16 with BOM (Excel's "Unicode text"), and legacy single-byte
  exports: cp1250 / ISO-8859-2 (Romanian and Central European Excel), cp1252 / ISO-8859-15
  (Western). Without a BOM the encoding is decided at the first non-ASCII bytes, on that
  chunk (and up to :data:`MAX_SAMPLE_BYTES` more if it is unclear): the reading whose words
  are plausible names wins (:mod:`bulletin.store.encodings`). When two readings are equally
  plausible and differ, the import stops and shows both; code pages that read everything so
  far alike stay candidates until a later chunk tells them apart. ``--encoding`` overrides.
  Bytes that the encoding cannot decode are an error naming the lines, never mojibake.
* comma, semicolon (European Excel), tab or pipe as delimiter, sniffed from the first lines;
* CRLF, LF or CR line ends, quoted fields with delimiters, quotes and line breaks inside.

Files that are not text (a workbook saved as .xlsx, a PDF, any binary), wider than
:data:`MAX_COLUMNS`, mixing line ends, or with a quote that never closes are refused with a
message saying what is wrong and where.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from bulletin.errors import BulletinError
from bulletin.store import encodings, normalise

CHUNK_BYTES = 1 << 20
MAX_SAMPLE_BYTES = 4 * CHUNK_BYTES
"""How far encoding detection reads ahead when the first non-ASCII chunk leaves it unsure."""
MAX_LINE_CHARS = 1_000_000
"""A physical line longer than this is not a subscriber row (protects memory)."""
MAX_RECORD_LINES = 100
"""A quoted field spanning more lines than this is an unclosed quote, not an address block."""
MAX_COLUMNS = 1000
"""A wider header is not a subscriber list (and the import stages one column per attribute:
SQLite allows 2,000 columns in a table, PostgreSQL 1,600)."""
SHOWN_LINES = 5
"""Damaged lines named in an error message; the rest are counted."""

_LF = b"\n"
_END = "\x00"
"""Fed to the csv parser after the last line: text never holds NUL (it is refused), so a
record that swallows it was still inside quotes when the file ended."""
DELIMITERS = (",", ";", "\t", "|")

_CSV_HINT = (
    "Save the sheet as CSV: in Excel, File › Save As › 'CSV UTF-8 (Comma delimited)'; "
    "in LibreOffice, File › Save As › 'Text CSV'."
)
_ENCODING_HINT = (
    "Save the file as CSV UTF-8, or name its encoding with --encoding "
    "(cp1250 or iso-8859-2 for Romanian and Central European, cp1252 for Western European "
    "exports)."
)
_DAMAGED_HINT = (
    "The rest of the file reads as UTF-8: retype the text on those lines (it was probably "
    "pasted from a file in another encoding) and save the file again as CSV UTF-8. If the "
    "whole file is in another encoding, name it with --encoding."
)
_QUOTE_HINT = 'Check the quotes on that line: a quote inside a value is written twice ("").'
_DAMAGE = re.compile("[\udc80-\udcff]+")
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx or .ods workbook?)"),
    (b"\xd0\xcf\x11\xe0", "an Excel .xls workbook"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"{\\rtf", "an RTF document"),
)


class ImportFileError(BulletinError):
    """The file as a whole cannot be imported (not text, no header, undecodable bytes...)."""


# --- spreadsheet formula injection ------------------------------------------------------

_FORMULA_CHARS = "=+-@\t\r"


def neutralise(cell: str) -> str:
    """Make a cell safe to open in a spreadsheet: a leading ``'`` stops formula evaluation."""
    return "'" + cell if cell[:1] and cell[0] in _FORMULA_CHARS else cell


def unneutralise(cell: str) -> str:
    """Undo :func:`neutralise` (so an export imports back unchanged)."""
    if len(cell) > 1 and cell[0] == "'" and cell[1] in _FORMULA_CHARS:
        return cell[1:]
    return cell


# --- header names -----------------------------------------------------------------------


def _fold(header: str) -> str:
    """Header text compared loosely: no accents, case, punctuation or extra spaces."""
    text = unicodedata.normalize("NFKD", header.replace("\ufeff", ""))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text).split())


_EMAIL_NAMES = frozenset(
    {
        "email",
        "e mail",
        "mail",
        "email address",
        "e mail address",
        "mail address",
        "emailaddress",
        "email adresa",
        "adresa email",
        "adresa e mail",
        "adresa de email",
        "adresa de e mail",
        "courriel",
    }
)
_NAME_NAMES = frozenset(
    {"name", "full name", "fullname", "display name", "nume", "nume complet", "nume si prenume"}
)
_FIRST_NAMES = frozenset(
    {"first name", "firstname", "first", "given name", "givenname", "forename", "prenume"}
)
_LAST_NAMES = frozenset(
    {"last name", "lastname", "last", "surname", "family name", "familyname", "nume de familie"}
)
_LANGUAGE_NAMES = frozenset({"language", "lang", "locale", "language code", "limba"})
_IGNORED_NAMES = frozenset({"rejected line", "rejected reason"})
"""Columns the rejects file adds, so a corrected rejects file imports cleanly."""

REJECT_COLUMNS = ("rejected_line", "rejected_reason")


def attribute_key(header: str) -> str:
    """The attribute name a column becomes: ``Organisation Name`` -> ``organisation_name``."""
    return normalise.attribute_key(header)  # the rule every entry point shares


@dataclass(frozen=True)
class ColumnMap:
    """Which column holds what; every other named column becomes an attribute."""

    width: int
    email: int
    name: int | None = None
    first_name: int | None = None
    last_name: int | None = None
    language: int | None = None
    attributes: tuple[tuple[int, str], ...] = ()
    ignored: tuple[str, ...] = ()

    def describe(self, header: list[str]) -> list[tuple[str, str]]:
        """(column header, what it becomes) pairs for the summary."""
        roles = {self.email: "email", self.name: "name", self.language: "language"}
        if self.first_name is not None:
            roles[self.first_name] = "first name (attribute first_name)"
        if self.last_name is not None:
            roles[self.last_name] = "last name (attribute last_name)"
        for index, key in self.attributes:
            roles[index] = f"attribute {key}"
        known = sorted((k, v) for k, v in roles.items() if k is not None)
        return [(header[i], role) for i, role in known]


def map_columns(header: list[str], label: str) -> ColumnMap:
    """Recognise the header row; raise :class:`ImportFileError` if it cannot be used."""
    folded = [_fold(h) for h in header]
    roles: dict[str, list[int]] = {"email": [], "name": [], "first": [], "last": [], "lang": []}
    for i, f in enumerate(folded):
        for role, names in (
            ("email", _EMAIL_NAMES),
            ("name", _NAME_NAMES),
            ("first", _FIRST_NAMES),
            ("last", _LAST_NAMES),
            ("lang", _LANGUAGE_NAMES),
        ):
            if f in names:
                roles[role].append(i)
    if not roles["email"]:
        loose = [i for i, f in enumerate(folded) if "email" in f or "e mail" in f]
        if len(loose) == 1:
            roles["email"] = loose
    # Romanian sheets say "Nume" + "Prenume" for last name + first name.
    if roles["first"] and not roles["last"]:
        nume = [i for i in roles["name"] if folded[i] == "nume"]
        if nume and len(roles["name"]) == 1:
            roles["last"], roles["name"] = nume, []

    shown = ", ".join(repr(h) for h in header)
    if not roles["email"]:
        looks_like_data = [h for h in header if "@" in h]
        if looks_like_data:
            raise ImportFileError(
                f"{label}: the first line holds data ({looks_like_data[0]!r}), not column names.",
                hint="Add a header line naming the columns, e.g. `email,name,language`.",
            )
        raise ImportFileError(
            f"{label}: no email column. The header has {shown}.",
            hint="Name the column with the addresses `email` (or `e-mail`, `Email Address`).",
        )
    for role, what in (
        ("email", "email"),
        ("name", "name"),
        ("first", "first name"),
        ("last", "last name"),
        ("lang", "language"),
    ):
        if len(roles[role]) > 1:
            cols = " and ".join(repr(header[i]) for i in roles[role])
            raise ImportFileError(
                f"{label}: two {what} columns ({cols}).",
                hint="Keep one of them, or rename the other to import it as an attribute.",
            )

    used = {i for ix in roles.values() for i in ix}
    attributes: list[tuple[int, str]] = []
    ignored: list[str] = []
    seen: dict[str, int] = {"first_name": -1, "last_name": -1}
    for i, h in enumerate(header):
        if i in used:
            continue
        if folded[i] in _IGNORED_NAMES:
            ignored.append(f"{h!r} (added by the rejects file)")
            continue
        key = attribute_key(h)
        if not key:
            ignored.append(f"column {i + 1} (no name)")
            continue
        if key in seen or key in ("email", "name", "language"):
            other = "the first/last name columns" if seen.get(key) == -1 else ""
            if key in seen and seen[key] >= 0:
                other = repr(header[seen[key]])
            raise ImportFileError(
                f"{label}: column {h!r} would become attribute {key!r}, which "
                f"{other or 'a standard column'} already uses.",
                hint="Rename one of the columns.",
            )
        seen[key] = i
        attributes.append((i, key))

    def one(role: str) -> int | None:
        return roles[role][0] if roles[role] else None

    return ColumnMap(
        width=len(header),
        email=roles["email"][0],
        name=one("name"),
        first_name=one("first"),
        last_name=one("last"),
        language=one("lang"),
        attributes=tuple(attributes),
        ignored=tuple(ignored),
    )


# --- encodings --------------------------------------------------------------------------


def _canonical_codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise ImportFileError(
            f"Unknown encoding {name!r}.",
            hint="Use one of utf-8, utf-16, cp1250, iso-8859-2, cp1252.",
        ) from None


def _utf16_without_bom(data: bytes) -> str | None:
    sample = data[:4096]
    if len(sample) < 8:
        return None
    even_zero = sample[0::2].count(0)
    odd_zero = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_zero > 0.4 * half and even_zero < 0.05 * half:
        return "utf-16-le"
    if even_zero > 0.4 * half and odd_zero < 0.05 * half:
        return "utf-16-be"
    return None


# --- the reader -------------------------------------------------------------------------


class CsvReader:
    """Streams the records of a delimited text file, after its header line.

    ``encoding`` (codec name) and ``encoding_how`` (``BOM``, ``detected``, ``given``, ``ASCII
    only``) describe the decoding; ``delimiter``, ``header``, ``header_line`` the layout;
    ``bytes_read`` and ``size`` drive a progress bar.
    """

    def __init__(self, path: Path, encoding: str | None = None) -> None:
        self.path = path
        self.label = path.name
        try:
            self._raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise ImportFileError(f"{path} does not exist.") from None
        except IsADirectoryError:
            raise ImportFileError(f"{path} is a folder, not a CSV file.") from None
        except OSError as exc:
            raise ImportFileError(f"Cannot read {path}: {exc.strerror}.") from None
        try:
            self._start(encoding)
        except BaseException:
            self._raw.close()
            raise

    def _start(self, encoding: str | None) -> None:
        self.size = self.path.stat().st_size
        self.bytes_read = 0
        self._lines_done = 0
        self._pending = ""
        self._decoder: codecs.IncrementalDecoder | None = None
        self._candidates: tuple[str, ...] = ()
        self._ended = False
        self.encoding = "utf-8"
        self.encoding_how = "ASCII only"
        first = self._read()
        if not first.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
            raise ImportFileError(
                f"{self.label} is empty.",
                hint="Expected a header line such as `email,name,language` and one subscriber "
                "per line.",
            )
        for magic, what in _MAGIC:
            if first.startswith(magic):
                raise ImportFileError(f"{self.label} is {what}, not a CSV file.", hint=_CSV_HINT)
        first = self._setup_encoding(first, encoding)
        if self._decoder is None or self.encoding in encodings.LEGACY:
            self._check_binary(first)
        # Old Mac files end lines with CR alone; a file mixing both is split on the commoner.
        lf, cr = first.count(b"\n"), first.count(b"\r") - first.count(b"\r\n")
        self._newline = "\r" if cr > lf else "\n"
        if self._decoder is not None and self.encoding.startswith("utf-16"):
            self._newline = "\n"
        self._lines = self._decoded_lines(first)

        sample: list[str] = []
        for line in self._lines:
            sample.append(line)
            if len(sample) >= 50:
                break
        self.delimiter = _sniff_delimiter(sample)
        self._reader = csv.reader(self._chain(sample), delimiter=self.delimiter)
        self._next_line = 1
        header = None
        for line_no, fields in self._records():
            header, self.header_line = fields, line_no
            break
        if header is None:
            raise ImportFileError(
                f"{self.label} has no lines with text.",
                hint="Expected a header line such as `email,name,language`.",
            )
        self.header = [unneutralise(h).strip() for h in header]
        if len(header) > MAX_COLUMNS:
            raise ImportFileError(
                f"{self.label}, line {self.header_line}: the header has {len(header):,} columns; "
                f"a list of subscribers has far fewer (at most {MAX_COLUMNS:,} can be imported).",
                hint="Keep the columns you need (the addresses, names, languages and the "
                "attributes your templates use), delete the others and save the file again.",
            )

    def _read(self) -> bytes:
        data = self._raw.read(CHUNK_BYTES)
        self.bytes_read += len(data)
        return data

    def _setup_encoding(self, first: bytes, given: str | None) -> bytes:
        boms = (
            (codecs.BOM_UTF8, "utf-8"),
            (codecs.BOM_UTF16_LE, "utf-16-le"),
            (codecs.BOM_UTF16_BE, "utf-16-be"),
        )
        bom_codec = next((c for bom, c in boms if first.startswith(bom)), None)
        if given is not None:
            codec = _canonical_codec(given)
            if codec in ("utf-8-sig", "utf-8"):
                codec = "utf-8"
            elif codec == "utf-16":
                codec = bom_codec if bom_codec in ("utf-16-le", "utf-16-be") else "utf-16-le"
            if bom_codec is not None and bom_codec != codec:
                raise ImportFileError(
                    f"{self.label} starts with a {bom_codec} byte-order mark, "
                    f"but --encoding {given} was given.",
                    hint="Leave out --encoding: the byte-order mark says how the file is encoded.",
                )
            how = "given"
        elif bom_codec is not None:
            codec, how = bom_codec, "BOM"
        else:
            utf16 = _utf16_without_bom(first)
            if utf16 is None:
                return first  # decided at the first non-ASCII bytes
            codec, how = utf16, "detected"
        if bom_codec is not None:
            first = first[len(codecs.BOM_UTF8 if bom_codec == "utf-8" else codecs.BOM_UTF16) :]
        self._use(codec, how)
        return first

    def _use(self, codec: str, how: str) -> None:
        self.encoding, self.encoding_how = codec, how
        self._decoder = codecs.getincrementaldecoder(codec)(errors="strict")

    def _check_binary(self, data: bytes) -> None:
        nul = data.find(b"\x00")
        controls = sum(data.count(bytes([b])) for b in range(32) if b not in (9, 10, 12, 13))
        if nul >= 0 or controls > max(8, len(data) // 100):
            where = f" (line {data[:nul].count(_LF) + 1})" if nul >= 0 else ""
            raise ImportFileError(
                f"{self.label} holds binary data{where}: it is not a text file.",
                hint=_CSV_HINT,
            )

    def _decode(self, chunk: bytes, final: bool) -> str:
        if self._decoder is None:
            if chunk.isascii():
                return chunk.decode("ascii")
            chunk, final = self._detect(chunk, final, encodings.CANDIDATES)
        elif len(self._candidates) > 1:
            differ = encodings.disagreement(self._candidates)
            if differ.search(chunk):
                chunk, final = self._detect(chunk, final, self._candidates)
        assert self._decoder is not None
        try:
            return self._decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise self._damaged(chunk) from None

    def _detect(self, chunk: bytes, final: bool, candidates: tuple[str, ...]) -> tuple[bytes, bool]:
        """Decide among ``candidates`` on ``chunk`` (and what follows, if unclear)."""
        while True:
            verdict = encodings.judge(chunk, candidates, final)
            if not verdict.ambiguous or final or len(chunk) >= MAX_SAMPLE_BYTES:
                break
            more = self._read()
            chunk, final = chunk + more, not more
        if verdict.damaged is not None:
            self._use("utf-8", "detected")
            raise self._damaged(chunk)
        if verdict.ambiguous:
            raise self._ambiguous(verdict.ambiguous)
        if verdict.encodings[0] != self.encoding or self._decoder is None:
            # Single-byte decoders keep no state, so switching between chunks is safe.
            self._use(verdict.encodings[0], "detected")
        self._candidates = verdict.encodings
        return chunk, final

    def _ambiguous(self, readings: tuple[encodings.Reading, ...]) -> ImportFileError:
        """The error for readings that differ: the first line where they do, in each."""
        nl = self._newline
        texts = [r.text for r in readings]
        at = len(os.path.commonprefix(texts))
        start = texts[0].rfind(nl, 0, at) + 1
        line = self._lines_done + texts[0].count(nl, 0, start) + 1
        prefix = self._pending if start == 0 else ""
        width = max(len(r.encoding) for r in readings) + 1
        shown = []
        for r in readings:
            end = r.text.find(nl, start)
            text = prefix + r.text[start : end if end >= 0 else len(r.text)]
            shown.append(
                f"  {r.encoding + ':':<{width}}  {_printable(text, len(prefix) + at - start)}"
            )
        options = [f"--encoding {r.encoding}" for r in readings]
        choice = " or ".join([", ".join(options[:-1]), options[-1]])
        return ImportFileError(
            f"{self.label}: cannot tell the encoding for sure; line {line} reads differently:\n"
            + "\n".join(shown),
            hint=f"Run again with {choice}, whichever shows the names right.",
        )

    def _damaged(self, chunk: bytes) -> ImportFileError:
        """The error for undecodable bytes: every line holding some, from ``chunk`` to the end.

        ``chunk`` is the one being decoded (it starts inside line ``_lines_done + 1``); the
        rest of the file is read to count the damage, so that one message names it all.
        """
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="surrogateescape")
        nl = self._newline
        lines: list[int] = []
        count = last = 0
        first = b""
        at_end = False
        line = self._lines_done + 1
        while True:
            final = not chunk
            text = decoder.decode(chunk, final)
            pos = 0
            for m in _DAMAGE.finditer(text):
                line += text.count(nl, pos, m.start())
                pos = m.start()
                if line != last:
                    count, last = count + 1, line
                    if len(lines) <= SHOWN_LINES:
                        lines.append(line)
                if not first:
                    first = bytes(ord(c) - 0xDC00 for c in m.group())
                at_end = final and m.end() == len(text)
            line += text.count(nl, pos)
            if final:
                break
            chunk = self._read()
        if count == 1 and at_end and self.encoding.startswith("utf"):
            what = "ends in the middle of a character"
        else:
            shown = " ".join(f"0x{b:02x}" for b in first)
            what = f"has bytes that are not valid {self.encoding} ({shown})"
        others = lines[1:]
        if count > SHOWN_LINES:
            shown = ", ".join(str(n) for n in others[:SHOWN_LINES])
            what += f", and so do {count - 1} more lines ({shown}, ...)"
        elif others:
            listed = ", ".join(str(n) for n in others[:-1])
            what += f", and so do line{'s' if len(others) > 1 else ''} "
            what += f"{listed} and {others[-1]}" if listed else f"{others[-1]}"
        detected_utf8 = self.encoding == "utf-8" and self.encoding_how == "detected"
        return ImportFileError(
            f"{self.label}, line {lines[0]}: {what} ({self.encoding} {self.encoding_how}).",
            hint=_DAMAGED_HINT if detected_utf8 else _ENCODING_HINT,
        )

    def _decoded_lines(self, chunk: bytes) -> Iterator[str]:
        sep = self._newline
        pending = ""
        while True:
            final = not chunk
            self._pending = pending  # shown if detection stops on the line it begins
            text = self._decode(chunk, final)
            if "\x00" in text:
                line = self._lines_done + (pending + text[: text.index("\x00")]).count(sep) + 1
                raise ImportFileError(
                    f"{self.label}, line {line}: binary data (a NUL character) in a text file.",
                    hint=_CSV_HINT,
                )
            parts = (pending + text).split(sep)
            pending = parts.pop()
            if len(pending) > MAX_LINE_CHARS:
                raise ImportFileError(
                    f"{self.label}, line {self._lines_done + len(parts) + 1} is longer than "
                    f"{MAX_LINE_CHARS:,} characters: this is not a list of subscribers.",
                    hint=_CSV_HINT,
                )
            for part in parts:
                yield part + sep
            self._lines_done += len(parts)
            if final:
                break
            chunk = self._read()
        if pending:
            self._lines_done += 1
            yield pending

    def _chain(self, first: list[str]) -> Iterator[str]:
        """The lines for the csv parser: those sniffed, the rest, then the end marker."""
        yield from first
        yield from self._lines
        self._ended = True
        yield _END

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        reader = self._reader
        while True:
            start = self._next_line
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._structure_error(exc, start, reader.line_num) from None
            end = reader.line_num - (1 if self._ended else 0)  # the end marker is no line
            self._next_line = end + 1
            if end - start > MAX_RECORD_LINES:
                raise ImportFileError(
                    f"{self.label}, line {start}: a quoted value runs over {end - start} lines "
                    f"(to line {end}); a quote is probably not closed.",
                    hint=_QUOTE_HINT,
                )
            if self._ended:
                if fields == [_END]:
                    return
                if fields[-1].endswith(_END):
                    raise ImportFileError(
                        f"{self.label}, line {start}: a quote opened on this line is never "
                        "closed: the file ends inside the quoted value.",
                        hint=_QUOTE_HINT,
                    )
            if not fields or not any(f.strip() for f in fields):
                continue  # blank line
            yield start, fields

    def _structure_error(self, exc: csv.Error, start: int, end: int) -> ImportFileError:
        """What a csv parser error means, said for a person, at the line where it is."""
        text = str(exc)
        if text.startswith("field larger than field limit"):
            limit = csv.field_size_limit()
            if end > start:
                return ImportFileError(
                    f"{self.label}, line {start}: a quoted value runs to line {end} and is "
                    f"longer than {limit:,} characters; a quote is probably not closed.",
                    hint=_QUOTE_HINT,
                )
            return ImportFileError(
                f"{self.label}, line {start}: a value is longer than {limit:,} characters, "
                "more than any name or attribute holds.",
                hint="Shorten or delete that value in the spreadsheet and save the file again.",
            )
        if text.startswith("new-line character seen in unquoted field"):
            found, others = ("carriage return (CR)", "line feed (LF)")
            if self._newline == "\r":
                found, others = others, found
            return ImportFileError(
                f"{self.label}, line {end}: the file mixes line ends: this line holds a "
                f"{found} inside it, where the other lines end with a {others}.",
                hint="Open the file in a spreadsheet and save it again as CSV, which ends every "
                "line the same way; a value with a line break must be in quotes.",
            )
        return ImportFileError(f"{self.label}, line {start}: {exc}.", hint=_QUOTE_HINT)

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(line where the record starts, fields) for each non-blank record after the header."""
        yield from self._records()

    def close(self) -> None:
        """Close the file."""
        self._raw.close()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _printable(text: str, at: int, width: int = 100) -> str:
    """``text`` on one line, control characters spelled out, cut around offset ``at``."""
    text = text.rstrip("\r\n")
    if len(text) > width:
        begin = max(0, min(at - width // 2, len(text) - width))
        text = ("…" if begin else "") + text[begin : begin + width] + "…"
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _sniff_delimiter(lines: list[str]) -> str:
    """The delimiter that splits the header into most columns, consistently with the data."""
    best, best_key = ",", (1, 0.0)
    for delim in DELIMITERS:
        try:
            rows = [r for r in csv.reader(lines, delimiter=delim) if any(f.strip() for f in r)]
        except csv.Error:
            continue
        if not rows:
            continue
        width = len(rows[0])
        if width < 2:
            continue
        consistent = sum(1 for r in rows[1:] if len(r) == width) / max(1, len(rows) - 1)
        key = (width, consistent) if consistent >= 0.5 else (1, consistent)
        if key > best_key:
            best, best_key = delim, key
    return best
