"""``bulletin check``: each content check fires on a purpose-made issue, the sample passes."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulletin import workspace
from bulletin.cli import cli
from bulletin.content.loader import load_issue
from bulletin.errors import Location, Problem
from bulletin.render.checks import (
    KB,
    SIZE_ERROR,
    SIZE_WARNING,
    CheckReport,
    check_issue,
    check_size,
    run_check,
    url_problem,
)
from bulletin.render.pipeline import render_issue
from bulletin.render.slots import CompiledTemplate, SlotRegistry
from bulletin.workspace import Workspace

SAMPLE_SLUG = "2014-10-clusterpolisee-03"
YAML = "issues/x/issue.yaml"

HEAD = """\
subject: Buletin de test
preheader: Știri și evenimente din clustere
date: 2014-10-08
language: ro
sections:
"""
"""Lines 1-5 of the issues below; their first section starts on line 6."""

TEXT_SECTION = """\
  - type: text
    title: Introducere
    body: Bună ziua! Întâlnirea de la Iași, în fața clădirii.
"""


@pytest.fixture
def ws(workspace_dir: Path) -> Workspace:
    return workspace.load(workspace_dir)


def write_issue(ws: Workspace, text: str, files: dict[str, str] | None = None) -> Path:
    folder = ws.issues_dir / "x"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "issue.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    for name, content in (files or {}).items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def check(ws: Workspace, text: str, files: dict[str, str] | None = None) -> list[Problem]:
    report = run_check(ws, write_issue(ws, text, files))
    return list(report.problems)


def with_code(problems: list[Problem], code: str) -> list[Problem]:
    return [p for p in problems if p.code == code]


def edit_template(ws: Workspace, name: str, old: str, new: str) -> None:
    path = ws.templates_dir / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{name} no longer contains {old!r}; update the test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


# --- The sample and a clean issue ----------------------------------------------------------


def test_sample_issue_passes_strict_check_via_cli(workspace_dir: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--workspace", str(workspace_dir), "check", SAMPLE_SLUG, "--strict"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"No problems: issues/{SAMPLE_SLUG}/issue.yaml, ")
    assert result.output.rstrip().endswith("KB HTML")


def test_clean_issue_has_no_findings_and_reports_size(ws: Workspace) -> None:
    report = run_check(ws, write_issue(ws, HEAD + TEXT_SECTION), strict=True)
    assert report.problems == ()
    assert report.html_bytes is not None and 10 * KB < report.html_bytes < SIZE_WARNING
    assert report.summary() == f"No problems: {YAML}, {report.html_bytes / KB:.1f} KB HTML"


# --- Size --------------------------------------------------------------------------------


def test_size_thresholds() -> None:
    where = Location(YAML)
    assert check_size(SIZE_WARNING - 1, where) == []
    (warning,) = check_size(SIZE_WARNING, where)
    assert (warning.severity, warning.code) == ("warning", "check.size")
    assert "90.0 KB" in warning.message
    (error,) = check_size(SIZE_ERROR + 512, where)
    assert (error.severity, error.code) == ("error", "check.size")
    assert "102.5 KB" in error.message and "Gmail clips" in error.message


def test_long_issue_is_reported_over_gmail_clipping_limit(ws: Workspace) -> None:
    # 86,000 characters: under the loader's bound on text (TEXT_MAX_CHARS), over Gmail's limit
    # once in HTML.
    paragraph = "Clusterele din Europa de Sud-Est își prezintă rezultatele și planurile. " * 12
    sections = "".join(
        f"  - type: text\n    title: Secțiunea {i}\n    body: {paragraph}\n" for i in range(100)
    )
    report = run_check(ws, write_issue(ws, HEAD + sections))
    (size,) = with_code(list(report.problems), "check.size")
    assert size.severity == "error"
    assert report.html_bytes is not None and report.html_bytes >= SIZE_ERROR
    assert f"{report.html_bytes / KB:.1f} KB" in size.message
    assert size.location == Location(YAML)


# --- Images ------------------------------------------------------------------------------


def test_content_image_with_empty_alt_is_a_warning_at_its_line(ws: Workspace) -> None:
    problems = check(
        ws,
        HEAD
        + """\
  - type: image
    image:
      src: https://example.org/harta.png
      alt: ""
