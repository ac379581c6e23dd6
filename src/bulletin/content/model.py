"""The issue schema. It doubles as the reference for writing ``issue.yaml``.

Every field's description is user documentation. Text fields marked *Markdown* accept
CommonMark; in YAML they may also be written as ``{file: name.md}`` to keep long text in a
sibling file (the loader replaces the mapping with the file's text before validation).
Unknown keys are errors so that typos never vanish silently.

Each section type owns what it holds: besides its fields, its class says which texts it shows
(:meth:`~_SectionBase.texts`, for the empty-section check), which addresses it links or shows
(:meth:`~_SectionBase.urls`, for the link check) and how it reads as plain text
(:meth:`~_SectionBase.plain_text`, written against the small :class:`PlainText` vocabulary that
``render/text.py`` implements). Adding a section type is its class here, in the ``Section``
union, plus ``templates/sections/<type>.mjml.j2``; nothing in ``render`` names a section type.
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
import re
import typing
import unicodedata
from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal, Protocol

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

MARKDOWN = MarkdownIt("commonmark", {"html": False, "xhtmlOut": True})
"""The Markdown of the Markdown fields: CommonMark, raw HTML shown as text. The loader checks
texts with it and ``render/markdown.py`` renders them with it."""

MARKDOWN_MAX_DEPTH = 8
"""Most quotes, lists, links and emphasis a Markdown text may nest inside one another.

Deeper nesting is never meant (it comes from stray ``>`` or ``*``), markdown-it silently drops
what lies below 20 levels of its own count (9 nested lists), and thousands of nested tags crash
the MJML compiler.
"""

MARKDOWN_MAX_ELEMENTS = 20_000
"""Most Markdown elements (paragraphs, lines, list items, links, emphasis, runs of text...) all
the texts of an issue may hold together. The sample issue holds about 550 for 55 KB of HTML;
a real issue stays far below the bound, which keeps parsing and rendering a hostile text
(24,000 one-word list items took 4 s to check) within a second."""


class MarkdownBudget:
    """Counts the Markdown elements of one validation (pass as ``context={"markdown": ...}``).

    Once the budget is spent, further texts are not parsed: the issue is refused anyway.
    """

    def __init__(self) -> None:
        self.elements = 0

    @property
    def exceeded(self) -> bool:
        return self.elements > MARKDOWN_MAX_ELEMENTS


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


# What str.splitlines() breaks on: YAML block scalars ("subject: |"), folded ones and escapes
# in double quotes ("a\nb", "\u2028") all let these in, and a line break in a subject or a
# sender name would start a new mail header.
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# Direction overrides, embeddings and isolates reorder what follows them ("Trojan Source"):
# in a subject they can make text read differently from what it says. The marks U+200E and
# U+200F, which right-to-left text needs, stay allowed.
_DIRECTION_CONTROLS = "\u202a-\u202e\u2066-\u2069"
_NOT_ONE_LINE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029{_DIRECTION_CONTROLS}]")


def _one_line(v: str) -> str:
    found = _NOT_ONE_LINE.search(v)
    if found is None:
        return v
    char = found.group()
    if char in _LINE_BREAKS:
        why = "a line break"
    elif char == "\t":
        why = "a tab; use a space"
    elif unicodedata.category(char) == "Cc":
        why = f"the invisible control character U+{ord(char):04X}; remove it"
    else:
        why = (
            f"the invisible direction control U+{ord(char):04X}, which can make text read "
            "backwards; remove it"
        )
    raise ValueError(f"must be one line of text (it contains {why})")


Line = Annotated[str, AfterValidator(_one_line)]
"""Plain text on one line, possibly empty: no line breaks, tabs or invisible controls."""

Text = Annotated[str, AfterValidator(_one_line), AfterValidator(_not_blank)]
"""Plain one-line text that must not be empty."""

_CONTAINERS = frozenset({"blockquote_open", "bullet_list_open", "ordered_list_open"})
_CONTAINER_ENDS = frozenset(name.replace("_open", "_close") for name in _CONTAINERS)
_INLINE = frozenset({"em_open", "strong_open", "link_open", "s_open"})


def _too_deep_at(tokens: list[Token]) -> int | None:
    """The first line (1-based) nesting containers and inline markup beyond the limit."""
    depth = 0
    for token in tokens:
        if token.type in _CONTAINERS:
            depth += 1
        elif token.type in _CONTAINER_ENDS:
            depth -= 1
        inline = 0
        for child in token.children or ():
            if child.type in _INLINE:
                inline += 1
            elif child.nesting < 0:
                inline = max(0, inline - 1)
            if depth + inline > MARKDOWN_MAX_DEPTH:
                break
        if depth + inline > MARKDOWN_MAX_DEPTH:
            # markdown-it maps every block token; an inline token has its paragraph's lines.
            return token.map[0] + 1 if token.map else 1
    return None


@functools.lru_cache(maxsize=512)
def _markdown_shape(v: str) -> tuple[int, int | None]:
    """How many elements ``v`` holds and the line where it nests too deep (None if it does
    not). Cached: the preview reloads an issue on every save, mostly with the same texts."""
    tokens = MARKDOWN.parse(v)
    return len(tokens) + sum(len(t.children or ()) for t in tokens), _too_deep_at(tokens)


def _sound_markdown(v: str, info: ValidationInfo) -> str:
    budget = (info.context or {}).get("markdown")
    if isinstance(budget, MarkdownBudget) and budget.exceeded:
        return v
    elements, line = _markdown_shape(v)
    if isinstance(budget, MarkdownBudget):
        budget.elements += elements
    if line is not None:
        raise PydanticCustomError(
            "markdown_depth",
            "nests quotes, lists, links or emphasis more than {limit} levels deep",
            {"limit": MARKDOWN_MAX_DEPTH, "line": line},
        )
    return v


Markdown = Annotated[str, AfterValidator(_not_blank), AfterValidator(_sound_markdown)]
"""Markdown text (CommonMark) that must not be empty nor absurdly nested."""

Url = HttpUrl
"""An absolute http(s) URL."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class PlainText(Protocol):
    """The plain-text layout a section writes itself with (implemented by ``render/text.py``).

    A section says *what* it shows, in order; the renderer decides how each thing looks
    (underlines, wrapping, markers, brackets) and in which language the fixed words are.
    """

    def heading(self, text: str, level: int) -> None:
        """A heading: 2 for a section title, 3 for an item's."""

    def paragraph(self, text: str) -> None:
        """One-line text as a wrapped paragraph."""

    def details(self, parts: Sequence[str], *, tight: bool = False) -> None:
        """Facts about the heading above (date, time, place) on one wrapped line.

        ``tight``: right under the previous block, without a blank line.
        """

    def markdown(self, text: str, *, shift: int = 2) -> None:
        """Markdown text; its headings ``#`` become level 1 + ``shift``."""

    def list_item(self, text: str, *, number: int | None, first: bool) -> None:
        """One Markdown list item, bulleted (``number`` None) or numbered."""

    def link(self, label: str, url: str, *, unless_in: str | None = None) -> None:
        """A link shown as its label and its address; nothing if the Markdown ``unless_in``
        (the item's own text) already links to ``url``."""

    def image(self, label: str, url: str | None) -> None:
        """An image, by its label, with the address it links to if any."""

    def rule(self) -> None:
        """A horizontal rule."""

    def date_range(self, start: dt.date, end: dt.date | None) -> str:
        """A day or a range of days, written in the issue's language."""

    def translate(self, msgid: str) -> str:
        """A fixed word of the layout ("Read more") in the issue's language."""


