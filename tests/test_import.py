"""CSV import: the corpus of real-world files, bad input, transactions, dry runs, round trips.

Every test imports into a real store (a SQLite file, or PostgreSQL on that pass). Corpus
files are copied to tmp_path first because an import writes its rejects file beside the input.
"""

from __future__ import annotations

import csv
import io
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from bulletin.errors import BulletinError
from bulletin.store import db, importer, schema
from bulletin.store.csvfile import ImportFileError
from bulletin.store.export import export_csv
from bulletin.store.importer import ImportReport, import_file
from bulletin.store.subscribers import (
    Subscriber,
    UnknownList,
    add_subscriber,
    create_list,
    details,
    members,
    suppress,
    suppress_address,
    unsubscribe,
)

CORPUS = Path(__file__).parent / "data" / "csv"


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = db.open_store(database_url)
    yield engine
    engine.dispose()


def corpus(tmp_path: Path, name: str) -> Path:
    target = tmp_path / "in" / name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(CORPUS / name, target)
    return target


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    target = tmp_path / "in" / name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(text.encode(encoding))
    return target


def run(engine: sa.Engine, path: Path, slug: str = "news", **kw: Any) -> ImportReport:
    kw.setdefault("create_list_if_missing", True)
    return import_file(engine, path, slug, **kw)


def counts(report: ImportReport) -> dict[str, int]:
    return dict(report.summary_rows())


def people(engine: sa.Engine, slug: str = "news") -> dict[str, Subscriber]:
    with engine.begin() as conn:
        return {s.email: s for s in members(conn, slug, ("all",))}


def dump(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key))]
            for name, t in schema.metadata.tables.items()
        }


# --- the corpus: encodings, delimiters, header names ----------------------------------------


def test_utf8_csv_with_romanian_text(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "utf8.csv"))
    assert counts(report)["added"] == 4 and report.read == 4
    assert (report.encoding, report.delimiter) == ("utf-8", ",")
    got = people(engine)
    assert got["stefan.tiriac@example.org"].name == "Ștefan Țiriac"
    assert got["stefan.tiriac@example.org"].attributes == {"city": "Brașov"}
    assert got["maria.stanescu@example.ro"].language == "ro"
    assert got["ana.munteanu@example.org"].language == "en"
    assert report.rejects_path is None
    assert not (tmp_path / "in" / "utf8.rejects.csv").exists()


def test_utf8_bom_semicolons_and_romanian_headers(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "utf8-bom-semicolon.csv"))
    assert (report.encoding, report.encoding_how, report.delimiter) == ("utf-8", "BOM", ";")
    assert dict(report.columns) == {
        "E-mail": "email",
        "Prenume": "first name (attribute first_name)",
        "Nume": "last name (attribute last_name)",
        "Limbă": "language",
        "Organizație": "attribute organizație",
    }
    ioana = people(engine)["ioana.balan@example.ro"]
    assert ioana.name == "Ioana Bălan"
    assert ioana.language == "ro"
    assert ioana.attributes == {
        "first_name": "Ioana",
        "last_name": "Bălan",
        "organizație": "Universitatea „Alexandru Ioan Cuza”",
    }
    assert people(engine)["vlad.nita@example.ro"].language == "ro"  # "RO" normalised


def test_utf16_unicode_text_from_excel(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "excel-unicode-text.txt"))
    assert (report.encoding, report.encoding_how, report.delimiter) == ("utf-16-le", "BOM", "\t")
    got = people(engine)
    assert got["oana.lazarescu@example.ro"].name == "Oana Lăzărescu"
    assert got["tudor.georgescu@example.org"].attributes == {"city": "Târgu Mureș"}
    assert got["tudor.georgescu@example.org"].language == "en-GB"


def test_utf16_without_bom_is_recognised(engine: sa.Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "nobom.csv", "email,name\nion@example.ro,Ion Țurcanu\n", "utf-16-be")
    report = run(engine, path)
    assert report.encoding == "utf-16-be"
    assert people(engine)["ion@example.ro"].name == "Ion Țurcanu"


def test_cp1250_romanian_export_is_detected(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "cp1250-romanian.csv"))
    assert (report.encoding, report.encoding_how, report.delimiter) == ("cp1250", "detected", ";")
    got = people(engine)
    # cp1250 has only the cedilla forms; they are kept exactly as decoded.
    assert got["radu.patrascu@example.ro"].name == "Radu Pătraşcu"
    assert got["irina.turcanu@example.ro"].name == "Irina Ţurcanu"
    assert got["bogdan.vilcu@example.ro"].name == "Bogdan Vîlcu – „Asociaţia”"
    assert got["radu.patrascu@example.ro"].attributes == {"oras": "Piteşti"}


def test_iso_8859_2_detected_or_given(engine: sa.Engine, tmp_path: Path) -> None:
    path = corpus(tmp_path, "iso-8859-2.csv")
    report = run(engine, path, encoding="ISO-8859-2", dry_run=True)
    assert (report.encoding, report.encoding_how) == ("iso8859-2", "given")
    run(engine, path)  # detected as cp1250, which decodes these letters identically
    assert people(engine)["raluca@example.ro"].name == "Raluca Ţepeş"
    assert people(engine)["catalin@example.ro"].name == "Cătălin Ştefănescu"


