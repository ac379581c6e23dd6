"""Importing subscribers from a CSV file into a list.

The import runs in two phases on one connection, in constant memory:

1. **read**: the file is streamed (:class:`~bulletin.store.csvfile.CsvReader`), every row is
   validated, rejected rows go to a rejects CSV, and valid rows are staged in a temporary
   table. Nothing in the store changes, and no lock is held, so a file that turns out to be
   bad half-way (undecodable bytes at line 812 000) costs nothing.
2. **save**: one write transaction reads the staged rows ordered by address, merges the
   duplicates inside the file (later non-empty values win), compares each address with the
   store in batches, and inserts or updates. A failure rolls everything back; ``dry_run``
   rolls back on purpose after counting, so it reports exactly what an import would do.

Decisions, stated once:

* Every cell is cleaned or refused by :mod:`bulletin.store.normalise`, the rules every entry
  point shares (control characters removed and counted, over-long names and values, bad
  language codes and addresses rejected with the reason).
* ``Name <address>`` cells are accepted: the address is taken, the name is used when the row
  has no name of its own.
* A row with more values than the header is rejected (a delimiter inside an unquoted value
  would shift every column); a row with fewer values gets empty values and is counted.
* An address that unsubscribed (from the list or from everything), bounced, complained or
  was blocked is skipped and counted, never re-subscribed, unless ``resubscribe`` is given;
  blocked addresses stay out even then.
* An existing subscriber's stored name, language and attributes are only replaced by
  non-empty values from the file, so re-importing an export changes nothing.
* An address at a blocked domain is skipped like a blocked address.
* Exports of Mailchimp and listmonk are recognised (:mod:`bulletin.store.formats`): their
  rows may ask for other statuses than ``subscribed``, and so may the whole file
  (``status``: a list of suppressions). Suppressions only ever get stronger: an address
  already unsubscribed, bounced, complained or blocked keeps that (or the stronger) status,
  an address in several rows or files gets the strongest of them, so files can be imported
  in any order and again without changing anything. ``unsubscribed`` is about the list
  imported into (without a list: every list); ``bounced``, ``complained`` and ``blocked``
  are about every list.
* A file that carries consent -- a Mailchimp or listmonk export, or bulletin's own
  ``export --consent`` -- gives every subscription it begins a consent record (source
  ``import``, detail the tool and file) with the source tool's opt-in and confirm times;
  its text is unknown (``""``, version 0: the person agreed to another tool's text). The
  client address only with ``store_ip``. A plain CSV writes none: its subscription rows
  already say which file they came from and when, and a record with no time and no text
  would add nothing but a fifth of a million-row import's time.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine

from bulletin.store import csvfile, formats
from bulletin.store.bulk import BulkInsert, BulkUpdate
from bulletin.store.csvfile import ColumnMap, CsvReader, ImportFileError, unneutralise
from bulletin.store.db import begin_write
from bulletin.store.formats import GLOBAL_IMPORT_STATUSES, STATUS_RANK, FormatError, SourceFormat
from bulletin.store.normalise import (
    RESERVED_KEYS,
    AddressValidator,
    InvalidAddress,
    InvalidField,
    InvalidSubscriber,
    attribute_key,
    clean_language,
    clean_name,
    clean_value,
    normalise_subscriber,
)
from bulletin.store.schema import (
    SUPPRESSED_STATUSES,
    consents,
    events,
    subscribers,
    subscriptions,
    utcnow,
)
from bulletin.store.subscribers import (
    MailingList,
    UnknownList,
    blocked_domain_set,
    blocking_domain,
    check_slug,
    create_list,
    domain_of,
    find_list,
)

SUPPRESSION_OPTIONS = ("unsubscribed", "bounced", "complained", "blocked")
"""What ``import --status`` accepts: a file of addresses to suppress."""

ProgressCallback = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: phase ``read`` counts bytes, ``save`` counts rows."""

BATCH = 5000
IMPORT_CACHE_KIB = 49152
SAMPLE = 10  # rejected/skipped rows kept for the summary; the rest are in the rejects file


@dataclass(frozen=True)
class Rejected:
    """A row that was not imported."""

    line: int
    reason: str


