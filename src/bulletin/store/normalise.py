"""What enters the subscriber store: one set of rules for every way in.

The CSV import, ``subscribers add``, the blocklist (:func:`~bulletin.store.subscribers.
suppress_address`) and any later entry point (a signup form) call these functions, so the
same input gets the same verdict everywhere: cleaned the same way, or refused for the same
reason. Nothing else in bulletin decides what an address, a name, a language or an attribute
may hold.

Decisions, stated once:

* **Addresses** go through :class:`~bulletin.store.addresses.AddressValidator`
  (email-validator's rules, RFC 5321's 64 octets before the @ and 254 in all). Our own
  addresses in bulletin.toml (:func:`own_address`) must also be written plainly and have an
  ASCII local part: bulletin sends without SMTPUTF8.
* **Names** are one line: line breaks and tabs become a space, other control characters
  and the invisible bidi controls (U+202E reverses the text around it) are dropped, runs of
  spaces collapse. Such a name is *cleaned* (and the caller says so); a name longer than
  :data:`MAX_NAME` characters is *refused*: a cut name is a wrong name.
* **Languages** are tags like ``ro`` or ``en-GB``; ``RO_ro`` becomes ``ro-RO``; anything
  else, or longer than :data:`MAX_LANGUAGE`, is refused.
* **Attribute values** keep their line breaks (as LF); other control characters are dropped
  (cleaned); over :data:`MAX_ATTRIBUTE` characters they are refused. **Attribute keys** are
  lower-case words joined by ``_`` (``Organisation Name`` -> ``organisation_name``).
* HTML in names and values is kept as text: templates escape it.

Two shapes of API: per-field functions for the bulk importer (they allocate nothing when the
text is already clean, which is nearly always) raising :class:`InvalidField` or
:class:`InvalidAddress`; and :func:`normalise_subscriber` for one entry, raising
:class:`InvalidSubscriber`, a user error that names the field and says why.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from bulletin.errors import BulletinError
from bulletin.store.addresses import (
    MAX_LOCAL_OCTETS,
    Address,
    AddressValidator,
    InvalidAddress,
    address_key,
)

__all__ = [
    "CONTROL_CHARACTERS",
    "MAX_ATTRIBUTE",
    "MAX_ATTRIBUTE_KEY",
    "MAX_LANGUAGE",
    "MAX_LOCAL_OCTETS",
    "MAX_NAME",
    "Address",
    "AddressValidator",
    "InvalidAddress",
    "InvalidField",
    "InvalidSubscriber",
    "NormalisedSubscriber",
    "address_key",
    "attribute_key",
    "clean_language",
    "clean_name",
    "clean_value",
    "control_character",
    "domain_name",
    "normalise_language",
    "normalise_subscriber",
    "own_address",
]

MAX_NAME = 300
"""Longest name, in characters, after cleaning."""
MAX_ATTRIBUTE = 2000
"""Longest attribute value, in characters, after cleaning."""
MAX_ATTRIBUTE_KEY = 64
"""Longest attribute key; a longer column name is cut (keys name template values)."""
MAX_LANGUAGE = 35
"""Longest language tag (RFC 5646 section 4.4.1 asks every tag to fit in 35 characters)."""
RESERVED_KEYS = frozenset({"email", "name", "language"})
"""Keys that are fields of their own, never attributes."""

_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*\Z")
# Line separators become a space; other control and bidi-override characters are dropped.
_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")
_CONTROLS = re.compile(
    r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_VALUE_CONTROL = re.compile(
    r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_VALUE_BREAKS = re.compile(r"[\v\f\x1c-\x1e\x85\u2028\u2029]")
CONTROL_CHARACTERS = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
"""Characters that have no place in one line of text: C0 and C1 controls (CR, LF, tab, ESC,
NUL...), DEL, the Unicode line separators and the invisible bidi controls that reorder text
around them. Names lose them, our configuration refuses them, the CLI shows them escaped."""
_NOT_WORD = re.compile(r"\W+")

_TOKEN_ROOM = 39
"""Characters a token adds to an address of ours: tokens.py's tokens are 26 to 39
characters for ids up to 2**40 (a test ties the two)."""


class InvalidField(ValueError):
    """A name, language or attribute that the store refuses; ``str()`` says why."""

    def __init__(self, field_name: str, reason: str, hint: str) -> None:
        self.field = field_name
        self.reason = reason
        self.hint = hint
        super().__init__(reason)


class InvalidSubscriber(BulletinError):
    """One subscriber's address or fields are refused (the message names the field)."""

    def __init__(self, field_name: str, message: str, *, hint: str) -> None:
        self.field = field_name
        super().__init__(message, hint=hint)


