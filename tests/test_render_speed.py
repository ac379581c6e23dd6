"""The render pipeline's shortcuts (issue 13) give the output the plain way gives.

Each shortcut (rules derived once per ``<style>`` block, per-render caches) is checked
against the uncached library call on real documents: the sample issue, every section type,
and hand-written HTML that exercises what the shortcuts skip (floated images,
``!important``, pseudo-classes, a stylesheet edited between two renders).
"""

from __future__ import annotations

import logging
import os
import random
import re
import textwrap
from pathlib import Path

import cssutils  # type: ignore[import-untyped]
import pytest
from premailer import Premailer

from bulletin import workspace as ws
from bulletin.content.loader import load_issue
from bulletin.render import compiler
from bulletin.render import markdown as md
from bulletin.render.pipeline import STAGES, render_issue
from test_render_pipeline import SAMPLE_SLUG, make_issue


@pytest.fixture
def workspace(workspace_dir: Path) -> ws.Workspace:
    return ws.load(workspace_dir)


def plain_premailer(html: str) -> str:
    """What inline_css gives without its shortcuts: a fresh premailer, every option default
    except the project's ones (floated-image alignment always on)."""
    prepared = compiler._STYLE_OPEN.sub(compiler._mark_style, html)
    out: str = Premailer(prepared, **compiler.PREMAILER_OPTIONS).transform(pretty_print=True)
    if not out.lstrip()[:9].lower() == "<!doctype":
        out = f"{compiler.DOCTYPE}\n{out}"
    return out


def test_sample_issue_inlines_byte_for_byte_like_plain_premailer(
    workspace: ws.Workspace,
) -> None:
    rendered = render_issue(workspace, load_issue(workspace, workspace.issue_dir(SAMPLE_SLUG)))
    html = compiler.compile_mjml(rendered.mjml)
    expected = plain_premailer(html)
    # Twice: the second call takes its rules from the cache.
    assert compiler.inline_css(html) == expected
    assert compiler.inline_css(html) == expected
    assert 'style="margin:0 0 14px"' in expected  # the template's mj-style was inlined


def test_every_section_type_inlines_like_plain_premailer(workspace: ws.Workspace) -> None:
    rendered = render_issue(workspace, make_issue())
    html = compiler.compile_mjml(rendered.mjml)
    assert "<img" in html
    assert compiler.inline_css(html) == plain_premailer(html)


PAGE = """<!doctype html>
<html><head>
<style type="text/css">#outlook a { padding: 0; } p { margin: 13px 0; }</style>
<style type="text/css">{css}</style>
</head><body>
<div class="c" id="main"><p id="intro">Întâi ș ț</p><p class="x">Apoi</p><a href="https://example.org/">legătură</a>
<img src="https://img.example.org/a.png" alt="a" class="left" style="border:0">
<img src="https://img.example.org/b.png" alt="b" style="border:0;height:auto"></div>
<!-- <h4 class="missing">only in a comment</h4> -->
<span class='Mixed-Case other'>x</span><span class=bare>y</span>
</body></html>"""

CSS = [
    ".c p{margin:0 0 14px;color:#111} .c .x{color:#222 !important} .c a:hover{color:red}"
    " @media (max-width:480px){.c p{margin:0 !important}} .left{float:left;width:50%}",
    # The same stylesheet edited: every rule changes, the cache must not answer for it.
    ".c p{margin:0 0 10px;color:#333} .c .x{color:#444} .left{float:right}",
    ".c p{margin:0}",  # no float left anywhere: the alignment pass is skipped
    # Rules that match nothing here (skipped) beside rules that do, of every kind.
    ".c h4,.c blockquote,.missing,#nowhere,TD.x>p{color:#555} .C P{color:#666}"
    " div.c>p.x{padding:1px} #main p+p{padding:2px} .c a[href]{color:#777}"
    " .c :first-child{margin:3px} .c p ~ a{margin:4px} h1.x, .c .x{border:0}"
    " .Mixed-Case{color:#888} p#intro{color:#999}",
]


@pytest.mark.parametrize("css", CSS)
def test_handwritten_html_inlines_like_plain_premailer(css: str) -> None:
    html = PAGE.replace("{css}", css)
    out = compiler.inline_css(html)
    assert out == plain_premailer(html)
    assert compiler.inline_css(html) == out


def test_floated_images_still_get_their_align_attribute() -> None:
    out = compiler.inline_css(PAGE.replace("{css}", CSS[1]))
    img = re.search(r'<img src="https://img.example.org/a.png"[^>]*>', out)
    assert img is not None and 'align="right"' in img.group(0)
    assert "Întâi ș ț" in out


def test_render_reports_the_time_of_every_stage(workspace: ws.Workspace) -> None:
    timings: dict[str, float] = {}
    render_issue(workspace, make_issue(), timings=timings)
    assert list(timings) == list(STAGES)
    assert all(seconds >= 0 for seconds in timings.values())
    first = dict(timings)
    render_issue(workspace, make_issue(), timings=timings)  # a second render adds up
    assert all(timings[s] >= first[s] for s in STAGES)
    assert sum(timings.values()) > sum(first.values())


