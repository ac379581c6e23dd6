"""The markup check: the Outlook and hidden-text traps, found in real rendered mail.

Every test renders through the real pipeline (Jinja2, MJML, premailer); the traps are put
back into copies of the default templates, as a template author might write them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bulletin import workspace
from bulletin.content.loader import load_issue
from bulletin.errors import Location
from bulletin.render.checks import run_check
from bulletin.render.markup import lint_html, parse_style
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values
from bulletin.workspace import Workspace
from conftest import SAMPLE_SLUG

FILLER = "\u034f\u200c\u00a0"
"""Combining grapheme joiner, zero-width non-joiner, no-break space: &#847;&zwnj;&nbsp;."""


@pytest.fixture
def ws(workspace_dir: Path) -> Workspace:
    return workspace.load(workspace_dir)


def sample_html(ws: Workspace) -> str:
    loaded = load_issue(ws, ws.issue_dir(SAMPLE_SLUG))
    return render_issue(ws, loaded).html.fill(sample_values(ws, loaded.slug))


def edit(ws: Workspace, name: str, old: str, new: str) -> int:
    """Replace ``old`` in a template; the line where ``new`` starts."""
    path = ws.templates_dir / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{name} no longer contains {old!r}; update the test"
    text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return text.count("\n", 0, text.index(new)) + 1


def test_the_rendered_sample_has_no_outlook_or_hidden_text_trap(ws: Workspace) -> None:
    html = sample_html(ws)
    assert lint_html(html) == []
    report = run_check(ws, ws.issue_dir(SAMPLE_SLUG), strict=True)
    assert [p for p in report.problems if p.code.startswith("markup.")] == []


def test_the_preheader_is_hidden_the_established_way_and_padded(ws: Workspace) -> None:
    html = sample_html(ws)
    body = html[html.index("<body") :]
    found = re.search(r'<div class="ph" style="([^"]*)">([^<]*)</div>', body)
    assert found is not None
    style = parse_style(found.group(1))
    assert style["display"] == "none" and style["mso-hide"] == "all"
    assert style["max-height"] in ("0", "0px") and style["opacity"] == "0"
    assert "color" not in style  # hidden by display and opacity, never by colour
    text = found.group(2)
    preheader = "Dezbaterea de la Open Days 2014, concluziile grupurilor de lucru, evenimente"
    assert text.startswith(preheader)
    assert text.endswith(FILLER * 100)
    # It is the first text of the body: nothing comes before it into the inbox preview.
    before = re.sub(r"<[^>]+>|<!--.*?-->", "", body[: found.start()], flags=re.S)
    assert before.strip() == ""
    # mj-preview (coloured like the page, no mso-hide) is gone.
    assert "color:#ffffff;line-height:1px;max-height:0px" not in html


def test_events_are_spaced_by_cells_with_fonts_and_valigns(ws: Workspace) -> None:
    html = sample_html(ws)
    tables = re.findall(r'<table [^>]*class="ev"[^>]*>', html)
    assert len(tables) == 5 and not any("margin" in t for t in tables)
    for cls in ("evd", "evt"):
        cells = re.findall(rf'<td class="{cls}"[^>]*>', html)
        assert len(cells) == 5 and all('valign="top"' in c for c in cells)
    badges = re.findall(r'<td class="evb"[^>]*>\s*<b[^>]*>([^<]*)</b><br>([^<]*)</td>', html)
    assert badges[0] == ("6–9", "oct.")
    assert len(badges) == 5
    assert all("font-family:Arial" in c for c in re.findall(r'<td class="ev[bt]"[^>]*>', html))


def test_each_trap_is_found_at_the_template_line_that_wrote_it(ws: Workspace) -> None:
    events = "sections/events.mjml.j2"
    margin = edit(ws, events, 'class="ev" width="100%"', 'class="ev" style="margin:14px 0 0"')
    block = edit(
        ws, events, '<b class="evn">', '<b class="evday" style="display:block;font-size:20px">'
    )
    edit(ws, events, "</b><br />", "</b>")
    nested = edit(ws, events, '<td class="evt" valign="top">', '<td class="evx" valign="top">')
    edit(
        ws,
        "default.mjml.j2",
        "<mj-raw><div",
        '<mj-raw><div style="display:none;color:#eef1f4;background:#eef1f4">x</div><div',
    )
    edit(
        ws,
        "partials/footer.mjml.j2",
        "</mj-text>",
        '<p class="same" style="color:#ffffff;background-color:#ffffff">same</p></mj-text>',
    )

    report = run_check(ws, ws.issue_dir(SAMPLE_SLUG))

    found = {(p.code, p.location) for p in report.problems if p.code.startswith("markup.")}
    where = f"templates/{events}"
    assert ("markup.table-margin", Location(where, margin)) in found, found
    assert ("markup.display-block", Location(where, block)) in found, found
    assert ("markup.nested-font", Location(where, nested)) in found, found
    assert ("markup.hidden-mso", Location("templates/default.mjml.j2")) in found, found
    codes = [p.code for p in report.problems]
    assert codes.count("markup.hidden-colour") == 2, report.problems
    assert all(p.severity == "warning" for p in report.problems if p.code.startswith("markup."))
    assert run_check(ws, ws.issue_dir(SAMPLE_SLUG), strict=True).errors >= 6


def test_lint_rules_on_small_documents() -> None:
    def codes(html: str) -> list[str]:
        return [f.code for f in lint_html(html)]

    assert codes('<table style="margin:0px auto"><tr><td></td></tr></table>') == []
    assert codes('<table style="margin-top:12px"><tr><td></td></tr></table>') == [
        "markup.table-margin"
    ]
    assert codes('<div style="display:block">x</div>') == []  # a block is a block
    assert codes('<span style="display: block">x</span>') == ["markup.display-block"]
    font = '<table><tr><td style="font-family:Arial">'
    assert codes(f"{font}<table><tr><td><p>Iași</p></td></tr></table></td></tr></table>") == [
        "markup.nested-font"
    ]
    assert codes(f'{font}<table><tr><td><font face="Arial">Iași</font></td></tr></table>') == []
    assert codes(f'{font}<table style="font-family:Arial"><tr><td>Iași</td></tr></table>') == []
    assert codes('<div style="display:none;mso-hide:all;opacity:0">p</div>') == []
    assert codes('<div style="display:none;mso-hide:all;color:#fff">p</div>') == [
        "markup.hidden-colour"
    ]
    assert codes('<td bgcolor="#0B3D6B"><p style="color:#0b3d6b">x</p></td>') == [
        "markup.hidden-colour"
    ]
