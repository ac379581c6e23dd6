"""Section types own what they hold: a new type is its class and its template, nothing else."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Literal

import pytest

from bulletin import workspace
from bulletin.content.model import (
    SECTION_CLASSES,
    SECTION_TYPES,
    Issue,
    LoadedIssue,
    Markdown,
    PlainText,
    Text,
    Url,
    _SectionBase,
)
from bulletin.errors import Location
from bulletin.render.checks import check_issue
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values
from bulletin.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ws(workspace_dir: Path) -> Workspace:
    return workspace.load(workspace_dir)


def test_section_types_are_derived_from_the_union_and_each_has_a_template() -> None:
    assert SECTION_TYPES == ("text", "article", "list", "events", "news", "cta", "image", "divider")
    assert len(set(SECTION_CLASSES)) == len(SECTION_TYPES)
    for cls, name in zip(SECTION_CLASSES, SECTION_TYPES, strict=True):
        assert not getattr(cls, "__abstractmethods__", None), f"{cls.__name__} is incomplete"
        assert (REPO / "templates" / "sections" / f"{name}.mjml.j2").is_file(), name


class QuoteSection(_SectionBase):
    """A section type the code base does not know: a quotation, who said it, when, where."""

    type: Literal["quote"]
    quote: Markdown
    author: Text
    said: dt.date
    source: Url

    def texts(self) -> list[str | None]:
        return [self.quote, self.author]

    def urls(self) -> list[str]:
        return [str(self.source)]

    def plain_text(self, out: PlainText) -> None:
        out.markdown(self.quote)
        out.details([f"— {self.author}", out.date_range(self.said, None)])
        out.link(out.translate("Read more"), str(self.source))


QUOTE_TEMPLATE = """\
<mj-section css-class="card">
  <mj-column>
    <mj-text css-class="c">
      <blockquote>{{ section.quote | markdown }}</blockquote>
      <p class="m">— {{ section.author }}</p>
    </mj-text>
  </mj-column>
</mj-section>
"""


def quote_issue(ws: Workspace, quote: str, author: str = "Ana Popescu") -> LoadedIssue:
    """An issue holding one quote section, written the way the loader would have left it."""
    folder = ws.issues_dir / "x"
    folder.mkdir()
    yaml_text = textwrap.dedent(
        f"""\
        subject: Citat
        preheader: Un citat
        date: 2014-10-08
        language: en
        sections:
          - type: quote
            quote: "{quote}"
            author: "{author}"
            said: 2014-10-08
            source: http://archive.example.org/speech
        """
    )
    (folder / "issue.yaml").write_text(yaml_text, encoding="utf-8")
    section = QuoteSection.model_validate(
        {
            "type": "quote",
            "quote": quote,
            "author": author,
            "said": "2014-10-08",
            "source": "http://archive.example.org/speech",
        }
    )
    base = Issue.model_validate(
        {
            "subject": "Citat",
            "preheader": "Un citat",
            "date": "2014-10-08",
            "language": "en",
            "sections": [{"type": "divider"}],
        }
    )
    return LoadedIssue(
        slug="x",
        path="issues/x/issue.yaml",
        issue=base.model_copy(update={"sections": [section]}),
        section_lines=(6,),
    )


def test_a_new_section_type_needs_only_its_class_and_its_template(ws: Workspace) -> None:
    """Plain text, the link check and the empty-section check all ask the section itself."""
    (ws.templates_dir / "sections" / "quote.mjml.j2").write_text(QUOTE_TEMPLATE, encoding="utf-8")
    loaded = quote_issue(ws, "Clusters *grow* where people meet.")
    rendered = render_issue(ws, loaded)
    text = rendered.text.fill(sample_values(ws, loaded.slug))
    assert "Clusters grow where people meet.\n\n— Ana Popescu · 8 October 2014\n\n" in text
    assert "Read more: <http://archive.example.org/speech>\n" in text

    problems = check_issue(ws, loaded, rendered)
    # The template does not show the source: only the section's urls() makes it checked.
    assert [(p.code, p.location) for p in problems] == [
        ("check.link-http", Location(loaded.path, 10))
    ]
    assert "http://archive.example.org/speech" in problems[0].message


def test_a_new_section_type_that_shows_nothing_is_reported_empty(ws: Workspace) -> None:
    (ws.templates_dir / "sections" / "quote.mjml.j2").write_text(QUOTE_TEMPLATE, encoding="utf-8")
    loaded = quote_issue(ws, "&nbsp;", author="&nbsp;")
    problems = check_issue(ws, loaded, render_issue(ws, loaded))
    empty = [p for p in problems if p.code == "check.empty-section"]
    assert [str(p) for p in empty] == [
        "issues/x/issue.yaml:6: section 1 (quote) renders no visible text; write its content "
        "or remove the section"
    ]