def test_cp1252_western_export_is_detected(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "cp1252-western.csv"))
    assert report.encoding == "cp1252"
    got = people(engine)
    assert got["francois@example.org"].name == "François Lefèvre"
    assert got["nunez@example.org"].attributes == {"city": "A Coruña"}
    assert got["zoe@example.org"].name == "Zoë à la “Brontë”"


def test_tab_separated_and_old_mac_line_ends(engine: sa.Engine, tmp_path: Path) -> None:
    assert run(engine, corpus(tmp_path, "tab-separated.tsv")).delimiter == "\t"
    assert counts(run(engine, corpus(tmp_path, "classic-mac.csv"), "mac"))["added"] == 2
    assert set(people(engine, "mac")) == {"ion@example.ro", "ana@example.ro"}


def test_header_only_file_imports_nothing(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "header-only.csv"))
    assert report.read == 0
    assert "The file has a header line but no subscribers." in report.notes()


# --- bad input: a clear message and an unchanged store --------------------------------------

BAD_FILES = [
    ("empty.csv", r"empty\.csv is empty"),
    ("whitespace-only.csv", r"whitespace-only\.csv is empty"),
    ("no-header.csv", r"the first line holds data \('ion@example\.ro'\), not column names"),
    ("no-email-column.csv", r"no email column\. The header has 'name', 'city'"),
    ("duplicate-columns.csv", r"two email columns \('email' and 'e-mail'\)"),
    ("binary.csv", r"binary\.csv is a PNG image, not a CSV file"),
    ("workbook.xlsx", r"is a ZIP archive \(an \.xlsx or \.ods workbook\?\), not a CSV file"),
    ("nul-bytes.csv", r"holds binary data \(line 2\)"),
    (
        "undecodable.csv",
        r"undecodable\.csv, line 4: has bytes that are not valid utf-8 \(0xff 0xfe\)",
    ),
    ("unclosed-quote.csv", r"line 2: a quoted value runs over .* a quote is probably not closed"),
]


@pytest.mark.parametrize(("name", "message"), BAD_FILES)
def test_bad_files_are_refused_and_change_nothing(
    engine: sa.Engine, tmp_path: Path, name: str, message: str
) -> None:
    with db.write_transaction(engine) as conn:
        create_list(conn, "existing")
        add_subscriber(conn, "keep@example.ro", "existing", name="Keep")
    before = dump(engine)
    path = corpus(tmp_path, name)
    with pytest.raises(ImportFileError, match=message) as excinfo:
        run(engine, path, "new-list", create_list_if_missing=True)
    assert excinfo.value.hint  # says what to do
    assert dump(engine) == before  # the list was not even created
    assert [p.name for p in path.parent.iterdir()] == [name]  # no rejects file either


def refused(engine: sa.Engine, path: Path) -> ImportFileError:
    """Import ``path`` into a new list expecting an error; nothing may change."""
    with db.write_transaction(engine) as conn:
        if not dump(engine)["lists"]:
            create_list(conn, "existing")
    before = dump(engine)
    with pytest.raises(ImportFileError) as excinfo:
        run(engine, path, "new-list")
    assert dump(engine) == before
    assert excinfo.value.hint
    return excinfo.value


def test_an_unclosed_quote_on_the_last_row_is_refused(engine: sa.Engine, tmp_path: Path) -> None:
    error = refused(engine, corpus(tmp_path, "unclosed-quote-last-row.csv"))
    assert error.message == (
        "unclosed-quote-last-row.csv, line 3: a quote opened on this line is never closed: "
        "the file ends inside the quoted value."
    )
    # The same without a line break at the end of the file.
    path = write(tmp_path, "no-eol.csv", 'email,name,city\nion@example.ro,"Bad,x')
    assert "line 2: a quote opened on this line is never closed" in refused(engine, path).message


def test_quotes_closed_on_the_last_row_are_fine(engine: sa.Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "ok.csv", 'email,name\nion@example.ro,"Pop, Ion"')
    run(engine, path)
    assert people(engine)["ion@example.ro"].name == "Pop, Ion"
    path = write(tmp_path, "ok2.csv", 'email,note\nana@example.ro,"two\nlines"\n\n')
    run(engine, path)
    assert people(engine)["ana@example.ro"].attributes == {"note": "two\nlines"}


def test_mixed_line_ends_are_named(engine: sa.Engine, tmp_path: Path) -> None:
    error = refused(engine, corpus(tmp_path, "mixed-line-endings.csv"))
    assert error.message == (
        "mixed-line-endings.csv, line 3: the file mixes line ends: this line holds a carriage "
        "return (CR) inside it, where the other lines end with a line feed (LF)."
    )
    assert "universal-newline" not in str(error)
    # A file that starts with old Mac line ends (CR) and later has LF.
    path = write(tmp_path, "mac.csv", "email,name\rion@example.ro,Ion\rana@example.ro,Ana\nx\r")
    error = refused(engine, path)
    assert error.message == (
        "mac.csv, line 3: the file mixes line ends: this line holds a line feed (LF) inside it, "
        "where the other lines end with a carriage return (CR)."
    )


