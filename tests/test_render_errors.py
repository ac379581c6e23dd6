"""Template and MJML mistakes become TemplateErrors located at the template file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletin import workspace as ws
from bulletin.content.model import Issue, LoadedIssue
from bulletin.errors import Location, TemplateError
from bulletin.render.pipeline import render_issue

PARTIAL = "templates/sections/text.mjml.j2"


def make_issue(**fields: object) -> LoadedIssue:
    data: dict[str, object] = {
        "subject": "Test",
        "date": "2014-10-01",
        "language": "ro",
        "sections": [{"type": "text", "title": "Titlu", "body": "Corp."}],
    }
    data.update(fields)
    return LoadedIssue(slug="t", path="issues/t/issue.yaml", issue=Issue.model_validate(data))


@pytest.fixture
def workspace(workspace_dir: Path) -> ws.Workspace:
    return ws.load(workspace_dir)


def insert_line(workspace: ws.Workspace, rel: str, after: str, text: str) -> int:
    """Insert ``text`` as a new line after the first line containing ``after``; its number."""
    path = workspace.root / rel
    lines = path.read_text(encoding="utf-8").split("\n")
    idx = next(i for i, line in enumerate(lines) if after in line)
    lines.insert(idx + 1, text)
    path.write_text("\n".join(lines), encoding="utf-8")
    return idx + 2


def render_error(workspace: ws.Workspace, loaded: LoadedIssue | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        render_issue(workspace, loaded or make_issue())
    return info.value


def test_undefined_variable_is_located_at_the_partial_line(workspace: ws.Workspace) -> None:
    line = insert_line(workspace, PARTIAL, "<mj-text", "      <p>{{ sectoin.title }}</p>")
    err = render_error(workspace)
    [problem] = err.problems
    assert problem.location == Location(PARTIAL, line)
    assert "'sectoin' is undefined" in problem.message
    assert problem.code == "template.undefined"
    assert err.hint is not None and "subscriber" in err.hint
    assert f"{PARTIAL}:{line}: undefined: 'sectoin' is undefined" in str(err)


def test_missing_attribute_is_an_error_not_an_empty_string(workspace: ws.Workspace) -> None:
    line = insert_line(workspace, PARTIAL, "<mj-text", "      <p>{{ newsletter.slogan }}</p>")
    [problem] = render_error(workspace).problems
    assert problem.location == Location(PARTIAL, line)
    assert "slogan" in problem.message


def test_undefined_in_the_layout_is_located_there(workspace: ws.Workspace) -> None:
    layout = "templates/default.mjml.j2"
    line = insert_line(workspace, layout, "<mj-title>", "    <mj-raw>{{ missing_var }}</mj-raw>")
    [problem] = render_error(workspace).problems
    assert problem.location == Location(layout, line)


def test_syntax_error_is_located(workspace: ws.Workspace) -> None:
    line = insert_line(workspace, PARTIAL, "<mj-text", "      {% if section.title %}<p>x</p>")
    [problem] = render_error(workspace).problems
    assert problem.code == "template.syntax"
    assert problem.location is not None and problem.location.path == PARTIAL
    # Jinja reports an unclosed block where the template ends; the message names the tag.
    assert problem.location.line is not None and problem.location.line >= line
    assert "endif" in problem.message


def test_syntax_error_in_an_expression_is_located_at_its_line(workspace: ws.Workspace) -> None:
    line = insert_line(workspace, PARTIAL, "<mj-text", "      <p>{{ section.title | }}</p>")
    [problem] = render_error(workspace).problems
    assert problem.location == Location(PARTIAL, line)


def test_testing_a_subscriber_value_is_a_template_error(workspace: ws.Workspace) -> None:
    line = insert_line(
        workspace, PARTIAL, "<mj-text", "      {% if subscriber %}<p>Salut</p>{% endif %}"
    )
    [problem] = render_error(workspace).problems
    assert problem.location == Location(PARTIAL, line)
    assert "cannot be tested" in problem.message


def test_missing_layout_names_the_expected_file_and_the_layouts(workspace: ws.Workspace) -> None:
    err = render_error(workspace, make_issue(template="fancy"))
    [problem] = err.problems
    assert problem.location == Location("templates/fancy.mjml.j2")
    assert "layout 'fancy' not found" in problem.message
    assert err.hint is not None and "Available layouts: default" in err.hint


def test_missing_section_partial_is_located_at_the_include(workspace: ws.Workspace) -> None:
    (workspace.root / PARTIAL).unlink()
    [problem] = render_error(workspace).problems
    assert problem.code == "template.missing"
    assert "expected templates/sections/text.mjml.j2" in problem.message
    assert problem.location is not None
    assert problem.location.path == "templates/default.mjml.j2"
    source = (workspace.root / "templates/default.mjml.j2").read_text(encoding="utf-8")
    assert problem.location.line is not None
    assert "include" in source.split("\n")[problem.location.line - 1]


def test_mjml_error_with_a_position_is_mapped_to_the_template_line(
    workspace: ws.Workspace,
) -> None:
    # MRML refuses mj-include (we give it no loader) and reports the byte span.
    line = insert_line(workspace, PARTIAL, "<mj-column>", '    <mj-include path="x.mjml" />')
    err = render_error(workspace)
    [problem] = err.problems
    assert problem.code == "mjml.parse"
    assert problem.location == Location(PARTIAL, line)
    # The column is MRML's, in the generated MJML: the tag name after 4 spaces and "<".
    assert "generated MJML line" in problem.message and "column 6" in problem.message
    assert '<mj-include path="x.mjml" />' in problem.message


def test_mjml_error_without_a_position_is_located_by_our_scan(workspace: ws.Workspace) -> None:
    # An unquoted attribute: MRML says only "unable to parse next template".
    line = insert_line(workspace, PARTIAL, "<mj-column>", "    <mj-spacer height=20px />")
    [problem] = render_error(workspace).problems
    assert problem.code == "mjml.parse"
    assert problem.location == Location(PARTIAL, line)
    assert "unable to parse" in problem.message


def test_romanian_text_with_markup_characters_is_escaped_not_an_mjml_error(
    workspace: ws.Workspace,
) -> None:
    loaded = make_issue(
        title="Cercetare & inovare <2014>",
        sections=[{"type": "text", "title": "a < b & c", "body": "x < y"}],
    )
    rendered = render_issue(workspace, loaded)
    html = rendered.html.fill({})
    assert "Cercetare &amp; inovare &lt;2014&gt;" in html
    assert "a &lt; b &amp; c" in html


def test_mrml_byte_offsets_become_line_and_column_after_romanian_text() -> None:
    """MRML reports UTF-8 byte offsets; multi-byte letters before the error shift them."""
    from bulletin.render.compiler import MjmlFailure, compile_mjml

    src = (
        "<mjml>\n<mj-head>\n<mj-title>Știri și evenimente ăâîșț</mj-title>\n"
        "  <mj-html-attributes></mj-html-attributes>\n</mj-head><mj-body></mj-body></mjml>"
    )
    with pytest.raises(MjmlFailure) as info:
        compile_mjml(src)
    assert (info.value.line, info.value.column) == (4, 4)
    line = src.splitlines()[3]
    assert line[info.value.column - 1 :].startswith("mj-html-attributes")