@dataclass
class ImportReport:
    """What an import did (or, with ``dry_run``, would do). Every row read is counted once."""

    path: Path
    list_slug: str | None
    dry_run: bool
    resubscribe: bool = False
    encoding: str = ""
    encoding_how: str = ""
    delimiter: str = ","
    columns: list[tuple[str, str]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    list_created: bool = False
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: int = 0
    suppressed: int = 0
    resubscribed: int = 0
    cleaned: int = 0
    short_rows: int = 0
    display_names: int = 0
    smtputf8: int = 0
    rejects_path: Path | None = None
    rejected_sample: list[Rejected] = field(default_factory=list)
    suppressed_sample: list[tuple[str, str]] = field(default_factory=list)
    resubscribed_sample: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    seconds_reading: float = 0.0
    tool: str = ""
    kind: str = ""
    dropped_columns: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    """Addresses the file suppressed (``unsubscribed``, ``bounced``...) or left out
    (``not subscribed``), by what happened to them."""
    file_status: str = ""
    tag_lists_created: list[str] = field(default_factory=list)
    tags_unusable: list[str] = field(default_factory=list)
    tagged: int = 0

    def summary_rows(self) -> list[tuple[str, int]]:
        """(label, count) rows of the summary table, in order."""
        rows = [
            ("read", self.read),
            ("added", self.added),
            ("updated", self.updated),
            ("unchanged", self.unchanged),
            ("duplicates merged", self.duplicates),
            ("rejected", self.rejected),
            ("suppressed-skipped", self.suppressed),
        ]
        if self.resubscribed:
            rows.append(("resubscribed", self.resubscribed))
        for status in ("unsubscribed", "unsubscribed from all", *SUPPRESSED_STATUSES[1:]):
            if status in self.statuses:
                rows.append((status, self.statuses[status]))
        if "not subscribed" in self.statuses:
            rows.append(("not subscribed", self.statuses["not subscribed"]))
        return rows

    def notes(self) -> list[str]:
        """Sentences about anything the summary table does not show."""
        out: list[str] = []
        delim = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}[self.delimiter]
        out.append(f"{self.path.name}: {self.encoding} ({self.encoding_how}), {delim}-separated.")
        if not self.read:
            out.append("The file has a header line but no subscribers.")
        if self.tool == "mailchimp":
            out.append(f"Recognised a Mailchimp export of {self.kind} members.")
        elif self.tool == "listmonk":
            out.append("Recognised a listmonk subscriber export.")
        if self.file_status:
            out.append(f"Every address in the file is imported as {self.file_status}.")
        if self.list_created:
            out.append(f"List {self.list_slug!r} {'would be' if self.dry_run else 'was'} created.")
        for slug in self.tag_lists_created:
            out.append(
                f"List {slug!r} {'would be' if self.dry_run else 'was'} created (private) "
                "for a Mailchimp tag."
            )
        if self.tagged:
            out.append(f"{self.tagged} subscription(s) to tag lists were added.")
        for tag in self.tags_unusable:
            out.append(f"Tag {tag!r} has no letters or digits to name a list; left out.")
        if self.dropped_columns:
            out.append(
                f"Dropped {self.tool or 'the'} bookkeeping columns: "
                f"{', '.join(self.dropped_columns)}."
            )
        for col in self.ignored_columns:
            out.append(f"Ignored column {col}.")
        if self.cleaned:
            out.append(
                f"{self.cleaned} row(s) had line breaks or control characters in a name or "
                "attribute; they were removed."
            )
        if self.short_rows:
            out.append(
                f"{self.short_rows} row(s) had fewer values than the header; the missing "
                "values were left empty."
            )
        if self.display_names:
            out.append(
                f"{self.display_names} address(es) were written as 'Name <address>'; the "
                "address was taken and the name used."
            )
        if self.smtputf8:
            out.append(
                f"{self.smtputf8} address(es) have non-ASCII characters before the @ and need a "
                "mail server with SMTPUTF8."
            )
        if self.suppressed and self.resubscribe:
            out.append(f"{self.suppressed} address(es) are blocked and were left out.")
        elif self.suppressed:
            out.append(
                f"{self.suppressed} address(es) unsubscribed, bounced, complained or are blocked "
                "and were not subscribed again (pass --resubscribe if they asked to be)."
            )
        if self.resubscribed:
            out.append(
                f"{self.resubscribed} address(es) were re-subscribed because of --resubscribe."
            )
        return out


@dataclass(slots=True)
class _Merged:
    line: int
    key: str
    email: str
    ascii_email: str | None
    smtputf8: bool
    name: str
    language: str
    status: str
    given: str
    confirmed: str
    ip: str
    tags: set[str]
    attributes: dict[str, str]
    rows: int = 1

    def subscriber_values(self) -> tuple[Any, ...]:
        """The new subscriber's column values, in the order the saver inserts them."""
        return (
            self.email,
            self.key,
            self.ascii_email,
            self.smtputf8,
            self.name,
            self.language,
            self.attributes,
        )


def _attribute_columns(cmap: ColumnMap) -> list[tuple[int, str]]:
    """(column index, attribute key) of every column stored as an attribute."""
    cols = list(cmap.attributes)
    if cmap.first_name is not None:
        cols.append((cmap.first_name, "first_name"))
    if cmap.last_name is not None:
        cols.append((cmap.last_name, "last_name"))
    return cols