def test_a_value_over_the_parser_limit_is_named_as_such(engine: sa.Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "long.csv", 'email,note\nion@example.ro,"' + "x" * 200_000 + '"\n')
    error = refused(engine, path)
    assert error.message == (
        "long.csv, line 2: a value is longer than 131,072 characters, more than any name or "
        "attribute holds."
    )
    assert "quote" not in str(error)
    # An unclosed quote in a long file reaches the same limit over many lines.
    rows = "".join(f"u{i}@example.ro,U{i}\n" for i in range(20_000))
    path = write(tmp_path, "open.csv", 'email,name\nion@example.ro,"Ion\n' + rows)
    assert refused(engine, path).message == (
        "open.csv, line 2: a quoted value runs to line 5798 and is longer than 131,072 "
        "characters; a quote is probably not closed."
    )


@pytest.mark.parametrize("columns", [1001, 1995, 5000])
def test_wide_files_are_refused_with_a_message(
    engine: sa.Engine, tmp_path: Path, columns: int
) -> None:
    header = ",".join(["email", *(f"c{i}" for i in range(columns - 1))])
    row = ",".join(["ion@example.ro", *("x" * (columns - 1))])
    error = refused(engine, write(tmp_path, "wide.csv", f"{header}\n{row}\n"))
    assert error.message == (
        f"wide.csv, line 1: the header has {columns:,} columns; a list of subscribers has far "
        "fewer (at most 1,000 can be imported)."
    )


def test_a_thousand_columns_still_import(engine: sa.Engine, tmp_path: Path) -> None:
    header = ",".join(["email", *(f"c{i}" for i in range(999))])
    row = ",".join(["ion@example.ro", *(str(i) for i in range(999))])
    report = run(engine, write(tmp_path, "wide.csv", f"{header}\n{row}\n"))
    assert report.added == 1
    assert people(engine)["ion@example.ro"].attributes["c998"] == "998"


def test_undecodable_bytes_late_in_a_big_file_change_nothing(
    engine: sa.Engine, tmp_path: Path
) -> None:
    rows = "".join(f"user{i}@example.ro,Ștefan {i}\n" for i in range(30_000))
    path = tmp_path / "late.csv"
    path.write_bytes(("email,name\n" + rows).encode() + b"bad@example.ro,\xe3\x80\n")
    before = dump(engine)
    with pytest.raises(ImportFileError, match=r"late\.csv, line 30002: .*not valid utf-8"):
        run(engine, path)
    assert dump(engine) == before


def test_wrong_or_unknown_encoding_option(engine: sa.Engine, tmp_path: Path) -> None:
    path = corpus(tmp_path, "cp1250-romanian.csv")
    with pytest.raises(ImportFileError, match=r"line 2: has bytes that are not valid utf-8"):
        run(engine, path, encoding="utf-8")
    with pytest.raises(ImportFileError, match="Unknown encoding 'klingon'"):
        run(engine, path, encoding="klingon")
    bom = corpus(tmp_path, "utf8-bom-semicolon.csv")
    with pytest.raises(ImportFileError, match="byte-order mark, but --encoding cp1250"):
        run(engine, bom, encoding="cp1250")


def test_missing_file_and_unknown_list(engine: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="does not exist"):
        run(engine, tmp_path / "nope.csv")
    with pytest.raises(UnknownList, match="List 'nope' does not exist") as excinfo:
        run(engine, corpus(tmp_path, "utf8.csv"), "nope", create_list_if_missing=False)
    assert "--create-list" in str(excinfo.value)
    assert dump(engine)["lists"] == []


def test_control_characters_are_removed_and_counted(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "control-chars.csv"))
    assert report.cleaned == 3
    got = people(engine)
    assert got["ion@example.ro"].name == "Ion Popescu"
    assert got["ana@example.ro"].name == "Ana Maria Pop"
    assert got["rlo@example.ro"].name == "evil Name"  # bidi override removed
    # Attributes keep their line breaks (as LF).
    assert got["ana@example.ro"].attributes["address"] == "Bd. Carol I nr. 11\nIași"
    assert got["clean@example.ro"].name == "Clean Name"


def test_html_in_names_is_kept_as_text(engine: sa.Engine, tmp_path: Path) -> None:
    run(engine, corpus(tmp_path, "html-names.csv"))
    got = people(engine)
    assert got["xss@example.ro"].name == '<script>alert("x")</script>'
    assert got["bold@example.ro"].name == "<b>Ion</b> & Co"
    assert got["img@example.ro"].name == "<img src=x onerror=alert(1)>"


def test_quotes_and_delimiters_inside_fields(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "quotes-delimiters.csv"))
    assert report.cleaned == 0
    got = people(engine)
    assert got["ion@example.ro"].name == "Popescu, Ion"
    assert got["ion@example.ro"].attributes == {"note": 'a "quoted" word'}
    assert got["maria@example.ro"].name == "Maria; Ioana"
    assert got["maria@example.ro"].attributes == {"note": "line one\nline two"}
    assert got["pipe@example.ro"].name == "A | B"


def test_ragged_rows(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "ragged.csv"))
    assert counts(report) | {} == {
        "read": 4,
        "added": 3,
        "updated": 0,
        "unchanged": 0,
        "duplicates merged": 0,
        "rejected": 1,
        "suppressed-skipped": 0,
    }
    assert report.rejected_sample[0].line == 2
    assert "5 values but the header has 3 columns" in report.rejected_sample[0].reason
    assert report.short_rows == 1
    got = people(engine)
    assert got["short@example.ro"].attributes == {}
    assert got["trailing@example.ro"].attributes == {"city": "Cluj"}


