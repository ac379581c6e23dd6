"""``bulletin new``: a numbered issue with a skeleton of every section, valid once filled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bulletin import workspace
from bulletin.cli import cli
from bulletin.content import load_issue
from bulletin.content.model import SECTION_CLASSES, SECTION_TYPES
from bulletin.content.skeleton import PLACEHOLDER, PLACEHOLDER_URL, next_number
from bulletin.render.checks import run_check
from bulletin.render.pipeline import render_issue
from conftest import SAMPLE_SLUG, set_config


def bulletin(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-w", str(root), *args])


def fill(text: str) -> str:
    """What a writer does: every placeholder replaced by real words and addresses."""
    text = text.replace(f'"{PLACEHOLDER} ', '"Scris: ').replace(f"{PLACEHOLDER} ", "Scris: ")
    return text.replace(PLACEHOLDER_URL, "https://www.clusterpolisee.eu/noiembrie")


def test_new_issue_is_numbered_dated_flagged_and_passes_strict_once_filled(
    workspace_dir: Path,
) -> None:
    result = bulletin(
        workspace_dir, "new", "2014-11-stiri", "--title", "Știri și țări", "--date", "2014-11-05"
    )
    assert result.exit_code == 0, result.output
    assert "Created issues/2014-11-stiri/issue.yaml: issue 4, dated 2014-11-05." in result.output
    path = workspace_dir / "issues" / "2014-11-stiri" / "issue.yaml"
    text = path.read_text(encoding="utf-8")
    ws = workspace.load(workspace_dir)
    loaded = load_issue(ws, path.parent)
    assert loaded.issue.number == 4  # the sample issue is number 3
    assert loaded.issue.subject == "Știri și țări"
    assert str(loaded.issue.date) == "2014-11-05"
    assert loaded.issue.language == ws.config.newsletter.language  # not written: defaulted
    assert "\nlanguage:" not in text
    render_issue(ws, loaded)  # renders as it is, for the preview

    strict = bulletin(workspace_dir, "check", "--strict", "2014-11-stiri")
    assert strict.exit_code == 1
    flagged = re.findall(r"issues/2014-11-stiri/issue\.yaml:(\d+):\d+: placeholder", strict.output)
    live = [
        n
        for n, line in enumerate(text.splitlines(), 1)
        if PLACEHOLDER in line and not line.lstrip().startswith("#")
    ]
    assert live and [int(n) for n in flagged] == live  # each one, comments aside

    path.write_text(fill(text), encoding="utf-8")
    filled = bulletin(workspace_dir, "check", "--strict", "2014-11-stiri")
    assert filled.exit_code == 0, filled.output
    assert "No problems" in filled.output

    # The next one counts on.
    assert next_number(workspace.load(workspace_dir)) == 5


def test_the_skeleton_shows_every_section_type_and_field_and_each_is_valid_uncommented(
    workspace_dir: Path,
) -> None:
    assert bulletin(workspace_dir, "new", "schelet", "--date", "2014-11-05").exit_code == 0
    path = workspace_dir / "issues" / "schelet" / "issue.yaml"
    text = path.read_text(encoding="utf-8")
    for cls, kind in zip(SECTION_CLASSES, SECTION_TYPES, strict=True):
        assert f"  # - type: {kind}" in text
        for name in cls.model_fields:
            if name != "id":
                assert re.search(rf"^  #\s+(- )?{name}:", text, re.M), (kind, name)

    # Uncomment the whole catalogue: every section type, every field, loads and renders.
    head, _, catalogue = text.partition("\n\n")
    # "  # - type: x" and "  #   field: ..." are the entries; "  # x: ..." lines their titles.
    entries = [
        "  " + line[4:] for line in catalogue.splitlines() if re.match(r"^  # (- |  )", line)
    ]
    path.write_text(head + "\n" + "\n".join(entries) + "\n", encoding="utf-8")
    ws = workspace.load(workspace_dir)
    loaded = load_issue(ws, path.parent)
    assert [s.type for s in loaded.issue.sections] == ["text", *SECTION_TYPES]
    report = run_check(ws, path.parent)
    assert report.ok and report.warnings
    assert {p.code for p in report.problems} >= {"check.placeholder"}

    path.write_text(fill(path.read_text(encoding="utf-8")), encoding="utf-8")
    filled = run_check(ws, path.parent, strict=True)
    assert not [p for p in filled.problems if p.code == "check.placeholder"], filled.problems


def test_from_a_previous_issue_keeps_its_sections_and_passes_strict_once_filled(
    workspace_dir: Path,
) -> None:
    result = bulletin(
        workspace_dir, "new", "2014-11-nr4", "--from", SAMPLE_SLUG, "--date", "2014-11-05"
    )
    assert result.exit_code == 0, result.output
    ws = workspace.load(workspace_dir)
    before = load_issue(ws, ws.issues_dir / SAMPLE_SLUG).issue
    path = ws.issues_dir / "2014-11-nr4" / "issue.yaml"
    after = load_issue(ws, path.parent).issue
    assert [(s.type, s.id) for s in after.sections] == [(s.type, s.id) for s in before.sections]
    titles = [getattr(s, "title", None) for s in after.sections]
    assert titles == [getattr(s, "title", None) for s in before.sections]
    assert after.subject.startswith(PLACEHOLDER) and after.number == 4
    assert after.language == before.language and after.title is None

    path.write_text(fill(path.read_text(encoding="utf-8")), encoding="utf-8")
    filled = bulletin(workspace_dir, "check", "--strict", "2014-11-nr4")
    assert filled.exit_code == 0, filled.output


def test_language_is_written_when_asked_and_normalised(workspace_dir: Path) -> None:
    set_config(workspace_dir, "newsletter", language="ro")
    result = bulletin(workspace_dir, "new", "english", "--language", "EN-gb")
    assert result.exit_code == 0, result.output
    ws = workspace.load(workspace_dir)
    assert load_issue(ws, ws.issues_dir / "english").issue.language == "en-GB"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["Nr 4"], "'Nr 4' cannot name an issue"),
        ([SAMPLE_SLUG], f"issues/{SAMPLE_SLUG} already exists"),
        (["x", "--from", "nothing"], "No issue 'nothing'"),
        (["x", "--language", "klingon!"], "is not a language code"),
        (["x", "--date", "5 nov"], "Invalid value for '--date'"),
    ],
)
def test_mistakes_are_refused_without_a_traceback(
    workspace_dir: Path, args: list[str], says: str
) -> None:
    result = bulletin(workspace_dir, "new", *args)
    assert result.exit_code != 0
    assert says in result.output
    assert "Traceback" not in result.output
    assert not (workspace_dir / "issues" / "x").exists()