class Link(_Model):
    """A link rendered as a button or a "read more" line."""

    url: Url = Field(description="Absolute https URL.")
    label: Text = Field(description="Button or link text.")


def image_source(v: str) -> str:
    """Validate an image address: an absolute http(s) URL or a relative file path."""
    if "://" in v or v.startswith("//"):
        HttpUrl(v)  # raises a ValidationError with pydantic's own message
        return v
    if not v.strip():
        raise ValueError("must not be empty")
    if v.startswith(("/", "\\")) or "\\" in v:
        raise ValueError("a local image is a path relative to the issue folder, e.g. photos/x.jpg")
    return v


ImageSource = Annotated[str, AfterValidator(_one_line), AfterValidator(image_source)]
"""An image file in the workspace (relative path) or an absolute http(s) URL."""


class Image(_Model):
    """An image: a file in the issue's folder (resized and published with the archive) or an
    https URL."""

    src: ImageSource = Field(
        description="Image file relative to the issue folder (`photos/x.jpg`), or an https URL."
    )
    alt: Line = Field(description="Alternative text; empty only for purely decorative images.")
    width: int | None = Field(None, gt=0, le=600, description="Display width in px (max 600).")
    url: Url | None = Field(None, description="Optional link target when the image is clicked.")

    @property
    def height(self) -> int | None:
        """Display height: known only once a local file is prepared (see render/images.py)."""
        return None

    def urls(self) -> list[str]:
        """The image's web address (not a local file) and, if it is a link, its target."""
        web = [] if "://" not in self.src and not self.src.startswith("//") else [self.src]
        return [*web, *([str(self.url)] if self.url else [])]