# --- per field (the importer calls these once per cell) -----------------------------------


def clean_name(text: str) -> tuple[str, bool]:
    """A name on one line without control characters, and whether anything was removed.

    Raises :class:`InvalidField` when the cleaned name is longer than :data:`MAX_NAME`.
    """
    text = text.strip()
    cleaned = False
    if CONTROL_CHARACTERS.search(text):
        text = " ".join(_CONTROLS.sub("", _BREAKS.sub(" ", text)).split())
        cleaned = True
    if len(text) > MAX_NAME:
        raise InvalidField(
            "name",
            f"the name is longer than {MAX_NAME} characters ({len(text):,})",
            f"Shorten the name to at most {MAX_NAME} characters.",
        )
    return text, cleaned


def clean_value(text: str, key: str) -> tuple[str, bool]:
    """An attribute value with line breaks kept (as LF) and other control characters removed,
    and whether anything was removed.

    Raises :class:`InvalidField` when the cleaned value is longer than :data:`MAX_ATTRIBUTE`.
    """
    text = text.strip()
    cleaned = False
    if CONTROL_CHARACTERS.search(text):
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if _VALUE_CONTROL.search(text):  # more than line breaks, which a value may hold
            text = _CONTROLS.sub("", _VALUE_BREAKS.sub("\n", text)).replace("\t", " ").strip()
            cleaned = True
    if len(text) > MAX_ATTRIBUTE:
        raise InvalidField(
            f"attributes.{key}",
            f"the value of {key!r} is longer than {MAX_ATTRIBUTE} characters ({len(text):,})",
            f"Shorten it to at most {MAX_ATTRIBUTE} characters.",
        )
    return text, cleaned


@functools.lru_cache(maxsize=1024)
def normalise_language(text: str) -> str | None:
    """``ro``, ``RO_ro`` -> ``ro``, ``ro-RO``; None if it is not a language tag."""
    tag = text.strip().replace("_", "-").lower()
    if len(tag) > MAX_LANGUAGE or not _LANGUAGE.match(tag):
        return None
    parts = tag.split("-")
    out = [parts[0]]
    for p in parts[1:]:
        out.append(p.upper() if len(p) == 2 else p.title() if len(p) == 4 else p)
    return "-".join(out)


def clean_language(text: str) -> str:
    """A language tag normalised (``""`` for none); :class:`InvalidField` if it is not one."""
    if not text.strip():
        return ""
    tag = normalise_language(text)
    if tag is None:
        shown = text.strip()
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        raise InvalidField(
            "language",
            f"language {shown!r} is not a language code like 'ro' or 'en-GB'",
            "Use a language code such as ro, en or en-GB.",
        )
    return tag


def attribute_key(text: str) -> str:
    """The key a column or form field becomes: ``Organisation Name`` -> ``organisation_name``.

    Empty when nothing is left (the caller decides what that means).
    """
    key = unicodedata.normalize("NFC", text.replace("\ufeff", "")).strip().lower()
    key = _NOT_WORD.sub("_", key).strip("_")
    return key[:MAX_ATTRIBUTE_KEY].rstrip("_") if len(key) > MAX_ATTRIBUTE_KEY else key


def control_character(text: str) -> str | None:
    """Describe the first character of ``text`` that has no place in one line of text.

    Line breaks, tabs, other control characters and the invisible bidi controls; None when
    there is none. For texts that are refused rather than cleaned (our own configuration).
    """
    m = CONTROL_CHARACTERS.search(text)
    if m is None:
        return None
    ch = m.group()
    if ch in "\r\n\x85\u2028\u2029":
        return "a line break"
    if ch == "\t":
        return "a tab"
    return f"the invisible control character U+{ord(ch):04X}"


# --- our own addresses and domains (bulletin.toml) ----------------------------------------