def test_display_names_give_the_name(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "display-names.csv"))
    assert report.display_names == 2
    got = people(engine)
    assert got["ion@example.ro"].name == "Ion Popescu"
    assert got["maria@example.ro"].name == "Popescu, Maria"
    assert got["ana@example.ro"].name == "Ana Munteanu"  # the name column wins


def test_whitespace_around_addresses(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "whitespace.csv"))
    assert set(people(engine)) == {
        "spaced@example.ro",
        "nbsp@example.ro",
        "tab@example.ro",
        "link@example.ro",
    }
    assert report.rejected_sample[0].line == 5
    assert "in side@example.ro" in report.rejected_sample[0].reason


def test_idn_domains_are_one_address_in_any_spelling(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "idn.csv"))
    assert (report.added, report.duplicates) == (3, 1)
    got = people(engine)
    assert set(got) == {"ion@română.ro", "Maria@română.ro", "ana@română.ro"}
    assert got["ion@română.ro"].ascii_email == "ion@xn--romn-doa3r.ro"
    assert got["ion@română.ro"].name == "Ion Again"  # the later row wins


def test_non_ascii_local_parts_are_stored_and_flagged(engine: sa.Engine, tmp_path: Path) -> None:
    report = run(engine, corpus(tmp_path, "smtputf8.csv"))
    assert report.smtputf8 == 2
    assert any("SMTPUTF8" in note for note in report.notes())
    got = people(engine)
    assert (got["ștefan@example.ro"].smtputf8, got["ștefan@example.ro"].ascii_email) == (
        True,
        None,
    )
    assert got["plain@example.org"].smtputf8 is False


def test_languages_are_normalised_or_rejected(engine: sa.Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path, "lang.csv", "email,lang\na@example.ro,RO_ro\nb@example.ro,Română\nc@x.ro,en\n"
    )
    report = run(engine, path)
    assert people(engine)["a@example.ro"].language == "ro-RO"
    assert report.rejected_sample[0].line == 3
    assert "language 'Română' is not a language code" in report.rejected_sample[0].reason


# --- one rule for every entry point -----------------------------------------------------------

_D185 = ".".join(["d" * 60] * 3) + ".ro"
REJECTED = "rejected"
# (address cell, name, language, city attribute) -> what the store holds afterwards, or REJECTED.
HOSTILE: list[tuple[tuple[str, str, str, str], tuple[str, str, dict[str, str]] | str]] = [
    (("crlf@example.ro", "Ion\r\nPopescu", "", ""), ("Ion Popescu", "", {})),
    (("esc@example.ro", "Ion\x1b[2J Popescu", "", ""), ("Ion[2J Popescu", "", {})),
    (("rlo@example.ro", "\u202eevil Name", "", ""), ("evil Name", "", {})),
    (("tab@example.ro", "Ana\tMaria", "", ""), ("Ana Maria", "", {})),
    (("del@example.ro", "Ana\x7fMaria\x9b", "", ""), ("AnaMaria", "", {})),
    (("isolate@example.ro", "\u2067Ana\u2069 \u200fPop", "", ""), ("Ana Pop", "", {})),
    (("l" * 64 + "@example.ro", "Max", "", ""), ("Max", "", {})),
    (("l" * 65 + "@example.ro", "Long", "", ""), REJECTED),
    (("ș" * 33 + "@example.ro", "Long", "", ""), REJECTED),
    (("l" * 64 + "@" + _D185 + "d" * 5, "Long", "", ""), REJECTED),  # 255 octets
    (("Ion\x1b]0;x\x07Pop <display@example.ro>", "", "", ""), ("Ion]0;xPop", "", {})),
    (("gb@example.ro", "Ana", "en_gb", ""), ("Ana", "en-GB", {})),
    (("padded@example.ro", "  Ana  ", " RO ", ""), ("Ana", "ro", {})),
    (("badlang@example.ro", "Ana", "xx-!!", ""), REJECTED),
    (("longlang@example.ro", "Ana", "en" + "-abc" * 2500, ""), REJECTED),
    (("name300@example.ro", "N" * 300, "", ""), ("N" * 300, "", {})),
    (("name10k@example.ro", "N" * 10_000, "", ""), REJECTED),
    (
        ("attr@example.ro", "", "", "Iași\r\nBd.\x1b Carol\u202e I"),
        ("", "", {"city": "Iași\nBd. Carol I"}),
    ),
    (("longattr@example.ro", "Ana", "", "v" * 2001), REJECTED),
]