class _SectionBase(_Model):
    id: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]*$", description="Optional anchor id for the section."
    )

    shows_text: ClassVar[bool] = True
    """Whether the section is meant to show text: one showing none is reported as empty."""

    @abc.abstractmethod
    def texts(self) -> list[str | None]:
        """The texts the section shows (titles, Markdown bodies, items...), unset ones as None."""

    @abc.abstractmethod
    def urls(self) -> list[str]:
        """The addresses the section links to or shows images from (not those inside Markdown,
        which the rendered HTML shows)."""

    @abc.abstractmethod
    def plain_text(self, out: PlainText) -> None:
        """Write the section's plain-text version, in reading order."""


class TextSection(_SectionBase):
    """Free Markdown text, optionally under a heading."""

    type: Literal["text"]
    title: Text | None = Field(None, description="Optional heading.")
    body: Markdown = Field(description="Markdown text.")

    def texts(self) -> list[str | None]:
        return [self.title, self.body]

    def urls(self) -> list[str]:
        return []

    def plain_text(self, out: PlainText) -> None:
        if self.title:
            out.heading(self.title, 2)
        out.markdown(self.body)


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

    def texts(self) -> list[str | None]:
        return [self.title, self.subtitle, self.body]

    def urls(self) -> list[str]:
        return [
            *([str(self.link.url)] if self.link else []),
            *(self.image.urls() if self.image else []),
        ]

    def plain_text(self, out: PlainText) -> None:
        out.heading(self.title, 2)
        if self.subtitle:
            out.paragraph(self.subtitle)
        when = out.date_range(self.date, self.end_date) if self.date else None
        details = [part for part in (when, self.time, self.place) if part]
        if details:
            out.details(details)
        out.markdown(self.body)
        if self.image and self.image.url:
            out.link(self.image.alt or out.translate("Image"), str(self.image.url))
        if self.link:
            out.link(self.link.label, str(self.link.url))


class TermItem(_Model):
    """A "term: explanation" list item."""

    term: Text = Field(description="The term, shown in bold.")
    text: Markdown = Field(description="Its explanation (Markdown).")

    def markdown(self) -> str:
        """The item as one Markdown text, the term in bold."""
        return f"**{self.term}:** {self.text}"


class ListSection(_SectionBase):
    """A bullet (or numbered) list; items are Markdown strings or term/text pairs."""

    type: Literal["list"]
    title: Text | None = Field(None, description="Heading.")
    intro: Markdown | None = Field(None, description="Markdown before the list.")
    items: list[Markdown | TermItem] = Field(min_length=1, description="The items.")
    numbered: bool = Field(False, description="Number the items instead of bullets.")
    outro: Markdown | None = Field(None, description="Markdown after the list.")

    def texts(self) -> list[str | None]:
        items: list[str | None] = []
        for item in self.items:
            items += [item.term, item.text] if isinstance(item, TermItem) else [item]
        return [self.title, self.intro, self.outro, *items]

    def urls(self) -> list[str]:
        return []

    def plain_text(self, out: PlainText) -> None:
        if self.title:
            out.heading(self.title, 2)
        if self.intro:
            out.markdown(self.intro)
        for number, item in enumerate(self.items, 1):
            text = item.markdown() if isinstance(item, TermItem) else item
            out.list_item(text, number=number if self.numbered else None, first=number == 1)
        if self.outro:
            out.markdown(self.outro)


_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DAY_TIME = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[ T]([0-9]{1,2}:[0-9]{2})$")


def _day_or_time(value: object) -> object:
    """``2014-10-08`` as a date, ``2014-10-08 09:00`` as a (naive) datetime."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if _DAY.match(text):
        # The union would read a day as midnight of a datetime: a day stays a day.
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise PydanticCustomError("date_parsing", "not a real day") from None
    m = _DAY_TIME.match(text)
    if m:
        try:
            hour, minute = (int(part) for part in m.group(2).split(":"))
            return dt.datetime.combine(dt.date.fromisoformat(m.group(1)), dt.time(hour, minute))
        except ValueError as exc:
            why = str(exc)
    else:
        why = "neither a day nor a day and a time"
    raise PydanticCustomError(
        "day_time",
        "Expected a day YYYY-MM-DD or a day and time YYYY-MM-DD HH:MM, got {got} ({why})",
        {"got": repr(text[:40]), "why": why},
    )


DayOrTime = Annotated[dt.datetime | dt.date, BeforeValidator(_day_or_time)]
"""A day (``2014-10-08``) or a day and a time of day (``2014-10-08 09:00``), the time being
wall-clock time in the workspace's ``newsletter.timezone``."""


def day_of(value: dt.date) -> dt.date:
    """The calendar day of a day or a day-and-time."""
    return value.date() if isinstance(value, dt.datetime) else value