def textwrap_lines(text: str, first: str, rest: str, width: int) -> list[str]:
    """What markdown.wrap gave when it called textwrap for every paragraph."""
    wrapper = textwrap.TextWrapper(
        width=width,
        break_long_words=False,
        break_on_hyphens=False,
        initial_indent=first,
        subsequent_indent=rest,
    )
    lines: list[str] = []
    for i, part in enumerate(text.split("\n")):
        wrapper.initial_indent = first if i == 0 else rest
        lines.extend(wrapper.wrap(part) or [wrapper.initial_indent.rstrip()])
    return lines


WORDS = [
    "a",
    "ș",
    "Țară",
    "cuvânt",
    "bine-cunoscut",
    "https://example.org/un/drum/foarte/lung/care/nu/incape/pe/un/rand/" + "x" * 40,
    "—",
    "BULLETINSLOT3X",
    "x" * 71,
    "y" * 72,
    "z" * 73,
]
PLAIN_GAPS = [" ", " ", " ", "  ", "   ", "\n"]
ODD_GAPS = [*PLAIN_GAPS, "\u00a0", "\t", " \u2009 "]  # these take textwrap's own path


def test_wrap_gives_the_lines_textwrap_gives() -> None:
    rng = random.Random(13)  # replayable: the same texts on every run
    cases = 0
    for _ in range(4000):
        count = rng.randint(0, 40)
        gaps = ODD_GAPS if rng.random() < 0.2 else PLAIN_GAPS
        parts = [rng.choice(WORDS) + rng.choice(gaps) for _ in range(count)]
        text = "".join(parts)
        if rng.random() < 0.3:
            text = rng.choice(["", " ", "   "]) + text
        first, rest = rng.choice([("", ""), ("* ", "  "), ("> ", "> "), ("10. ", "    ")])
        width = rng.choice([72, 72, 40, 10, 3, 1])
        assert md.wrap(text, first=first, rest=rest, width=width) == textwrap_lines(
            text, first, rest, width
        ), (text, first, rest, width)
        cases += 1
    assert cases == 4000


def test_css_parser_stays_quiet_when_its_log_level_was_changed(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The log level is only set again when something changed it (setting it costs)."""
    html = PAGE.replace("{css}", ".c p{color:;margin:0 0 1px} .c .x{colour:red}")
    compiler.inline_css(html)
    cssutils.log.setLevel(logging.INFO)  # as another library using cssutils might
    try:
        out = compiler.inline_css(html.replace("1px", "2px"))
        assert cssutils.log.getEffectiveLevel() == logging.CRITICAL
    finally:
        cssutils.log.setLevel(logging.CRITICAL)
    assert 'style="margin:0 0 2px"' in out
    assert capfd.readouterr().err == ""


def test_template_names_resolve_links_as_relpath_does(workspace: ws.Workspace) -> None:
    """Template names are resolved once per folder; a linked template still names its
    target, as Workspace.relpath does for every path."""
    templates = workspace.templates_dir
    shared = workspace.root / "shared"
    shared.mkdir()
    (templates / "sections" / "cta.mjml.j2").rename(shared / "cta.mjml.j2")
    (templates / "sections" / "cta.mjml.j2").symlink_to(shared / "cta.mjml.j2")
    outside = workspace.root.parent / "outside-partials"
    (templates / "partials").rename(outside)
    (templates / "partials").symlink_to(outside, target_is_directory=True)

    rendered = render_issue(workspace, make_issue())
    named = {span.template for span in rendered.mjml_sources}
    assert "shared/cta.mjml.j2" in named
    assert str(templates / "partials" / "footer.mjml.j2") in named  # outside: as given
    assert "templates/sections/events.mjml.j2" in named
    # Each name is what Workspace.relpath gives for the template's path.
    expected = {
        workspace.relpath(Path(folder) / file)
        for folder, _dirs, files in os.walk(templates, followlinks=True)
        for file in files
    }
    assert named <= expected, named - expected
    assert len(named) >= 8


def test_rules_for_absent_elements_are_skipped_and_only_those() -> None:
    html = PAGE.replace("{css}", CSS[3])
    present = compiler._Present(html)
    # The <h4 class="missing"> is only in a comment; the text counts all the same.
    assert present.may_match(".c h4") and present.may_match(".missing")
    assert not present.may_match(".c blockquote")
    assert not present.may_match("TD.x>p")  # no <td>
    assert not present.may_match("h1.x")
    assert present.may_match(".C P") and present.may_match("div.c>p.x")
    assert present.may_match("#nowhere")  # classes and ids are not looked at
    assert present.may_match(".c a[href]") and present.may_match(".c :first-child")
    assert present.may_match("body") and present.may_match("html p")  # lxml adds them
