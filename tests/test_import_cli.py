"""The subscriber commands: `bulletin subscribers ...` and `bulletin lists`."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from bulletin.cli import cli

CORPUS = Path(__file__).parent / "data" / "csv"
REPO = Path(__file__).resolve().parent.parent


def bulletin(workspace_dir: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-w", str(workspace_dir), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def summary(out: str) -> dict[str, int]:
    """The rows of the import summary table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[1].replace(",", "").isdigit():
            rows[cells[0]] = int(cells[1].replace(",", ""))
    return rows


def copy(workspace_dir: Path, name: str) -> Path:
    target = workspace_dir / "subscribers" / name
    shutil.copy(CORPUS / name, target)
    return target


def test_import_prints_a_summary_and_the_rejects_file(workspace_dir: Path) -> None:
    path = copy(workspace_dir, "mixed-bad-rows.csv")
    code, out, err = bulletin(
        workspace_dir, "subscribers", "import", str(path), "--list", "news", "--create-list"
    )
    assert code == 0, err
    assert "Import of mixed-bad-rows.csv into news" in out
    assert summary(out) == {
        "read": 7,
        "added": 2,
        "updated": 0,
        "unchanged": 0,
        "duplicates merged": 0,
        "rejected": 5,
        "suppressed-skipped": 0,
    }
    assert "List 'news' was created." in out
    assert "rejected line 3: invalid email address 'no-at-sign.example.ro'" in out
    assert f"All 5 rejected rows, with reasons: {path.with_name('mixed-bad-rows.rejects.csv')}" in (
        out.replace("\n", "")
    )
    code, out, _ = bulletin(workspace_dir, "subscribers", "count", "--list", "news")
    assert (code, out.strip()) == (0, "2")  # saved in the workspace's store


def test_import_dry_run_says_so_and_changes_nothing(workspace_dir: Path) -> None:
    path = copy(workspace_dir, "utf8.csv")
    code, out, _ = bulletin(
        workspace_dir,
        "subscribers", "import", str(path), "--list", "news", "--create-list", "--dry-run",
    )  # fmt: skip
    assert code == 0
    assert "(dry run: nothing was changed)" in out
    assert "List 'news' would be created." in out
    code, out, _ = bulletin(workspace_dir, "lists")
    assert "No lists yet" in out


def test_a_bad_file_exits_1_with_a_message_and_no_traceback(workspace_dir: Path) -> None:
    path = copy(workspace_dir, "undecodable.csv")
    code, out, err = bulletin(
        workspace_dir, "subscribers", "import", str(path), "--list", "news", "--create-list"
    )
    assert code == 1
    assert "Error: undecodable.csv, line 4: has bytes that are not valid utf-8" in err
    assert "--encoding" in err
    assert "Traceback" not in err + out


def test_import_into_an_unknown_list_says_how_to_create_it(workspace_dir: Path) -> None:
    path = copy(workspace_dir, "utf8.csv")
    code, _, err = bulletin(workspace_dir, "subscribers", "import", str(path), "--list", "news")
    assert code == 1
    assert "List 'news' does not exist." in err
    assert "--create-list or `bulletin lists create news`" in err


def test_lists_add_show_unsubscribe_count_remove(workspace_dir: Path) -> None:
    assert bulletin(workspace_dir, "lists", "create", "news", "--name", "Știri")[0] == 0
    code, out, err = bulletin(
        workspace_dir, "subscribers", "add", "Ștefan Țiriac <ȘTEFAN@Example.RO>", "--list", "news"
    )
    assert code == 0, err
    assert "Subscribed ȘTEFAN@example.ro to news." in out
    code, out, _ = bulletin(workspace_dir, "subscribers", "add", "ana@example.ro", "--list", "news")
    assert code == 0

    code, out, _ = bulletin(workspace_dir, "lists")
    assert "news" in out and "Știri" in out
    header = next(line for line in out.splitlines() if "list" in line).split()
    assert header == [
        "list", "name", "signup", "subscribed", "unsubscribed", "bounced", "complained", "blocked",
        "total"
    ]  # fmt: skip
    row = next(line for line in out.splitlines() if "news" in line).split()
    assert row == ["news", "Știri", "no", "2", "0", "0", "0", "0", "2"]

    code, out, _ = bulletin(
        workspace_dir, "subscribers", "unsubscribe", "ana@EXAMPLE.ro", "--list", "news"
    )
    assert code == 0 and "Unsubscribed ana@example.ro from news" in out
    code, out, err = bulletin(
        workspace_dir, "subscribers", "add", "ana@example.ro", "--list", "news"
    )
    assert code == 1 and "unsubscribed from news; not subscribing it again" in err
    assert "--resubscribe" in err

    code, out, _ = bulletin(workspace_dir, "subscribers", "count", "--list", "news")
    assert out.strip() == "1"
    code, out, _ = bulletin(
        workspace_dir, "subscribers", "count", "--list", "news", "--status", "all"
    )
    assert out.strip() == "2"

    code, out, _ = bulletin(workspace_dir, "subscribers", "show", "ștefan@example.ro")
    assert code == 0
    assert "ȘTEFAN@example.ro (non-ASCII local part: needs SMTPUTF8)" in out
    assert "Ștefan Țiriac" in out
    code, out, _ = bulletin(workspace_dir, "subscribers", "show", "ana@example.ro")
    assert "unsubscribed" in out and "subscribed" in out and "cli" in out

    code, _, err = bulletin(workspace_dir, "subscribers", "unsubscribe", "ana@example.ro")
    assert code == 2 and "Give either --list SLUG or --all." in err

    code, out, _ = bulletin(workspace_dir, "subscribers", "remove", "ana@example.ro", stdin="n\n")
    assert code == 1  # aborted at the confirmation
    code, out, _ = bulletin(workspace_dir, "subscribers", "remove", "ana@example.ro", "--yes")
    assert code == 0 and "Removed ana@example.ro." in out
    code, _, err = bulletin(workspace_dir, "subscribers", "show", "ana@example.ro")
    assert code == 1 and "ana@example.ro is not in the subscriber store." in err


