"""The render pipeline end to end: Jinja2 -> MJML -> HTML -> inlined CSS, and slots."""

from __future__ import annotations

import html as html_lib
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulletin import workspace as ws
from bulletin.content.loader import load_issue
from bulletin.content.model import SECTION_TYPES, Issue, LoadedIssue
from bulletin.render.pipeline import render_issue
from bulletin.render.types import RenderedIssue
from bulletin.render.values import sample_values
from bulletin.urls import view_online_url

SAMPLE_SLUG = "2014-10-clusterpolisee-03"

ALL_SECTIONS: list[dict[str, Any]] = [
    {"type": "text", "id": "intro", "title": "Introducere", "body": "Paragraf cu *accent*."},
    {
        "type": "article",
        "title": "Articolul ș ț",
        "subtitle": "Subtitlu",
        "date": "2014-10-06",
        "end_date": "2014-10-09",
        "time": "09:00–10:45",
        "place": "Bruxelles",
        "body": "Corpul articolului.\n\n# Titlu intern\n\nMai mult.",
        "image": {"src": "https://img.example.org/a.png", "alt": "Sala de conferințe"},
        "link": {"url": "https://example.org/inscriere", "label": "Înscriere"},
    },
    {
        "type": "list",
        "title": "Lista",
        "intro": "Înainte.",
        "items": ["primul element", {"term": "Termen", "text": "explicație"}],
        "numbered": True,
        "outro": "După.",
    },
    {
        "type": "events",
        "title": "Evenimente",
        "items": [
            {
                "title": "Open Days",
                "start": "2014-10-06",
                "end": "2014-10-09",
                "place": "Bruxelles",
                "url": "https://example.org/open-days",
                "description": "Dezbatere.",
            }
        ],
    },
    {
        "type": "news",
        "title": "Știri",
        "items": [{"title": "O știre", "text": "Textul știrii.", "url": "https://example.org/n"}],
    },
    {
        "type": "cta",
        "title": "Alăturați-vă",
        "text": "Platforma S3.",
        "button": "Vizitați platforma",
        "url": "https://example.org/s3",
    },
    {
        "type": "image",
        "image": {"src": "https://img.example.org/map.png", "alt": "Harta SEE", "width": 400},
        "caption": "Regiunea SEE",
    },
    {"type": "divider"},
]


def make_issue(
    sections: list[dict[str, Any]] | None = None,
    *,
    slug: str = "test-issue",
    text_override: str | None = None,
    **fields: Any,
) -> LoadedIssue:
    data: dict[str, Any] = {
        "subject": "Buletinul de test — ș ț",
        "preheader": "Ce găsiți în acest număr",
        "number": 3,
        "date": "2014-10-01",
        "language": "ro",
        "sections": sections if sections is not None else ALL_SECTIONS,
    }
    data.update(fields)
    return LoadedIssue(
        slug=slug,
        path=f"issues/{slug}/issue.yaml",
        issue=Issue.model_validate(data),
        text_override=text_override,
    )


@pytest.fixture
def workspace(workspace_dir: Path) -> ws.Workspace:
    return ws.load(workspace_dir)


def filled_html(w: ws.Workspace, rendered: RenderedIssue, **values: str) -> str:
    return rendered.html.fill({**sample_values(w, rendered.loaded.slug), **values})


def test_every_section_type_renders(workspace: ws.Workspace) -> None:
    assert {s["type"] for s in ALL_SECTIONS} == set(SECTION_TYPES)
    rendered = render_issue(workspace, make_issue())
    out = filled_html(workspace, rendered)
    assert rendered.ok and rendered.problems == ()
    # Headings: h1 for the issue, h2 per section, h3 per item and for demoted Markdown "#".
    assert re.search(r"<h1[^>]*>ClusterPoliSEE e-newsletter</h1>", out)
    for title in ("Introducere", "Articolul ș ț", "Lista", "Evenimente", "Știri"):
        assert re.search(rf"<h2[^>]*>{title}</h2>", out), title
    assert re.search(r'<h2 id="intro"', out)
    assert re.search(r"<h3[^>]*>Titlu intern</h3>", out)
    assert re.search(r"<h3[^>]*>Open Days</h3>", out)
    assert re.search(r"<h3[^>]*>O știre</h3>", out)
    # Article: meta line with the date range, image alt, button.
    assert "6–9 octombrie 2014 · 09:00–10:45 · Bruxelles" in out
    assert 'alt="Sala de conferințe"' in out
    assert re.search(r'<a href="https://example.org/inscriere"[^>]*>\s*Înscriere', out)
    # List (numbered, term item), events (date block), cta, image, divider.
    assert re.search(r"<ol[^>]*>\s*<li[^>]*>primul element</li>", out)
    assert re.search(r"<strong>Termen:</strong> explicație", out)
    assert re.search(r"<b[^>]*>6–9</b><br>\s*oct\.", out)
    assert ">Mai multe informații</a>" in out
    assert re.search(r'href="https://example.org/s3"[^>]*>\s*Vizitați platforma', out)
    assert 'alt="Harta SEE"' in out and "Regiunea SEE" in out
    assert "border-top:solid 1px #d0d7de" in out
    # Every image has alt text.
    for img in re.findall(r"<img\b[^>]*>", out):
        assert re.search(r'alt="[^"]+"', img), img


