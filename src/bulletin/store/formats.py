"""Exports of other newsletter tools, recognised so that moving here loses no opt-out.

A file is recognised by its header first and its name second: someone may rename
``cleaned_members_export_4f1a.csv``, but its ``CLEAN_TIME`` column says what it is.

**Mailchimp** audience exports (a zip of CSV files, one per status). Every file has
``Email Address``, ``First Name``, ``Last Name``, ``OPTIN_TIME``, ``CONFIRM_TIME``, ``LEID``,
``EUID``...; the unsubscribed file adds ``UNSUB_TIME``..., the cleaned file ``CLEAN_TIME``...

* subscribed -> subscribed; unsubscribed -> unsubscribed from the list it is imported into;
  cleaned (addresses that bounced) -> bounced, for every list; non-subscribed (people who
  never opted in, e.g. from a purchase) -> not subscribed, nothing stored.
* ``OPTIN_TIME`` and ``CONFIRM_TIME`` (UTC) become the consent's given and confirmed times;
  ``CONFIRM_IP`` (else ``OPTIN_IP``) its client address, only when ``privacy.store_ip`` is on.
* ``TAGS`` (``"Tag one","tag2"``) are dropped unless ``--tags-as-lists`` puts each tagged
  person on a list per tag.
* Mailchimp's bookkeeping (ratings, geolocation, time zones, its ids, campaign ids and
  titles, unsubscribe reasons) is dropped, and the summary says so: an unsubscribe reason
  is a person's words about leaving, not something to mail them with.

**listmonk** subscriber exports (``uuid,email,name,attributes,status,created_at,updated_at``):

* ``status`` ``enabled`` -> subscribed, ``blocklisted`` -> blocked everywhere, ``disabled``
  -> not subscribed (listmonk sends nothing to them either);
* an optional ``subscription_status`` column (exports filtered by it, or made by hand):
  ``unsubscribed`` -> unsubscribed from the list, ``unconfirmed`` -> not subscribed (they
  never confirmed a double opt-in), ``confirmed`` -> subscribed;
* ``attributes`` (a JSON object) become attributes: top-level strings, numbers and booleans
  as text, nested objects and arrays as their JSON text (a template can show it; flattening
  would invent key names listmonk never had);
* ``created_at`` (Go's ``2006-01-02 15:04:05.999999999 -0700 MST``) is when consent was given.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from bulletin.store.csvfile import _fold

ImportStatus = str
"""What a row asks for: ``subscribed``; ``unsubscribed`` (from the list); ``unsubscribed-all``,
``bounced``, ``complained``, ``blocked`` (every list); ``not-subscribed`` (store nothing)."""

STATUS_RANK = {
    "subscribed": 0,
    "not-subscribed": 1,
    "unsubscribed": 2,
    "unsubscribed-all": 3,
    "bounced": 4,
    "complained": 5,
    "blocked": 6,
}
"""When one address has several rows, the strongest status wins (an opt-out beats a
subscribe, whatever the order of the rows)."""

GLOBAL_IMPORT_STATUSES = ("unsubscribed-all", "bounced", "complained", "blocked")

_MAILCHIMP_MARKERS = frozenset({"optin time", "confirm time", "leid", "euid", "member rating"})
_MAILCHIMP_DROPPED = frozenset(
    {
        "member rating",
        "optin ip",
        "confirm ip",
        "latitude",
        "longitude",
        "gmtoff",
        "dstoff",
        "timezone",
        "cc",
        "region",
        "last changed",
        "leid",
        "euid",
        "notes",
        "unsub time",
        "unsub campaign title",
        "unsub campaign id",
        "unsub reason",
        "unsub reason other",
        "clean time",
        "clean campaign title",
        "clean campaign id",
        "optin time",
        "confirm time",
        "tags",
    }
)
_OWN_CONSENT = (
    "consent source",
    "consent given at",
    "consent confirmed at",
    "consent version",
)
_LISTMONK_HEADER = ("uuid", "email", "name", "attributes", "status", "created at", "updated at")


@dataclass(frozen=True)
class SourceFormat:
    """How to read one file: which tool made it and which columns mean what."""

    tool: str = ""
    """``mailchimp``, ``listmonk`` or ``""`` (a plain CSV)."""
    kind: str = ""
    """For Mailchimp the file: ``subscribed``, ``unsubscribed``, ``cleaned``, ``nonsubscribed``."""
    status: ImportStatus = "subscribed"
    """The status of every row, unless ``status_column`` says otherwise."""
    status_column: int | None = None
    status_values: str = "listmonk"
    """How ``status_column`` is read: ``listmonk``'s words, or ``generic`` (any CSV with a
    status column: the words other tools and spreadsheets use, see :data:`_GENERIC_STATUS`)."""
    list_status_column: int | None = None
    given_column: int | None = None
    confirmed_column: int | None = None
    ip_columns: tuple[int, ...] = ()
    """Client address columns, first non-empty wins (Mailchimp: confirm, then opt-in)."""
    json_column: int | None = None
    tags_column: int | None = None
    claimed: frozenset[int] = frozenset()
    """Columns read here (or dropped): not attributes."""
    dropped: tuple[str, ...] = ()
    """Header names of the tool's bookkeeping columns that are not kept."""

    @property
    def carries_consent(self) -> bool:
        """The file says when people gave consent (or is another tool's export)."""
        return bool(self.tool) or self.given_column is not None

    @property
    def plain(self) -> bool:
        """Every row is a subscriber with nothing more to read (the fast path)."""
        return (
            not self.tool
            and self.status == "subscribed"
            and self.status_column is None
            and self.given_column is None
            and self.confirmed_column is None
        )


