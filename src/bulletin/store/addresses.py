"""Email address validation and normalisation for the store.

Every address goes through email-validator's rules (no DNS unless asked): the domain is
lower-cased and IDNA-handled (stored in its Unicode form, with the ``xn--`` form beside it),
the local part is kept as written (NFC), and the lower-cased address is the identity used for
uniqueness. ``Ion <ion@example.ro>`` is accepted: the address is extracted and the display
name offered to the caller (the importer uses it when the row has no name).

email-validator checks about 28,000 addresses a second, two thirds of it in the domain part
(and an IDN domain costs ~400 µs). An import of a million rows cannot afford that, so
addresses with a plain ASCII local part take a fast path that gives exactly email-validator's
answer: the local part is matched against the same dot-atom grammar, and each distinct
domain, IDN or not, is validated once by email-validator itself and cached. Everything else
(a Unicode local part, quotes, display names, odd lengths, the RFC 2142 role names it
lower-cases) goes through email-validator directly. A test compares the two paths.

RFC 5321's limits hold on both paths: at most 254 octets for the address (email-validator
always checks it) and at most 64 octets before the @. email-validator checks the second only
in its ``strict`` mode and counts characters, so the slow path asks for ``strict`` and then
counts the UTF-8 octets of a non-ASCII local part itself (RFC 6531 keeps the limits in
octets); the fast path hands any local part over 64 characters to the slow path, so both
give the same answer in the same words.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
# The domain may be Unicode: it is checked by email-validator (once) either way.
_FAST = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([^\s@<>()\[\]\\,;:\"]+)\Z")
_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_DISPLAY = re.compile(r"(.*?)<([^<>]*)>\Z", re.DOTALL)
_MAX_BYTES = 254  # RFC 5321 path limit as email-validator applies it
MAX_LOCAL_OCTETS = 64
"""RFC 5321 section 4.5.3.1.1: the longest local part (the part before the @), in octets."""
# Whitespace a spreadsheet cell may carry around an address: NBSP, zero-width space, BOM.
_STRIP = " \t\r\n\v\f\u00a0\u200b\u2060\ufeff"
_DOMAIN_CACHE_MAX = 50_000


class InvalidAddress(ValueError):
    """The text is not a valid email address; ``str()`` says why, in plain words."""


class Address(NamedTuple):
    """A valid, normalised address (a tuple: an import builds a million of them)."""

    email: str
    """Normalised: domain lower-cased in Unicode form, local part as written."""
    key: str
    """``email`` lower-cased: the identity used for uniqueness."""
    ascii_email: str | None
    """With the domain in IDNA ASCII (``xn--``); None when the local part is non-ASCII."""
    smtputf8: bool
    """The local part is non-ASCII: delivery needs a server with SMTPUTF8."""
    display_name: str | None = None
    """The name given as ``Name <address>``, if any."""


class AddressValidator:
    """Validates addresses with a per-domain cache; one instance per import or command."""

    def __init__(self, *, check_dns: bool = False) -> None:
        self.check_dns = check_dns
        self._domains: dict[str, tuple[str, str] | str] = {}
        self._deliverable: dict[str, str | None] = {}

    def __call__(self, text: str) -> Address:
        """Validate ``text``; raise :class:`InvalidAddress` with a reason."""
        text = text.strip(_STRIP)
        if text[:7].lower() == "mailto:":
            text = text[7:].strip(_STRIP)
        if not text:
            raise InvalidAddress("no email address")
        if text.endswith(">") and "<" in text:
            return self._with_display_name(text)
        m = _FAST.match(text)
        if m is not None and len(text.encode()) <= _MAX_BYTES:
            local, domain_in = m.groups()
            if len(local) <= MAX_LOCAL_OCTETS and local.lower() not in _ROLE_NAMES:
                info = self._domain(domain_in)
                if isinstance(info, str):
                    raise InvalidAddress(info)
                domain, ascii_domain = info
                email = f"{local}@{domain}"
                ascii_email = f"{local}@{ascii_domain}"
                if len(email.encode()) <= _MAX_BYTES and len(ascii_email) <= _MAX_BYTES:
                    self._check_dns(ascii_domain)
                    return Address(email, email.lower(), ascii_email, False)
        return self._slow(text)

    def _with_display_name(self, text: str) -> Address:
        # email-validator only takes ASCII atoms as an unquoted display name; people write
        # "Ștefan Țiriac <stefan@example.ro>", so the name is split off here, any text.
        m = _DISPLAY.match(text)
        if m is None:
            raise InvalidAddress("write a name and address as: Name <address@example.org>")
        name, inner = m.group(1).strip(_STRIP), m.group(2)
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        address = self(inner)
        return address._replace(display_name=name.strip() or None)

    def _slow(self, text: str) -> Address:
        try:
            result = validate_email(
                text, check_deliverability=False, allow_smtputf8=True, strict=True
            )
        except EmailNotValidError as exc:
            raise InvalidAddress(str(exc)) from None
        octets = len(result.local_part.encode())
        if octets > MAX_LOCAL_OCTETS:
            # Only a non-ASCII or quoted local part gets here: strict mode counted characters.
            raise InvalidAddress(
                f"The email address is too long before the @-sign ({octets} bytes once "
                f"encoded, at most {MAX_LOCAL_OCTETS})."
            )
        self._check_dns(result.ascii_domain)
        return Address(
            result.normalized,
            result.normalized.lower(),
            result.ascii_email,
            bool(result.smtputf8),
        )

    def _domain(self, domain: str) -> tuple[str, str] | str:
        info = self._domains.get(domain)
        if info is None:
            try:
                result = validate_email(f"a@{domain}", check_deliverability=False)
                info = (result.domain, result.ascii_domain)
            except EmailNotValidError as exc:
                info = str(exc)
            if len(self._domains) >= _DOMAIN_CACHE_MAX:
                self._domains.clear()  # bounded memory on files with endless distinct domains
            self._domains[domain] = info
        return info

    def _check_dns(self, ascii_domain: str) -> None:
        if not self.check_dns:
            return
        if ascii_domain not in self._deliverable:
            try:
                validate_email(f"a@{ascii_domain}", check_deliverability=True)
                reason = None
            except EmailNotValidError as exc:
                reason = str(exc)
            if len(self._deliverable) >= _DOMAIN_CACHE_MAX:
                self._deliverable.clear()
            self._deliverable[ascii_domain] = reason
        reason = self._deliverable[ascii_domain]
        if reason is not None:
            raise InvalidAddress(reason)


def address_key(text: str) -> str:
    """The lookup key for an address typed by a user, valid or not (for show/remove)."""
    try:
        return AddressValidator()(text).key
    except InvalidAddress:
        return text.strip(_STRIP).lower()
