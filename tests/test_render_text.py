"""The plain-text version, Markdown conversion and dates in Romanian and English."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from bulletin import workspace as ws
from bulletin.content.loader import load_issue
from bulletin.content.model import Issue, LoadedIssue
from bulletin.render import i18n
from bulletin.render import markdown as md
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values

SAMPLE_SLUG = "2014-10-clusterpolisee-03"
LONG_URL = "https://example.org/" + "a" * 90


@pytest.fixture
def workspace(workspace_dir: Path) -> ws.Workspace:
    return ws.load(workspace_dir)


def is_url_line(line: str) -> bool:
    """A line holding only a URL (maybe after a label, in <>, with sentence punctuation)."""
    return bool(re.fullmatch(r"\s*(\S+:\s)?<?https?://\S+>?[.,;:)]*", line))


def assert_wrapped(text: str) -> None:
    for line in text.split("\n"):
        assert len(line) <= 72 or is_url_line(line), line


def test_sample_text_is_wrapped_at_72_and_readable(workspace: ws.Workspace) -> None:
    loaded = load_issue(workspace, workspace.issue_dir(SAMPLE_SLUG))
    rendered = render_issue(workspace, loaded)
    text = rendered.text.fill(sample_values(workspace, loaded.slug))
    assert_wrapped(text)
    assert text.startswith("ClusterPoliSEE e-newsletter nr. 3\n=================================\n")
    assert "\nIntroducere\n-----------\n" in text
    assert "\n* " in text  # bullets
    assert "\n-- \n" in text  # signature delimiter, its space kept
    assert "Citiți online:\n<http://127.0.0.1:8080/archive/2014-10-clusterpolisee-03>" in text
    assert "Dezabonare:\n<http://127.0.0.1:8080/u/preview>" in text
    assert "ș" in text and "ț" in text
    assert "<p>" not in text and "&amp;" not in text


def test_long_words_and_urls_are_never_cut() -> None:
    out = md.TextWriter()
    md.to_text(
        f"Un text lung despre specializare-inteligentă și [pagina proiectului]({LONG_URL}) "
        "care continuă după adresă cu încă multe cuvinte românești ș ț ă î â.",
        out,
    )
    text = out.text()
    assert_wrapped(text)
    assert f"<{LONG_URL}>" in text.replace("\n", " ")
    assert any(line == f"<{LONG_URL}>" for line in text.split("\n"))
    assert "specializare-inteligentă" in text  # no break at the hyphen


def test_markdown_to_text_structures() -> None:
    out = md.TextWriter()
    md.to_text(
        "# Titlu\n\nPrimul paragraf cu [o legătură](https://example.org/x) și "
        "<https://example.org/y>.\n\n"
        "- unu\n- doi\n  1. a\n  2. b\n\n> citat\n\n---\n",
        out,
    )
    assert out.text() == (
        "Titlu\n~~~~~\n\n"
        "Primul paragraf cu o legătură <https://example.org/x> și\n"
        "<https://example.org/y>.\n\n"
        "* unu\n* doi\n  1. a\n  2. b\n\n"
        "> citat\n\n"
        "* * *\n"
    )


def test_markdown_html_is_email_safe() -> None:
    warnings: list[str] = []
    out = md.to_html(
        "# Sus\n\n<script>x()</script> [rel](/a) [ok](https://e.org/b) https://e.org/c.\n\n"
        "![poză](img/local.png)",
        warn=warnings.append,
    )
    assert "<h3>Sus</h3>" in out  # demoted below the section's h2
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert 'href="/a"' not in out and "rel" in out
    assert '<a href="https://e.org/b">ok</a>' in out
    assert '<a href="https://e.org/c">https://e.org/c</a>.' in out  # bare URL linked
    assert "<img" not in out and "poză" in out
    assert len(warnings) == 2
    assert md.to_html("un *singur* paragraf", inline=True) == "un <em>singur</em> paragraf"


def test_dates_in_romanian_and_english() -> None:
    d = dt.date(2014, 10, 8)
    assert i18n.format_date(d, "ro") == "8 octombrie 2014"
    assert i18n.format_date(d, "en") == "8 October 2014"
    assert i18n.format_date(d, "de") == "8 October 2014"  # fallback to English
    assert i18n.format_date(d, "ro-RO") == "8 octombrie 2014"
    assert i18n.format_date_range(dt.date(2014, 10, 6), dt.date(2014, 10, 9), "ro") == (
        "6–9 octombrie 2014"
    )
    assert i18n.format_date_range(dt.date(2014, 9, 30), dt.date(2014, 10, 2), "ro") == (
        "30 septembrie – 2 octombrie 2014"
    )
    assert i18n.format_date_range(dt.date(2014, 12, 30), dt.date(2015, 1, 2), "en") == (
        "30 December 2014 – 2 January 2015"
    )
    assert i18n.format_date_range(d, d, "ro") == "8 octombrie 2014"
    assert i18n.short_month(d, "ro") == "oct."


def test_template_strings_are_translated_with_english_fallback() -> None:
    assert i18n.translate("ro", "View online") == "Citiți online"
    assert i18n.translate("ro", "Unsubscribe") == "Dezabonare"
    assert i18n.translate("ro", "Events") == "Evenimente"
    assert i18n.translate("ro", "More information") == "Mai multe informații"
    assert i18n.translate("fr", "Unsubscribe") == "Unsubscribe"
    assert i18n.translate("ro", "Not in the catalogue") == "Not in the catalogue"


def test_text_of_every_section_type_shows_each_link(workspace: ws.Workspace) -> None:
    issue = Issue.model_validate(
        {
            "subject": "S",
            "date": "2014-10-01",
            "language": "en",
            "sections": [
                {"type": "text", "body": "See [the site](https://e.org/text)."},
                {
                    "type": "article",
                    "title": "A",
                    "body": "B",
                    "image": {
                        "src": "https://e.org/i.png",
                        "alt": "Hall",
                        "url": "https://e.org/img",
                    },
                    "link": {"url": "https://e.org/article", "label": "Register"},
                },
                {"type": "list", "items": ["[x](https://e.org/list)", {"term": "T", "text": "u"}]},
                {
                    "type": "events",
                    "title": "E",
                    "items": [{"title": "Ev", "start": "2014-10-06", "url": "https://e.org/event"}],
                },
                {
                    "type": "news",
                    "title": "N",
                    "items": [{"title": "It", "text": "t", "url": "https://e.org/news"}],
                },
                {
                    "type": "cta",
                    "title": "C",
                    "text": "t",
                    "button": "Go",
                    "url": "https://e.org/cta",
                },
                {
                    "type": "image",
                    "image": {
                        "src": "https://e.org/j.png",
                        "alt": "Map",
                        "url": "https://e.org/map",
                    },
                },
                {"type": "divider"},
            ],
        }
    )
    loaded = LoadedIssue(slug="s", path="issues/s/issue.yaml", issue=issue)
    rendered = render_issue(workspace, loaded)
    text = rendered.text.fill(sample_values(workspace, loaded.slug))
    for url in ("text", "img", "article", "list", "event", "news", "cta", "map"):
        assert f"<https://e.org/{url}>" in text, url
    assert "Register: <https://e.org/article>" in text
    assert "More information: <https://e.org/event>" in text
    assert "\nEv\n~~\n6 October 2014\n" in text
    assert "* x <https://e.org/list>\n* T: u\n" in text
    assert "* * *" in text
    assert "View online:" in text and "Unsubscribe:" in text
    assert_wrapped(text)


def test_sample_text_is_unchanged_byte_for_byte(workspace: ws.Workspace) -> None:
    """The whole plain text of the sample, as rendered before sections wrote their own.

    If a deliberate change to the layout, the sample or a translation alters it, look at the
    difference, then rewrite tests/data/text/ from the new output.
    """
    expected = (Path(__file__).parent / "data" / "text" / f"{SAMPLE_SLUG}.txt").read_bytes()
    loaded = load_issue(workspace, workspace.issue_dir(SAMPLE_SLUG))
    rendered = render_issue(workspace, loaded)
    text = rendered.text.fill(sample_values(workspace, loaded.slug))
    assert text.encode("utf-8") == expected