def test_import_and_add_give_the_same_verdicts(
    tmp_path: Path, new_database_url: Callable[[str], str]
) -> None:
    """The same hostile input gives the same outcome through a CSV import and `add`."""
    cases = [case for case, _ in HOSTILE]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "name", "language", "city"])
    writer.writerow(["good@example.ro", "Good", "", ""])  # a file with no valid row is refused
    writer.writerows(cases)
    path = write(tmp_path, "hostile.csv", out.getvalue())
    imported = db.open_store(new_database_url("imported"))
    added = db.open_store(new_database_url("added"))
    try:
        report = run(imported, path)
        assert report.rejects_path is not None
        rejects = list(csv.reader(io.StringIO(report.rejects_path.read_text("utf-8-sig"))))
        rejected = {row[2] for row in rejects[1:]}  # by address: a quoted CR/LF spans two lines
        with db.write_transaction(added) as conn:
            create_list(conn, "news")
        for (email, name, language, city), expected in HOSTILE:
            try:
                with db.write_transaction(added) as conn:
                    result = add_subscriber(
                        conn,
                        email,
                        "news",
                        name=name or None,
                        language=language or None,
                        attributes={"city": city} if city else None,
                    )
                sub = result.subscriber
                via_add: tuple[str, str, dict[str, Any]] | str = (
                    sub.name,
                    sub.language,
                    sub.attributes,
                )
            except BulletinError:
                via_add = REJECTED
            if email in rejected:
                via_import: tuple[str, str, dict[str, Any]] | str = REJECTED
            else:
                with imported.begin() as conn:
                    stored = details(conn, email).subscriber
                via_import = (stored.name, stored.language, stored.attributes)
            assert via_import == via_add == expected, (email[:40], name[:40])
    finally:
        imported.dispose()
        added.dispose()


def test_import_and_add_name_attributes_alike(
    tmp_path: Path, new_database_url: Callable[[str], str]
) -> None:
    long_header = "Please tell us in a few words why you read this newsletter every month"
    headers = ["Organisation Name", " Organizație\u202e ", long_header]
    out = io.StringIO()
    csv.writer(out).writerows([["email", *headers], ["ana@example.ro", "A", "B", "C"]])
    imported = db.open_store(new_database_url("imported"))
    added = db.open_store(new_database_url("added"))
    try:
        run(imported, write(tmp_path, "keys.csv", out.getvalue()))
        with db.write_transaction(added) as conn:
            create_list(conn, "news")
            attributes = dict(zip(headers, "ABC", strict=True))
            via_add = add_subscriber(conn, "ana@example.ro", "news", attributes=attributes)
        via_import = people(imported)["ana@example.ro"].attributes
    finally:
        imported.dispose()
        added.dispose()
    assert via_import == via_add.subscriber.attributes
    assert via_import == {
        "organisation_name": "A",
        "organizație": "B",
        "please_tell_us_in_a_few_words_why_you_read_this_newsletter_every": "C",
    }


def test_add_cleans_a_nul_like_every_other_control_character(engine: sa.Engine) -> None:
    # A CSV file holding NUL is refused as binary data, so only `add` can meet one.
    with db.write_transaction(engine) as conn:
        create_list(conn, "news")
        sub = add_subscriber(conn, "nul@example.ro", "news", name="Ana\x00 Pop").subscriber
    assert sub.name == "Ana Pop"


# --- duplicates, rejects, updates ------------------------------------------------------------


def test_duplicates_in_the_file_are_merged_later_values_win(
    engine: sa.Engine, tmp_path: Path
) -> None:
    report = run(engine, corpus(tmp_path, "duplicates.csv"))
    assert (report.read, report.added, report.duplicates) == (4, 2, 2)
    ion = people(engine)["ion@example.ro"]
    assert (ion.name, ion.language, ion.attributes) == ("Ion Popescu", "en", {"city": "Cluj"})


def test_duplicates_against_the_store_update_only_non_empty_values(
    engine: sa.Engine, tmp_path: Path
) -> None:
    run(engine, corpus(tmp_path, "utf8.csv"))
    path = write(
        tmp_path,
        "update.csv",
        "email,name,language,city,phone\n"
        "ION.POPESCU@example.ro,,,,+40 722 000 000\n"  # only a new attribute
        "maria.stanescu@example.ro,Maria S.,,,\n"  # a new name
        "ana.munteanu@example.org,,,,\n"  # nothing new
        "new@example.ro,Nou,ro,Iași,\n",
    )
    report = run(engine, path)
    assert (report.added, report.updated, report.unchanged) == (1, 2, 1)
    got = people(engine)
    ion = got["ion.popescu@example.ro"]
    assert (ion.name, ion.language) == ("Ion Popescu", "ro")  # empty cells erase nothing
    assert ion.attributes == {"city": "Iași", "phone": "+40 722 000 000"}
    assert got["maria.stanescu@example.ro"].name == "Maria S."
    with engine.begin() as conn:
        history = details(conn, "maria.stanescu@example.ro").history
    assert [(e.kind, e.detail) for e in history][-1] == ("updated", "name")


def test_rejected_rows_go_to_a_rejects_csv(engine: sa.Engine, tmp_path: Path) -> None:
    path = corpus(tmp_path, "mixed-bad-rows.csv")
    report = run(engine, path)
    assert (report.read, report.added, report.rejected) == (7, 2, 5)
    assert report.rejects_path == tmp_path / "in" / "mixed-bad-rows.rejects.csv"
    text = report.rejects_path.read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["rejected_line", "rejected_reason", "email", "name", "language"]
    assert [r[0] for r in rows[1:]] == ["3", "4", "5", "6", "7"]
    assert rows[1][2:] == ["no-at-sign.example.ro", "No At", "ro"]
    assert "must have an @-sign" in rows[1][1]
    assert rows[3][1] == "no email address"
    assert "local@localhost" in rows[4][1] and "It should have a period" in rows[4][1]
    # A corrected rejects file imports cleanly: its two extra columns are ignored.
    fixed = text.replace("no-at-sign.example.ro", "fixed@example.ro")
    (tmp_path / "in" / "fixed.csv").write_text(fixed, encoding="utf-8-sig")
    again = run(engine, tmp_path / "in" / "fixed.csv")
    assert again.added == 1 and "fixed@example.ro" in people(engine)
    assert any("added by the rejects file" in c for c in again.ignored_columns)
    assert people(engine)["fixed@example.ro"].attributes == {}