def test_export_to_a_file_and_to_stdout_round_trips(workspace_dir: Path) -> None:
    path = copy(workspace_dir, "formula.csv")
    bulletin(workspace_dir, "subscribers", "import", str(path), "--list", "news", "--create-list")
    target = workspace_dir / "out" / "news.csv"
    target.parent.mkdir()
    code, _, err = bulletin(
        workspace_dir, "subscribers", "export", "--list", "news", "-o", str(target)
    )
    assert code == 0 and f"Exported 3 subscribers of news to {target}." in err.replace("\n", "")
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # so Excel opens UTF-8 correctly
    code, out, _ = bulletin(workspace_dir, "subscribers", "export", "--list", "news")
    assert code == 0
    assert list(csv.reader(io.StringIO(out))) == list(
        csv.reader(io.StringIO(data.decode("utf-8-sig")))
    )
    code, out, _ = bulletin(workspace_dir, "subscribers", "import", str(target), "--list", "news")
    assert code == 0
    assert summary(out)["unchanged"] == 3 and summary(out)["added"] == 0


def test_sample_csv_imports_cleanly(workspace_dir: Path) -> None:
    sample = workspace_dir / "subscribers" / "sample.csv"
    shutil.copy(REPO / "subscribers" / "sample.csv", sample)
    code, out, err = bulletin(
        workspace_dir, "subscribers", "import", str(sample), "--list", "demo", "--create-list"
    )
    assert code == 0, err
    assert summary(out)["added"] == 30 and summary(out)["rejected"] == 0
    code, out, _ = bulletin(workspace_dir, "subscribers", "count", "--list", "demo")
    assert int(out) == 30


def _invoke(workspace_dir: Path, *args: str) -> Result:
    # Wide enough that rich does not wrap a table cell in the middle of what a test looks for.
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["-w", str(workspace_dir), *args])
    # A user error exits through SystemExit; anything else escaping is a bug with a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_add_cleans_a_name_like_the_import_and_says_so(workspace_dir: Path) -> None:
    assert _invoke(workspace_dir, "lists", "create", "news").exit_code == 0
    hostile = "Ion\r\nPopescu\x1b[2J\u202e"
    result = _invoke(workspace_dir, "subscribers", "add", "ion@example.ro", "--list", "news",
                     "--name", hostile, "--language", "en_gb")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Subscribed ion@example.ro to news." in result.stdout
    assert "line breaks or control characters in the name were removed" in result.stdout
    shown = _invoke(workspace_dir, "subscribers", "show", "ion@example.ro").stdout
    assert "Ion Popescu[2J" in shown and "en-GB" in shown

    result = _invoke(workspace_dir, "subscribers", "add", "ana@example.ro", "--list", "news",
                     "--language", "xx-!!")  # fmt: skip
    assert result.exit_code == 1
    assert "Language 'xx-!!' is not a language code like 'ro' or 'en-GB'." in result.stderr
    assert "Use a language code such as ro, en or en-GB." in result.stderr
    result = _invoke(workspace_dir, "subscribers", "add", "l" * 65 + "@example.ro",
                     "--list", "news")  # fmt: skip
    assert result.exit_code == 1 and "too long before the @-sign" in result.stderr
    counted = _invoke(workspace_dir, "subscribers", "count", "--list", "news", "--status", "all")
    assert counted.stdout.strip() == "1"


