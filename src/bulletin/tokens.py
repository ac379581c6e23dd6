"""Signed tokens for unsubscribe links, mailto unsubscribes, VERP return paths, sign-up
confirmations and preferences pages.

A token names a subscriber and a list (or every list) and proves that bulletin issued it.
It travels in a URL path (``/u/<token>``), in a plus-address (``unsubscribe+<token>@x``) and
in a VERP envelope sender, where a local part holds at most 64 octets -- so tokens are short
(26 to 39 characters for ids up to 2**40) and use only ``A-Z a-z 0-9 - _``.

Layout, base64url without padding::

    header (1 byte: format version << 4 | key id) | subscriber id | list id + 1 | MAC (16 bytes)

Ids are unsigned LEB128 varints; a list id of 0 on the wire means "every list". The MAC is
HMAC-SHA256 truncated to 128 bits, keyed with a subkey derived from the secret key *and the
purpose* (``unsubscribe``, ``bounce``, ``confirm``, ``preferences``), so a token made for one
purpose never verifies as another. A ``confirm`` token carries a sign-up id and the unix time
it was made instead of the two ids, and expires after :data:`CONFIRM_VALID_SECONDS`. The
key id is 4 bits of a hash of the key: it only picks which keys to try after a
rotation and says nothing about the key. Tokens carry no address; only confirmation tokens expire.

Keys come from ``BULLETIN_SECRET_KEY`` (several keys separated by commas or whitespace, the
first one current) or else from ``.bulletin/secret_key`` in the workspace (one key a line,
newest first, created on first use with mode 0600). Older keys keep verifying the tokens
already mailed; :func:`rotate_key` puts a new key first. Keys are never printed or logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bulletin.errors import BulletinError
from bulletin.workspace import Workspace, read_secret_file

Purpose = Literal["unsubscribe", "bounce", "confirm", "preferences"]
PURPOSES: tuple[Purpose, ...] = ("unsubscribe", "bounce", "confirm", "preferences")

CONFIRM_VALID_SECONDS = 7 * 24 * 3600
"""How long a confirmation link works (the sign-up row itself is purged after 30 days)."""

KEY_ENV = "BULLETIN_SECRET_KEY"
KEY_FILE = "secret_key"
MIN_KEY_CHARS = 16
"""Shorter keys are refused: they are typed by hand, not generated."""

_VERSION = 1
_MAC_BYTES = 16  # 128 bits: forging one token takes ~2**128 guesses against the server
_MAX_VARINT_BYTES = 10  # 70 bits: room for 2**63 (the largest list id + 1)
_MAX_ID = 2**63 - 1
# A header, two one-byte varints and the MAC at least; two 10-byte varints at most.
_MIN_RAW = 1 + 1 + 1 + _MAC_BYTES
_MAX_RAW = 1 + 2 * _MAX_VARINT_BYTES + _MAC_BYTES
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{26,50}")
_KEY_SPLIT = re.compile(r"[\s,]+")
_SHA256_BLOCK = 64
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FILE_HEADER = (
    "# bulletin signing keys for unsubscribe links: one a line, newest first.\n"
    "# Older keys still verify links already mailed. Never share or commit this file.\n"
)


@dataclass(frozen=True)
class TokenData:
    """What a verified token says: a subscriber id and a list id (None: every list)."""

    subscriber_id: int
    list_id: int | None


@dataclass(frozen=True)
class UnsubscribeToken(TokenData):
    """A verified unsubscribe token (link, one-click POST or mailto plus-address)."""


@dataclass(frozen=True)
class BounceToken(TokenData):
    """A verified bounce token (the VERP part of an envelope sender)."""


@dataclass(frozen=True)
class PreferencesToken(TokenData):
    """A verified preferences token (the footer's "preferences" link; list_id is None)."""


@dataclass(frozen=True)
class ConfirmToken:
    """A verified, unexpired confirmation token: which sign-up, and when it was mailed."""

    signup_id: int
    issued_at: int
    """Unix time (seconds) the token was made; a sign-up created later is another one."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """``(value, next position)``, or None when truncated, too long or not minimal."""
    value = shift = 0
    start = pos
    while pos < end and pos - start < _MAX_VARINT_BYTES:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            # A final zero byte after others encodes the same number in more bytes.
            if byte == 0 and pos - start > 1:
                return None
            return value, pos
    return None


def _key_id(key: bytes) -> int:
    return hashlib.sha256(b"bulletin-key-id\x00" + key).digest()[0] & 0x0F


def _subkey(key: bytes, purpose: str) -> bytes:
    return hmac.digest(key, b"bulletin-token\x00" + purpose.encode("ascii"), "sha256")


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """The inner and outer SHA-256 states of HMAC-SHA256 keyed with ``key`` (RFC 2104)."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD))
    outer = hashlib.sha256(key.translate(_OPAD))
    return inner, outer


def _mac(states: tuple[Any, Any], body: bytes) -> bytes:
    """The token MAC of ``body``: HMAC-SHA256 from prepared states, truncated."""
    inner, outer = states
    state = inner.copy()
    state.update(body)
    final = outer.copy()
    final.update(state.digest())
    digest: bytes = final.digest()
    return digest[:_MAC_BYTES]


def _check_id(name: str, value: int) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= _MAX_ID:
        raise ValueError(f"{name} {value} is out of range 0..2**63-1")


def parse_keys(text: str, source: str) -> tuple[str, ...]:
    """Keys from ``text`` (commas, whitespace or lines between them; ``#`` lines skipped).

    ``source`` names where they came from in error messages, which never show a key.
    """
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    keys = [k for k in _KEY_SPLIT.split("\n".join(lines)) if k]
    if not keys:
        raise BulletinError(
            f"{source} holds no key.",
            hint="Put a key in it, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
        )
    for i, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_CHARS:
            raise BulletinError(
                f"Key {i} in {source} is {len(key)} characters long; keys need at least "
                f"{MIN_KEY_CHARS}.",
                hint="Generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
            )
    return tuple(dict.fromkeys(keys))  # a key listed twice is the same key


class TokenSigner:
    """Makes and checks tokens with the newest key; every key verifies.

    ``keys`` are newest first. The signer's repr shows how many keys it holds, never a key.
    """

    __slots__ = ("_current", "_by_id", "_count", "_signing")

    _by_id: dict[int, tuple[dict[str, tuple[Any, Any]], ...]]

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise ValueError("TokenSigner needs at least one key")
        raw = [k.encode("utf-8") if isinstance(k, str) else bytes(k) for k in keys]
        by_id: dict[int, list[dict[str, tuple[Any, Any]]]] = {}
        derived: list[tuple[int, dict[str, bytes]]] = []
        for key in raw:
            subkeys: dict[str, bytes] = {p: _subkey(key, p) for p in PURPOSES}
            kid = _key_id(key)
            derived.append((kid, subkeys))
            # Verifying keys prepared once too (``bulletin serve`` checks a token per request,
            # in its event loop: no GIL hand-over there either).
            by_id.setdefault(kid, []).append({p: _hmac_states(k) for p, k in subkeys.items()})
        self._current = derived[0]
        # HMAC-SHA256 (RFC 2104) as two pre-keyed SHA-256 states, copied per token: the
        # one-shot hmac.digest() releases the GIL around OpenSSL, and getting it back behind
        # busy sender threads costs up to the 5 ms switch interval per call (measured by
        # bench/send.py); hashlib keeps the GIL for short inputs, and its copy/update/digest
        # are C calls, about half the cost of copying an hmac.HMAC object.
        self._signing = {p: _hmac_states(k) for p, k in self._current[1].items()}
        self._by_id = {kid: tuple(v) for kid, v in by_id.items()}
        self._count = len(raw)

    @classmethod
    def from_workspace(cls, workspace: Workspace) -> TokenSigner:
        """A signer with the workspace's keys (see :func:`load_keys`)."""
        return cls(load_keys(workspace))

    def __repr__(self) -> str:
        return f"<TokenSigner with {self._count} key{'s' if self._count != 1 else ''}>"

    def sign(self, purpose: Purpose, subscriber_id: int, list_id: int | None) -> str:
        """A token for ``purpose`` naming the subscriber and list (None: every list)."""
        _check_id("subscriber_id", subscriber_id)
        if list_id is not None:
            _check_id("list_id", list_id)
        return self._sign_pair(purpose, subscriber_id, 0 if list_id is None else list_id + 1)

    def _sign_pair(self, purpose: Purpose, first: int, second: int) -> str:
        """The token carrying two unsigned numbers for ``purpose``."""
        kid = self._current[0]
        body = bytes(((_VERSION << 4) | kid,)) + _varint(first) + _varint(second)
        mac = _mac(self._signing[purpose], body)
        encoded = binascii.b2a_base64(body + mac, newline=False).translate(_URLSAFE)
        return encoded.rstrip(b"=").decode("ascii")

    def verify(self, purpose: Purpose, token: str) -> TokenData | None:
        """The token's data if one of our keys signed it for ``purpose``, else None.

        Every failure (foreign, modified, truncated, extended, other purpose, not a token at
        all) gives the same None: a caller learns nothing about why.
        """
        pair = self._verify_pair(purpose, token)
        if pair is None:
            return None
        list_id = pair[1] - 1 if pair[1] else None
        cls = {"unsubscribe": UnsubscribeToken, "preferences": PreferencesToken}.get(
            purpose, BounceToken
        )
        return cls(pair[0], list_id)

    def _verify_pair(self, purpose: Purpose, token: str) -> tuple[int, int] | None:
        """The two numbers of a token our keys signed for ``purpose``, else None."""
        if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:  # binascii.Error: a length no base64 text has
            return None
        # Several texts decode to the same bytes (unused low bits of the last character);
        # only the one we write is a token.
        if len(raw) < _MIN_RAW or len(raw) > _MAX_RAW:
            return None
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii"):
            return None
        header = raw[0]
        if header >> 4 != _VERSION:
            return None
        end = len(raw) - _MAC_BYTES
        first = _read_varint(raw, 1, end)
        if first is None:
            return None
        second = _read_varint(raw, first[1], end)
        if second is None or second[1] != end:
            return None
        body, mac = raw[:end], raw[end:]
        ok = False
        for states in self._by_id.get(header & 0x0F, ()):
            expected = _mac(states[purpose], body)
            # Constant time: a byte-by-byte comparison would leak how much of a guess is right.
            ok |= hmac.compare_digest(expected, mac)
        if not ok:
            return None
        return first[0], second[0]

    def unsubscribe_token(self, subscriber_id: int, list_id: int | None) -> str:
        """The token for unsubscribing ``subscriber_id`` from ``list_id`` (None: all)."""
        return self.sign("unsubscribe", subscriber_id, list_id)

    def verify_unsubscribe(self, token: str) -> UnsubscribeToken | None:
        """The subscriber and list of a valid unsubscribe token, else None."""
        data = self.verify("unsubscribe", token)
        return data if isinstance(data, UnsubscribeToken) else None

    def bounce_token(self, subscriber_id: int, list_id: int | None) -> str:
        """The token for a VERP envelope sender (``bounces+<token>@domain``)."""
        return self.sign("bounce", subscriber_id, list_id)

    def verify_bounce(self, token: str) -> BounceToken | None:
        """The subscriber and list of a valid bounce token, else None."""
        data = self.verify("bounce", token)
        return data if isinstance(data, BounceToken) else None

    def preferences_token(self, subscriber_id: int) -> str:
        """The token of a subscriber's preferences page (the footer link of every message).

        A purpose of its own rather than the unsubscribe token: the page can subscribe to
        other lists and shows the name, so it must not open with a token that travels in
        List-Unsubscribe headers and mailto addresses.
        """
        return self.sign("preferences", subscriber_id, None)

    def verify_preferences(self, token: str) -> PreferencesToken | None:
        """The subscriber of a valid preferences token, else None."""
        data = self.verify("preferences", token)
        return data if isinstance(data, PreferencesToken) else None

    def confirm_token(self, signup_id: int, issued_at: float) -> str:
        """The token of a sign-up's confirmation link, made at unix time ``issued_at``."""
        _check_id("signup_id", signup_id)
        return self._sign_pair("confirm", signup_id, int(issued_at))

    def verify_confirm(
        self, token: str, now: float, valid_seconds: int = CONFIRM_VALID_SECONDS
    ) -> ConfirmToken | None:
        """The sign-up of a valid confirmation token made less than ``valid_seconds`` before
        ``now`` (unix time), else None -- expired looks like forged."""
        pair = self._verify_pair("confirm", token)
        if pair is None:
            return None
        signup_id, issued = pair
        # A token from the future (beyond clock skew between serve processes) is not ours.
        if not now - valid_seconds < issued <= now + 300:
            return None
        return ConfirmToken(signup_id, issued)


def key_file(workspace: Workspace) -> Path:
    """Where the workspace keeps its signing keys when BULLETIN_SECRET_KEY is unset."""
    return workspace.secrets_dir / KEY_FILE


def load_keys(workspace: Workspace, *, create: bool = True) -> tuple[str, ...]:
    """The signing keys, newest first: from BULLETIN_SECRET_KEY, else the key file.

    The key file is created with a fresh random key on first use (unless ``create`` is
    false). A key file that other users can read is refused.
    """
    env = os.environ.get(KEY_ENV, "")
    if env.strip():
        return parse_keys(env, KEY_ENV)
    path = key_file(workspace)
    if create and not path.exists():
        try:
            _create_key_file(path)
        except OSError as exc:
            raise BulletinError(
                f"Cannot create the signing key {workspace.relpath(path)}: {exc.strerror or exc}.",
                hint=f"Make {workspace.relpath(path.parent)}/ writable for this user, or set "
                f"{KEY_ENV} to the key that signs this workspace's links.",
            ) from None
    return parse_keys(read_secret_file(path), workspace.relpath(path))


def _private_dir(folder: Path) -> None:
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask


def _write_private(folder: Path, text: str) -> Path:
    """A new file in ``folder`` holding ``text``, mode 0600, flushed to disk."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".secret_key.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def create_key(secrets_dir: Path) -> Path:
    """Give a new workspace its signing key (``bulletin init``), so that ``bulletin serve``
    can sign sign-up confirmations before anything was ever sent; kept if one exists."""
    path = secrets_dir / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    return path


def _create_key_file(path: Path) -> None:
    _private_dir(path.parent)
    tmp = _write_private(path.parent, _FILE_HEADER + secrets.token_urlsafe(32) + "\n")
    try:
        # link() fails if the file appeared meanwhile: two first runs at once keep one key,
        # and no reader ever sees a half-written file.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def rotate_key(workspace: Workspace) -> int:
    """Put a new random key first in the key file; returns how many keys it now holds.

    Tokens mailed before keep verifying with the older keys; delete a key's line once no
    message carrying its tokens matters any more. Refused when BULLETIN_SECRET_KEY is set,
    because the file is then not used.
    """
    if os.environ.get(KEY_ENV, "").strip():
        raise BulletinError(
            f"The signing keys come from {KEY_ENV}, so there is no key file to rotate.",
            hint=f"Put a new key in front of the others in {KEY_ENV} (separated by a comma).",
        )
    path = key_file(workspace)
    if not path.exists():
        _create_key_file(path)
        return len(load_keys(workspace))
    old = read_secret_file(path)
    parse_keys(old, workspace.relpath(path))  # refuse to build on a broken file
    lines = old.splitlines()
    comments = list(_leading_comments(lines))
    rest = lines[len(comments) :]
    text = "\n".join([*comments, secrets.token_urlsafe(32), *rest]) + "\n"
    tmp = _write_private(path.parent, text)
    os.replace(tmp, path)  # atomic: readers see the old file or the new one
    return len(load_keys(workspace))


def _leading_comments(lines: Iterable[str]) -> Iterable[str]:
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            return
        yield line
