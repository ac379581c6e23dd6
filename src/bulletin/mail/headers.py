"""Header values built by hand for the hot path: addresses, display names, folding.

The standard library's header machinery costs tens of microseconds per header, and three of
its behaviours matter here:

* ``email.utils.formataddr`` neither folds nor splits long encoded-words, so a long name can
  give a line far over 78 characters and encoded-words over RFC 2047's 75.
* The ``email.policy`` folder can put the space between two words *between* two adjacent
  encoded-words, where RFC 2047 readers drop it: the sample issue's subject "... evenimente
  și știri" came out as "... șiștiri" in a mail client.
* CPython's parser (up to 3.13, gh-128110) keeps the folding whitespace between two adjacent
  encoded-words in a display name, while RFC 2047 section 6.2 says readers drop it. A name
  split into several encoded-words therefore reads differently in Python and in mail clients.

So display names are written as *runs*: ASCII words stay readable (bare atoms, or one
quoted-string when they hold specials), and each run of consecutive words needing encoding
becomes one ``=?utf-8?b?...?=`` word with its inner spaces encoded. Encoded-words are then
never adjacent -- both kinds of reader agree -- unless a run is longer than one encoded-word
holds (over 39 UTF-8 bytes of consecutive non-ASCII words), where the run is split after a
space when possible: RFC readers see the exact name, Python <= 3.13 sees one extra space.
Unstructured text (Subject) uses the same runs; there Python's parser follows the RFC.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Iterable

LINE_LIMIT = 78
"""RFC 5322's recommended line length; every header line we write stays within it, except a
single token that cannot be folded (a long address or ASCII word of a name), which stays far
below the hard limit of 998."""

MAX_NAME_CHARS = 256
"""Display names longer than this are cut: a name is not a place for a paragraph."""

_EW_PREFIX = "=?utf-8?b?"
_EW_MAX_BYTES = 39
# 39 bytes -> 52 base64 characters -> a 64-character encoded-word: within RFC 2047's 75, and
# "Subject: " or "List-Id: " plus one word is within 78, so no header is folded right after
# its colon (which Python's parser reads as a leading space).

# Control characters (C0, DEL, C1), line and paragraph separators and lone surrogates.
# Replaced by spaces so that no subscriber-supplied text can end a header line.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
# Addresses: atext (RFC 5322) widened by every non-ASCII character (RFC 6532); control and
# space characters among those are refused afterwards with str.isprintable().
_U = r"\x80-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_U}-]+"
_LABEL = rf"[A-Za-z0-9{_U}](?:[A-Za-z0-9{_U}-]*[A-Za-z0-9{_U}])?"
_ADDRESS = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@({_LABEL}(?:\.{_LABEL})*)")
_TOKEN = re.compile(r"[A-Za-z0-9._~=-]+")
_URL = re.compile(r"https?://[!-~]+")
_URL_FORBIDDEN = re.compile(r'[<>",]')
_MSGID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")


class HeaderValueError(ValueError):
    """A value cannot be put in a header safely (the caller turns it into a user error)."""


def clean_text(text: str) -> str:
    """One line of header text: control characters and line breaks become spaces, runs of
    whitespace one space, no leading or trailing space."""
    if _UNSAFE.search(text) is not None:
        text = _UNSAFE.sub(" ", text)
    if "  " in text or text[:1].isspace() or text[-1:].isspace() or not text.isprintable():
        # isprintable() is False for other Unicode spaces (NBSP, EM SPACE...) and for format
        # characters; split() normalises the former and leaves the latter (emoji ZWJ) intact.
        text = " ".join(text.split())
    return text


def sanitise_display_name(name: str) -> str:
    """A display name as it will appear: :func:`clean_text`, at most MAX_NAME_CHARS."""
    name = clean_text(name)
    return name[:MAX_NAME_CHARS].rstrip() if len(name) > MAX_NAME_CHARS else name


def split_address(address: str) -> tuple[str, str]:
    """``(local, domain)`` of a plain ``local@domain`` address, or HeaderValueError.

    Only dot-atom local parts (ASCII or UTF-8) and host-name domains: no quoted local parts,
    no address literals, no whitespace or control characters anywhere.
    """
    m = _ADDRESS.fullmatch(address)
    if m is None or not address.isprintable() or len(address) > 254:
        raise HeaderValueError(f"{address!r} is not a plain email address (local@domain)")
    return m.group(1), m.group(2)


def wire_address(address: str) -> str:
    """The address as written in headers and in RCPT TO.

    An ASCII local part with an internationalised domain gets the domain's A-label
    (``xn--...``) so the message needs no SMTPUTF8; a non-ASCII local part is kept as UTF-8,
    which only an SMTPUTF8 server accepts (see :func:`needs_smtputf8`).
    """
    local, domain = split_address(address)
    if address.isascii() or not local.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        raise HeaderValueError(f"{address!r} has a domain that is not a valid IDN") from None


def needs_smtputf8(address: str) -> bool:
    """True when the local part is non-ASCII: only SMTPUTF8 (RFC 6531) can carry it."""
    return not split_address(address)[0].isascii()


def encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 base64 encoded-words of at most 64 characters each.

    Splits only between characters (RFC 2047 forbids splitting one), after a space when the
    39-byte window holds one (see the module docstring for why).
    """
    data = text.encode("utf-8")
    if len(data) <= _EW_MAX_BYTES:
        return [_EW_PREFIX + base64.b64encode(data).decode("ascii") + "?="]
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    last_space = -1
    for ch in text:
        n = len(ch.encode("utf-8"))
        if size + n > _EW_MAX_BYTES:
            cut = len(chunk)
            if last_space >= 0:
                rest = "".join(chunk[last_space + 1 :]).encode("utf-8")
                if len(rest) + n <= _EW_MAX_BYTES:
                    cut = last_space + 1
            words.append("".join(chunk[:cut]))
            chunk = chunk[cut:]
            size = len("".join(chunk).encode("utf-8"))
            last_space = -1  # the kept tail follows the last space
        chunk.append(ch)
        size += n
        if ch == " ":
            last_space = len(chunk) - 1
    if chunk:
        words.append("".join(chunk))
    return [_EW_PREFIX + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words]


