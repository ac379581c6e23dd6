"""The archive: which issues are published, what an archive copy says, the static build.

Served pages are compared with ``bulletin archive build`` output in test_public.py (against
a real ``bulletin serve``); here the library and the command are checked on their own.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bulletin import workspace as ws
from bulletin.errors import ProblemsError
from bulletin.web.archive import Archive, build_archive
from conftest import SAMPLE_SLUG

BULLETIN = Path(sys.executable).parent / "bulletin"


def add_issue(root: Path, slug: str, *, date: str, subject: str, number: int = 4) -> Path:
    """A copy of the sample issue under another slug, date, subject and number."""
    folder = root / "issues" / slug
    shutil.copytree(root / "issues" / SAMPLE_SLUG, folder)
    yaml_path = folder / "issue.yaml"
    text = yaml_path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^subject: .*$", f'subject: "{subject}"', text)
    text = re.sub(r"(?m)^date: .*$", f"date: {date}", text)
    text = re.sub(r"(?m)^number: .*$", f"number: {number}", text)
    yaml_path.write_text(text, encoding="utf-8")
    return folder


def test_index_lists_published_issues_newest_first(workspace_dir: Path):
    add_issue(workspace_dir, "2014-12-nr-4", date="2014-12-01", subject="Nr. 4 — iarnă", number=4)
    add_issue(workspace_dir, "2015-02-nr-5", date="2015-02-01", subject="Nr. 5 — țări", number=5)
    archive = Archive(ws.load(workspace_dir))
    assert [e.slug for e in archive.entries()] == ["2015-02-nr-5", "2014-12-nr-4", SAMPLE_SLUG]
    index = archive.index_page().decode("utf-8")
    positions = [index.index(s) for s in ("Nr. 5 — țări", "Nr. 4 — iarnă", "ClusterPoliSEE nr. 3")]
    assert positions == sorted(positions)
    assert '<html lang="ro">' in index
    assert '<time datetime="2015-02-01">1 februarie 2015</time>' in index


def test_future_excluded_and_oddly_named_issues_are_not_published(workspace_dir: Path):
    add_issue(workspace_dir, "next-month", date="2015-03-01", subject="Not yet")
    add_issue(workspace_dir, "internal", date="2014-11-01", subject="Internal only")
    add_issue(workspace_dir, "with.dot", date="2014-11-02", subject="Dotted")
    config = workspace_dir / "bulletin.toml"
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[archive]\nexclude = "internal, other-slug"\n',
        encoding="utf-8",
    )
    workspace = ws.load(workspace_dir)
    archive = Archive(workspace, today=lambda: dt.date(2015, 2, 28))
    assert [e.slug for e in archive.entries()] == [SAMPLE_SLUG]
    for slug in ("next-month", "internal", "with.dot"):
        assert archive.issue_page(slug) is None
    index = archive.index_page().decode("utf-8")
    assert "Not yet" not in index and "Internal only" not in index and "Dotted" not in index
    # The issue appears on its date.
    later = Archive(workspace, today=lambda: dt.date(2015, 3, 1))
    assert [e.slug for e in later.entries()] == ["next-month", SAMPLE_SLUG]
    assert later.issue_page("next-month") is not None

    report = build_archive(workspace, workspace_dir / "out", today=lambda: dt.date(2015, 2, 28))
    assert [e.slug for e in report.entries] == [SAMPLE_SLUG]
    reasons = dict(report.skipped)
    assert reasons["internal"] == "archive.exclude lists it"
    assert reasons["next-month"] == "dated 2015-03-01, in the future"
    assert "not a plain slug" in reasons["with.dot"]
    assert not (workspace_dir / "out" / "next-month").exists()


def test_an_archive_copy_has_no_personal_data(workspace_dir: Path):
    footer = workspace_dir / "templates" / "partials" / "footer.mjml.j2"
    greeting = (
        '<mj-section><mj-column><mj-text><p id="hi">Salut, '
        "{{ subscriber.get('name', 'cititorule') }} ({{ subscriber.attr('oras', 'oriunde') }})!"
        "</p></mj-text></mj-column></mj-section>\n"
    )
    footer.write_text(footer.read_text(encoding="utf-8") + greeting, encoding="utf-8")
    html = Archive(ws.load(workspace_dir)).issue_page(SAMPLE_SLUG)
    assert html is not None
    text = html.decode("utf-8")
    # Per-recipient slots take their fallbacks, the footer names the readership.
    assert "Salut, cititorule (oriunde)!" in text
    assert "Acest mesaj a fost trimis către abonații ClusterPoliSEE e-newsletter." in text
    assert "cititor@example.org" not in text and "Ana Popescu" not in text
    assert 'href="http://127.0.0.1:8080/archive/#unsubscribe"' in text
    assert 'href="http://127.0.0.1:8080/archive/2014-10-clusterpolisee-03"' in text
    assert "/u/" not in text and "BULLETINSLOT" not in text
    # The page carries its own policy, so a static copy blocks scripts and web fonts too.
    head = text[: text.index("</head>")]
    assert '<meta http-equiv="Content-Security-Policy"' in head
    assert head.index("Content-Security-Policy") < head.index("<title>")
    assert "ClusterPoliSEE nr. 3: Open Days 2014, grupuri de lucru, evenimente și știri" in text


def test_an_english_issue_reads_in_english(workspace_dir: Path):
    folder = add_issue(workspace_dir, "english", date="2014-11-01", subject="In English")
    yaml_path = folder / "issue.yaml"
    yaml_path.write_text(
        yaml_path.read_text(encoding="utf-8").replace("language: ro", "language: en"),
        encoding="utf-8",
    )
    html = Archive(ws.load(workspace_dir)).issue_page("english")
    assert html is not None
    assert "This email was sent to the subscribers of ClusterPoliSEE e-newsletter." in (
        html.decode("utf-8")
    )


def test_renders_are_cached_until_a_file_changes(workspace_dir: Path):
    archive = Archive(ws.load(workspace_dir))
    first = archive.issue_page(SAMPLE_SLUG)
    assert first is not None and archive.issue_page(SAMPLE_SLUG) is first  # the cached bytes
    yaml_path = workspace_dir / "issues" / SAMPLE_SLUG / "issue.yaml"
    text = yaml_path.read_text(encoding="utf-8")
    yaml_path.write_text(text.replace("Vă dorim o lectură plăcută", "Lectură plăcută!"), "utf-8")
    stat = yaml_path.stat()
    os.utime(yaml_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = archive.issue_page(SAMPLE_SLUG)
    assert second is not None and b"Lectur\xc4\x83 pl\xc4\x83cut\xc4\x83!" in second
    # A template edit counts as well.
    footer = workspace_dir / "templates" / "partials" / "footer.mjml.j2"
    footer.write_text(footer.read_text(encoding="utf-8").replace("·", "|"), encoding="utf-8")
    third = archive.issue_page(SAMPLE_SLUG)
    assert third is not None and third != second


def test_a_broken_issue_is_left_out_by_the_server_and_stops_the_build(
    workspace_dir: Path, caplog: pytest.LogCaptureFixture
):
    folder = add_issue(workspace_dir, "broken", date="2014-11-01", subject="Broken")
    (folder / "issue.yaml").write_text("subject: [unclosed\n", encoding="utf-8")
    workspace = ws.load(workspace_dir)
    archive = Archive(workspace)
    assert [e.slug for e in archive.entries()] == [SAMPLE_SLUG]
    assert archive.issue_page("broken") is None
    assert any("issue broken is not published" in r.getMessage() for r in caplog.records)
    with pytest.raises(ProblemsError) as caught:
        build_archive(workspace, workspace_dir / "out")
    message = str(caught.value)
    assert "issues/broken/issue.yaml:2" in message
    assert "archive.exclude" in message
    assert not (workspace_dir / "out").exists()  # nothing half-written


def test_archive_build_command(workspace_dir: Path):
    out = workspace_dir / "site" / "archive"
    add_issue(workspace_dir, "draft", date="2999-01-01", subject="Draft")
    result = subprocess.run(
        [str(BULLETIN), "--workspace", str(workspace_dir), "archive", "build", str(out)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "not published: draft (dated 2999-01-01, in the future)" in result.stdout
    assert "Wrote the archive of 1 issue to" in result.stdout
    index = (out / "index.html").read_text(encoding="utf-8")
    assert f'<a href="{SAMPLE_SLUG}">' in index and "Draft" not in index
    assert '<link rel="stylesheet" href="public.css">' in index
    page = (out / SAMPLE_SLUG / "index.html").read_text(encoding="utf-8")
    assert "Vă dorim o lectură plăcută" in page


def test_archive_build_command_reports_a_broken_issue(workspace_dir: Path):
    folder = add_issue(workspace_dir, "broken", date="2014-11-01", subject="Broken")
    (folder / "issue.yaml").write_text("subject: [unclosed\n", encoding="utf-8")
    result = subprocess.run(
        [str(BULLETIN), "--workspace", str(workspace_dir), "archive", "build", "out"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        cwd=workspace_dir,
    )
    assert result.returncode == 1
    assert "Cannot build the archive" in result.stderr
    assert "issues/broken/issue.yaml:2" in result.stderr
    assert "Traceback" not in result.stderr
    assert "is not published" not in result.stderr  # the server's log line, not the build's