def detect(header: list[str], file_name: str) -> SourceFormat:
    """Recognise a Mailchimp or listmonk export by its header (then its name); else plain."""
    folded = [_fold(h) for h in header]
    index = {f: i for i, f in reversed(list(enumerate(folded)))}
    if tuple(folded[:7]) == _LISTMONK_HEADER or {"uuid", "attributes", "status"} <= set(index):
        return _listmonk(header, index)
    if "email address" in index and len(_MAILCHIMP_MARKERS & set(index)) >= 2:
        return _mailchimp(header, index, file_name)
    # Any other file with a status column: a column saying who opted out must never be
    # stored as an attribute while everyone on the file is subscribed.
    status = next((index[f] for f in _GENERIC_STATUS_HEADERS if f in index), None)
    claimed = {status} if status is not None else set()
    given = confirmed = None
    if "consent given at" in index:
        # `bulletin subscribers export --consent`: the times go back into consent records.
        given, confirmed = index["consent given at"], index.get("consent confirmed at")
        claimed |= {index[f] for f in _OWN_CONSENT if f in index}
    return SourceFormat(
        status_column=status,
        status_values="generic",
        given_column=given,
        confirmed_column=confirmed,
        claimed=frozenset(claimed),
    )


def _mailchimp(header: list[str], index: dict[str, int], file_name: str) -> SourceFormat:
    name = file_name.lower()
    if "clean time" in index:
        kind = "cleaned"
    elif "unsub time" in index:
        kind = "unsubscribed"
    elif name.startswith("nonsubscribed") or name.startswith("non_subscribed"):
        kind = "nonsubscribed"
    elif name.startswith("cleaned"):
        kind = "cleaned"
    elif name.startswith("unsubscribed"):
        kind = "unsubscribed"
    else:
        kind = "subscribed"
    status = {
        "subscribed": "subscribed",
        "unsubscribed": "unsubscribed",
        "cleaned": "bounced",
        "nonsubscribed": "not-subscribed",
    }[kind]
    claimed = {i for f, i in index.items() if f in _MAILCHIMP_DROPPED}
    kept = {"optin time", "confirm time", "tags", "optin ip", "confirm ip"}
    dropped = tuple(
        header[i]
        for f, i in sorted(index.items(), key=lambda x: x[1])
        if f in _MAILCHIMP_DROPPED and f not in kept
    )
    return SourceFormat(
        tool="mailchimp",
        kind=kind,
        status=status,
        given_column=index.get("optin time"),
        confirmed_column=index.get("confirm time"),
        ip_columns=tuple(
            i for i in (index.get("confirm ip"), index.get("optin ip")) if i is not None
        ),
        tags_column=index.get("tags"),
        claimed=frozenset(claimed),
        dropped=dropped,
    )


def _listmonk(header: list[str], index: dict[str, int]) -> SourceFormat:
    claimed = {
        index[f] for f in ("uuid", "attributes", "status", "created at", "updated at") if f in index
    }
    list_status = index.get("subscription status")
    if list_status is not None:
        claimed.add(list_status)
    return SourceFormat(
        tool="listmonk",
        kind="subscribers",
        status_column=index.get("status"),
        list_status_column=list_status,
        given_column=index.get("created at"),
        json_column=index.get("attributes"),
        claimed=frozenset(claimed),
        dropped=tuple(header[index[f]] for f in ("uuid", "updated at") if f in index),
    )


class FormatError(ValueError):
    """A cell of a recognised export that cannot be read; ``str()`` says why."""


