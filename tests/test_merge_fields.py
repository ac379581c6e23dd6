"""Merge fields in content: parsed by bulletin, located when wrong, filled in every part."""

from __future__ import annotations

import re
import textwrap
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bulletin import workspace
from bulletin.cli import cli
from bulletin.content import load_issue
from bulletin.content.merge import Field, MergeFieldError, parse
from bulletin.errors import ContentError
from bulletin.render.checks import run_check
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values
from bulletin.store.importer import import_file
from conftest import set_config
from smtpfaults import FaultServer
from test_engine import (
    KEY,
    close_stores,  # noqa: F401 (an autouse fixture: closes the stores opened)
    configure,
    open_store,
)
from test_engine import (
    parse as parse_message,
)

ISSUE = """\
subject: '{{ first_name | default("Dragă cititor") }}, știrile din {{ attr.city }}'
preheader: 'Pentru {{ name | default("voi") }}'
date: 2014-10-08
sections:
  - type: text
    body: |
      Bună ziua, {{ first_name | default("cititorule") }}!

      Scrieți-ne la {{ email }}; în {{ attr.city | default("orașul dumneavoastră") }}
      ne vedem curând. Acoladele se scriu {{ "{{" }} așa }}.
"""


def bulletin(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-w", str(root), *args], catch_exceptions=False)


def write(root: Path, text: str, slug: str = "merge", files: dict[str, str] | None = None) -> Path:
    folder = root / "issues" / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "issue.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    for name, content in (files or {}).items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def problems(root: Path, folder: Path) -> list[str]:
    with pytest.raises(ContentError) as info:
        load_issue(workspace.load(root), folder)
    return [str(p) for p in info.value.problems]


# --- The language --------------------------------------------------------------------------


def test_parse_fields_fallbacks_and_the_literal_escape() -> None:
    assert parse('Salut {{ first_name | default("cititorule") }}, {{attr.city}}!') == [
        "Salut ",
        Field("first_name", "cititorule"),
        ", ",
        Field("attr.city"),
        "!",
    ]
    assert parse("{{ name|default('voi') }}") == [Field("name", "voi")]
    assert parse('a {{ "{{" }} b }}') == ["a {{ b }}"]
    assert parse("no fields, {single} braces } }") == ["no fields, {single} braces } }"]


@pytest.mark.parametrize(
    ("text", "offset", "says"),
    [
        ("Dear {{ subscriber.get('first_name', 'member') }},", 5, "did you mean "
         "'{{ first_name | default(\"member\") }}'"),
        ("{{ city }}", 0, "'{{ city }}' is not a merge field"),
        ("x {{ attr.City }}", 2, "write '{{ attr.city }}'"),
        ("{{ first_name }} and {{ unsubscribe_url }}", 21, "{{ attr.KEY }}"),
        ("open {{ first_name", 5, "for a literal '{{'"),
        ("{{ first_name | upper }}", 0, "is not a merge field"),
    ],
)  # fmt: skip
def test_anything_else_is_an_error_at_its_offset(text: str, offset: int, says: str) -> None:
    with pytest.raises(MergeFieldError) as info:
        parse(text)
    assert info.value.offset == offset
    assert says in info.value.message


# --- Located at file:line:col --------------------------------------------------------------


def test_the_issue_example_is_an_error_at_its_line_and_column(workspace_dir: Path) -> None:
    folder = write(
        workspace_dir,
        """\
        subject: Știri
        date: 2014-10-08
        sections:
          - type: text
            body: |
              Bună ziua,

              Dear {{ subscriber.get('first_name', 'member') }},
        """,
    )
    [problem] = problems(workspace_dir, folder)
    assert problem.startswith("issues/merge/issue.yaml:8:12: '{{ subscriber.get(")
    assert "did you mean '{{ first_name | default(\"member\") }}'?" in problem

    # The CLI says so without a traceback, and check fails.
    result = bulletin(workspace_dir, "check", "merge")
    assert result.exit_code != 0
    assert "issues/merge/issue.yaml:8:12:" in result.output
    assert "Traceback" not in result.output


def test_errors_in_subject_folded_text_and_a_markdown_file_are_located(
    workspace_dir: Path,
) -> None:
    folder = write(
        workspace_dir,
        """\
        subject: 'Salut {{ prenume }}'
        date: 2014-10-08
        sections:
          - type: text
            title: >-
              Un titlu
              pe {{ două }} rânduri
            body: {file: body.md}
        """,
        files={"body.md": "Primul rând.\n\nAl doilea, {{ attr.oras | default(x) }}.\n"},
    )
    found = problems(workspace_dir, folder)
    assert any(p.startswith("issues/merge/issue.yaml:1:17: '{{ prenume }}'") for p in found)
    assert any(p.startswith("issues/merge/issue.yaml:7:10: ") for p in found), found
    assert any(p.startswith("issues/merge/body.md:3:12: ") for p in found), found


# --- Filled alike ---------------------------------------------------------------------------


def test_preview_render_fills_html_text_and_subject_with_the_sample_reader(
    workspace_dir: Path,
) -> None:
    write(workspace_dir, ISSUE)
    ws = workspace.load(workspace_dir)
    rendered = render_issue(ws, load_issue(ws, ws.issues_dir / "merge"))
    values = sample_values(ws, "merge")
    html = rendered.html.fill(values)
    text = rendered.text.fill(values)
    for part in (html, text):
        assert "Bună ziua, Ana!" in part
        assert "cititor@example.org" in part
        assert "orașul dumneavoastră" in part  # the sample reader has no city
        assert "Acoladele se scriu {{ așa }}." in part
        assert "{{ first_name" not in part and "BULLETINSLOT" not in part
    assert "Pentru Ana Popescu" in html  # the preheader
    assert rendered.subject_for(values) == "Ana, știrile din"
    # Where no reader is known (the send plan), the subject shows the fields as written.
    assert rendered.subject == (
        '{{ first_name | default("Dragă cititor") }}, știrile din {{ attr.city }}'
    )

    result = bulletin(workspace_dir, "render", "merge")
    assert result.exit_code == 0, result.output
    out = (workspace_dir / "out" / "merge.txt").read_text(encoding="utf-8")
    assert "Bună ziua, Ana!" in out

    report = run_check(ws, ws.issues_dir / "merge", strict=True)
    assert not [p for p in report.problems if "merge" in p.code or "personal" in p.code]


def test_a_real_send_personalises_html_text_and_an_encoded_subject(
    workspace_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    write(workspace_dir, ISSUE)
    with FaultServer() as server:
        ws = configure(workspace_dir, server.url, send={"rate": 0, "connections": 1})
        db = open_store(ws.database_url())
        csv = workspace_dir / "merge.csv"
        csv.write_text(
            "email,name,first_name,city\n"
            "ana@example.org,Ana Maria Țurcanu,Ana Maria,Iași\n"
            "stefan@example.org,Ștefan Neamțu,,Brașov\n"
            "anon@example.org,,,\n",
            encoding="utf-8",
        )
        import_file(db, csv, "news", create_list_if_missing=True)

        result = bulletin(workspace_dir, "send", "merge", "--list", "news", "--yes")

        assert result.exit_code == 0, result.output
        assert "{{ first_name" in result.output  # the plan shows the subject as written
        got: dict[str, Any] = {}
        for received in server.messages:
            msg = parse_message(received.data)
            raw_subject = received.data.split(b"\r\nSubject: ", 1)[1].split(b"\r\n")[0]
            assert raw_subject.isascii() and b"=?utf-8?" in raw_subject.lower()
            plain = msg.get_body(("plain",))
            html = msg.get_body(("html",))
            assert plain is not None and html is not None
            got[received.rcpt_tos[0]] = (
                str(make_header(decode_header(str(msg["Subject"])))),
                plain.get_content(),
                html.get_content(),
            )

    subject, text, html = got["ana@example.org"]
    assert subject == "Ana Maria, știrile din Iași"
    for part in (text, html):
        assert "Bună ziua, Ana Maria!" in part
        assert "Scrieți-ne la ana@example.org; în Iași" in part.replace("\n", " ")
    subject, text, html = got["stefan@example.org"]
    assert subject == "Ștefan, știrile din Brașov"
    assert "Bună ziua, Ștefan!" in text and "Bună ziua, Ștefan!" in html
    subject, text, html = got["anon@example.org"]
    assert subject == "Dragă cititor, știrile din"
    for part in (text, html):
        assert "Bună ziua, cititorule!" in part
        assert "orașul dumneavoastră" in part


# --- What a template personalises ----------------------------------------------------------


def test_check_names_a_field_the_layout_shows_only_in_html(workspace_dir: Path) -> None:
    layout = workspace_dir / "templates" / "default.mjml.j2"
    source = layout.read_text(encoding="utf-8")
    marker = "{% for section in sections %}"
    assert marker in source
    layout.write_text(
        source.replace(
            marker,
            "<mj-section><mj-column><mj-text>Dragă {{ subscriber.get('first_name', 'cititor') }}"
            "</mj-text></mj-column></mj-section>\n" + marker,
            1,
        ),
        encoding="utf-8",
    )
    ws = workspace.load(workspace_dir)
    report = run_check(ws, ws.issues_dir / "2014-10-clusterpolisee-03")
    found = [str(p) for p in report.problems if p.code == "check.personalisation"]
    assert found == [
        "templates/default.mjml.j2: the HTML part shows the reader's first_name but the "
        "plain-text part does not: write it in the content (a merge field in Markdown reaches "
        "both parts) rather than in the layout only"
    ]
    result = bulletin(workspace_dir, "check", "--strict", "2014-10-clusterpolisee-03")
    assert result.exit_code != 0 and "first_name" in result.output


def test_language_left_out_personalised_issue_renders_in_the_newsletter_language(
    workspace_dir: Path,
) -> None:
    set_config(workspace_dir, "newsletter", language="en")
    write(workspace_dir, ISSUE)
    ws = workspace.load(workspace_dir)
    rendered = render_issue(ws, load_issue(ws, ws.issues_dir / "merge"))
    assert rendered.language == "en"
    assert '<html lang="en"' in rendered.html.fill(sample_values(ws, "merge"))


# --- The preview and the archive -----------------------------------------------------------


def test_the_preview_shows_merge_fields_filled_for_the_sample_reader(workspace_dir: Path) -> None:
    from test_preview import preview_in_thread

    issue_yaml = workspace_dir / "issues" / "2014-10-clusterpolisee-03" / "issue.yaml"
    text = issue_yaml.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^subject: .*$", "subject: 'Salut, {{ first_name }}: știri'", text)
    text = re.sub(r"(?m)^preheader: .*$", "preheader: 'Pentru {{ name }}'", text)
    issue_yaml.write_text(text, encoding="utf-8")
    with preview_in_thread(workspace_dir) as running:
        summary = running.summary()
        html = running.get("/email.html").text
        plain = running.get("/email.txt").text
    assert summary["email"]["subject"] == "Salut, Ana: știri"
    assert summary["email"]["preheader"] == "Pentru Ana Popescu"
    assert {"first_name", "name"} <= set(summary["email"]["slots"])
    assert "Pentru Ana Popescu" in html and "{{" not in html
    assert "BULLETINSLOT" not in html + plain


def test_the_archive_lists_a_personal_subject_as_a_reader_without_values(
    workspace_dir: Path,
) -> None:
    from bulletin.web.archive import Archive

    write(workspace_dir, ISSUE)
    archive = Archive(workspace.load(workspace_dir))
    [entry] = [e for e in archive.entries() if e.slug == "merge"]
    assert entry.subject == "Dragă cititor, știrile din"


def test_a_field_inside_a_link_address_is_percent_encoded_in_html_and_text(
    workspace_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `+`, `&` or space in a value must not change where the link leads."""
    monkeypatch.setenv("BULLETIN_SECRET_KEY", KEY)
    form = 'https://forms.example.org/f?e={{ email }}&c={{ attr.city | default("fără oraș") }}'
    write(
        workspace_dir,
        "subject: Chestionar\n"
        "preheader: Spuneți-ne părerea\n"
        "date: 2014-10-08\n"
        "sections:\n"
        "  - type: text\n"
        "    body: |\n"
        f"      [Completați chestionarul]({form})\n"
        '      pentru {{ attr.city | default("voi") }} & {{ email }}.\n',
    )
    with FaultServer() as server:
        ws = configure(workspace_dir, server.url, send={"rate": 0, "connections": 1})
        db = open_store(ws.database_url())
        csv = workspace_dir / "merge.csv"
        csv.write_text(
            "email,name,city\nana+stiri@example.org,Ana,Târgu Mureș & co\nion@example.org,Ion,\n",
            encoding="utf-8",
        )
        import_file(db, csv, "news", create_list_if_missing=True)
        result = bulletin(workspace_dir, "send", "merge", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
        parts = {}
        for received in server.messages:
            msg = parse_message(received.data)
            plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
            assert plain is not None and html is not None
            parts[received.rcpt_tos[0]] = (plain.get_content(), html.get_content())

    text, html = parts["ana+stiri@example.org"]
    address = (
        "https://forms.example.org/f?e=ana%2Bstiri@example.org&c=T%C3%A2rgu%20Mure%C8%99%20%26%20co"
    )
    assert f'href="{address.replace("&", "&amp;")}"' in html
    assert address in text
    # Outside the address the values read as written.
    assert "pentru Târgu Mureș &amp; co &amp; ana+stiri@example.org" in html
    assert "pentru Târgu Mureș & co & ana+stiri@example.org" in " ".join(text.split())
    text, html = parts["ion@example.org"]
    assert "f?e=ion@example.org&amp;c=f%C4%83r%C4%83%20ora%C8%99" in html