def own_address(text: str, *, token: str | None = None) -> Address:
    """An address bulletin sends from or receives at: plain, valid, ASCII before the @.

    With ``token`` (``"{token}"`` or ``"+"``), the address must still be valid once a token
    is put in: in place of ``{token}`` (a VERP return path), or after a ``+`` added to the
    local part (the mailto unsubscribe address). Raises :class:`InvalidAddress` whose text
    continues a sentence that starts with the address ("... is not an email address (...)").
    """
    if text != text.strip():
        raise InvalidAddress("has spaces around it")
    if "<" in text or text[:7].lower() == "mailto:":
        raise InvalidAddress(
            "must be the address alone, like news@example.org (the name has a key of its own)"
        )
    if token == "{token}" and text.count("{token}") != 1:
        raise InvalidAddress("must contain {token} once, before the @")
    try:
        address = AddressValidator()(text)
    except InvalidAddress as exc:
        raise InvalidAddress(f"is not an email address ({exc})") from None
    if address.smtputf8 or address.ascii_email is None:
        raise InvalidAddress("must be plain ASCII before the @: bulletin sends without SMTPUTF8")
    if token is not None:
        filled = (
            text.replace("{token}", "t" * _TOKEN_ROOM)
            if token == "{token}"
            else text.replace("@", "+" + "t" * _TOKEN_ROOM + "@", 1)
        )
        room = len(filled.rpartition("@")[0])
        if room > MAX_LOCAL_OCTETS:
            raise InvalidAddress(
                f"is too long before the @ once a token of up to {_TOKEN_ROOM} characters is "
                f"put in ({room} characters, at most {MAX_LOCAL_OCTETS})"
            )
        try:
            AddressValidator()(filled)
        except InvalidAddress as exc:
            raise InvalidAddress(
                f"is not an email address once a token is put in ({exc})"
            ) from None
    return address


def domain_name(text: str) -> str:
    """A domain name (IDN allowed) by the same rules as an address's, in ASCII (``xn--``).

    Raises :class:`InvalidAddress` whose text continues a sentence that starts with the name.
    """
    if "@" in text or text != text.strip():
        raise InvalidAddress("is not a domain name like news.example.org")
    try:
        address = AddressValidator()("x@" + text)
    except InvalidAddress as exc:
        raise InvalidAddress(f"is not a domain name like news.example.org ({exc})") from None
    assert address.ascii_email is not None  # an ASCII local part always has one
    return address.ascii_email.partition("@")[2]


def address_domain(text: str) -> str:
    """A domain as the store keeps it in addresses (lower-case, Unicode form: ``ștefan.ro``).

    ``@example.org`` is accepted (how people write a domain to block). Raises
    :class:`InvalidAddress` whose text continues a sentence that starts with the name.
    """
    text = text.strip()
    text = text.removeprefix("@")
    if not text or "@" in text:
        raise InvalidAddress("is not a domain name like example.org")
    try:
        address = AddressValidator()("x@" + text)
    except InvalidAddress as exc:
        raise InvalidAddress(f"is not a domain name like example.org ({exc})") from None
    return address.key.partition("@")[2]


# --- one subscriber (subscribers add, a signup form) --------------------------------------


@dataclass(frozen=True)
class NormalisedSubscriber:
    """One subscriber's fields, normalised; None means "not given" (keep what is stored)."""

    address: Address
    name: str | None
    language: str | None
    attributes: dict[str, str] = field(default_factory=dict)
    cleaned: tuple[str, ...] = ()
    """Fields from which control characters were removed (``name``, ``attributes.city``)."""


def normalise_subscriber(
    email: str,
    *,
    name: str | None = None,
    language: str | None = None,
    attributes: Mapping[str, str] | None = None,
    validator: AddressValidator | None = None,
) -> NormalisedSubscriber:
    """Apply the store's rules to one subscriber, as the importer applies them to a row.

    A ``Name <address>`` gives the name when ``name`` is None. Raises
    :class:`InvalidSubscriber` naming the first field refused and why.
    """
    try:
        address = (validator or AddressValidator())(email)
    except InvalidAddress as exc:
        shown = email.strip()
        raise InvalidSubscriber(
            "email",
            f"{shown!r} is not a valid email address: {exc}" if shown else "No email address.",
            hint="Check the address for typing mistakes.",
        ) from None
    cleaned: list[str] = []
    try:
        if name is None and address.display_name:
            name = address.display_name
        if name is not None:
            name, was_cleaned = clean_name(name)
            if was_cleaned:
                cleaned.append("name")
        tag = None if language is None else clean_language(language)
        values: dict[str, str] = {}
        for raw_key, raw_value in (attributes or {}).items():
            key = attribute_key(raw_key)
            if not key or key in RESERVED_KEYS:
                raise InvalidField(
                    "attributes",
                    f"{raw_key!r} cannot name an attribute",
                    "Use a word like city or organisation (not email, name or language).",
                )
            value, was_cleaned = clean_value(raw_value, key)
            if was_cleaned:
                cleaned.append(f"attributes.{key}")
            values[key] = value
    except InvalidField as exc:
        reason = exc.reason[0].upper() + exc.reason[1:]
        raise InvalidSubscriber(exc.field, f"{reason}.", hint=exc.hint) from None
    return NormalisedSubscriber(address, name, tag, values, tuple(cleaned))