_LISTMONK_STATUS = {"enabled": "subscribed", "blocklisted": "blocked", "disabled": "not-subscribed"}
_LISTMONK_LIST_STATUS = {
    "confirmed": "subscribed",
    "unconfirmed": "not-subscribed",
    "unsubscribed": "unsubscribed",
}


_GENERIC_STATUS_HEADERS = ("status", "subscription status", "subscriber status", "stare")
"""Header names (folded) of a plain file's status column, first found wins."""

_GENERIC_STATUS = {
    **{w: "subscribed" for w in ("", "subscribed", "active", "enabled", "confirmed", "abonat")},
    **{
        w: "unsubscribed"
        for w in ("unsubscribed", "opted out", "opt-out", "optout", "dezabonat", "inactive")
    },
    **{w: "bounced" for w in ("bounced", "cleaned", "hard bounce", "invalid")},
    **{w: "complained" for w in ("complained", "complaint", "spam", "abuse")},
    **{w: "blocked" for w in ("blocked", "blocklisted", "blacklisted", "banned")},
    **{
        w: "not-subscribed"
        for w in ("disabled", "unconfirmed", "pending", "nonsubscribed", "non-subscribed")
    },
}
"""A plain file's status words; an empty cell is a subscriber like a file without the column."""


def row_status(fmt: SourceFormat, fields: list[str]) -> ImportStatus:
    """The status a row asks for."""
    status = fmt.status
    if fmt.status_column is not None and fmt.status_values == "generic":
        value = " ".join(fields[fmt.status_column].strip().lower().replace("_", " ").split())
        if value not in _GENERIC_STATUS:
            raise FormatError(
                f"status {fields[fmt.status_column]!r} is not a status bulletin knows "
                "(subscribed, unsubscribed, bounced, complained, blocked, unconfirmed...): "
                "nobody is subscribed on a word it cannot read"
            )
        return _GENERIC_STATUS[value]
    if fmt.status_column is not None:
        value = fields[fmt.status_column].strip().lower()
        if value not in _LISTMONK_STATUS:
            raise FormatError(
                f"status {fields[fmt.status_column]!r} is not one of listmonk's "
                "(enabled, disabled, blocklisted)"
            )
        status = _LISTMONK_STATUS[value]
    if fmt.list_status_column is not None:
        value = fields[fmt.list_status_column].strip().lower()
        if value:
            if value not in _LISTMONK_LIST_STATUS:
                raise FormatError(
                    f"subscription_status {fields[fmt.list_status_column]!r} is not one of "
                    "unconfirmed, confirmed, unsubscribed"
                )
            by_list = _LISTMONK_LIST_STATUS[value]
            if STATUS_RANK[by_list] > STATUS_RANK[status]:
                status = by_list
    return status


_GO_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d+))?\s*(Z|[+-]\d\d:?\d\d)?(?:\s+[A-Z]{2,5})?"
)


def parse_time(text: str) -> datetime | None:
    """A time as Mailchimp (``2023-04-01 09:30:00``, UTC) or listmonk (Go's
    ``2023-04-01 12:30:00.123456789 +0300 EEST``, or RFC 3339) writes it; None if empty."""
    text = text.strip()
    if not text:
        return None
    m = _GO_TIME.match(text)
    if m is None:
        raise FormatError(f"{text!r} is not a time like 2023-04-01 09:30:00")
    day, clock, fraction, offset = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        at = datetime.fromisoformat(f"{day} {clock}").replace(microsecond=micro)
    except ValueError:
        raise FormatError(f"{text!r} is not a valid time") from None
    tz = UTC
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    return at.replace(tzinfo=tz).astimezone(UTC)


def json_attributes(text: str) -> dict[str, str]:
    """listmonk's ``attributes`` cell as attribute values (see the module docs)."""
    text = text.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"attributes is not JSON ({exc.msg} at character {exc.pos + 1})"
        ) from None
    if not isinstance(value, dict):
        raise FormatError("attributes is not a JSON object")
    out: dict[str, str] = {}
    for key, v in value.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[key] = "true" if v else "false"
        elif isinstance(v, str):
            out[key] = v
        elif isinstance(v, int | float):
            out[key] = json.dumps(v)
        else:
            out[key] = json.dumps(v, ensure_ascii=False, sort_keys=True)
    return out


def mailchimp_tags(text: str) -> list[str]:
    """Mailchimp's ``TAGS`` cell (``"Tag one","tag2"``) as a list of tags."""
    text = text.strip()
    if not text:
        return []
    row = next(csv.reader([text], skipinitialspace=True), [])
    return [t.strip() for t in row if t.strip()]