def test_a_file_where_no_row_is_valid_is_an_error(engine: sa.Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "allbad.csv", "email,name\nnot-an-address,A\nalso bad,B\n")
    with pytest.raises(ImportFileError, match=r"none of the 2 rows could be imported \(line 2"):
        run(engine, path)
    assert dump(engine)["lists"] == []
    assert (tmp_path / "in" / "allbad.rejects.csv").is_file()


# --- suppression ------------------------------------------------------------------------


def _suppressed_store(engine: sa.Engine) -> None:
    with db.write_transaction(engine) as conn:
        create_list(conn, "news")
        create_list(conn, "other")
        for email in ("unsub@example.ro", "bounced@example.ro", "complained@example.ro"):
            add_subscriber(conn, email, "news")
        subs = {e: add_subscriber(conn, e, "other").subscriber for e in ("all@example.ro",)}
        unsub = details(conn, "unsub@example.ro").subscriber
        unsubscribe(conn, unsub.id, "news", "web")
        suppress(conn, details(conn, "bounced@example.ro").subscriber.id, "bounced", "smtp")
        suppress(conn, details(conn, "complained@example.ro").subscriber.id, "complained", "fbl")
        unsubscribe(conn, subs["all@example.ro"].id, None, "web")
        suppress_address(conn, "blocked@example.ro", "blocked", "admin")


SUPPRESSED_CSV = (
    "email,name\n"
    "unsub@example.ro,U\n"
    "BOUNCED@example.ro,B\n"
    "complained@example.ro,C\n"
    "all@example.ro,A\n"
    "blocked@example.ro,X\n"
    "fresh@example.ro,F\n"
)


def test_suppressed_addresses_are_never_silently_resubscribed(
    engine: sa.Engine, tmp_path: Path
) -> None:
    _suppressed_store(engine)
    before = dump(engine)["subscribers"]
    report = run(engine, write(tmp_path, "s.csv", SUPPRESSED_CSV))
    assert (report.added, report.suppressed, report.resubscribed) == (1, 5, 0)
    assert any("pass --resubscribe if they asked to be" in n for n in report.notes())
    assert dict(report.suppressed_sample) == {
        "unsub@example.ro": "unsubscribed from news",
        "bounced@example.ro": "bounced",
        "complained@example.ro": "complained",
        "all@example.ro": "unsubscribed",
        "blocked@example.ro": "blocked",
    }
    after = {r[1]: r for r in dump(engine)["subscribers"]}
    for row in before:  # skipped addresses are left exactly as they were (names too)
        assert after[row[1]] == row
    with engine.begin() as conn:
        assert [m.email for m in members(conn, "news")] == ["fresh@example.ro"]


def test_resubscribe_is_explicit_and_reported_but_never_lifts_a_block(
    engine: sa.Engine, tmp_path: Path
) -> None:
    _suppressed_store(engine)
    report = run(engine, write(tmp_path, "s.csv", SUPPRESSED_CSV), resubscribe=True)
    assert (report.added, report.suppressed, report.resubscribed) == (1, 1, 4)
    assert dict(report.resubscribed_sample) == {
        "unsub@example.ro": "unsubscribed from news",
        "bounced@example.ro": "bounced",
        "complained@example.ro": "complained",
        "all@example.ro": "unsubscribed",
    }
    assert any("re-subscribed because of --resubscribe" in n for n in report.notes())
    assert "1 address(es) are blocked and were left out." in report.notes()
    with engine.begin() as conn:
        news = {m.email for m in members(conn, "news")}
        assert "blocked@example.ro" not in news
        assert news == {
            "unsub@example.ro",
            "bounced@example.ro",
            "complained@example.ro",
            "all@example.ro",
            "fresh@example.ro",
        }
        history = details(conn, "complained@example.ro").history
    assert (history[-1].kind, history[-1].detail, history[-1].source) == (
        "resubscribed",
        "was complained",
        "import s.csv",
    )


# --- transactions ---------------------------------------------------------------------------


def test_dry_run_reports_exactly_what_would_happen_and_changes_nothing(
    engine: sa.Engine, tmp_path: Path
) -> None:
    _suppressed_store(engine)
    run(engine, corpus(tmp_path, "utf8.csv"))
    path = write(tmp_path, "mix.csv", SUPPRESSED_CSV + "ion.popescu@example.ro,Ion P.\n")
    before = dump(engine)
    dry = run(engine, path, "brand-new", dry_run=True)
    assert dump(engine) == before
    assert dry.dry_run and dry.list_created
    assert "would be created" in " ".join(dry.notes())
    real = run(engine, path, "brand-new")
    assert counts(real) == counts(dry)
    # fresh, ion.popescu and unsub (who left "news", not this list); four stay suppressed.
    assert (counts(dry)["added"], counts(dry)["suppressed-skipped"]) == (3, 4)