def test_doctype_media_queries_and_mso_blocks_survive_inlining(workspace: ws.Workspace) -> None:
    out = filled_html(workspace, render_issue(workspace, make_issue()))
    assert out.startswith("<!doctype html>")
    assert "@media only screen and (min-width:480px)" in out  # MJML column widths
    assert "@media (prefers-color-scheme:dark)" in out
    assert "!important" in out  # premailer must not strip it from the kept rules
    assert "<!--[if mso | IE]>" in out and "<!--[if mso]>" in out
    assert '<meta name="color-scheme" content="light dark">' in out
    assert '<meta name="supported-color-schemes" content="light dark">' in out
    # The template's mj-style was inlined (paragraph margins live on the <p> itself)...
    assert re.search(r'<p style="margin:0 0 14px">Paragraf cu <em>accent</em>\.</p>', out)
    # ...but MJML's reset block was not (it would bloat every table cell).
    assert "mso-table-lspace:0; mso-table-rspace:0" not in out


def test_lang_is_set_from_the_issue(workspace: ws.Workspace) -> None:
    ro = filled_html(workspace, render_issue(workspace, make_issue()))
    assert re.search(r'<html lang="ro"', ro)
    assert 'lang="und"' not in ro
    assert "Citiți online" in ro and "Dezabonare" in ro and "1 octombrie 2014" in ro
    en = filled_html(workspace, render_issue(workspace, make_issue(language="en")))
    assert re.search(r'<html lang="en"', en)
    assert "View online" in en and "Unsubscribe" in en and "1 October 2014" in en
    assert "Citiți online" not in en


