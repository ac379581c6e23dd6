"""Header values and addresses of inbound mail, and the signed tokens some addresses carry.

A bounce sent to a VERP envelope sender (``bounces+TOKEN@example.org``) and a mailto
unsubscribe (``unsubscribe+TOKEN@example.org``) name the subscriber in the address they
were delivered to. Which header shows that address depends on the receiving server
(``Delivered-To``, ``X-Original-To``, ``Envelope-To``...), so every one of them is read; the
token's signature, checked by the caller, is what makes an address trustworthy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses
from urllib.parse import unquote, urlsplit

RECIPIENT_HEADERS = (
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "x-envelope-to",
    "x-delivered-to",
    "to",
    "cc",
)
"""Headers that may name the address a message was delivered to, most specific first."""

_TOKEN = r"([A-Za-z0-9_-]+)"
_WS = re.compile(r"\s+")


def clean(value: object) -> str:
    """A header value as readable text: unfolded, RFC 2047 decoded, raw UTF-8 kept.

    Messages are parsed with the ``compat32`` policy, which keeps undecodable bytes as
    surrogates; they are read back as UTF-8 (RFC 6532 headers, Romanian in a DSN's
    ``Diagnostic-Code``) with anything else replaced.
    """
    text = str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except (ValueError, LookupError, UnicodeError):
            pass  # not valid RFC 2047 after all: keep the text as it is
    return _WS.sub(" ", text).strip()


def header_values(msg: Message, name: str) -> list[str]:
    """Every value of header ``name`` (any case), cleaned, in order."""
    wanted = name.lower()
    # raw_items: compat32 would hand back Header objects for values with 8-bit bytes.
    return [clean(v) for k, v in msg.raw_items() if k.lower() == wanted]


def header(msg: Message, name: str) -> str:
    """The first value of header ``name``, cleaned, or ``""``."""
    values = header_values(msg, name)
    return values[0] if values else ""


def addresses(values: Iterable[str]) -> list[str]:
    """The addresses in header values (``Name <a@b>``, ``<a@b>``, ``rfc822; a@b``...)."""
    out: list[str] = []
    for value in values:
        # DSN and ARF fields carry an address type first: "rfc822; a@b", "utf-8; a@b".
        if ";" in value and "<" not in value.partition(";")[0]:
            kind, _, rest = value.partition(";")
            if kind.strip().lower() in ("rfc822", "utf-8", "x-unknown"):
                value = rest
        for _name, address in getaddresses([value]):
            address = address.strip().strip("<>").strip()
            if "@" in address and address not in out:
                out.append(address)
    return out


def recipients(msg: Message) -> list[str]:
    """The addresses a message says it was delivered to (see :data:`RECIPIENT_HEADERS`)."""
    out: list[str] = []
    for name in RECIPIENT_HEADERS:
        for address in addresses(header_values(msg, name)):
            if address not in out:
                out.append(address)
    return out


class TokenAddress:
    """Recognises addresses that carry a token, e.g. ``bounces+TOKEN@example.org``.

    Built from a template with ``{token}`` (``sender.return_path``) or from a mailbox that
    plus-addressing extends (``sender.unsubscribe_mailto``). The fixed parts match in any
    case (servers may lower-case a domain, and local parts are compared case-blind by most);
    the token keeps its case, because it is base64.
    """

    def __init__(self, pattern: str) -> None:
        self._re = re.compile(pattern)

    @classmethod
    def from_template(cls, template: str) -> TokenAddress | None:
        """A matcher for ``template`` (``before{token}after``); None without ``{token}``."""
        if "{token}" not in template:
            return None
        before, _, after = template.partition("{token}")
        return cls(_fixed(before) + _TOKEN + _fixed_address_end(after))

    @classmethod
    def plus(cls, mailbox: str | None) -> TokenAddress:
        """A matcher for ``local+TOKEN@domain`` given ``local@domain``; any plus-address
        with a token after the last ``+`` when ``mailbox`` is None."""
        if not mailbox:
            return cls(r"[^@\s]*\+" + _TOKEN + r"@[^@\s]+")
        local, _, domain = mailbox.rpartition("@")
        return cls(_fixed(local + "+") + _TOKEN + _fixed_address_end("@" + domain))

    def tokens(self, candidates: Iterable[str]) -> list[str]:
        """The tokens of the ``candidates`` that have this shape, in order, without repeats."""
        out: list[str] = []
        for address in candidates:
            match = self._re.fullmatch(address.strip())
            if match and match.group(1) not in out:
                out.append(match.group(1))
        return out


def _fixed(text: str) -> str:
    return f"(?i:{re.escape(text)})" if text else ""


def _fixed_address_end(text: str) -> str:
    """``@domain`` matching the domain as written or in its IDNA (xn--) form."""
    local_end, at, domain = text.partition("@")
    if not at:
        return _fixed(text)
    forms = {domain.lower()}
    try:
        forms.add(domain.encode("idna").decode("ascii").lower())
    except UnicodeError:
        pass
    alternatives = "|".join(re.escape(f) for f in sorted(forms))
    return _fixed(local_end + "@") + f"(?i:{alternatives})"


def unsubscribe_tokens(list_unsubscribe: Iterable[str]) -> list[str]:
    """Token candidates in List-Unsubscribe values: ``.../u/TOKEN`` and ``mailto:x+TOKEN@y``.

    Candidates only: the caller verifies them (a foreign newsletter's link is not ours).
    """
    out: list[str] = []
    for value in list_unsubscribe:
        for uri in re.findall(r"<([^<>]+)>", value):
            uri = uri.strip()
            if uri.lower().startswith("mailto:"):
                address = unquote(uri[7:].partition("?")[0])
                found = TokenAddress.plus(None).tokens([address])
            else:
                last = urlsplit(uri).path.rstrip("/").rpartition("/")[2]
                found = [last] if re.fullmatch(_TOKEN, last) else []
            out.extend(t for t in found if t not in out)
    return out