def test_show_and_lists_make_stored_control_characters_visible(workspace_dir: Path) -> None:
    """Text stored by an older version, or received in a bounce, cannot drive the terminal."""
    import sqlalchemy as sa

    from bulletin import workspace as ws
    from bulletin.store import db, schema
    from bulletin.store.subscribers import add_subscriber, create_list, record_event

    engine = db.open_store(ws.load(workspace_dir).database_url())
    try:
        with db.write_transaction(engine) as conn:
            create_list(conn, "news")
            sub = add_subscriber(conn, "ion@example.ro", "news").subscriber
            conn.execute(
                sa.update(schema.subscribers)
                .where(schema.subscribers.c.id == sub.id)
                .values(name="\x1b[2J\u202eevil [/]", attributes={"city": "[bold]Iași\x07"})
            )
            conn.execute(sa.update(schema.lists).values(name="Știri\x1b]0;pwned\x07 [/]"))
            record_event(conn, sub.id, "bounced", detail="550 \x1b[31mno such user\r\n[/]")
    finally:
        engine.dispose()

    shown = _invoke(workspace_dir, "subscribers", "show", "ion@example.ro")
    assert shown.exit_code == 0
    assert "\\x1b[2J\\u202eevil [/]" in shown.stdout
    assert "[bold]Iași\\x07" in shown.stdout
    assert "550 \\x1b[31mno such user\\r\\n[/]" in shown.stdout
    listed = _invoke(workspace_dir, "lists")
    assert listed.exit_code == 0 and "Știri\\x1b]0;pwned\\x07 [/]" in listed.stdout
    for out in (shown.stdout, listed.stdout):
        assert not any(c in out for c in "\x1b\x07\r\u202e"), repr(out)


def test_error_messages_print_user_text_literally(workspace_dir: Path) -> None:
    assert _invoke(workspace_dir, "lists", "create", "news").exit_code == 0
    result = _invoke(workspace_dir, "subscribers", "add", "[/]@x", "--list", "news")
    assert result.exit_code == 1
    assert "Error: '[/]@x' is not a valid email address" in result.stderr


def test_file_text_in_an_error_is_printed_as_written(workspace_dir: Path) -> None:
    # Error messages quote the file (headers, lines); brackets in it are not console markup.
    path = workspace_dir / "subscribers" / "brackets.csv"
    path.write_text("name,[/x]city,[red]note\nIon,Iasi,x\n", encoding="utf-8")
    code, out, err = bulletin(
        workspace_dir, "subscribers", "import", str(path), "--list", "news", "--create-list"
    )
    assert code == 1
    header = "no email column. The header has 'name', '[/x]city', '[red]note'."
    assert header in " ".join(err.split())
    assert "Traceback" not in err + out


def test_remove_asks_without_holding_the_database(workspace_dir: Path) -> None:
    """The confirmation question used to be asked inside the write transaction: while the
    officer thought it over, every unsubscribe and import waited for the lock."""
    import os
    import subprocess
    import sys
    import time

    assert bulletin(workspace_dir, "lists", "create", "news")[0] == 0
    assert bulletin(workspace_dir, "subscribers", "add", "ion@example.ro", "--list", "news")[0] == 0
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "bulletin", "-w", str(workspace_dir)]
    asking = subprocess.Popen(
        [*cmd, "subscribers", "remove", "ion@example.ro"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert asking.stdout is not None
        # Wait until the question is on screen (click prints it without a newline).
        deadline = time.monotonic() + 30
        seen = ""
        while "Delete" not in seen and time.monotonic() < deadline:
            seen += os.read(asking.stdout.fileno(), 200).decode()
        assert "Delete ion@example.ro and all its history?" in seen
        started = time.monotonic()
        other = subprocess.run(
            [*cmd, "subscribers", "add", "ana@example.ro", "--list", "news"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert other.returncode == 0, other.stderr
        assert time.monotonic() - started < 10  # not the 30 s busy timeout
        out, _ = asking.communicate("y\n", timeout=60)
    finally:
        if asking.poll() is None:
            asking.kill()
    assert asking.returncode == 0 and "Removed ion@example.ro." in out
    assert bulletin(workspace_dir, "subscribers", "count", "--list", "news")[1].strip() == "1"


def test_a_command_closes_its_database_connections(
    workspace_dir: Path, open_connections: Callable[[], int]
) -> None:
    # In-process callers (tests, a scheduler running commands) must not collect connections.
    assert _invoke(workspace_dir, "lists", "create", "news").exit_code == 0
    assert _invoke(workspace_dir, "subscribers", "add", "ana@example.org", "--list", "news")
    assert _invoke(workspace_dir, "lists").exit_code == 0
    failed = _invoke(workspace_dir, "subscribers", "add", "ana@example.org", "--list", "nope")
    assert failed.exit_code == 1
    assert open_connections() == 0