class Event(_Model):
    """One event in an events section."""

    title: Text = Field(description="Name of the event.")
    start: DayOrTime = Field(
        description="First day (YYYY-MM-DD), or day and starting time (YYYY-MM-DD HH:MM) in "
        "newsletter.timezone."
    )
    end: DayOrTime | None = Field(
        None, description="Last day, or when it ends (YYYY-MM-DD HH:MM), if given."
    )
    place: Text | None = Field(None, description="City, venue.")
    url: Url | None = Field(None, description="Page of the event.")
    description: Markdown | None = Field(None, description="Markdown description.")

    @model_validator(mode="after")
    def _dates(self) -> Event:
        if self.end is None:
            return self
        both_times = isinstance(self.start, dt.datetime) and isinstance(self.end, dt.datetime)
        if both_times and self.end < self.start or day_of(self.end) < day_of(self.start):
            raise ValueError("'end' is before 'start'")
        return self


class EventsSection(_SectionBase):
    """A list of upcoming events."""

    type: Literal["events"]
    title: Text = Field(description="Heading.")
    intro: Markdown | None = Field(None, description="Markdown before the events.")
    items: list[Event] = Field(min_length=1, description="The events, in order.")

    def texts(self) -> list[str | None]:
        events = [text for e in self.items for text in (e.title, e.description)]
        return [self.title, self.intro, *events]

    def urls(self) -> list[str]:
        return [str(e.url) for e in self.items if e.url]

    def plain_text(self, out: PlainText) -> None:
        out.heading(self.title, 2)
        if self.intro:
            out.markdown(self.intro)
        for event in self.items:
            out.heading(event.title, 3)
            when = out.date_range(event.start, event.end)
            out.details([when, *([event.place] if event.place else [])], tight=True)
            if event.description:
                out.markdown(event.description, shift=3)
            if event.url:
                more = out.translate("More information")
                out.link(more, str(event.url), unless_in=event.description)


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

    def texts(self) -> list[str | None]:
        news = [text for n in self.items for text in (n.title, n.text)]
        return [self.title, self.intro, *news]

    def urls(self) -> list[str]:
        return [str(n.url) for n in self.items if n.url]

    def plain_text(self, out: PlainText) -> None:
        out.heading(self.title, 2)
        if self.intro:
            out.markdown(self.intro)
        for news in self.items:
            out.heading(news.title, 3)
            out.markdown(news.text, shift=3)
            if news.url:
                out.link(out.translate("Read more"), str(news.url), unless_in=news.text)


class CtaSection(_SectionBase):
    """A call to action: heading, text and one button."""

    type: Literal["cta"]
    title: Text = Field(description="Heading.")
    text: Markdown = Field(description="Markdown text.")
    button: Text = Field(description="Button label.")
    url: Url = Field(description="Button target.")

    def texts(self) -> list[str | None]:
        return [self.title, self.text, self.button]

    def urls(self) -> list[str]:
        return [str(self.url)]

    def plain_text(self, out: PlainText) -> None:
        out.heading(self.title, 2)
        out.markdown(self.text)
        out.link(self.button, str(self.url))


class ImageSection(_SectionBase):
    """A standalone image with an optional caption."""

    type: Literal["image"]
    image: Image = Field(description="The image.")
    caption: Text | None = Field(None, description="Caption under the image.")

    shows_text: ClassVar[bool] = False  # the caption is optional: the image is the content

    def texts(self) -> list[str | None]:
        return [self.caption]

    def urls(self) -> list[str]:
        return self.image.urls()

    def plain_text(self, out: PlainText) -> None:
        image = self.image
        label = image.alt or self.caption or out.translate("Image")
        if image.url:
            out.image(label, str(image.url))
        elif image.alt:
            out.image(image.alt, None)
        if self.caption and self.caption != label:
            out.paragraph(self.caption)


class DividerSection(_SectionBase):
    """A horizontal rule."""

    type: Literal["divider"]

    shows_text: ClassVar[bool] = False

    def texts(self) -> list[str | None]:
        return []

    def urls(self) -> list[str]:
        return []

    def plain_text(self, out: PlainText) -> None:
        out.rule()


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

SECTION_CLASSES: tuple[type[_SectionBase], ...] = typing.get_args(typing.get_args(Section)[0])
"""The section classes, in the order of the union."""

SECTION_TYPES: tuple[str, ...] = tuple(
    typing.get_args(cls.model_fields["type"].annotation)[0] for cls in SECTION_CLASSES
)
"""The values of ``type:``, derived from the union so that the two cannot drift apart."""


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
    preheader: Line = Field("", description="Preview text shown after the subject in inboxes.")
    number: int | None = Field(None, ge=1, description="Issue number.")
    date: dt.date = Field(description="Issue date (YYYY-MM-DD).")
    language: str = Field(
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="BCP 47 language of the content, e.g. `ro` or `en` (optional: default "
        "`newsletter.language` from bulletin.toml).",
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
