"""Hostile issue folders: each is refused by ``bulletin check`` with a located error, quickly.

Every case runs the real CLI in a subprocess with a wall-clock timeout and a memory ceiling,
so that a regression (an alias bomb expanding, a parser recursing) fails the test instead of
hanging the suite or exhausting the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BULLETIN = Path(sys.executable).parent / "bulletin"
YAML = "issues/x/issue.yaml"
BUDGET = 2.0
"""CPU seconds a bad issue may take to be answered, interpreter start-up included.

CPU time, not wall time: on a loaded machine (CI, other tests) the wall clock of a child
stretches while its work does not; what a bomb costs is CPU (and memory, capped below), and
anything that waits instead is caught by TIMEOUT."""
TIMEOUT = 20
MEMORY = 1536 * 1024 * 1024

HEAD = "subject: Test\npreheader: Test\ndate: 2014-10-08\nlanguage: ro\nsections:\n"
"""Lines 1-5 of the issues below; their first section starts on line 6."""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def check(root: Path) -> tuple[list[str], float]:
    """Run ``bulletin check x``; its output lines and the CPU time it took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [str(BULLETIN), "--workspace", str(root), "check", "x"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limit_memory,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == 1, output[-3000:]
    return output.splitlines(), elapsed


def alias_bomb() -> str:
    """The "billion laughs": nine levels of aliases, each nine copies of the one before."""
    lines = ['      a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghi"
    for prev, name in zip(names, names[1:], strict=False):
        lines.append(f"      {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    bomb = "\n".join(lines)
    return HEAD + f"  - type: list\n    items:\n      - text\n    lol:\n{bomb}\n    more: *i\n"


def write(folder: Path, name: str, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    (folder / name).write_bytes(data)


def md_issue(folder: Path, markdown: str) -> None:
    write(folder, "issue.yaml", HEAD + "  - type: text\n    title: Titlu\n    body: {file: q.md}\n")
    write(folder, "q.md", markdown)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "alias bomb": (
        lambda f: write(f, "issue.yaml", alias_bomb()),
        f"error: {YAML}:10:10: '&a' marks a YAML anchor, which an issue does not use: write "
        "each value out in full (text that starts with '&' or '*' must be in quotes)",
    ),
    "alias without anchor": (
        lambda f: write(f, "issue.yaml", HEAD + "  - type: text\n    body: *ital*\n"),
        f"error: {YAML}:7:16: YAML syntax error: expected alphabetic or numeric character, "
        "but found '*' (while scanning an alias at line 7)",
    ),
    "alias of a word": (
        lambda f: write(f, "issue.yaml", HEAD + "  - type: text\n    body: *important\n"),
        f"error: {YAML}:7:11: '*important' is a YAML alias, which an issue does not use: write "
        "each value out in full (text that starts with '&' or '*' must be in quotes)",
    ),
    "anchor that eats text": (
        lambda f: write(
            f, "issue.yaml", HEAD + "  - type: text\n    title: &Co news\n    body: x\n"
        ),
        f"error: {YAML}:7:12: '&Co' marks a YAML anchor, which an issue does not use: write "
        "each value out in full (text that starts with '&' or '*' must be in quotes)",
    ),
    "flow lists 100,000 deep": (
        lambda f: write(
            f, "issue.yaml", HEAD + "  - type: list\n    items: " + "[" * 100_000 + "]" * 100_000
        ),
        f"error: {YAML}:7:29: lists and mappings are nested more than 20 levels deep here; "
        "an issue needs far fewer: look for stray '[', '{' or '- '",
    ),
    "flow mappings 50,000 deep": (
        lambda f: write(
            f, "issue.yaml", HEAD + "  - type: list\n    items: " + "{a: " * 50_000 + "}" * 50_000
        ),
        f"error: {YAML}:7:80: lists and mappings are nested more than 20 levels deep here; "
        "an issue needs far fewer: look for stray '[', '{' or '- '",
    ),
    "block lists 5,000 deep": (
        lambda f: write(f, "issue.yaml", HEAD + "  - type: list\n    items:\n      " + "- " * 5000),
        f"error: {YAML}:8:41: lists and mappings are nested more than 20 levels deep here; "
        "an issue needs far fewer: look for stray '[', '{' or '- '",
    ),
    "a 20 MB scalar": (
        lambda f: write(f, "issue.yaml", HEAD + "  - type: text\n    body: " + "x" * 20_000_000),
        f"error: {YAML}: the file is 19.1 MB; an issue file may be at most 256 KB (Gmail "
        "clips emails over ~102 KB anyway): shorten the issue or split it into two",
    ),
    "200,000 sections": (
        lambda f: write(f, "issue.yaml", HEAD + "  - {type: divider}\n" * 200_000),
        f"error: {YAML}: the file is 3.8 MB; an issue file may be at most 256 KB (Gmail "
        "clips emails over ~102 KB anyway): shorten the issue or split it into two",
    ),
    "6,000 sections under the size limit": (
        lambda f: write(f, "issue.yaml", HEAD + "- {type: divider}\n" * 6_000),
        f"error: {YAML}:1669:3: the issue holds more than 5,000 values (texts, keys, list "
        "entries); that cannot fit in one email (Gmail clips emails over ~102 KB): shorten "
        "the issue or split it into two",
    ),
    "60,000 list items": (
        lambda f: write(
            f, "issue.yaml", HEAD + "  - type: list\n    items: [" + "x," * 60_000 + "]"
        ),
        f"error: {YAML}:7:9981: the issue holds more than 5,000 values (texts, keys, list "
        "entries); that cannot fit in one email (Gmail clips emails over ~102 KB): shorten "
        "the issue or split it into two",
    ),
    "one Markdown file referenced 500 times": (
        lambda f: (
            write(
                f,
                "issue.yaml",
                HEAD + "  - type: text\n    body: {file: q.md}\n" * 500,
            ),
            write(f, "q.md", "Un paragraf destul de lung. " * 1000),
        ),
        f"error: {YAML}: the issue holds more than 100,000 characters of text, more than one "
        "email can show (Gmail clips emails over ~102 KB): shorten the issue or split it into two",
    ),
    "{file: x.md} pointing at /dev/zero": (
        lambda f: (
            write(f, "issue.yaml", HEAD + "  - type: text\n    body: {file: z.md}\n"),
            (f / "z.md").symlink_to("/dev/zero"),
        ),
        f"error: {YAML}:7: section 1 (text): 'body': file 'z.md' is outside the issue folder; "
        "keep it in issues/x/",
    ),
    "{file: x.md} that is a named pipe": (
        lambda f: (
            write(f, "issue.yaml", HEAD + "  - type: text\n    body: {file: f.md}\n"),
            os.mkfifo(f / "f.md"),
        ),
        f"error: {YAML}:7: section 1 (text): 'body': file 'f.md' is not a regular file (it is "
        "a named pipe); save the text in an ordinary file",
    ),
    "{file: x.md} that is a folder": (
        lambda f: (
            write(f, "issue.yaml", HEAD + "  - type: text\n    body: {file: d.md}\n"),
            (f / "d.md").mkdir(),
        ),
        f"error: {YAML}:7: section 1 (text): 'body': file 'd.md' is not a regular file (it is "
        "a folder); save the text in an ordinary file",
    ),
    "{file: x.md} symlinked out of the folder": (
        lambda f: (
            write(f, "issue.yaml", HEAD + "  - type: text\n    body: {file: s.md}\n"),
            (f / "s.md").symlink_to("/etc/passwd"),
        ),
        f"error: {YAML}:7: section 1 (text): 'body': file 's.md' is outside the issue folder; "
        "keep it in issues/x/",
    ),
    "a 5 MB Markdown file": (
        lambda f: md_issue(f, "x" * 5_000_000),
        f"error: {YAML}:8: section 1 (text): 'body': file 'q.md' is 4.8 MB; a Markdown "
        "file may be at most 256 KB (Gmail clips emails over ~102 KB anyway): shorten it",
    ),
    "Markdown list of 24,000 items": (
        lambda f: md_issue(f, "- a\n" * 24_000),
        f"error: {YAML}: the Markdown texts hold more than 20,000 elements (paragraphs, lines, "
        "list items, links, emphasis...), far more than one email can show (Gmail clips emails "
        "over ~102 KB): shorten the issue or split it into two",
    ),
    "Markdown of 10,000 bold words": (
        lambda f: md_issue(f, "**Bold** " * 10_000),
        f"error: {YAML}: the Markdown texts hold more than 20,000 elements (paragraphs, lines, "
        "list items, links, emphasis...), far more than one email can show (Gmail clips emails "
        "over ~102 KB): shorten the issue or split it into two",
    ),
    "Markdown quotes 50,000 deep": (
        lambda f: md_issue(f, ">" * 50_000 + " citat\n"),
        "error: issues/x/q.md:1: quotes, lists, links or emphasis are nested more than 8 "
        "levels deep; look for stray '>', '-', '*', '_' or '[' (referenced at "
        f"{YAML}:8)",
    ),
    "Markdown emphasis 12,500 deep": (
        lambda f: md_issue(f, "Prima linie.\n\n" + "*" * 25_000 + "x" + "*" * 25_000 + "\n"),
        "error: issues/x/q.md:3: quotes, lists, links or emphasis are nested more than 8 "
        "levels deep; look for stray '>', '-', '*', '_' or '[' (referenced at "
        f"{YAML}:8)",
    ),
    "Markdown bullets 25,000 deep": (
        lambda f: md_issue(f, "* " * 25_000 + "x\n"),
        "error: issues/x/q.md:1: quotes, lists, links or emphasis are nested more than 8 "
        "levels deep; look for stray '>', '-', '*', '_' or '[' (referenced at "
        f"{YAML}:8)",
    ),
    "Markdown lists indented 200 deep": (
        lambda f: md_issue(f, "".join("  " * i + "- x\n" for i in range(200))),
        "error: issues/x/q.md:9: quotes, lists, links or emphasis are nested more than 8 "
        "levels deep; look for stray '>', '-', '*', '_' or '[' (referenced at "
        f"{YAML}:8)",
    ),
    "Markdown in issue.yaml nested 30 deep": (
        lambda f: write(f, "issue.yaml", HEAD + "  - type: text\n    body: '" + "> " * 30 + "x'\n"),
        f"error: {YAML}:7: section 1 (text): 'body' nests quotes, lists, links or emphasis "
        "more than 8 levels deep (its line 1); look for stray '>', '-', '*', '_' or '['",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_issue_is_refused_quickly_with_a_located_error(
    case: str, workspace_dir: Path
) -> None:
    build, expected = CASES[case]
    folder = workspace_dir / "issues" / "x"
    folder.mkdir()
    build(folder)
    lines, elapsed = check(workspace_dir)
    assert expected in lines, "\n".join(lines)
    assert elapsed < BUDGET, f"{case}: answered in {elapsed:.1f} s"


def test_an_unrelated_huge_file_beside_the_issue_is_not_read(workspace_dir: Path) -> None:
    """check looks for the line of a finding in the folder's text files, but not in one far
    too large to be part of an issue (a 60 MB export left beside issue.yaml)."""
    folder = workspace_dir / "issues" / "x"
    folder.mkdir()
    write(folder, "issue.yaml", HEAD + "  - type: text\n    body: Bună ziua\n")
    write(folder, "notes.md", "Notițe vechi cu ş şi ţ. " * 2_500_000)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [str(BULLETIN), "--workspace", str(workspace_dir), "check", "x"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limit_memory,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "notes.md" not in proc.stdout
    assert elapsed < BUDGET, f"answered in {elapsed:.1f} s"


LOAD = """\
import sys
from pathlib import Path
from bulletin import workspace
from bulletin.content.loader import load_issue
from bulletin.errors import ContentError
ws = workspace.load(Path(sys.argv[1]))
try:
    load_issue(ws, ws.issues_dir / "x")
except ContentError as exc:
    print(exc)
"""


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda path: os.mkfifo(path), "a named pipe"),
        (lambda path: path.symlink_to("/dev/zero"), "a device"),
        (lambda path: path.mkdir(), "a folder"),
    ],
)
def test_loader_refuses_an_issue_yaml_that_is_not_a_regular_file(
    workspace_dir: Path, make: Callable[[Path], None], what: str
) -> None:
    """The CLI finds no issue there, but the loader is also called with a folder directly
    (by the web apps, by the CLI just after the folder changed): it must not block on a pipe
    or read /dev/zero forever."""
    folder = workspace_dir / "issues" / "x"
    folder.mkdir()
    make(folder / "issue.yaml")
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, str(workspace_dir)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limit_memory,
    )
    assert proc.stderr == ""
    summary, problem = proc.stdout.splitlines()
    assert summary == "Issue 'x' cannot be loaded (1 problem):"
    # A link out of the workspace is named by its full path (Workspace.relpath).
    assert problem.endswith(
        f"{YAML}: not a regular file (it is {what}); an issue is a folder under issues/ "
        "holding issue.yaml"
    )