""",
    )
    (problem,) = with_code(problems, "check.img-alt-empty")
    assert problem.severity == "warning"
    assert problem.location == Location(YAML, 8)
    assert "https://example.org/harta.png" in problem.message
    assert with_code(problems, "check.img-alt-missing") == []


def test_image_without_alt_attribute_is_an_error_at_the_template(ws: Workspace) -> None:
    edit_template(
        ws,
        "partials/header.mjml.j2",
        '<mj-text css-class="t"',
        '<mj-image src="https://example.org/sigla.png" />\n    <mj-text css-class="t"',
    )
    problems = check(ws, HEAD + TEXT_SECTION)
    (problem,) = with_code(problems, "check.img-alt-missing")
    assert problem.severity == "error"
    assert problem.location is not None
    assert problem.location.path == "templates/partials/header.mjml.j2"
    assert problem.location.line == line_of(ws.templates_dir / "partials/header.mjml.j2", "sigla")


# --- Links -------------------------------------------------------------------------------


EVENTS = """\
  - type: events
    title: Evenimente
    items:
      - title: Conferința clusterelor
        start: 2014-10-22
        url: {url}
"""


def test_http_link_is_a_warning_at_its_issue_line(ws: Workspace) -> None:
    problems = check(ws, HEAD + EVENTS.format(url="http://cluster.example.org/conf"))
    (problem,) = with_code(problems, "check.link-http")
    assert problem.severity == "warning"
    assert problem.location == Location(YAML, 11)
    assert "http://cluster.example.org/conf" in problem.message
    assert "https://" in problem.message


def test_allow_http_silences_named_hosts_and_reports_unused_ones(ws: Workspace) -> None:
    allow = "checks:\n  allow_http:\n    - cluster.example.org\n    - old.example.org\n"
    problems = check(ws, allow + HEAD + EVENTS.format(url="http://cluster.example.org/conf"))
    assert with_code(problems, "check.link-http") == []
    (unused,) = with_code(problems, "check.allow-http-unused")
    assert "old.example.org" in unused.message
    assert unused.location == Location(YAML, 4)


def test_malformed_content_url_is_an_error_at_its_line(ws: Workspace) -> None:
    problems = check(ws, HEAD + EVENTS.format(url="https://intranet/conf"))
    (problem,) = with_code(problems, "check.link-malformed")
    assert problem.severity == "error"
    assert problem.location == Location(YAML, 11)
    assert "incomplete host name 'intranet'" in problem.message


def test_malformed_template_link_is_an_error_at_the_template_line(ws: Workspace) -> None:
    edit_template(
        ws,
        "partials/footer.mjml.j2",
        "<p><a href=",
        '<p><a href="www.clusterpolisee.eu">site</a></p>\n      <p><a href=',
    )
    problems = check(ws, HEAD + TEXT_SECTION)
    (problem,) = with_code(problems, "check.link-malformed")
    assert "www.clusterpolisee.eu" in problem.message
    assert "not an absolute URL" in problem.message
    footer = ws.templates_dir / "partials/footer.mjml.j2"
    assert problem.location == Location(
        "templates/partials/footer.mjml.j2", line_of(footer, "www.clusterpolisee.eu")
    )


@pytest.mark.parametrize(
    ("url", "verdict"),
    [
        ("https://www.example.org/a?b=c#d", None),
        ("mailto:contact@example.org", None),
        ("http://www.example.org/", "warning"),
        ("https://exa mple.org", "error"),
        ("javascript:alert(1)", "error"),
        ("https:///path", "error"),
        ("https://ex_ample.org", "error"),
        ("https://example.org:port", "error"),
        ("/relative/path", "error"),
        ("https://bücher.example", None),
    ],
)
def test_url_problem(url: str, verdict: str | None) -> None:
    result = url_problem(url)
    assert (result[0] if result else None) == verdict


# --- Sections, subject, preheader -------------------------------------------------------


def test_section_that_renders_no_text_is_an_error_at_its_line(ws: Workspace) -> None:
    problems = check(ws, HEAD + TEXT_SECTION + "  - type: text\n    body: '&nbsp;'\n")
    (problem,) = with_code(problems, "check.empty-section")
    assert problem.location == Location(YAML, 9)
    assert "section 2 (text)" in problem.message


def test_long_subject_and_missing_preheader_are_warnings(ws: Workspace) -> None:
    subject = "Știri din clustere: " + "dezbateri, grupuri de lucru și evenimente " * 2
    text = f"subject: '{subject}'\ndate: 2014-10-08\nlanguage: ro\nsections:\n" + TEXT_SECTION
    problems = check(ws, text)
    (long,) = with_code(problems, "check.subject-length")
    assert long.severity == "warning"
    assert f"{len(subject)} characters" in long.message
    assert long.location == Location(YAML, 1)
    (preheader,) = with_code(problems, "check.preheader")
    assert preheader.severity == "warning"


# --- Unsubscribe ---------------------------------------------------------------------------


def test_missing_unsubscribe_link_in_html_is_an_error(ws: Workspace) -> None:
    edit_template(
        ws,
        "partials/footer.mjml.j2",
        ' · <a href="{{ unsubscribe_url }}">{{ _("Unsubscribe") }}</a>',
        "",
    )
    problems = check(ws, HEAD + TEXT_SECTION)
    (problem,) = with_code(problems, "check.unsubscribe")
    assert problem.severity == "error"
    assert "HTML has no unsubscribe link" in problem.message
    assert problem.location == Location("templates/default.mjml.j2")


def test_unsubscribe_url_as_text_only_is_not_a_link(ws: Workspace) -> None:
    edit_template(
        ws,
        "partials/footer.mjml.j2",
        '<a href="{{ unsubscribe_url }}">{{ _("Unsubscribe") }}</a>',
        "{{ unsubscribe_url }}",
    )
    problems = check(ws, HEAD + TEXT_SECTION)
    assert [p.message[:36] for p in with_code(problems, "check.unsubscribe")] == [
        "the HTML has no unsubscribe link: th"
    ]


def test_missing_unsubscribe_link_in_text_is_an_error(ws: Workspace) -> None:
    folder = write_issue(ws, HEAD + TEXT_SECTION)
    loaded = load_issue(ws, folder)
    rendered = render_issue(ws, loaded)
    assert with_code(check_issue(ws, loaded, rendered), "check.unsubscribe") == []
    # The text renderer always adds the link, so take it out as a broken template would.
    no_link = CompiledTemplate.compile("Bună ziua!\n", SlotRegistry(), "text")
    broken = dataclasses.replace(rendered, text=no_link)
    (problem,) = with_code(check_issue(ws, loaded, broken), "check.unsubscribe")
    assert "plain-text version has no unsubscribe link" in problem.message


# --- Romanian diacritics -----------------------------------------------------------------


def test_cedilla_letters_are_warned_at_their_line_and_column(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    title: Ştiri\n    body: {file: corp.md}\n"
    problems = check(
        ws, text, {"corp.md": "Prima linie.\n\nÎntâlnirea de la Iaşi, în faţa clădirii.\n"}
    )
    found = with_code(problems, "check.cedilla")
    assert [p.location for p in found] == [
        Location(YAML, 7, 12),
        Location("issues/x/corp.md", 3, 20),
    ]
    assert all(p.severity == "warning" for p in found)
    assert "write Ș (U+0218)" in found[0].message
    assert "ş (U+015F)" in found[1].message and "ţ (U+0163)" in found[1].message
    assert "write ș (U+0219), ț (U+021B)" in found[1].message


def test_decomposed_cedilla_is_found_too(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    body: Iais\u0327i\n"
    (problem,) = with_code(check(ws, text), "check.cedilla")
    assert problem.location == Location(YAML, 7, 14)
    assert "write ș (U+0219)" in problem.message


def test_cedilla_is_not_checked_in_other_languages(ws: Workspace) -> None:
    text = HEAD.replace("language: ro", "language: tr") + "  - type: text\n    body: Beşiktaş\n"
    assert with_code(check(ws, text), "check.cedilla") == []


# --- Lint findings, load and render failures, strict -------------------------------------


def test_lint_findings_reach_the_report_at_the_template(ws: Workspace) -> None:
    edit_template(ws, "sections/text.mjml.j2", "<mj-text", '<mj-text colour="red"')
    problems = check(ws, HEAD + TEXT_SECTION)
    (problem,) = with_code(problems, "mjml.unknown-attribute")
    assert problem.location is not None
    assert problem.location.path == "templates/sections/text.mjml.j2"
    assert "did you mean 'color'?" in problem.message


def test_invalid_issue_stops_at_the_loader(ws: Workspace) -> None:
    report = run_check(ws, write_issue(ws, HEAD + "  - type: txt\n    body: x\n"))
    assert report.html_bytes is None
    assert report.errors >= 1
    assert all(p.location and p.location.path == YAML for p in report.problems)


def test_template_error_stops_at_the_renderer(ws: Workspace) -> None:
    edit_template(ws, "sections/text.mjml.j2", "<mj-text", "{% if %}<mj-text")
    report = run_check(ws, write_issue(ws, HEAD + TEXT_SECTION))
    assert report.html_bytes is None
    (problem,) = report.problems
    assert problem.location is not None
    assert problem.location.path == "templates/sections/text.mjml.j2"


def test_strict_turns_warnings_into_errors(ws: Workspace) -> None:
    folder = write_issue(ws, HEAD + EVENTS.format(url="http://cluster.example.org/conf"))
    relaxed = run_check(ws, folder)
    strict = run_check(ws, folder, strict=True)
    assert (relaxed.errors, relaxed.warnings, relaxed.ok) == (0, 1, True)
    assert (strict.errors, strict.warnings, strict.ok) == (1, 0, False)
    assert strict.problems[0].code == "check.link-http"


def test_summary_counts() -> None:
    err = Problem("e", code="x")
    warn = Problem("w", severity="warning", code="y")
    assert CheckReport(YAML, (err, err, warn)).summary() == "2 errors, 1 warning"
    assert CheckReport(YAML, (warn, warn)).summary() == "2 warnings"
    assert CheckReport(YAML, (err,)).summary() == "1 error"


def test_cli_prints_findings_and_exits_by_severity(workspace_dir: Path) -> None:
    ws_ = workspace.load(workspace_dir)
    write_issue(ws_, HEAD + EVENTS.format(url="http://cluster.example.org/conf"))
    runner = CliRunner()
    args = ["--workspace", str(workspace_dir), "check", "x"]
    relaxed = runner.invoke(cli, args)
    assert relaxed.exit_code == 0, relaxed.output
    assert f"warning: {YAML}:11: link http://cluster.example.org/conf" in relaxed.output
    assert relaxed.output.rstrip().endswith("1 warning")
    strict = runner.invoke(cli, [*args, "--strict"])
    assert strict.exit_code == 1
    assert f"error: {YAML}:11:" in strict.output
    assert strict.output.rstrip().endswith("1 error")


def test_cli_help_shows_an_example() -> None:
    result = CliRunner().invoke(cli, ["check", "--help"])
    assert result.exit_code == 0
    assert "bulletin check 2014-10-clusterpolisee-03 --strict" in result.output
    assert "--strict" in result.output
