"""The plain-text alternative, written from the same issue content as the HTML.

Conventions (readable in any client, and by screen readers): headings underlined (``=`` for
the title, ``-`` for sections, ``~`` for items), ``*`` bullets, every link's address shown
as ``text <https://...>``, paragraphs wrapped at 72 columns (a URL longer than the line gets
a line of its own rather than being cut), and a signature-style footer (``-- ``) with why
the reader receives it, the view-online and the unsubscribe addresses on lines of their own.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from typing import Any

from bulletin.content.model import Issue
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
    preferences_url: str | None = None,
    report: Report,
) -> str:
    """The whole plain-text message body (slot tokens in place of per-recipient values)."""
    lang = issue.language
    t = functools.partial(i18n.translate, lang)
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
        warn = functools.partial(_report_at, report, section)
        section.plain_text(_PlainText(out, lang, warn, news.timezone))

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
    if preferences_url is not None:
        out.block([f"{t('Your preferences')}:", f"<{preferences_url}>"])
    out.block([f"{t('Unsubscribe')}:", f"<{unsubscribe_url}>"])
    return out.text()


def _report_at(report: Report, section: object, message: str) -> None:
    report(message, section)


class _PlainText:
    """The plain-text layout sections write with (:class:`bulletin.content.model.PlainText`)."""

    def __init__(self, out: md.TextWriter, lang: str, warn: md.Warn, zone: str | None) -> None:
        self.out = out
        self.lang = lang
        self.warn = warn
        self.zone = zone

    def heading(self, text: str, level: int) -> None:
        self.out.heading(text, level)

    def paragraph(self, text: str) -> None:
        self.out.paragraph(text)

    def details(self, parts: Sequence[str], *, tight: bool = False) -> None:
        self.out.block(md.wrap(" · ".join(parts)), tight=tight)

    def markdown(self, text: str, *, shift: int = 2) -> None:
        md.to_text(text, self.out, shift=shift, warn=self.warn)

    def list_item(self, text: str, *, number: int | None, first: bool) -> None:
        marker = "* " if number is None else f"{number}. "
        # Items follow one another without blank lines, as a list does.
        md.to_text(text, self.out, shift=3, marker=marker, tight=not first, warn=self.warn)

    def link(self, label: str, url: str, *, unless_in: str | None = None) -> None:
        if not md.links_to(unless_in, url):
            self.out.paragraph(f"{label}: <{url}>")

    def image(self, label: str, url: str | None) -> None:
        if url:
            self.link(f"[{label}]", url)
        else:
            self.out.paragraph(f"[{label}]")

    def rule(self) -> None:
        self.out.block(["* * *"])

    def date_range(self, start: dt.date, end: dt.date | None) -> str:
        return i18n.format_date_range(start, end, self.lang, self.zone)

    def translate(self, msgid: str) -> str:
        return i18n.translate(self.lang, msgid)
