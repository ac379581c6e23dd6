"""The issue schema. It doubles as the reference for writing ``issue.yaml``.

Every field's description is user documentation. Text fields marked *Markdown* accept
CommonMark; in YAML they may also be written as ``{file: name.md}`` to keep long text in a
sibling file (the loader replaces the mapping with the file's text before validation).
Unknown keys are errors so that typos never vanish silently.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, model_validator


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


Text = Annotated[str, AfterValidator(_not_blank)]
"""Plain one-line text that must not be empty."""

Markdown = Annotated[str, AfterValidator(_not_blank)]
"""Markdown text (CommonMark) that must not be empty."""

Url = HttpUrl
"""An absolute http(s) URL."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Link(_Model):
    """A link rendered as a button or a "read more" line."""

    url: Url = Field(description="Absolute https URL.")
    label: Text = Field(description="Button or link text.")


class Image(_Model):
    """An image hosted on the web (email clients do not load local files)."""

    src: Url = Field(description="Absolute https URL of the image.")
    alt: str = Field(description="Alternative text; empty only for purely decorative images.")
    width: int | None = Field(None, gt=0, le=600, description="Display width in px (max 600).")
    url: Url | None = Field(None, description="Optional link target when the image is clicked.")


class _SectionBase(_Model):
    id: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]*$", description="Optional anchor id for the section."
    )


class TextSection(_SectionBase):
    """Free Markdown text, optionally under a heading."""

    type: Literal["text"]
    title: Text | None = Field(None, description="Optional heading.")
    body: Markdown = Field(description="Markdown text.")


class ArticleSection(_SectionBase):
    """An article: heading, optional subtitle/date/place, Markdown body, image and link."""

    type: Literal["article"]
    title: Text = Field(description="Heading of the article.")
    subtitle: Text | None = Field(None, description="Line under the heading.")
    date: dt.date | None = Field(None, description="Date the article is about (YYYY-MM-DD).")
    end_date: dt.date | None = Field(None, description="Last day, for multi-day happenings.")
    time: Text | None = Field(None, description="Time of day as written, e.g. `09:00–10:45`.")
    place: Text | None = Field(None, description="Where it happens.")
    body: Markdown = Field(description="Markdown text of the article.")
    image: Image | None = Field(None, description="Optional illustration.")
    link: Link | None = Field(None, description="Optional button at the end.")

    @model_validator(mode="after")
    def _dates(self) -> ArticleSection:
        if self.end_date and self.date and self.end_date < self.date:
            raise ValueError("'end_date' is before 'date'")
        if self.end_date and not self.date:
            raise ValueError("'end_date' needs 'date'")
        return self


class TermItem(_Model):
    """A "term: explanation" list item."""

    term: Text = Field(description="The term, shown in bold.")
    text: Markdown = Field(description="Its explanation (Markdown).")


class ListSection(_SectionBase):
    """A bullet (or numbered) list; items are Markdown strings or term/text pairs."""

    type: Literal["list"]
    title: Text | None = Field(None, description="Heading.")
    intro: Markdown | None = Field(None, description="Markdown before the list.")
    items: list[Markdown | TermItem] = Field(min_length=1, description="The items.")
    numbered: bool = Field(False, description="Number the items instead of bullets.")
    outro: Markdown | None = Field(None, description="Markdown after the list.")


class Event(_Model):
    """One event in an events section."""

    title: Text = Field(description="Name of the event.")
    start: dt.date = Field(description="First day (YYYY-MM-DD).")
    end: dt.date | None = Field(None, description="Last day, if several.")
    place: Text | None = Field(None, description="City, venue.")
    url: Url | None = Field(None, description="Page of the event.")
    description: Markdown | None = Field(None, description="Markdown description.")

    @model_validator(mode="after")
    def _dates(self) -> Event:
        if self.end and self.end < self.start:
            raise ValueError("'end' is before 'start'")
        return self


class EventsSection(_SectionBase):
    """A list of upcoming events."""

    type: Literal["events"]
    title: Text = Field(description="Heading.")
    intro: Markdown | None = Field(None, description="Markdown before the events.")
    items: list[Event] = Field(min_length=1, description="The events, in order.")


class NewsItem(_Model):
    """One news item."""

    title: Text = Field(description="Headline.")
    text: Markdown = Field(description="Markdown text.")
    url: Url | None = Field(None, description="Where to read more.")


class NewsSection(_SectionBase):
    """A list of news items."""

    type: Literal["news"]
    title: Text = Field(description="Heading.")
    intro: Markdown | None = Field(None, description="Markdown before the items.")
    items: list[NewsItem] = Field(min_length=1, description="The news items, in order.")


class CtaSection(_SectionBase):
    """A call to action: heading, text and one button."""

    type: Literal["cta"]
    title: Text = Field(description="Heading.")
    text: Markdown = Field(description="Markdown text.")
    button: Text = Field(description="Button label.")
    url: Url = Field(description="Button target.")


class ImageSection(_SectionBase):
    """A standalone image with an optional caption."""

    type: Literal["image"]
    image: Image = Field(description="The image.")
    caption: Text | None = Field(None, description="Caption under the image.")


class DividerSection(_SectionBase):
    """A horizontal rule."""

    type: Literal["divider"]


Section = Annotated[
    TextSection
    | ArticleSection
    | ListSection
    | EventsSection
    | NewsSection
    | CtaSection
    | ImageSection
    | DividerSection,
    Field(discriminator="type"),
]

SECTION_TYPES = ("text", "article", "list", "events", "news", "cta", "image", "divider")


class IssueChecks(_Model):
    """Per-issue exceptions to `bulletin check`, stated where a reviewer can see them."""

    allow_http: list[str] = Field(
        default_factory=list,
        description="Hosts known to serve only http (e.g. archived sites); links to them are "
        "not reported as non-https. Every other http link still is.",
    )


class Issue(_Model):
    """One newsletter issue: metadata and an ordered list of sections."""

    subject: Text = Field(description="Subject line (keep it under ~78 characters).")
    preheader: str = Field("", description="Preview text shown after the subject in inboxes.")
    number: int | None = Field(None, ge=1, description="Issue number.")
    date: dt.date = Field(description="Issue date (YYYY-MM-DD).")
    language: str = Field(
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="BCP 47 language of the content, e.g. `ro` or `en`.",
    )
    template: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Layout in templates/ (`default` uses templates/default.mjml.j2).",
    )
    title: Text | None = Field(
        None, description="Heading in the header (default: newsletter name)."
    )
    from_name: Text | None = Field(None, description="Override the sender's display name.")
    text_override: str | None = Field(
        None,
        description="File beside issue.yaml with a hand-written plain-text version.",
    )
    checks: IssueChecks = Field(
        default_factory=IssueChecks, description="Exceptions to `bulletin check` for this issue."
    )
    sections: list[Section] = Field(min_length=1, description="The sections, in order.")


class LoadedIssue(BaseModel):
    """An issue as loaded from disk: the validated model plus where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    slug: str
    path: str = Field(description="Path of issue.yaml relative to the workspace.")
    issue: Issue
    text_override: str | None = None
    section_lines: tuple[int, ...] = ()
    """1-based line of each section in issue.yaml, for locating check findings."""