def _needs_encoding(word: str) -> bool:
    # "=?" would be decoded as an encoded-word by lenient readers even inside quotes.
    # A long ASCII word stays a word: it makes a line over 78 characters (a SHOULD; names
    # are capped far below the 998 limit) instead of encoded-words that Python misreads.
    return not word.isascii() or "=?" in word


def phrase_pieces(name: str) -> list[str]:
    """A sanitised display name as unfoldable pieces, separated by single spaces on output.

    Folding happens only between pieces; an encoded-word is at most 64 characters, an ASCII
    word as long as it is.
    """
    if not name:
        return []
    if _ATOM.fullmatch(name.replace(" ", "")) and "=?" not in name:
        return name.split(" ")  # the common case: plain ASCII words
    runs: list[tuple[bool, list[str]]] = []
    for word in name.split(" "):
        enc = _needs_encoding(word)
        if runs and runs[-1][0] == enc:
            runs[-1][1].append(word)
        else:
            runs.append((enc, [word]))
    pieces: list[str] = []
    for enc, words in runs:
        if enc:
            pieces.extend(encoded_words(" ".join(words)))
        elif all(_ATOM.fullmatch(w) for w in words):
            pieces.extend(words)
        else:
            # One quoted-string for the whole ASCII run; it may still be folded at its
            # spaces (unfolding restores them), hence one piece per word.
            quoted = [w.replace("\\", "\\\\").replace('"', '\\"') for w in words]
            quoted[0] = '"' + quoted[0]
            quoted[-1] = quoted[-1] + '"'
            pieces.extend(quoted)
    return pieces


def text_pieces(text: str) -> list[str]:
    """Unstructured header text (a Subject) as pieces: ASCII words as they are, each run of
    words needing encoding as encoded-words. Whitespace must already be single spaces."""
    pieces: list[str] = []
    run: list[str] = []
    for word in text.split(" ") if text else []:
        if _needs_encoding(word):
            run.append(word)
            continue
        if run:
            pieces.extend(encoded_words(" ".join(run)))
            run = []
        pieces.append(word)
    if run:
        pieces.extend(encoded_words(" ".join(run)))
    return pieces


def fold(name: str, pieces: Iterable[str]) -> str:
    """A header line ``Name: piece piece...`` folded before pieces, ending in CRLF.

    The first piece always stays on the first line: folding right after the colon is legal
    but Python's parser then reads the value with a leading space.
    """
    out = [name, ":"]
    col = len(name) + 1
    first = True
    for piece in pieces:
        if col + 1 + len(piece) > LINE_LIMIT and not first:
            out.append("\r\n ")
            col = 1 + len(piece)
        else:
            out.append(" ")
            col += 1 + len(piece)
        out.append(piece)
        first = False
    out.append("\r\n")
    return "".join(out)


def address_header(name: str, display_name: str, address: str) -> str:
    """``Name: display <address>`` (already-sanitised display name, wire-form address)."""
    if not display_name:
        return f"{name}: {address}\r\n"
    pieces = phrase_pieces(display_name)
    line = f"{name}: {' '.join(pieces)} <{address}>"
    if len(line) <= LINE_LIMIT:
        return line + "\r\n"
    pieces.append(f"<{address}>")
    return fold(name, pieces)


def check_token(token: str) -> str:
    """An unsubscribe/VERP token, if it is safe inside a local part and a URL."""
    if _TOKEN.fullmatch(token) is None or len(token) > 200:
        raise HeaderValueError(f"token {token!r} has characters other than A-Z a-z 0-9 . _ ~ = -")
    return token


def check_url(url: str) -> str:
    """An http(s) URL that can sit between angle brackets in a header."""
    if _URL.fullmatch(url) is None or _URL_FORBIDDEN.search(url) or len(url) > 900:
        raise HeaderValueError(
            f"unsubscribe URL {url[:120]!r} must be an http(s) URL of printable ASCII "
            'without spaces, <, >, " or commas'
        )
    return url


def check_msgid(msgid: str) -> str:
    """A Message-ID ``<left@right>`` of printable ASCII."""
    if _MSGID.fullmatch(msgid) is None or len(msgid) > 250:
        raise HeaderValueError(f"Message-ID {msgid[:120]!r} is not of the form <left@right>")
    return msgid


def list_label(text: str) -> str:
    """A List-Id label from a name: lowercase ASCII letters, digits and hyphens."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    label = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return label[:60].strip("-") or "newsletter"
