"""Template strings and dates in the issue's language (Romanian and English; English fallback).

The catalogue is deliberately small: the few words the default templates and the plain-text
version print themselves ("View online", "Unsubscribe"...). Everything else is content and
comes from issue.yaml or bulletin.toml in the issue's language already.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

DEFAULT_LANGUAGE = "en"

# msgid (English) -> translation. English needs no table: the msgid is the text.
CATALOGUE: dict[str, dict[str, str]] = {
    "ro": {
        "View online": "Citiți online",
        "View this email in your browser": "Citiți acest e-newsletter în browser",
        "Unsubscribe": "Dezabonare",
        "Your preferences": "Preferințele dumneavoastră",
        "Preferences": "Preferințe",
        "Events": "Evenimente",
        "News": "Știri",
        "More information": "Mai multe informații",
        "Read more": "Citiți mai mult",
        "Issue": "Numărul",
        "No.": "Nr.",
        "Image": "Imagine",
        "Where": "Unde",
        "When": "Când",
        "To stop receiving this newsletter": "Pentru a nu mai primi acest e-newsletter",
        "This email was sent to": "Acest mesaj a fost trimis către",
    },
}

MONTHS: dict[str, tuple[str, ...]] = {
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "ro": (
        "ianuarie",
        "februarie",
        "martie",
        "aprilie",
        "mai",
        "iunie",
        "iulie",
        "august",
        "septembrie",
        "octombrie",
        "noiembrie",
        "decembrie",
    ),
}

SHORT_MONTHS: dict[str, tuple[str, ...]] = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "ro": (
        "ian.",
        "feb.",
        "mar.",
        "apr.",
        "mai",
        "iun.",
        "iul.",
        "aug.",
        "sept.",
        "oct.",
        "nov.",
        "dec.",
    ),
}

EN_DASH = "\u2013"


def base_language(lang: str) -> str:
    """``ro-RO`` -> ``ro``: the catalogue is keyed by primary language subtag."""
    return lang.split("-", 1)[0].lower()


def translate(lang: str, msgid: str) -> str:
    """``msgid`` in ``lang``; English (the msgid itself) when there is no translation."""
    return CATALOGUE.get(base_language(lang), {}).get(msgid, msgid)


def _months(lang: str) -> tuple[str, ...]:
    return MONTHS.get(base_language(lang), MONTHS[DEFAULT_LANGUAGE])


def short_month(day: dt.date, lang: str) -> str:
    """The month abbreviated for a date block: ``oct.`` (ro), ``Oct`` (en)."""
    table = SHORT_MONTHS.get(base_language(lang), SHORT_MONTHS[DEFAULT_LANGUAGE])
    return table[day.month - 1]


def format_date(day: dt.date, lang: str) -> str:
    """A long date: ``8 octombrie 2014`` (ro), ``8 October 2014`` (en and fallback)."""
    return f"{day.day} {_months(lang)[day.month - 1]} {day.year}"


def format_time(moment: dt.datetime, lang: str) -> str:
    """A time of day as the language writes it: ``09:00`` (ro and fallback), ``9:00 am`` (en)."""
    if base_language(lang) == "en":
        hour = moment.hour % 12 or 12
        return f"{hour}:{moment.minute:02d} {'am' if moment.hour < 12 else 'pm'}"
    return f"{moment.hour:02d}:{moment.minute:02d}"


def format_date_range(
    start: dt.date, end: dt.date | None, lang: str, zone: str | None = None
) -> str:
    """A date or a range, shortened where parts repeat: ``6–9 octombrie 2014``.

    Across months: ``30 septembrie – 2 octombrie 2014``; across years both dates in full.
    Days with times (``datetime``) add them, with the abbreviation of ``zone`` (the
    workspace's time zone, which the times are written in): ``8 octombrie 2014, 09:00–17:30
    EEST``; on different days each day has its time.
    """
    if not isinstance(start, dt.datetime):
        return _days(start, _day(end), lang)
    label = f" {_zone_name(start, zone)}" if zone else ""
    first = format_time(start, lang)
    if isinstance(end, dt.datetime) and end.date() == start.date():
        return f"{format_date(start, lang)}, {first}{EN_DASH}{format_time(end, lang)}{label}"
    if isinstance(end, dt.datetime):
        return (
            f"{format_date(start, lang)}, {first} {EN_DASH} "
            f"{format_date(end, lang)}, {format_time(end, lang)}{label}"
        )
    return f"{_days(start.date(), _day(end), lang)}, {first}{label}"


def _day(value: dt.date | None) -> dt.date | None:
    return value.date() if isinstance(value, dt.datetime) else value


def _zone_name(moment: dt.datetime, zone: str) -> str:
    """``EEST`` for a summer day in Europe/Bucharest; the zone's own name when it has none."""
    name = zoneinfo.ZoneInfo(zone).tzname(moment)
    # Zones without an abbreviation report an offset such as "+04": say the place instead.
    return name if name and name[0].isalpha() else zone


def _days(start: dt.date, end: dt.date | None, lang: str) -> str:
    if end is None or end == start:
        return format_date(start, lang)
    months = _months(lang)
    if (start.year, start.month) == (end.year, end.month):
        return f"{start.day}{EN_DASH}{end.day} {months[end.month - 1]} {end.year}"
    if start.year == end.year:
        return f"{start.day} {months[start.month - 1]} {EN_DASH} {format_date(end, lang)}"
    return f"{format_date(start, lang)} {EN_DASH} {format_date(end, lang)}"
