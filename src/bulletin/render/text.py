"""The plain-text alternative, written from the same issue content as the HTML.

Conventions (readable in any client, and by screen readers): headings underlined (``=`` for
the title, ``-`` for sections, ``~`` for items), ``*`` bullets, every link's address shown
as ``text <https://...>``, paragraphs wrapped at 72 columns (a URL longer than the line gets
a line of its own rather than being cut), and a signature-style footer (``-- ``) with why
the reader receives it, the view-online and the unsubscribe addresses on lines of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bulletin.content.model import (
    ArticleSection,
    CtaSection,
    DividerSection,
    EventsSection,
    ImageSection,
    Issue,
    ListSection,
    NewsSection,
    TermItem,
    TextSection,
)
from bulletin.render import i18n
from bulletin.render import markdown as md
from bulletin.workspace import Config

Report = Callable[[str, Any], None]

SEPARATOR = "-- "
"""The signature delimiter: clients that know it fold or dim the footer."""


def render_text(
    issue: Issue,
    config: Config,
    *,
    unsubscribe_url: str,
    view_online_url: str,
    recipient_email: str,
    report: Report,
) -> str:
    """The whole plain-text message body (slot tokens in place of per-recipient values)."""
    lang = issue.language
    t = _Translator(lang)
    out = md.TextWriter()
    news = config.newsletter
    title = issue.title or news.name
    meta = []
    if issue.title and issue.title != news.name:
        meta.append(news.name)
    if issue.number:
        meta.append(f"{t('No.')} {issue.number}")
    meta.append(i18n.format_date(issue.date, lang))
    out.block([*md.underline(title, "="), *md.wrap(" · ".join(meta))])

    for section in issue.sections:
        _section(section, out, t, lang, functools.partial(_report_at, report, section))

    footer: list[str] = [SEPARATOR]
    if news.reason:
        footer += md.wrap(news.reason)
    for line in (news.organisation, news.postal_address):
        if line:
            footer += md.wrap(line)
    # The address is a slot token here; wrapping must not split it, so it ends its own line.
    footer += md.wrap(t("This email was sent to")) + [f"{recipient_email}."]
    out.block(footer)
    out.block([f"{t('View online')}:", f"<{view_online_url}>"])
    out.block([f"{t('Unsubscribe')}:", f"<{unsubscribe_url}>"])
    return out.text()


def _report_at(report: Report, section: object, message: str) -> None:
    report(message, section)


class _Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang

    def __call__(self, msgid: str) -> str:
        return i18n.translate(self.lang, msgid)


def _markdown(text: str, out: md.TextWriter, warn: Callable[[str], None], shift: int = 2) -> None:
    md.to_text(text, out, shift=shift, warn=warn)


def _link(out: md.TextWriter, label: str, url: object) -> None:
    out.paragraph(f"{label}: <{url}>")


def _section(
    section: object,
    out: md.TextWriter,
    t: _Translator,
    lang: str,
    warn: Callable[[str], None],
) -> None:
    if isinstance(section, TextSection):
        if section.title:
            out.heading(section.title, 2)
        _markdown(section.body, out, warn)
    elif isinstance(section, ArticleSection):
        out.heading(section.title, 2)
        if section.subtitle:
            out.paragraph(section.subtitle)
        meta = []
        if section.date:
            meta.append(i18n.format_date_range(section.date, section.end_date, lang))
        if section.time:
            meta.append(section.time)
        if section.place:
            meta.append(section.place)
        if meta:
            out.paragraph(" · ".join(meta))
        _markdown(section.body, out, warn)
        if section.image and section.image.url:
            _link(out, section.image.alt or t("Image"), section.image.url)
        if section.link:
            _link(out, section.link.label, section.link.url)
    elif isinstance(section, ListSection):
        if section.title:
            out.heading(section.title, 2)
        if section.intro:
            _markdown(section.intro, out, warn)
        for number, item in enumerate(section.items, 1):
            marker = f"{number}. " if section.numbered else "* "
            text = f"**{item.term}:** {item.text}" if isinstance(item, TermItem) else item
            md.to_text(text, out, shift=3, marker=marker, tight=number > 1, warn=warn)
        if section.outro:
            _markdown(section.outro, out, warn)
    elif isinstance(section, EventsSection):
        out.heading(section.title, 2)
        if section.intro:
            _markdown(section.intro, out, warn)
        for event in section.items:
            out.heading(event.title, 3)
            when = i18n.format_date_range(event.start, event.end, lang)
            out.block(
                md.wrap(" · ".join([when, *([event.place] if event.place else [])])), tight=True
            )
            if event.description:
                _markdown(event.description, out, warn, shift=3)
            if event.url:
                _link(out, t("More information"), event.url)
    elif isinstance(section, NewsSection):
        out.heading(section.title, 2)
        if section.intro:
            _markdown(section.intro, out, warn)
        for news in section.items:
            out.heading(news.title, 3)
            _markdown(news.text, out, warn, shift=3)
            if news.url:
                _link(out, t("Read more"), news.url)
    elif isinstance(section, CtaSection):
        out.heading(section.title, 2)
        _markdown(section.text, out, warn)
        _link(out, section.button, section.url)
    elif isinstance(section, ImageSection):
        image = section.image
        label = image.alt or section.caption or t("Image")
        if image.url:
            _link(out, f"[{label}]", image.url)
        elif image.alt:
            out.paragraph(f"[{image.alt}]")
        if section.caption and section.caption != label:
            out.paragraph(section.caption)
    elif isinstance(section, DividerSection):
        out.block(["* * *"])