def test_a_failure_while_saving_rolls_everything_back(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(engine, corpus(tmp_path, "utf8.csv"))
    before = dump(engine)
    calls = {"n": 0}
    real_apply = importer._Saver.apply

    def failing_apply(self: Any, batch: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure in the third batch")
        real_apply(self, batch)

    monkeypatch.setattr(importer._Saver, "apply", failing_apply)
    rows = "".join(f"user{i}@example.ro,Nume {i}\n" for i in range(50))
    path = write(tmp_path, "big.csv", "email,name\nion.popescu@example.ro,Changed\n" + rows)
    with pytest.raises(RuntimeError, match="injected"):
        run(engine, path, "other", batch_size=10)
    assert calls["n"] == 3  # two batches were written before the failure...
    assert dump(engine) == before  # ...and rolled back, list creation included


def test_reading_during_an_import_sees_the_old_data_without_waiting(
    engine: sa.Engine, tmp_path: Path
) -> None:
    run(engine, corpus(tmp_path, "utf8.csv"))
    rows = "".join(f"user{i}@example.ro,Nume {i}\n" for i in range(3000))
    path = write(tmp_path, "big.csv", "email,name\n" + rows)
    reader = db.open_store(str(engine.url))
    seen: list[tuple[int, float]] = []

    def on_progress(phase: str, done: int, total: int) -> None:
        if phase == "save" and 0 < done < total:
            # The import's write transaction is open and has written rows by now.
            t = time.perf_counter()
            with reader.connect() as conn:
                n = conn.scalar(sa.select(sa.func.count()).select_from(schema.subscribers))
            seen.append((int(n or 0), time.perf_counter() - t))

    report = run(engine, path, batch_size=500, progress=on_progress)
    assert report.added == 3000
    assert len(seen) >= 3
    assert all(n == 4 for n, _ in seen)  # the snapshot before the import
    assert all(seconds < 1.0 for _, seconds in seen)  # WAL: readers never wait for a writer
    with reader.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(schema.subscribers)) == 3004
    reader.dispose()


def test_a_second_writer_waits_for_the_import_instead_of_failing(
    engine: sa.Engine, tmp_path: Path
) -> None:
    with db.write_transaction(engine) as conn:
        create_list(conn, "news")
    rows = "".join(f"user{i}@example.ro,Nume {i}\n" for i in range(2000))
    path = write(tmp_path, "big.csv", "email,name\n" + rows)
    other = db.open_store(str(engine.url))
    errors: list[BaseException] = []
    started = threading.Event()

    def add_one() -> None:
        started.set()
        try:
            with db.write_transaction(other) as conn:
                add_subscriber(conn, "web@example.ro", "news", source="web")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread: list[threading.Thread] = []

    def on_progress(phase: str, done: int, total: int) -> None:
        if phase == "save" and not thread:
            thread.append(threading.Thread(target=add_one))
            thread[0].start()
            started.wait()
            time.sleep(0.2)  # the web request is now blocked on the import's lock

    report = run(engine, path, batch_size=500, progress=on_progress)
    thread[0].join(timeout=30)
    assert errors == []
    assert report.added == 2000
    assert "web@example.ro" in people(engine)
    other.dispose()


# --- export -----------------------------------------------------------------------------


def test_export_then_import_is_a_no_op(engine: sa.Engine, tmp_path: Path) -> None:
    for name in (
        "utf8.csv",
        "utf8-bom-semicolon.csv",
        "formula.csv",
        "smtputf8.csv",
        "idn.csv",
        "quotes-delimiters.csv",
        "control-chars.csv",
        "html-names.csv",
    ):
        run(engine, corpus(tmp_path, name))
    out = tmp_path / "export.csv"
    with engine.begin() as conn, open(out, "w", encoding="utf-8-sig", newline="") as f:
        exported = export_csv(conn, "news", f)
    before = dump(engine)
    report = run(engine, out)
    assert (report.read, report.unchanged) == (exported, exported)
    assert (report.added, report.updated, report.rejected, report.duplicates) == (0, 0, 0, 0)
    assert dump(engine) == before


def test_export_neutralises_spreadsheet_formulas(engine: sa.Engine, tmp_path: Path) -> None:
    run(engine, corpus(tmp_path, "formula.csv"))
    buf = io.StringIO()
    with engine.begin() as conn:
        export_csv(conn, "news", buf)
    rows = {r[0]: r for r in csv.reader(io.StringIO(buf.getvalue()))}
    assert rows["email"] == ["email", "name", "language", "note"]
    assert rows["f1@example.ro"] == [
        "f1@example.ro",
        '\'=HYPERLINK("http://x";"y")',
        "",
        "'+40 722 000 000",
    ]
    assert rows["'-dash@example.ro"] == ["'-dash@example.ro", "'-minus", "", "'@SUM(A1)"]
    assert rows["'+plus@example.ro"][1:] == ["'@at", "", "'=1+1"]
    for row in rows.values():
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_export_by_status(engine: sa.Engine, tmp_path: Path) -> None:
    _suppressed_store(engine)
    run(engine, write(tmp_path, "s.csv", SUPPRESSED_CSV))

    def emails(*statuses: str) -> list[str]:
        buf = io.StringIO()
        with engine.begin() as conn:
            export_csv(conn, "news", buf, statuses=statuses)
        return sorted(r[0] for r in list(csv.reader(io.StringIO(buf.getvalue())))[1:])

    assert emails("subscribed") == ["fresh@example.ro"]
    assert emails("unsubscribed") == ["unsub@example.ro"]
    assert emails("bounced", "complained") == ["bounced@example.ro", "complained@example.ro"]
    assert len(emails("all")) == 4


# --- size -------------------------------------------------------------------------------


@pytest.mark.slow
def test_memory_stays_flat_on_a_large_file(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 200,000-row file (~11 MB). Holding its rows in Python would take well over 100 MB;
    # streaming and staging in SQLite keep the growth to the page caches. The import's
    # larger SQLite cache is turned down so what is measured is the importer itself.
    monkeypatch.setattr(importer, "IMPORT_CACHE_KIB", 4096)
    path = tmp_path / "large.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("email,name,language,city\n")
        for i in range(200_000):
            f.write(f"user{i}@example.ro,Ștefan Țurcanu {i},ro,Iași\n")
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]

    def on_progress(phase: str, done: int, total: int) -> None:
        peak[0] = max(peak[0], process.memory_info().rss)

    report = run(engine, path, progress=on_progress)
    assert report.added == 200_000
    growth_mb = (peak[0] - baseline) / 2**20
    assert growth_mb < 60, f"RSS grew by {growth_mb:.0f} MB"


# --- header names and odd options -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "row", "name", "attributes"),
    [
        ("Email Address,Full Name", "a@example.ro,Ana Pop", "Ana Pop", {}),
        ("E-mail,First Name,Last Name", "a@example.ro,Ana,Pop", "Ana Pop", None),
        ("e_mail;Nume;Prenume", "a@example.ro;Pop;Ana", "Ana Pop", None),
        ("Adresă de e-mail,Nume complet,Oraș", "a@example.ro,Ana Pop,Iași", "Ana Pop", None),
        ("Work Email,Display Name", "a@example.ro,Ana", "Ana", {}),
        ("mail,name,Organisation Name", "a@example.ro,Ana,ACME", "Ana", None),
    ],
)
def test_flexible_header_names(
    engine: sa.Engine,
    tmp_path: Path,
    header: str,
    row: str,
    name: str,
    attributes: dict[str, str] | None,
) -> None:
    report = run(engine, write(tmp_path, "h.csv", f"{header}\n{row}\n"))
    assert report.added == 1
    got = people(engine)["a@example.ro"]
    assert got.name == name
    if attributes is not None:
        assert got.attributes == attributes
    else:
        assert got.attributes  # first/last names or other columns became attributes


