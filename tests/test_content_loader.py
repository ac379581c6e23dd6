"""The issue loader: valid issues load; every kind of mistake is reported at its line."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from bulletin import workspace
from bulletin.content import list_issues, load_issue
from bulletin.content.model import (
    MARKDOWN_MAX_DEPTH,
    ArticleSection,
    ListSection,
    TermItem,
    TextSection,
)
from bulletin.errors import BulletinError, ContentError, Problem
from bulletin.render import markdown as md
from bulletin.workspace import Workspace
from conftest import set_config

SAMPLE_SLUG = "2014-10-clusterpolisee-03"
YAML = "issues/x/issue.yaml"

MINIMAL = """\
subject: Buletin nr. 3 — știri și evenimente
date: 2014-10-08
language: ro
sections:
  - type: text
    body: Bună ziua! Întâlnirea de la Iași, în fața clădirii.
"""

HEAD = """\
subject: Test
date: 2014-10-08
language: ro
sections:
"""
"""Lines 1-4 of most broken issues below; their sections start on line 5."""


@pytest.fixture
def ws(workspace_dir: Path) -> Workspace:
    return workspace.load(workspace_dir)


def write_issue(
    ws: Workspace, text: str | bytes, files: dict[str, str | bytes] | None = None
) -> Path:
    """Write issues/x/issue.yaml (dedented when text) and sibling files; return the folder."""
    folder = ws.issues_dir / "x"
    folder.mkdir(parents=True, exist_ok=True)
    raw = text if isinstance(text, bytes) else textwrap.dedent(text).encode("utf-8")
    (folder / "issue.yaml").write_bytes(raw)
    for name, content in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def problems_of(
    ws: Workspace, text: str | bytes, files: dict[str, str | bytes] | None = None
) -> list[Problem]:
    """Write a broken issue, load it and return the problems it reports."""
    return problems_of_folder(ws, write_issue(ws, text, files))


def problems_of_folder(ws: Workspace, folder: Path) -> list[Problem]:
    """Load a broken issue folder and return the problems it reports."""
    with pytest.raises(ContentError) as info:
        load_issue(ws, folder)
    return list(info.value.problems)


def messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line containing ``needle``."""
    hits = [n for n, line in enumerate(textwrap.dedent(text).splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


# --- Valid issues -------------------------------------------------------------------------


def test_minimal_issue_loads(ws: Workspace) -> None:
    loaded = load_issue(ws, write_issue(ws, MINIMAL))

    assert loaded.slug == "x"
    assert loaded.path == YAML
    assert loaded.issue.subject == "Buletin nr. 3 — știri și evenimente"
    assert loaded.issue.date == dt.date(2014, 10, 8)
    assert loaded.section_lines == (5,)
    assert loaded.text_override is None
    section = loaded.issue.sections[0]
    assert isinstance(section, TextSection)
    assert section.body == "Bună ziua! Întâlnirea de la Iași, în fața clădirii."


def test_section_lines_point_at_each_section(ws: Workspace) -> None:
    text = HEAD + (
        "  - type: divider\n"
        "\n"
        "  - title: Heading first\n"
        "    type: text\n"
        "    body: x\n"
        "  - {type: divider}\n"
    )
    loaded = load_issue(ws, write_issue(ws, text))
    assert loaded.section_lines == (5, 7, 10)


def test_schema_types_scalars_not_yaml_guesses(ws: Workspace) -> None:
    """Quoted and unquoted dates both work; 9:00 and NO stay text; yes and 3 are typed."""
    text = """\
    subject: Test
    date: "2014-10-08"
    number: 3
    language: ro
    sections:
      - type: article
        title: Open Days
        date: 2014-10-08
        end_date: "2014-10-09"
        time: 9:00
        place: NO
        body: x
      - type: list
        numbered: yes
        items:
          - plain item
          - term: Cluster
            text: grup de firme
    """
    loaded = load_issue(ws, write_issue(ws, text))
    issue = loaded.issue
    assert issue.date == dt.date(2014, 10, 8)
    assert issue.number == 3
    article, lst = issue.sections
    assert isinstance(article, ArticleSection) and isinstance(lst, ListSection)
    assert (article.date, article.end_date) == (dt.date(2014, 10, 8), dt.date(2014, 10, 9))
    assert article.time == "9:00"  # YAML 1.1 would make it the integer 540
    assert article.place == "NO"  # ... and this False
    assert lst.numbered is True
    assert lst.items[0] == "plain item"
    assert lst.items[1] == TermItem(term="Cluster", text="grup de firme")


def test_byte_order_mark_is_accepted(ws: Workspace) -> None:
    loaded = load_issue(ws, write_issue(ws, b"\xef\xbb\xbf" + MINIMAL.encode("utf-8")))
    assert loaded.issue.subject == "Buletin nr. 3 — știri și evenimente"


def test_sample_issue_loads(ws: Workspace) -> None:
    loaded = load_issue(ws, ws.issues_dir / SAMPLE_SLUG)

    assert loaded.slug == SAMPLE_SLUG
    assert loaded.path == f"issues/{SAMPLE_SLUG}/issue.yaml"
    assert loaded.issue.language == "ro"
    assert loaded.issue.sections
    lines = (ws.issues_dir / SAMPLE_SLUG / "issue.yaml").read_text("utf-8").splitlines()
    assert len(loaded.section_lines) == len(loaded.issue.sections)
    assert list(loaded.section_lines) == sorted(set(loaded.section_lines))
    for n in loaded.section_lines:
        assert lines[n - 1].lstrip().startswith(("- ", "-\t")), lines[n - 1]


def test_load_from_a_relative_folder_as_the_cli_would(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workspace.issue_dir resolves a slug or a path; messages stay workspace-relative."""
    monkeypatch.chdir(ws.root / "issues")
    folder = ws.issue_dir(SAMPLE_SLUG)
    assert not folder.is_absolute()
    loaded = load_issue(ws, folder)
    assert (loaded.slug, loaded.path) == (SAMPLE_SLUG, f"issues/{SAMPLE_SLUG}/issue.yaml")

    write_issue(ws, HEAD + "  - type: text\n    body: ''\n")
    [problem] = problems_of_folder(ws, Path("x"))
    assert str(problem) == f"{YAML}:6: section 1 (text): 'body' must not be empty"


def test_list_issues(ws: Workspace) -> None:
    write_issue(ws, MINIMAL)
    (ws.issues_dir / "0-draft-without-yaml").mkdir()
    assert list_issues(ws) == sorted([SAMPLE_SLUG, "x"])


# --- Reading and YAML syntax ----------------------------------------------------------------


def test_missing_issue_yaml_names_the_path(ws: Workspace) -> None:
    with pytest.raises(BulletinError) as info:
        load_issue(ws, ws.issues_dir / "nothing")
    assert "issues/nothing/issue.yaml: file not found" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_non_utf8_names_the_line_of_the_first_bad_byte(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    body: Știri din Iași\n"
    [problem] = problems_of(ws, text.encode("iso8859_16"))  # legacy Romanian
    assert str(problem) == (
        f"{YAML}:6: not valid UTF-8 text: the first bad byte is on line 6; save the file as UTF-8"
    )
    assert problem.code == "encoding"


def test_tab_in_indentation(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n\t  body: x\n"
    [problem] = problems_of(ws, text)
    assert str(problem) == f"{YAML}:6: tab character at line 6: YAML indentation must use spaces"
    assert problem.code == "yaml.tab"


def test_tab_after_a_key(ws: Workspace) -> None:
    [problem] = problems_of(ws, MINIMAL.replace("language: ro", "language:\tro"))
    assert str(problem) == (
        f"{YAML}:3:10: tab character at line 3, column 10: use spaces instead of tabs in YAML"
    )


def test_key_that_is_not_text(ws: Workspace) -> None:
    [message] = messages(problems_of(ws, MINIMAL + "? [a, b]\n: x\n"))
    assert message == f"{YAML}:7: a key must be plain text, not a list or mapping"


def test_tab_inside_a_block_scalar_is_text(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    body: |\n      a\n      \tindented with a tab\n"
    section = load_issue(ws, write_issue(ws, text)).issue.sections[0]
    assert isinstance(section, TextSection)
    assert section.body == "a\n\tindented with a tab\n"


def test_yaml_syntax_error_has_line_and_column(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    title: Cluster: a definition\n    body: x\n"
    [problem] = problems_of(ws, text)
    assert problem.location is not None
    assert (problem.location.line, problem.location.column) == (6, 19)
    assert problem.message == (
        "YAML syntax error: mapping values are not allowed here; "
        "put text that contains ': ' in quotes"
    )


def test_yaml_syntax_error_mentions_where_the_construct_started(ws: Workspace) -> None:
    text = HEAD + '  - type: text\n    body: "unclosed\n'
    [problem] = problems_of(ws, text)
    assert "found unexpected end of stream (while scanning a quoted scalar at line 6)" in str(
        problem
    )
    assert problem.code == "yaml"


def test_control_character_is_reported(ws: Workspace) -> None:
    [problem] = problems_of(ws, MINIMAL.replace("Bună", "Bu\x00nă"))
    assert str(problem) == f"{YAML}:6: character U+0000 is not allowed in YAML; remove it"


def test_top_level_must_be_a_mapping(ws: Workspace) -> None:
    [problem] = problems_of(ws, "- subject: x\n- date: 2014-10-08\n")
    assert str(problem).startswith(f"{YAML}:1: the top level must be a mapping of keys (")
    assert str(problem).endswith("got a list")

    [problem] = problems_of(ws, "# only a comment\n")
    assert "the file is empty; an issue needs at least: subject, date, sections" in str(problem)


def test_duplicate_keys_reported_at_the_second_with_the_first_line(ws: Workspace) -> None:
    text = """\
    subject: First
    date: 2014-10-08
    subject: Second
    language: ro
    sections:
      - type: news
        title: Știri
        items:
          - title: A
            text: one paragraph
            text: another paragraph
    """
    problems = problems_of(ws, text)
    assert messages(problems) == [
        f"{YAML}:3: 'subject' appears twice in the same mapping (first at line 1); "
        "remove one of them: YAML would silently keep only the last",
        f"{YAML}:11: section 1 (news), item 1: 'text' appears twice in the same mapping "
        "(first at line 10); remove one of them: YAML would silently keep only the last",
    ]
    assert {p.code for p in problems} == {"yaml.duplicate-key"}


def test_recursive_alias_is_a_problem_not_a_crash(ws: Workspace) -> None:
    """Anchors and aliases are refused where they start (bombs: tests/test_hostile_issues.py)."""
    text = HEAD + "  - type: list\n    items: &loop\n      - *loop\n"
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:6:12: '&loop' marks a YAML anchor, which an issue does not use: write each "
        "value out in full (text that starts with '&' or '*' must be in quotes)"
    ]


# --- Schema errors, located -----------------------------------------------------------------


def test_wrong_type(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    title: [a, b]\n    body: x\n"
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:6: section 1 (text): 'title': expected text, got a list"
    ]


def test_empty_required_text(ws: Workspace) -> None:
    text = HEAD + '  - type: text\n    body: "   "\n'
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:6: section 1 (text): 'body' must not be empty"
    ]


def test_invalid_dates_quoted_or_not(ws: Workspace) -> None:
    text = """\
    subject: Test
    date: 2014-13-01
    language: ro
    sections:
      - type: events
        title: Evenimente
        items:
          - title: Open Days
            start: "2014-10-32"
    """
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:2: 'date': expected a date YYYY-MM-DD, got '2014-13-01'",
        f"{YAML}:9: section 1 (events), item 1: 'start': expected a date YYYY-MM-DD, "
        "got '2014-10-32'",
    ]


def test_invalid_url(ws: Workspace) -> None:
    text = HEAD + (
        "  - type: text\n"
        "    body: x\n"
        "  - type: events\n"
        "    title: Evenimente\n"
        "    items:\n"
        "      - title: A\n"
        "        start: 2014-10-08\n"
        "      - title: B\n"
        "        start: 2014-10-09\n"
        "        url: www.example.org/b\n"
    )
    [problem] = problems_of(ws, text)
    assert str(problem).startswith(
        f"{YAML}:14: section 2 (events), item 2: 'url' is not a valid URL: got 'www.example.org/b'"
    )


def test_missing_key_is_located_at_its_mapping(ws: Workspace) -> None:
    text = HEAD + (
        "  - type: text\n"
        "    body: x\n"
        "  - type: events\n"
        "    items:\n"
        "      - title: A\n"
        "        start: 2014-10-08\n"
        "      - place: Iași\n"
        "        title: B\n"
    )
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:7: section 2 (events): 'title' is required",
        f"{YAML}:11: section 2 (events), item 2: 'start' is required",
    ]


def test_missing_top_level_key_is_located_at_the_top(ws: Workspace) -> None:
    text = "# comment\nsubject: x\nlanguage: ro\nsections:\n  - type: divider\n"
    assert messages(problems_of(ws, text)) == [f"{YAML}:2: 'date' is required"]


def test_unknown_section_type(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    body: x\n  - title: T\n    type: artcle\n    body: x\n"
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:8: section 2 (artcle): unknown section type 'artcle' "
        "(expected one of: text, article, list, events, news, cta, image, divider)"
    ]


def test_section_without_type(ws: Workspace) -> None:
    text = HEAD + "  - title: T\n    body: x\n"
    [message] = messages(problems_of(ws, text))
    assert message.startswith(f"{YAML}:5: section 1: 'type' is required (one of: text, article")


def test_section_that_is_not_a_mapping(ws: Workspace) -> None:
    text = HEAD + "  - just some text\n"
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:5: section 1: expected a mapping (indented 'key: value' lines), "
        "got 'just some text'"
    ]


def test_unknown_key_suggests_the_closest(ws: Workspace) -> None:
    text = HEAD + (
        "  - type: news\n"
        "    title: Știri\n"
        "    items:\n"
        "      - title: A\n"
        "        text: x\n"
        "        urll: https://example.org/\n"
        "      - tittle: B\n"
        "        title: B\n"
        "        text: y\n"
        "    colour: red\n"
    )
    problems = problems_of(ws, text)
    assert messages(problems) == [
        f"{YAML}:10: section 1 (news), item 1: unknown key 'urll' (did you mean 'url'?)",
        f"{YAML}:11: section 1 (news), item 2: unknown key 'tittle' (did you mean 'title'?)",
        f"{YAML}:14: section 1 (news): unknown key 'colour' "
        "(allowed here: id, type, title, intro, items)",
    ]
    assert {p.code for p in problems} == {"schema.unknown-key"}


def test_unknown_key_in_a_nested_mapping_and_at_the_top(ws: Workspace) -> None:
    text = """\
    subject: Test
    date: 2014-10-08
    language: ro
    sectoins: []
    sections:
      - type: image
        image:
          src: https://example.org/a.png
          alt: Logo
          widht: 300
    """
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:4: unknown key 'sectoins' (did you mean 'sections'?)",
        f"{YAML}:10: section 1 (image): 'image': unknown key 'widht' (did you mean 'width'?)",
    ]


def test_list_items_report_only_the_form_the_writer_meant(ws: Workspace) -> None:
    """Items are text or term/text pairs: one message per bad item, for the form used."""
    text = HEAD + (
        "  - type: list\n"
        "    items:\n"
        "      - ''\n"
        "      - term: Cluster\n"
        "      - [a, b]\n"
        "      - fine\n"
    )
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:7: section 1 (list), item 1: must not be empty",
        f"{YAML}:8: section 1 (list), item 2: 'text' is required",
        f"{YAML}:9: section 1 (list), item 3: expected text, got a list",
    ]


def test_cross_field_check_points_at_the_named_key(ws: Workspace) -> None:
    text = HEAD + (
        "  - type: events\n"
        "    title: Evenimente\n"
        "    items:\n"
        "      - title: A\n"
        "        start: 2014-10-08\n"
        "        place: Bruxelles\n"
        "        end: 2014-10-01\n"
    )
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:11: section 1 (events), item 1: 'end' is before 'start'"
    ]


def test_bounds_and_patterns_in_plain_words(ws: Workspace) -> None:
    text = """\
    subject: Test
    date: 2014-10-08
    language: Romanian
    sections:
      - type: image
        id: Poza Mare
        image: {src: "https://example.org/a.png", alt: "", width: 700}
    """
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:3: 'language' must be a language code such as 'ro' or 'en-GB', got 'Romanian'",
        f"{YAML}:6: section 1 (image): 'id' must use only lowercase letters, digits and '-', "
        "got 'Poza Mare'",
        f"{YAML}:7: section 1 (image): 'image.width' must be at most 600, got 700",
    ]


def test_every_problem_is_reported_at_once_in_line_order(ws: Workspace) -> None:
    text = """\
    subject: ""
    date: 2014-10-08
    language: ro
    sections:
      - type: news
        title: Știri
        items:
          - tittle: A
            text: x
      - type: artcle
        body: x
      - type: events
        title: Evenimente
        title: Evenimente din nou
        items:
          - title: B
            start: 2014-02-30
            url: not a url
      - type: text
        body: {file: missing.md}
    """
    folder = write_issue(ws, text)
    with pytest.raises(ContentError) as info:
        load_issue(ws, folder)
    lines = [p.location.line for p in info.value.problems if p.location]
    assert lines == [1, 8, 8, 10, 14, 17, 18, 20]
    report = str(info.value)
    assert report.splitlines()[0] == "Issue 'x' cannot be loaded (8 problems):"
    assert all(line.startswith(f"{YAML}:") for line in report.splitlines()[1:])
    assert "Traceback" not in report


# --- {file: name.md} references and text_override -------------------------------------------


def test_file_references_are_replaced_by_the_file_text(ws: Workspace) -> None:
    text = HEAD + (
        "  - type: text\n"
        "    body: {file: intro.md}\n"
        "  - type: list\n"
        "    items:\n"
        "      - file: texte/punct.md\n"
        "      - term: Cluster\n"
        "        text:\n"
        "          file: texte/termen.md\n"
    )
    files = {
        "intro.md": "\ufeff# Bună ziua\n\nȘtiri din **Iași** și Timișoara.\n",
        "texte/punct.md": "Primul punct",
        "texte/termen.md": "grup de întreprinderi",
    }
    loaded = load_issue(ws, write_issue(ws, text, files))
    text_section, list_section = loaded.issue.sections
    assert isinstance(text_section, TextSection) and isinstance(list_section, ListSection)
    assert text_section.body == "# Bună ziua\n\nȘtiri din **Iași** și Timișoara.\n"
    assert list_section.items == [
        "Primul punct",
        TermItem(term="Cluster", text="grup de întreprinderi"),
    ]


def test_missing_referenced_file_is_located_at_the_reference(ws: Workspace) -> None:
    text = HEAD + ("  - type: article\n    title: Open Days\n    body:\n      file: open-days.md\n")
    problems = problems_of(ws, text)
    assert messages(problems) == [
        f"{YAML}:8: section 1 (article): 'body': file 'open-days.md' not found in issues/x/"
    ]
    assert problems[0].code == "file"


def test_referenced_file_must_stay_inside_the_issue_folder(ws: Workspace) -> None:
    (ws.issues_dir / "secret.md").write_text("outside", encoding="utf-8")
    text = HEAD + (
        "  - type: text\n"
        "    body: {file: ../secret.md}\n"
        f"  - type: text\n"
        f"    body: {{file: {ws.issues_dir / 'secret.md'}}}\n"
    )
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:6: section 1 (text): 'body': file '../secret.md' is outside the issue folder; "
        "keep it in issues/x/",
        f"{YAML}:8: section 2 (text): 'body': file '{ws.issues_dir / 'secret.md'}' is outside "
        "the issue folder; keep it in issues/x/",
    ]


def test_referenced_file_must_be_utf8(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    body: {file: intro.md}\n"
    body = "Prima linie\nA doua linie: Știri din Iași\n".encode("iso8859_16")
    [problem] = problems_of(ws, text, {"intro.md": body})
    assert str(problem) == (
        "issues/x/intro.md:2: not valid UTF-8 text: the first bad byte is on line 2 "
        f"(referenced at {YAML}:6); save the file as UTF-8"
    )
    assert problem.code == "encoding"


def test_empty_referenced_file_is_empty_text(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    body: {file: intro.md}\n"
    assert messages(problems_of(ws, text, {"intro.md": "\n  \n"})) == [
        f"{YAML}:6: section 1 (text): 'body' must not be empty"
    ]


def test_file_mapping_that_is_not_markdown_explains_itself(ws: Workspace) -> None:
    text = HEAD + "  - type: text\n    body: {file: intro.txt}\n"
    assert messages(problems_of(ws, text, {"intro.txt": "x"})) == [
        f"{YAML}:6: section 1 (text): 'body': expected text, "
        "got a mapping ({file: ...} must name a .md file)"
    ]


def test_text_override_is_loaded(ws: Workspace) -> None:
    text = MINIMAL + "text_override: text.txt\n"
    folder = write_issue(ws, text, {"text.txt": "\ufeffVersiunea text: știri și evenimente\n"})
    loaded = load_issue(ws, folder)
    assert loaded.issue.text_override == "text.txt"
    assert loaded.text_override == "Versiunea text: știri și evenimente\n"


def test_missing_text_override_is_located(ws: Workspace) -> None:
    text = MINIMAL + "text_override: text.txt\n"
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:7: 'text_override': file 'text.txt' not found in issues/x/"
    ]


# --- One-line fields ------------------------------------------------------------------------


def test_subject_with_a_line_break_is_refused_at_its_line(ws: Workspace) -> None:
    """A block scalar, a folded one and a double-quoted escape all let a newline in."""
    literal = MINIMAL.replace(
        "subject: Buletin nr. 3 — știri și evenimente", "subject: |\n  a\n  b"
    )
    assert messages(problems_of(ws, literal)) == [
        f"{YAML}:1: 'subject' must be one line of text (it contains a line break)"
    ]
    folded = MINIMAL.replace("subject: Buletin", "subject: >\n  Buletin")
    assert messages(problems_of(ws, folded)) == [
        f"{YAML}:1: 'subject' must be one line of text (it contains a line break)"
    ]
    for escape in ("\\r\\n", "\\n", "\\r", "\\u2028", "\\u2029", "\\x85", "\\v"):
        subject = f'subject: "Buletin nr. 3{escape}Bcc: all@example.org"'
        crlf = MINIMAL.replace("subject: Buletin nr. 3 — știri și evenimente", subject)
        assert messages(problems_of(ws, crlf)) == [
            f"{YAML}:1: 'subject' must be one line of text (it contains a line break)"
        ], escape


def test_folded_text_without_a_final_newline_is_one_line(ws: Workspace) -> None:
    folded = MINIMAL.replace("subject: Buletin nr. 3", "subject: >-\n  Buletin\n  nr. 3")
    loaded = load_issue(ws, write_issue(ws, folded))
    assert loaded.issue.subject == "Buletin nr. 3 — știri și evenimente"


def test_control_characters_in_one_line_fields_are_refused(ws: Workspace) -> None:
    text = """\
    subject: "Știri\\tdin clustere"
    preheader: "Rezumat\\e[31m roșu"
    from_name: "Cluster\\x9b"
    title: "Buletin \\u202eevitcepsorp"
    date: 2014-10-08
    language: ro
    sections:
      - type: article
        title: "Open\\nDays"
        subtitle: "a\\x00b"
        time: "09:00\\r"
        place: "Iași\\u2066"
        body: "Markdown\\nmay\\n\\nhold line breaks."
        image: {src: "https://e.org/a.png", alt: "Sala\\nmare"}
        link: {url: "https://e.org/", label: "Înscriere\\n"}
      - type: list
        items:
          - {term: "Cluster\\n", text: "grup\\nde firme"}
      - type: events
        title: "Evenimente\\n"
        items:
          - {title: "Conferința\\n", start: 2014-10-22, place: "Bruxelles\\n"}
      - type: news
        title: Știri
        items:
          - {title: "O știre\\u2028", text: "Text"}
      - type: cta
        title: "Alăturați-vă\\u0085"
        text: x
        button: "Vizitați\\n"
        url: https://e.org/
      - type: image
        image: {src: "https://e.org/b.png", alt: ""}
        caption: "Harta\\n"
      - type: text
        title: "Introducere\\n"
        body: x
    """
    break_ = "must be one line of text (it contains a line break)"
    assert messages(problems_of(ws, text)) == [
        f"{YAML}:1: 'subject' must be one line of text (it contains a tab; use a space)",
        f"{YAML}:2: 'preheader' must be one line of text (it contains the invisible control "
        "character U+001B; remove it)",
        f"{YAML}:3: 'from_name' must be one line of text (it contains the invisible control "
        "character U+009B; remove it)",
        f"{YAML}:4: 'title' must be one line of text (it contains the invisible direction "
        "control U+202E, which can make text read backwards; remove it)",
        f"{YAML}:9: section 1 (article): 'title' {break_}",
        f"{YAML}:10: section 1 (article): 'subtitle' must be one line of text (it contains the "
        "invisible control character U+0000; remove it)",
        f"{YAML}:11: section 1 (article): 'time' {break_}",
        f"{YAML}:12: section 1 (article): 'place' must be one line of text (it contains the "
        "invisible direction control U+2066, which can make text read backwards; remove it)",
        f"{YAML}:14: section 1 (article): 'image.alt' {break_}",
        f"{YAML}:15: section 1 (article): 'link.label' {break_}",
        f"{YAML}:18: section 2 (list), item 1: 'term' {break_}",
        f"{YAML}:20: section 3 (events): 'title' {break_}",
        f"{YAML}:22: section 3 (events), item 1: 'title' {break_}",
        f"{YAML}:22: section 3 (events), item 1: 'place' {break_}",
        f"{YAML}:26: section 4 (news), item 1: 'title' {break_}",
        f"{YAML}:28: section 5 (cta): 'title' {break_}",
        f"{YAML}:30: section 5 (cta): 'button' {break_}",
        f"{YAML}:34: section 6 (image): 'caption' {break_}",
        f"{YAML}:36: section 7 (text): 'title' {break_}",
    ]


def test_subject_with_crlf_fails_bulletin_check(workspace_dir: Path) -> None:
    from click.testing import CliRunner

    from bulletin.cli import cli

    ws_ = workspace.load(workspace_dir)
    subject = 'subject: "Buletin nr. 3\\r\\nBcc: all@example.org"'
    write_issue(ws_, MINIMAL.replace("subject: Buletin nr. 3 — știri și evenimente", subject))
    result = CliRunner().invoke(cli, ["--workspace", str(workspace_dir), "check", "x"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"error: {YAML}:1: 'subject' must be one line of text (it contains a line break)",
        "1 error",
    ]


# --- Markdown nesting -----------------------------------------------------------------------


def test_markdown_nested_up_to_the_limit_loads_whole(ws: Workspace) -> None:
    """Eight lists in one another: every item is kept (markdown-it drops what lies deeper
    than its own limit without a word, which is why the loader stops before it)."""
    body = "".join("  " * i + f"- nivel {i + 1}\n" for i in range(MARKDOWN_MAX_DEPTH))
    quote = "> " * (MARKDOWN_MAX_DEPTH - 3) + "**[*citat*](https://e.org/)**"
    text = HEAD + "  - type: text\n    body: {file: a.md}\n  - type: text\n    body: q\n"
    loaded = load_issue(ws, write_issue(ws, text.replace("q\n", f"'{quote}'\n"), {"a.md": body}))
    out = md.TextWriter()
    section = loaded.issue.sections[0]
    assert isinstance(section, TextSection)
    md.to_text(section.body, out)
    assert f"* nivel {MARKDOWN_MAX_DEPTH}" in out.text()


def test_markdown_nested_beyond_the_limit_is_refused_at_its_line(ws: Workspace) -> None:
    body = "Introducere.\n\n" + "".join(
        "  " * i + f"- nivel {i + 1}\n" for i in range(MARKDOWN_MAX_DEPTH + 1)
    )
    quote = "> " * (MARKDOWN_MAX_DEPTH - 2) + "**[*citat*](https://e.org/)**"
    text = HEAD + f"  - type: text\n    body: {{file: a.md}}\n  - type: text\n    body: '{quote}'\n"
    problems = problems_of(ws, text, {"a.md": body})
    assert messages(problems) == [
        f"{YAML}:8: section 2 (text): 'body' nests quotes, lists, links or emphasis more than "
        f"{MARKDOWN_MAX_DEPTH} levels deep (its line 1); look for stray '>', '-', '*', '_' or '['",
        f"issues/x/a.md:{MARKDOWN_MAX_DEPTH + 3}: quotes, lists, links or emphasis are nested "
        f"more than {MARKDOWN_MAX_DEPTH} levels deep; look for stray '>', '-', '*', '_' or '[' "
        f"(referenced at {YAML}:6)",
    ]
    assert {p.code for p in problems} == {"markdown.depth"}


def test_language_defaults_to_the_newsletter_language(workspace_dir: Path) -> None:
    set_config(workspace_dir, "newsletter", language="en")
    ws = workspace.load(workspace_dir)
    without = MINIMAL.replace("language: ro\n", "")
    assert load_issue(ws, write_issue(ws, without)).issue.language == "en"
    # Written, it wins; written empty, it is left out.
    assert load_issue(ws, write_issue(ws, MINIMAL)).issue.language == "ro"
    empty = MINIMAL.replace("language: ro", "language:")
    assert load_issue(ws, write_issue(ws, empty)).issue.language == "en"

    set_config(workspace_dir, "newsletter", language="ro")
    ws = workspace.load(workspace_dir)
    assert load_issue(ws, write_issue(ws, without)).issue.language == "ro"