def test_no_google_fonts_and_no_external_stylesheets(workspace: ws.Workspace) -> None:
    out = filled_html(workspace, render_issue(workspace, make_issue()))
    assert "fonts.googleapis" not in out
    assert "@import" not in out
    assert not re.search(r"<link\b", out)


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).hits.append(self.path)
        body = b"body { color: red; }"
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def css_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on a free loopback port that records every request."""
    hits: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_rendering_makes_no_network_request(
    workspace: ws.Workspace, css_server: tuple[str, list[str]]
) -> None:
    """A template that links a web font: MRML emits <link> and @import for it, and cssutils
    fetches @import while parsing unless the block is kept away from the inliner."""
    base, hits = css_server
    layout = workspace.templates_dir / "default.mjml.j2"
    source = layout.read_text(encoding="utf-8")
    font = f'<mj-font name="Test" href="{base}/font.css" />\n    <mj-attributes>'
    source = source.replace("<mj-attributes>", font, 1)
    source = source.replace('font-family="Arial,', 'font-family="Test, Arial,', 1)
    layout.write_text(source, encoding="utf-8")
    rendered = render_issue(workspace, make_issue())
    out = filled_html(workspace, rendered)
    assert f"{base}/font.css" in out  # the reader's client may load it; we did not
    assert hits == []


def test_placeholders_compile_into_slots_and_fill_escapes(workspace: ws.Workspace) -> None:
    partial = workspace.templates_dir / "sections" / "text.mjml.j2"
    source = partial.read_text(encoding="utf-8")
    greeting = (
        "<p>Bună, {{ subscriber.get('first_name', 'cititorule') }}! "
        '<a href="https://example.org/profil?e={{ subscriber.email }}">{{ subscriber.name }}'
        "</a></p>\n      {{ section.body | markdown }}"
    )
    partial.write_text(source.replace("{{ section.body | markdown }}", greeting), "utf-8")
    loaded = make_issue()
    rendered = render_issue(workspace, loaded)
    assert rendered.html.slot_names == {
        "first_name",
        "email",
        "name",
        "unsubscribe_url",
        "view_online_url",
        "preferences_url",
    }
    assert rendered.text.slot_names == {
        "email",
        "unsubscribe_url",
        "view_online_url",
        "preferences_url",
    }
    assert "BULLETINSLOT" not in "".join(rendered.html.chunks)

    values = sample_values(workspace, loaded.slug)
    values.update(
        name="<script>alert(1)</script>",
        first_name="",
        email="a&b@example.org",
        unsubscribe_url="https://news.example.org/u/tok?x=1&y=2",
    )
    out = rendered.html.fill(values)
    assert "<script>alert(1)</script>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</a>" in out
    assert "Bună, cititorule!" in out  # fallback when the value is empty
    # The placeholder survived lxml inside an href, next to a query string, and its value
    # is percent-encoded there (a raw "&" would have cut the address's query).
    assert 'href="https://example.org/profil?e=a%26b@example.org"' in out
    assert 'href="https://news.example.org/u/tok?x=1&amp;y=2"' in out
    view = view_online_url(workspace.config.newsletter.base_url, loaded.slug)
    assert view == "http://127.0.0.1:8080/archive/test-issue"
    assert out.count(f'href="{view}"') == 2  # header and footer
    text = rendered.text.fill(values)
    assert "<https://news.example.org/u/tok?x=1&y=2>" in text  # text is not escaped


def test_sample_values(workspace: ws.Workspace) -> None:
    values = sample_values(workspace, make_issue(slug="nr-3").slug)
    assert values == {
        "email": "cititor@example.org",
        "name": "Ana Popescu",
        "first_name": "Ana",
        "unsubscribe_url": "http://127.0.0.1:8080/u/preview",
        "view_online_url": "http://127.0.0.1:8080/archive/nr-3",
        "preferences_url": "http://127.0.0.1:8080/preferences/preview",
    }


def test_romanian_diacritics_survive_into_html_and_text(workspace: ws.Workspace) -> None:
    rendered = render_issue(workspace, make_issue())
    out = filled_html(workspace, rendered)
    text = rendered.text.fill(sample_values(workspace, rendered.loaded.slug))
    for word in ("Articolul ș ț", "Știri", "conferințe", "Alăturați-vă", "Înscriere"):
        assert word in out, word
        assert word in text or word == "conferințe", word
    assert "<title>Buletinul de test — ș ț</title>" in out
    # Comma-below letters, never cedilla look-alikes or character references.
    assert "ş" not in out + text and "ţ" not in out + text
    assert "&#" not in out


def test_relative_markdown_link_is_reported_not_linked(workspace: ws.Workspace) -> None:
    sections = [{"type": "text", "body": "Vezi [pagina](/despre) și <b>aldin</b>."}]
    rendered = render_issue(workspace, make_issue(sections))
    out = filled_html(workspace, rendered)
    assert 'href="/despre"' not in out and "Vezi pagina și" in out
    assert "&lt;b&gt;aldin&lt;/b&gt;" in out  # raw HTML in Markdown is shown, not obeyed
    assert rendered.ok  # a warning, not an error
    [problem] = rendered.problems
    assert problem.severity == "warning"
    assert "'/despre' is not an absolute URL" in problem.message
    assert problem.location is not None and problem.location.path.endswith("issue.yaml")


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_colours_have_enough_contrast(workspace: ws.Workspace) -> None:
    """Each mj-text's colour against its section's background is at least 4.5:1 (WCAG AA)."""
    out = filled_html(workspace, render_issue(workspace, make_issue()))
    pairs = re.findall(
        r"background-color:(#[0-9a-f]{6});width:100%.*?<div style=\"[^\"]*color:(#[0-9a-f]{6})",
        out,
        flags=re.S,
    )
    assert len(pairs) >= 10
    for background, colour in pairs:
        assert _contrast(colour, background) >= 4.5, (colour, background)
    # Colours set by classes (links, meta lines, headings, footer) on the light backgrounds
    # (card, page, call to action); the header's own colours on its dark blue.
    header = {"#ffffff", "#dbe7f3"}
    inline = " ".join(re.findall(r'style="([^"]*)"', out))  # not the dark-mode @media rules
    colours = set(re.findall(r"(?<![-\w])color:\s*(#[0-9a-f]{6})", inline))
    assert len(colours - header) >= 4
    for colour in colours - header:
        for background in ("#ffffff", "#eef1f4", "#eef4fb"):
            assert _contrast(colour, background) >= 4.5, (colour, background)
    for colour in header:
        assert _contrast(colour, "#0b3d6b") >= 4.5, colour


def test_mjml_sources_map_lines_to_templates(workspace: ws.Workspace) -> None:
    rendered = render_issue(workspace, make_issue())
    lines = rendered.mjml.split("\n")
    assert "bulletin:src" not in rendered.mjml

    def template_of(needle: str) -> str:
        line = next(i for i, text in enumerate(lines, 1) if needle in text)
        spans = [s for s in rendered.mjml_sources if s.mjml_start <= line <= s.mjml_end]
        return spans[-1].template

    assert template_of("<mjml lang=") == "templates/default.mjml.j2"
    assert template_of("Open Days") == "templates/sections/events.mjml.j2"
    assert template_of("Vizitați platforma") == "templates/sections/cta.mjml.j2"
    assert template_of("<mj-divider />") == "templates/sections/divider.mjml.j2"
    assert template_of("Dezabonare") == "templates/partials/footer.mjml.j2"
    events = next(s for s in rendered.mjml_sources if s.template.endswith("events.mjml.j2"))
    source = (workspace.root / events.template).read_text(encoding="utf-8").split("\n")
    assert source[events.template_line - 1].strip() == lines[events.mjml_start - 1].strip()


def test_text_override_is_used_and_keeps_an_unsubscribe_link(workspace: ws.Workspace) -> None:
    override = "Bună, {{ subscriber.get('first_name', 'cititorule') }}!\n\nTextul scris de mână.\n"
    loaded = make_issue(text_override=override)
    rendered = render_issue(workspace, loaded)
    values = sample_values(workspace, loaded.slug)
    text = rendered.text.fill(values)
    assert text.startswith("Bună, Ana!\n\nTextul scris de mână.\n")
    assert "Dezabonare:\n<http://127.0.0.1:8080/u/preview>" in text
    assert "Open Days" not in text  # not the generated version


def test_sample_issue_is_small_enough_for_gmail(workspace: ws.Workspace) -> None:
    loaded = load_issue(workspace, workspace.issue_dir(SAMPLE_SLUG))
    rendered = render_issue(workspace, loaded)
    out = filled_html(workspace, rendered)
    size = len(out.encode("utf-8"))
    assert size < 90 * 1024, f"{size} bytes"
    assert rendered.ok, rendered.problems
    words = len(rendered.text.fill(sample_values(workspace, loaded.slug)).split())
    assert words > 2000  # it is the long sample, not an empty render


def test_every_link_of_the_sample_is_in_the_text_version(workspace: ws.Workspace) -> None:
    loaded = load_issue(workspace, workspace.issue_dir(SAMPLE_SLUG))
    rendered = render_issue(workspace, loaded)
    values = sample_values(workspace, loaded.slug)
    out = rendered.html.fill(values)
    text = rendered.text.fill(values)
    hrefs = {html_lib.unescape(h) for h in re.findall(r'href="(https?://[^"]+)"', out)}
    assert len(hrefs) > 10
    missing = [h for h in hrefs if f"<{h}>" not in text]
    assert missing == []


def test_markdown_warnings_point_at_the_section_in_issue_yaml(workspace: ws.Workspace) -> None:
    folder = workspace.issues_dir / "rel"
    folder.mkdir()
    (folder / "issue.yaml").write_text(
        "subject: Test\n"
        "date: 2014-10-01\n"
        "language: ro\n"
        "sections:\n"
        "  - type: text\n"
        "    body: Totul e bine.\n"
        "  - type: text\n"
        "    body: Vezi [pagina](despre.html).\n",
        encoding="utf-8",
    )
    rendered = render_issue(workspace, load_issue(workspace, folder))
    [problem] = rendered.problems
    assert problem.location is not None
    assert (problem.location.path, problem.location.line) == ("issues/rel/issue.yaml", 7)
    assert problem.code == "markdown" and problem.severity == "warning"