def test_first_and_last_name_columns_are_attributes_too(engine: sa.Engine, tmp_path: Path) -> None:
    run(engine, write(tmp_path, "h.csv", "email,prenume,nume,oraș\na@example.ro,Ana,Pop,Iași\n"))
    assert people(engine)["a@example.ro"].attributes == {
        "first_name": "Ana",
        "last_name": "Pop",
        "oraș": "Iași",
    }


def test_rejects_can_go_elsewhere_but_must_be_writable(engine: sa.Engine, tmp_path: Path) -> None:
    path = corpus(tmp_path, "mixed-bad-rows.csv")
    target = tmp_path / "reports" / "bad.csv"
    target.parent.mkdir()
    report = run(engine, path, rejects_path=target)
    assert report.rejects_path == target and target.is_file()
    before = dump(engine)
    with pytest.raises(ImportFileError, match="Cannot write the rejects file"):
        run(engine, path, "other", rejects_path=tmp_path / "missing" / "bad.csv")
    assert dump(engine) == before


def test_a_file_without_line_breaks_is_refused_without_reading_it_into_memory(
    engine: sa.Engine, tmp_path: Path
) -> None:
    path = tmp_path / "one-line.csv"
    path.write_text("email,name\n" + "x" * 3_000_000, encoding="utf-8")
    with pytest.raises(ImportFileError, match=r"line 2 is longer than 1,000,000 characters"):
        run(engine, path)
    assert dump(engine)["lists"] == []


def _table_stats(engine: sa.Engine, table: str) -> tuple[int, int]:
    """(rows inserted, rows read by sequential scans) of ``table``, as the server counts."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        row = conn.exec_driver_sql(
            "SELECT n_tup_ins, seq_tup_read FROM pg_stat_user_tables "
            "WHERE relid = to_regclass(%(t)s)",
            {"t": table},
        ).one()
    return int(row[0]), int(row[1])


def test_an_import_on_postgresql_finds_stored_addresses_by_index_not_by_scanning(
    engine: sa.Engine, tmp_path: Path, pg_server: Any
) -> None:
    # Each batch looks its addresses up in the store. Joined with a range of the staging
    # table, PostgreSQL's planner read the whole subscribers table once per batch: the
    # import grew with the square of its size (86 s for a million rows, 25 s after).
    rows = 20_000
    path = write(
        tmp_path,
        "many.csv",
        "email,name\n" + "".join(f"cititor{i}@example.ro,Cititor {i}\n" for i in range(rows)),
    )
    report = run(engine, path, batch_size=500)
    assert counts(report)["added"] == rows
    # The server publishes a backend's counts within a second or so of its commit.
    deadline = time.monotonic() + 10
    while _table_stats(engine, "subscribers")[0] < rows:
        assert time.monotonic() < deadline, "the server never counted the inserts"
        time.sleep(0.1)
    scanned = _table_stats(engine, "subscribers")[1]
    # Scanning the table while it is small is the planner's right choice; once per batch
    # it is not (800,000 rows here before).
    assert scanned < 4 * rows, f"{scanned:,} subscriber rows read by sequential scans"