def _staging_table(attribute_count: int, extended: bool) -> sa.Table:
    # One text column per attribute column of the file (empty = no value): cheaper than
    # encoding a JSON object per row and decoding it again. The columns of other tools'
    # exports only when the file is one: a plain file stages what it always did.
    extra = _EXTENDED if extended else ()
    return sa.Table(
        "bulletin_import_rows",
        sa.MetaData(),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("email_key", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("ascii_email", sa.Text, nullable=True),
        sa.Column("smtputf8", sa.Boolean, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("language", sa.Text, nullable=False),
        *(sa.Column(name, sa.Text, nullable=False) for name in extra),
        *(sa.Column(f"attr_{i}", sa.Text, nullable=False) for i in range(attribute_count)),
        prefixes=["TEMPORARY"],
    )


_EXTENDED = ("status", "given_at", "confirmed_at", "ip", "extra", "tags")
"""Staged for a file with more than subscribers in it: what the row asks for, the consent's
times (ISO, '' = unknown) and client address, listmonk's JSON attributes (cleaned, as a JSON
object) and Mailchimp's tags."""


class _RejectsWriter:
    """Writes rejected rows (line, reason, original values) to a CSV, only if there are any."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = path
        self.header = header
        self._tmp = path.with_name(path.name + ".part")
        self._file: IO[str] | None = None
        self._writer: Any = None

    def write(self, line: int, reason: str, fields: list[str]) -> None:
        if self._writer is None:
            try:
                self._file = open(self._tmp, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115
            except OSError as exc:
                raise ImportFileError(
                    f"Cannot write the rejects file {self.path}: {exc.strerror}.",
                    hint="Choose another place with --rejects PATH.",
                ) from None
            self._writer = csv.writer(self._file)
            self._writer.writerow([*csvfile.REJECT_COLUMNS, *self.header])
        self._writer.writerow([str(line), reason, *(csvfile.neutralise(f) for f in fields)])

    def finish(self, keep: bool) -> Path | None:
        if self._file is None:
            return None
        self._file.close()
        self._file = None
        if keep:
            os.replace(self._tmp, self.path)
            return self.path
        self._tmp.unlink(missing_ok=True)
        return None


def import_file(
    engine: Engine,
    path: Path,
    list_slug: str | None,
    *,
    dry_run: bool = False,
    encoding: str | None = None,
    create_list_if_missing: bool = False,
    resubscribe: bool = False,
    check_dns: bool = False,
    rejects_path: Path | None = None,
    source: str | None = None,
    progress: ProgressCallback | None = None,
    batch_size: int = BATCH,
    status: str | None = None,
    tags_as_lists: bool = False,
    store_ip: bool = False,
) -> ImportReport:
    """Import the subscribers in ``path`` into the list ``list_slug``; see the module docs.

    ``status`` (one of :data:`SUPPRESSION_OPTIONS`) imports every address as that
    suppression instead; ``list_slug`` may then be None (``unsubscribed`` then means every
    list). ``tags_as_lists`` subscribes Mailchimp-tagged people to a list per tag.

    Raises :class:`~bulletin.store.csvfile.ImportFileError` (nothing changed) when the file as
    a whole cannot be imported. Rejected rows are written to ``rejects_path`` (default:
    ``<file stem>.rejects.csv`` beside the file).
    """
    if status is not None and status not in SUPPRESSION_OPTIONS:
        raise ValueError(f"not a suppression: {status!r}")
    if list_slug is not None:
        check_slug(list_slug)
    started = time.perf_counter()
    report = ImportReport(path=path, list_slug=list_slug, dry_run=dry_run, resubscribe=resubscribe)
    source = source or f"import {path.name}"
    with CsvReader(path, encoding) as reader:
        cmap = csvfile.map_columns(reader.header, reader.label)
        fmt = formats.detect(reader.header, path.name)
        if status is not None:
            # A list of suppressions: whatever the file says about each row, the command
            # line says what they all are.
            fmt = dataclasses.replace(
                fmt,
                status="unsubscribed-all"
                if status == "unsubscribed" and list_slug is None
                else status,
                status_column=None,
                list_status_column=None,
            )
            report.file_status = (
                "unsubscribed from every list"
                if fmt.status == "unsubscribed-all"
                else f"unsubscribed from {list_slug}"
                if status == "unsubscribed"
                else f"{status} (every list)"
            )
        if list_slug is None and fmt.status not in GLOBAL_IMPORT_STATUSES:
            raise ImportFileError(
                f"{reader.label}: which list should it be imported into?",
                hint="Give --list SLUG (only --status bounced, complained, blocked or "
                "unsubscribed can do without one).",
            )
        cmap = dataclasses.replace(
            cmap, attributes=tuple((i, k) for i, k in cmap.attributes if i not in fmt.claimed)
        )
        report.tool, report.kind = fmt.tool, fmt.kind
        report.dropped_columns = list(fmt.dropped)
        if fmt.tags_column is not None and not tags_as_lists:
            report.dropped_columns.append(reader.header[fmt.tags_column] + " (--tags-as-lists)")
        if fmt.ip_columns and not store_ip:
            report.dropped_columns.extend(
                f"{reader.header[i]} (privacy.store_ip is off)" for i in fmt.ip_columns
            )
        report.delimiter = reader.delimiter
        report.columns = cmap.describe(reader.header)
        report.ignored_columns = list(cmap.ignored)
        with engine.connect() as conn:
            with conn.begin():
                existing_list = None if list_slug is None else find_list(conn, list_slug)
            if list_slug is not None and existing_list is None and not create_list_if_missing:
                raise UnknownList(
                    f"List {list_slug!r} does not exist.",
                    hint=f"Create it with --create-list or `bulletin lists create {list_slug}`.",
                )
            attribute_keys = [key for _, key in _attribute_columns(cmap)]
            staging = _staging_table(len(attribute_keys), not fmt.plain)
            with conn.begin():
                staging.drop(conn, checkfirst=True)  # left over by a crashed import
                staging.create(conn)
                if conn.dialect.name == "sqlite":
                    # A bigger page cache for this connection while it sorts and merges a
                    # large file (the default is 2 MB); restored when the import ends.
                    conn.exec_driver_sql(f"PRAGMA main.cache_size=-{IMPORT_CACHE_KIB}")
                    conn.exec_driver_sql(f"PRAGMA temp.cache_size=-{IMPORT_CACHE_KIB}")
            rejects = _RejectsWriter(
                rejects_path or path.with_name(f"{path.stem}.rejects.csv"), reader.header
            )
            read_all = False
            try:
                with conn.begin():
                    staged = _stage(
                        conn,
                        staging,
                        reader,
                        cmap,
                        fmt,
                        report,
                        rejects,
                        check_dns,
                        progress,
                        batch_size,
                        store_ip=store_ip,
                        tags=tags_as_lists,
                    )
                read_all = True
                with conn.begin():
                    # Rows are read back in address order, and each batch's range of
                    # addresses is joined with the store.
                    key = (staging.c.email_key, staging.c.line)
                    sa.Index("ix_bulletin_import_rows_key", *key).create(conn)
                report.seconds_reading = time.perf_counter() - started
                report.encoding, report.encoding_how = reader.encoding, reader.encoding_how
                if report.read and not staged and report.rejected:
                    first = report.rejected_sample[0]
                    raise ImportFileError(
                        f"{reader.label}: none of the {report.read} rows could be imported "
                        f"(line {first.line}: {first.reason}).",
                        hint=f"Every rejected row, with its reason, is in {rejects.path}.",
                    )
                trans = begin_write(conn)
                try:
                    _save(
                        conn,
                        staging,
                        attribute_keys,
                        list_slug,
                        existing_list,
                        staged,
                        report,
                        resubscribe,
                        source,
                        progress,
                        batch_size,
                        f"{fmt.tool} {path.name}".strip() if fmt.carries_consent else None,
                    )
                except BaseException:
                    trans.rollback()
                    raise
                if dry_run:
                    trans.rollback()
                else:
                    trans.commit()
            finally:
                # A file that failed half-way has an incomplete rejects list: drop it.
                report.rejects_path = rejects.finish(keep=read_all and report.rejected > 0)
                try:
                    with conn.begin():
                        staging.drop(conn)
                        if conn.dialect.name == "sqlite":
                            conn.exec_driver_sql("PRAGMA main.cache_size=-2000")
                            conn.exec_driver_sql("PRAGMA temp.cache_size=-2000")
                except sa.exc.SQLAlchemyError:
                    # Never hide the import's own error behind a cleanup error; a discarded
                    # connection takes its temporary table with it.
                    conn.invalidate()
    report.seconds = time.perf_counter() - started
    return report


def _stage(
    conn: Connection,
    staging: sa.Table,
    reader: CsvReader,
    cmap: ColumnMap,
    fmt: SourceFormat,
    report: ImportReport,
    rejects: _RejectsWriter,
    check_dns: bool,
    progress: ProgressCallback | None,
    batch_size: int,
    *,
    store_ip: bool = False,
    tags: bool = False,
) -> int:
    """Phase 1: validate every row; stage the valid ones. Returns how many were staged."""
    validate = AddressValidator(check_dns=check_dns)
    plain = fmt.plain
    width = cmap.width
    email_i, name_i, lang_i = cmap.email, cmap.name, cmap.language
    first_i, last_i = cmap.first_name, cmap.last_name
    attr_cols = _attribute_columns(cmap)
    first_slot = next((n for n, (i, _) in enumerate(attr_cols) if i == first_i), None)
    last_slot = next((n for n, (i, _) in enumerate(attr_cols) if i == last_i), None)
    insert = BulkInsert(conn, staging, [c.name for c in staging.c])
    batch: list[tuple[Any, ...]] = []
    staged = 0

    def reject(line: int, reason: str, fields: list[str]) -> None:
        report.rejected += 1
        if len(report.rejected_sample) < SAMPLE:
            report.rejected_sample.append(Rejected(line, reason))
        rejects.write(line, reason, fields)

    for line, fields in reader.records():
        report.read += 1
        n = len(fields)
        if n != width:
            if n > width:
                if any(f.strip() for f in fields[width:]):
                    reject(
                        line,
                        f"{n} values but the header has {width} columns (a value containing "
                        f"the delimiter {reader.delimiter!r} must be in quotes)",
                        fields,
                    )
                    continue
                fields = fields[:width]
            else:
                report.short_rows += 1
                fields = fields + [""] * (width - n)
        raw_email = unneutralise(fields[email_i])
        try:
            address = validate(raw_email)
        except InvalidAddress as exc:
            shown = raw_email.strip()
            reason = f"invalid email address {shown!r}: {exc}" if shown else "no email address"
            reject(line, reason, fields)
            continue
        try:
            cleaned = False
            name = ""
            if name_i is not None:
                name, cleaned = clean_name(unneutralise(fields[name_i]))
            values: list[str] = []
            for index, key in attr_cols:
                value = fields[index]
                if value:
                    value, was_cleaned = clean_value(unneutralise(value), key)
                    cleaned = cleaned or was_cleaned
                values.append(value)
            if name_i is None and (first_slot is not None or last_slot is not None):
                parts = (
                    values[first_slot] if first_slot is not None else "",
                    values[last_slot] if last_slot is not None else "",
                )
                name, _ = clean_name(" ".join(p for p in parts if p))
            if not name and address.display_name:
                name, was_cleaned = clean_name(address.display_name)
                cleaned = cleaned or was_cleaned
                report.display_names += 1
            language = ""
            if lang_i is not None and fields[lang_i]:
                language = clean_language(unneutralise(fields[lang_i]))
        except InvalidField as exc:
            reject(line, str(exc), fields)
            continue
        more: tuple[str, ...] = ()
        if not plain:
            try:
                more = _format_cells(fmt, fields, store_ip, tags)
            except (FormatError, InvalidField, InvalidSubscriber) as exc:
                reject(line, getattr(exc, "message", str(exc)), fields)
                continue
        if cleaned:
            report.cleaned += 1
        if address.smtputf8:
            report.smtputf8 += 1
        batch.append(
            (
                line,
                address.key,
                address.email,
                address.ascii_email,
                address.smtputf8,
                name,
                language,
                *more,
                *values,
            )
        )
        if len(batch) >= batch_size:
            insert.run(batch)
            staged += len(batch)
            batch = []
            if progress is not None:
                progress("read", reader.bytes_read, reader.size)
    if batch:
        insert.run(batch)
        staged += len(batch)
    if progress is not None:
        progress("read", reader.size, reader.size)
    return staged


def _format_cells(
    fmt: SourceFormat, fields: list[str], store_ip: bool, tags: bool
) -> tuple[str, str, str, str, str, str]:
    """A row's status, consent times and address, extra attributes and tags, as staged."""
    status = formats.row_status(fmt, fields)
    given = confirmed = ip = extra = tag_text = ""
    if fmt.given_column is not None:
        at = formats.parse_time(fields[fmt.given_column])
        given = at.isoformat() if at else ""
    if fmt.confirmed_column is not None:
        at = formats.parse_time(fields[fmt.confirmed_column])
        confirmed = at.isoformat() if at else ""
    if store_ip:
        ip = next((fields[i].strip() for i in fmt.ip_columns if fields[i].strip()), "")[:45]
    if fmt.json_column is not None:
        values = formats.json_attributes(unneutralise(fields[fmt.json_column]))
        if values:
            # The rules every entry point shares: the same keys and values as a column.
            entry = normalise_subscriber("x@example.org", attributes=_usable(values))
            extra = json.dumps(entry.attributes, ensure_ascii=False) if entry.attributes else ""
    if tags and fmt.tags_column is not None:
        tag_text = "\x1f".join(formats.mailchimp_tags(unneutralise(fields[fmt.tags_column])))
    return status, given, confirmed, ip, extra, tag_text


def _usable(values: dict[str, str]) -> dict[str, str]:
    # listmonk lets any key in; ours are words, and email/name/language are columns.
    return {k: v for k, v in values.items() if attribute_key(k) not in ("", *RESERVED_KEYS)}


def _merged_groups(
    rows: Iterable[Any], attribute_keys: list[str], extended: bool
) -> Iterator[_Merged]:
    """Consecutive staged rows with the same address merged: later non-empty values win,
    and the strongest status (an opt-out beats a subscribe in any order)."""
    current: _Merged | None = None
    first = 13 if extended else 7
    status, given, confirmed, ip, extra, tag_text = "subscribed", "", "", "", "", ""
    for row in rows:
        line, key, email, ascii_email, smtputf8, name, language = row[:7]
        if extended:
            status, given, confirmed, ip, extra, tag_text = row[7:13]
        attributes = {k: v for k, v in zip(attribute_keys, row[first:], strict=True) if v}
        if extra:
            attributes = {**json.loads(extra), **attributes}
        tags = set(tag_text.split("\x1f")) if tag_text else set()
        if current is not None and current.key == key:
            current.rows += 1
            if name:
                current.name = name
            if language:
                current.language = language
            if attributes:
                current.attributes.update(attributes)
            if STATUS_RANK[status] > STATUS_RANK[current.status]:
                current.status = status
            current.given = given or current.given
            current.confirmed = confirmed or current.confirmed
            current.ip = ip or current.ip
            current.tags |= tags
            continue
        if current is not None:
            yield current
        current = _Merged(
            line,
            key,
            email,
            ascii_email,
            bool(smtputf8),
            name,
            language,
            status,
            given,
            confirmed,
            ip,
            tags,
            attributes,
        )
    if current is not None:
        yield current


def _save(
    conn: Connection,
    staging: sa.Table,
    attribute_keys: list[str],
    list_slug: str | None,
    the_list: MailingList | None,
    staged: int,
    report: ImportReport,
    resubscribe: bool,
    source: str,
    progress: ProgressCallback | None,
    batch_size: int,
    consent_detail: str | None = None,
) -> None:
    """Phase 2, inside the write transaction: merge the staged rows into the store."""
    list_id = _NO_LIST
    if list_slug is not None:
        current_list = find_list(conn, list_slug)
        if current_list is None:
            if the_list is not None:
                raise ImportFileError(f"List {list_slug!r} was deleted during the import.")
            current_list = create_list(conn, list_slug)
            report.list_created = True
        list_id = current_list.id
    saver = _Saver(conn, staging, list_id, report, resubscribe, source, consent_detail)
    query = sa.select(*staging.c).order_by(staging.c.email_key, staging.c.line)
    batch: list[_Merged] = []
    done = 0
    # Closed on the way out even after an error: SQLite cannot drop a table with an open cursor.
    with conn.execute(query.execution_options(yield_per=batch_size)) as rows:
        for merged in _merged_groups(rows, attribute_keys, "status" in staging.c):
            batch.append(merged)
            if len(batch) >= batch_size:
                saver.apply(batch)
                done += sum(m.rows for m in batch)
                batch = []
                if progress is not None:
                    progress("save", done, staged)
    if batch:
        saver.apply(batch)
    if progress is not None:
        progress("save", staged, staged)


class _Saver:
    """Applies batches of merged rows to the store, counting what happens to each."""

    def __init__(
        self,
        conn: Connection,
        staging: sa.Table,
        list_id: int,
        report: ImportReport,
        resubscribe: bool,
        source: str,
        consent_detail: str | None = None,
    ) -> None:
        self.conn = conn
        # None: the file says nothing about consent, so no records are written.
        self.write_consents = consent_detail is not None
        consent_detail = consent_detail or ""
        self.blocked_domains = blocked_domain_set(conn)
        t, s, sub = staging.c, subscribers.c, subscriptions.c
        columns = (
            s.id,
            s.email_key,
            s.email,
            s.name,
            s.language,
            s.attributes,
            s.status,
            sub.status.label("list_status"),
        )
        on_list = sa.and_(sub.subscriber_id == s.id, sub.list_id == list_id)
        self.list_id = list_id
        self.report = report
        self.resubscribe = resubscribe
        self.source = source
        self.now = utcnow()
        self.subscribe_new: sa.Insert | None = None
        self.by_keys = conn.dialect.name == "postgresql"
        if self.by_keys:
            # PostgreSQL: the batch's addresses as one array parameter, each found through
            # the unique index. Joined with the staging table instead, the planner (which
            # cannot know how many staged rows a range holds) chose to scan every
            # subscriber once per batch: quadratic, minutes for a million rows.
            keys = sa.bindparam("keys", type_=ARRAY(sa.Text))
            in_batch = s.email_key == sa.any_(keys)
            self.lookup = (
                sa.select(*columns)
                .select_from(subscribers.outerjoin(subscriptions, on_list))
                .where(in_batch)
            )
            # The subscriptions of a batch's new subscribers are made on the server from
            # their addresses: their ids need not travel to us and back.
            now = sa.literal(self.now, subscriptions.c.created_at.type)
            self.subscribe_new = subscriptions.insert().from_select(
                ["subscriber_id", "list_id", "status", "source", "created_at", "updated_at"],
                sa.select(
                    s.id,
                    sa.literal(list_id, sa.Integer),
                    sa.literal("subscribed", sa.Text),
                    sa.literal(source, sa.Text),
                    now,
                    now,
                ).where(in_batch),
            )
        else:
            # A batch is a contiguous range of staged addresses (they are read in order), so
            # the store is looked up by joining that range of the staging table: no
            # parameter list.
            in_range = t.email_key.between(sa.bindparam("first"), sa.bindparam("last"))
            joined = staging.join(subscribers, s.email_key == t.email_key)
            self.lookup = (
                sa.select(*columns)
                .select_from(joined.outerjoin(subscriptions, on_list))
                .where(in_range)
            )
            self.lookup_ids = sa.select(s.id, s.email_key).select_from(joined).where(in_range)
        self.insert_subscribers = BulkInsert(
            conn,
            subscribers,
            ["email", "email_key", "ascii_email", "smtputf8", "name", "language", "attributes"],
            constants={
                "status": "active",
                "source": source,
                "created_at": self.now,
                "updated_at": self.now,
            },
        )
        self.insert_subscriptions = BulkInsert(
            conn,
            subscriptions,
            ["subscriber_id"],
            constants={
                "list_id": list_id,
                "status": "subscribed",
                "source": source,
                "created_at": self.now,
                "updated_at": self.now,
            },
        )
        self.insert_events = BulkInsert(
            conn,
            events,
            ["subscriber_id", "kind", "detail"],
            constants={"list_id": list_id, "source": source, "at": self.now},
        )
        self.insert_suppressed = BulkInsert(
            conn,
            subscribers,
            [
                "email",
                "email_key",
                "ascii_email",
                "smtputf8",
                "name",
                "language",
                "attributes",
                "status",
            ],
            constants={"source": source, "created_at": self.now, "updated_at": self.now},
        )
        self.insert_unsubscribed = BulkInsert(
            conn,
            subscriptions,
            ["subscriber_id"],
            constants={
                "list_id": list_id,
                "status": "unsubscribed",
                "source": source,
                "created_at": self.now,
                "updated_at": self.now,
            },
        )
        self.insert_consents = BulkInsert(
            conn,
            consents,
            ["subscriber_id", "list_id", "given_at", "confirmed_at", "ip"],
            constants={
                "source": "import",
                "detail": consent_detail,
                "consent_text": "",
                "consent_version": 0,
                "created_at": self.now,
            },
        )
        self.consent_new: sa.Insert | None = None
        if self.by_keys:
            # One statement per batch from arrays of the new addresses and their times,
            # instead of reading their ids back and copying the consents in.
            c = consents.c
            rows = (
                sa.func.unnest(
                    sa.bindparam("c_keys", type_=ARRAY(sa.Text)),
                    sa.bindparam("c_given", type_=ARRAY(sa.DateTime(timezone=True))),
                    sa.bindparam("c_confirmed", type_=ARRAY(sa.DateTime(timezone=True))),
                    sa.bindparam("c_ip", type_=ARRAY(sa.Text)),
                )
                .table_valued(
                    sa.column("key", sa.Text),
                    sa.column("given", sa.DateTime(timezone=True)),
                    sa.column("confirmed", sa.DateTime(timezone=True)),
                    sa.column("ip", sa.Text),
                )
                .render_derived(name="batch")
            )
            stamp = sa.literal(self.now, c.created_at.type)
            self.consent_new = consents.insert().from_select(
                [
                    "subscriber_id",
                    "list_id",
                    "source",
                    "detail",
                    "consent_text",
                    "consent_version",
                    "given_at",
                    "confirmed_at",
                    "ip",
                    "created_at",
                ],
                sa.select(
                    s.id,
                    sa.literal(list_id, sa.Integer),
                    sa.literal("import", sa.Text),
                    sa.literal(consent_detail, sa.Text),
                    sa.literal("", sa.Text),
                    sa.literal(0, sa.Integer),
                    rows.c.given,
                    rows.c.confirmed,
                    rows.c.ip,
                    stamp,
                ).select_from(rows.join(subscribers, s.email_key == rows.c.key)),
            )
        self.ids_of = sa.select(s.id, s.email_key).where(
            s.email_key == sa.any_(sa.bindparam("keys", type_=ARRAY(sa.Text)))
        )
        self.raise_status = (
            subscribers.update()
            .where(s.id == sa.bindparam("b_id"))
            .values(status=sa.bindparam("b_status"), updated_at=sa.bindparam("b_now"))
        )
        self.unsubscribe_list = (
            subscriptions.update()
            .where(
                subscriptions.c.subscriber_id == sa.bindparam("b_id"),
                subscriptions.c.list_id == list_id,
            )
            .values(status="unsubscribed", updated_at=sa.bindparam("b_now"))
        )
        self.tag_lists: dict[str, int | None] = {}
        self.insert_tag_subscriptions = BulkInsert(
            conn,
            subscriptions,
            ["subscriber_id", "list_id"],
            constants={
                "status": "subscribed",
                "source": source,
                "created_at": self.now,
                "updated_at": self.now,
            },
        )
        self.events_any_list = BulkInsert(
            conn,
            events,
            ["subscriber_id", "kind", "detail", "list_id"],
            constants={"source": source, "at": self.now},
        )
        self.update_fields = BulkUpdate(
            conn,
            subscribers,
            "id",
            ["name", "language", "attributes"],
            constants={"updated_at": self.now},
        )
        self.reactivate = (
            subscribers.update()
            .where(s.id == sa.bindparam("b_id"))
            .values(status="active", updated_at=sa.bindparam("b_now"))
        )
        self.resubscribe_list = (
            subscriptions.update()
            .where(
                subscriptions.c.subscriber_id == sa.bindparam("b_id"),
                subscriptions.c.list_id == list_id,
            )
            .values(status="subscribed", updated_at=sa.bindparam("b_now"))
        )

    def apply(self, batch: list[_Merged]) -> None:
        conn, report, now = self.conn, self.report, self.now
        batch_keys: dict[str, Any]
        if self.by_keys:
            batch_keys = {"keys": [m.key for m in batch]}
        else:
            batch_keys = {"first": batch[0].key, "last": batch[-1].key}
        existing: dict[str, Any] = {}
        on_list: dict[int, str] = {}
        for r in conn.execute(self.lookup, batch_keys):
            existing[r.email_key] = r
            if r.list_status is not None:
                on_list[r.id] = r.list_status
        new: list[tuple[Any, ...]] = []
        new_suppressed: list[tuple[Any, ...]] = []
        new_unsubscribed: set[str] = set()
        subscribe_ids: list[int] = []
        unsubscribe_ids: list[int] = []
        field_updates: list[tuple[Any, ...]] = []
        reactivate: list[dict[str, Any]] = []
        relist: list[dict[str, Any]] = []
        unlist: list[dict[str, Any]] = []
        raised: list[dict[str, Any]] = []
        history: list[tuple[Any, ...]] = []
        wide_history: list[tuple[Any, ...]] = []
        # Consents of the subscriptions this batch begins: by subscriber id, or by key for
        # subscribers inserted here (their ids are read back after the insert).
        consent_ids: list[tuple[int, _Merged]] = []
        consent_new: dict[str, _Merged] = {}
        # People subscribed to the list by this file (or already), with Mailchimp tags.
        tagged: list[_Merged] = []

        for m in batch:
            report.duplicates += m.rows - 1
            row = existing.get(m.key)
            if m.status == "not-subscribed":
                self._count("not subscribed")
                continue
            if m.status != "subscribed":
                self._suppression(
                    m,
                    row,
                    on_list,
                    new_suppressed,
                    new_unsubscribed,
                    unsubscribe_ids,
                    unlist,
                    raised,
                    wide_history,
                )
                continue
            if self.blocked_domains and (row is None or row.status == "active"):
                domain = blocking_domain(domain_of(m.key), self.blocked_domains)
                if domain is not None:
                    report.suppressed += 1
                    if len(report.suppressed_sample) < SAMPLE:
                        report.suppressed_sample.append((m.email, f"domain {domain} is blocked"))
                    continue
            if row is None:
                new.append(m.subscriber_values())
                consent_new[m.key] = m
                report.added += 1
                if m.tags:
                    tagged.append(m)
                continue
            list_status = on_list.get(row.id)
            changes, fields = _changes(row, m)
            if changes:
                field_updates.append((row.id, *fields))
            was = row.status if row.status != "active" else None
            if was is None and list_status == "unsubscribed":
                was = f"unsubscribed from {report.list_slug}"
            if was is not None:
                if not self.resubscribe or row.status == "blocked":
                    if changes:
                        field_updates.pop()  # a skipped address is left exactly as it was
                    report.suppressed += 1
                    if len(report.suppressed_sample) < SAMPLE:
                        report.suppressed_sample.append((row.email, was))
                    continue
                if row.status != "active":
                    reactivate.append({"b_id": row.id, "b_now": now})
                if list_status is None:
                    subscribe_ids.append(row.id)
                else:
                    relist.append({"b_id": row.id, "b_now": now})
                consent_ids.append((row.id, m))
                report.resubscribed += 1
                if len(report.resubscribed_sample) < SAMPLE:
                    report.resubscribed_sample.append((row.email, was))
                history.append(self._event(row.id, "resubscribed", f"was {was}"))
            elif list_status is None:
                # The new subscription row itself records when and from which file.
                subscribe_ids.append(row.id)
                consent_ids.append((row.id, m))
                report.added += 1
                if changes:
                    history.append(self._event(row.id, "updated", changes))
            elif changes:
                report.updated += 1
                history.append(self._event(row.id, "updated", changes))
            else:
                report.unchanged += 1
            if m.tags:
                tagged.append(m)

        new_ids: dict[str, int] = {}
        if new or new_suppressed:
            self.insert_subscribers.run(new)
            self.insert_suppressed.run(new_suppressed)
            if self.subscribe_new is not None:
                if new:
                    conn.execute(self.subscribe_new, {"keys": [row[1] for row in new]})
                if consent_new and self.consent_new is not None and self.write_consents:
                    # Their consents too are made on the server from their addresses.
                    ms = list(consent_new.values())
                    conn.execute(
                        self.consent_new,
                        {
                            "c_keys": [m.key for m in ms],
                            "c_given": [_when(m.given) for m in ms],
                            "c_confirmed": [_when(m.confirmed) for m in ms],
                            "c_ip": [m.ip or None for m in ms],
                        },
                    )
                wanted = [*new_unsubscribed, *(m.key for m in tagged if m.key in consent_new)]
                if wanted:
                    new_ids = dict(
                        (key, sid) for sid, key in conn.execute(self.ids_of, {"keys": wanted})
                    )
            else:
                for sid, key in conn.execute(self.lookup_ids, batch_keys):
                    if key not in existing and key not in new_ids:
                        new_ids[key] = sid
                for row in new:
                    subscribe_ids.append(new_ids[row[1]])
        for key in new_unsubscribed:
            unsubscribe_ids.append(new_ids[key])
        self.update_fields.run(field_updates)
        if reactivate:
            conn.execute(self.reactivate, reactivate)
        if relist:
            conn.execute(self.resubscribe_list, relist)
        if unlist:
            conn.execute(self.unsubscribe_list, unlist)
        if raised:
            conn.execute(self.raise_status, raised)
        self.insert_subscriptions.run([(sid,) for sid in subscribe_ids])
        self.insert_unsubscribed.run([(sid,) for sid in unsubscribe_ids])
        self.insert_events.run(history)
        self.events_any_list.run(wide_history)
        if self.write_consents:
            if self.consent_new is None:
                consent_ids.extend((new_ids[key], m) for key, m in consent_new.items())
            self.insert_consents.run(
                [
                    (sid, self.list_id, _when(m.given), _when(m.confirmed), m.ip or None)
                    for sid, m in consent_ids
                ]
            )
        if tagged:
            ids = {**new_ids, **{k: r.id for k, r in existing.items()}}
            self._tag([(ids[m.key], m) for m in tagged])

    def _tag(self, people: list[tuple[int, _Merged]]) -> None:
        """Subscribe tagged people to a list per tag (created private when missing).

        Only someone with no subscription there yet is added: an unsubscribe from a tag's
        list stays, and a second import of the file finds everyone already there.
        """
        conn, report = self.conn, self.report
        wanted: dict[int, set[int]] = {}
        for sid, m in people:
            for tag in m.tags:
                list_id = self._tag_list(tag)
                if list_id is not None:
                    wanted.setdefault(list_id, set()).add(sid)
        if not wanted:
            return
        ids = sorted({sid for sid, _ in people})
        present = {
            (r.subscriber_id, r.list_id)
            for r in conn.execute(
                sa.select(subscriptions.c.subscriber_id, subscriptions.c.list_id).where(
                    subscriptions.c.subscriber_id.in_(ids),
                    subscriptions.c.list_id.in_(list(wanted)),
                )
            )
        }
        merged = dict(people)
        rows = [
            (sid, list_id)
            for list_id, sids in wanted.items()
            for sid in sorted(sids)
            if (sid, list_id) not in present
        ]
        self.insert_tag_subscriptions.run(rows)
        if self.write_consents:
            self.insert_consents.run(
                [
                    (
                        sid,
                        list_id,
                        _when(merged[sid].given),
                        _when(merged[sid].confirmed),
                        merged[sid].ip or None,
                    )
                    for sid, list_id in rows
                ]
            )
        report.tagged += len(rows)

    def _tag_list(self, tag: str) -> int | None:
        if tag in self.tag_lists:
            return self.tag_lists[tag]
        slug = tag_slug(tag)
        found = find_list(self.conn, slug) if slug else None
        if slug and found is None:
            found = create_list(self.conn, slug, tag)
            self.report.tag_lists_created.append(slug)
        self.tag_lists[tag] = found.id if found else None
        if found is None:
            self.report.tags_unusable.append(tag)
        return self.tag_lists[tag]

    def _count(self, status: str) -> None:
        self.report.statuses[status] = self.report.statuses.get(status, 0) + 1

    def _suppression(
        self,
        m: _Merged,
        row: Any,
        on_list: dict[int, str],
        new_suppressed: list[tuple[Any, ...]],
        new_unsubscribed: set[str],
        unsubscribe_ids: list[int],
        unlist: list[dict[str, Any]],
        raised: list[dict[str, Any]],
        wide_history: list[tuple[Any, ...]],
    ) -> None:
        """A row that asks for an opt-out: applied only if it makes the address's status
        stronger (an import never weakens one)."""
        report, now = self.report, self.now
        if m.status == "unsubscribed":  # from the list imported into
            if row is None:
                new_suppressed.append((*m.subscriber_values(), "active"))
                new_unsubscribed.add(m.key)
            elif row.status != "active" or on_list.get(row.id) == "unsubscribed":
                report.unchanged += 1
                return
            elif on_list.get(row.id) == "subscribed":
                unlist.append({"b_id": row.id, "b_now": now})
                wide_history.append((row.id, "unsubscribed", "", self.list_id))
            else:
                unsubscribe_ids.append(row.id)
            self._count("unsubscribed")
            return
        status = "unsubscribed" if m.status == "unsubscribed-all" else m.status
        label = "unsubscribed from all" if m.status == "unsubscribed-all" else m.status
        if row is None:
            new_suppressed.append((*m.subscriber_values(), status))
        elif _RANK.get(row.status, 0) >= _RANK[status]:
            report.unchanged += 1
            return
        else:
            raised.append({"b_id": row.id, "b_status": status, "b_now": now})
            wide_history.append(
                (row.id, status, "all lists" if status == "unsubscribed" else "", None)
            )
        self._count(label)

    def _event(self, subscriber_id: int, kind: str, detail: str) -> tuple[Any, ...]:
        return (subscriber_id, kind, detail)


def tag_slug(tag: str) -> str:
    """The slug of a tag's list: ``Cititori fideli`` -> ``cititori-fideli`` ('' if none)."""
    text = unicodedata.normalize("NFKD", tag)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:64].strip("-")
    return slug


_NO_LIST = -1
"""The list id of an import without a list (a file of suppressions): no list has it."""

_RANK = {s: i for i, s in enumerate(("active", *SUPPRESSED_STATUSES))}
"""Global statuses from weakest to strongest, as :func:`~bulletin.store.subscribers.suppress`
ranks them."""


def _when(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _changes(row: Any, m: _Merged) -> tuple[str, tuple[str, str, dict[str, Any]] | tuple[()]]:
    """What the file would change on a stored subscriber: a description and the new name,
    language and attributes."""
    changed: list[str] = []
    name, language, attributes = row.name, row.language, row.attributes or {}
    if m.name and m.name != name:
        changed.append("name")
        name = m.name
    if m.language and m.language != language:
        changed.append("language")
        language = m.language
    if m.attributes:
        merged = {**attributes, **m.attributes}
        if merged != attributes:
            changed.extend(
                f"attributes.{k}"
                for k in sorted(m.attributes)
                if attributes.get(k) != m.attributes[k]
            )
            attributes = merged
    if not changed:
        return "", ()
    return ", ".join(changed), (name, language, attributes)
