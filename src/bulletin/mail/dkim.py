"""DKIM signatures (RFC 6376): RSA-SHA256, relaxed/relaxed, through OpenSSL.

A :class:`DkimSigner` is the composer's :data:`~bulletin.mail.compose.Signer`: it takes a
finished message (CRLF line ends) and returns it with a ``DKIM-Signature:`` header in front.
Every recipient's message differs (To, Message-ID, the body slots), so each gets its own body
hash and RSA signature. The RSA operation, done by OpenSSL via ``cryptography``, is most of
the cost (~0.37 ms with a 2048-bit key); hashing an 87 KB body is the next (~0.07 ms), so
the rest avoids whole-body passes in Python: the body is matched against the previous one
block by block and only what changed is canonicalised again (:class:`_BodyHasher`).

Use :func:`load_dkim_signer` for the ``[dkim]`` configuration, and
:meth:`DkimSigner.dns_record` for the TXT record to publish.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterable, Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from bulletin.errors import BulletinError
from bulletin.workspace import Workspace, read_secret_file

DEFAULT_HEADERS = (
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
)
"""Header fields signed when present. RFC 8058 wants both List-Unsubscribe fields covered."""

MIN_KEY_BITS = 1024  # receivers ignore signatures made with shorter keys (RFC 8301)

_LINE = 78
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_SPACES = re.compile(rb" +")
# Header values are short: one regex for the runs that change (a tab, or two or more WSP).
_WSP_RUN = re.compile(rb"\t[ \t]*| [ \t]+")
_CRLF = b"\r\n"
_FOLD = (b" ", b"\t")
_PKCS1 = padding.PKCS1v15()
_PREHASHED = Prehashed(hashes.SHA256())
_CACHE_SIZE = 256

# Body hashing reuses the previous message's blocks (see _BodyHasher).
_BLOCK = 1024  # a reference block: at least this many bytes, ending at a line end
_SLACK = 4096  # how many changed bytes a resynchronisation looks past
_HEAD = 64  # bytes of a block searched for when resynchronising


def _squeeze(data: bytes) -> bytes:
    """Runs of spaces reduced to one space.

    Bodies hold thousands of single spaces and only a few runs (HTML indentation), so the
    runs are found with ``bytes.find`` instead of a regex that stops at every space.
    """
    pos = data.find(b"  ")
    if pos < 0:
        return data
    out: list[bytes] = []
    start = 0
    match = _SPACES.match
    while pos >= 0:
        end = match(data, pos).end()  # type: ignore[union-attr]  # data[pos] is a space
        out.append(data[start : pos + 1])
        start = end
        pos = data.find(b"  ", end)
    out.append(data[start:])
    return b"".join(out)


def _reduce_whitespace(data: bytes) -> bytes:
    """Step (a) of relaxed body canonicalisation: no WSP before CRLF, other runs one SP.

    Line-local: for ``data`` cut only right after CRLFs, reducing the pieces one by one
    gives the same bytes as reducing the whole.
    """
    # A run holding a tab becomes one space whatever it holds, so tabs can become spaces
    # first; then at most one space is left before each CRLF.
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    data = _squeeze(data)
    if b" \r\n" in data:
        data = data.replace(b" \r\n", _CRLF)
    return data


def _end_of_body(tail: bytes) -> bytes:
    """Step (b) on the last bytes of a reduced body: no empty lines at the end, a final CRLF.

    ``tail`` must hold the body's trailing CRLFs and at least one other byte before them,
    unless it is the whole body.
    """
    end = len(tail)
    while end >= 2 and tail[end - 2 : end] == _CRLF:
        end -= 2
    if end == 0:
        return b""  # the whole body is empty lines (see above)
    if end == len(tail):
        return tail + _CRLF  # no final line break: relaxed adds one
    return tail[: end + 2]


def canonical_body(body: bytes) -> bytes:
    """The relaxed body canonicalisation of RFC 6376 section 3.4.4.

    Whitespace at line ends is removed, other runs of spaces and tabs become one space, and
    empty lines at the end are dropped; a non-empty result ends with CRLF.
    """
    return _end_of_body(_reduce_whitespace(body))


class _Reference:
    """A body seen before, cut into blocks at line ends: each block's reduced form and the
    SHA-256 state after the blocks up to it. Never changed once built (threads share it)."""

    __slots__ = ("view", "offsets", "heads", "reduced", "states")

    def __init__(self, message: bytes, start: int) -> None:
        offsets = [0]
        reduced: list[bytes] = []
        states = [hashlib.sha256()]
        pos = start
        while True:
            cut = message.find(_CRLF, pos + _BLOCK - 2)
            if cut < 0:
                break  # the rest, shorter than a block or without a line end, is not kept
            cut += 2
            red = _reduce_whitespace(message[pos:cut])
            state = states[-1].copy()
            state.update(red)
            reduced.append(red)
            states.append(state)
            offsets.append(cut - start)
            pos = cut
        self.view = memoryview(message[start:pos])  # block k is view[offsets[k]:offsets[k+1]]
        self.offsets = tuple(offsets)
        # Searching for a block's first bytes, then comparing the rest, is several times
        # faster than searching for the whole block.
        self.heads = tuple(bytes(self.view[o : o + _HEAD]) for o in offsets[:-1])
        self.reduced = tuple(reduced)
        self.states = tuple(states)

    def matching(self, message: bytes, pos: int, i: int) -> int:
        """The end of the run of blocks from ``i`` that ``message`` repeats at ``pos``.

        Galloping then bisecting over block counts: a body differs from the reference in a
        few places, so long runs are confirmed with a few large memory comparisons instead
        of one comparison per block.
        """
        view, off, n = self.view, self.offsets, len(self.offsets) - 1
        base = pos - off[i]  # where the reference's offset 0 falls in message
        lo, step = i, 1  # blocks i..lo-1 are known to match
        while True:
            hi = min(lo + step, n)
            if hi == lo or not message.startswith(view[off[lo] : off[hi]], base + off[lo]):
                break
            lo = hi
            step *= 2
        while hi - lo > 1:  # blocks lo..hi-1 do not all match; find the first that does not
            mid = (lo + hi) // 2
            if message.startswith(view[off[lo] : off[mid]], base + off[lo]):
                lo = mid
            else:
                hi = mid
        return lo


class _BodyHasher:
    """The relaxed body hash of messages that are mostly the same bytes.

    Each recipient's body is the issue's static text with a few values in between, and a
    whole-body scan for whitespace runs costs about as much as SHA-256 itself. So the first
    body is kept as a reference cut into blocks at line ends; a later body is matched block
    by block (``startswith`` compares memory), and only the bytes between matched blocks --
    the recipient's values -- are reduced afresh. Leading blocks that match in a row reuse
    the reference's hash state as well. A body that matches less than half is reduced whole
    and becomes the new reference (another issue or template).

    Correct because reduction is line-local: blocks end with CRLF, and a block is accepted
    at a new place only right after a CRLF, so no whitespace run or line end spans a cut.
    """

    __slots__ = ("_ref",)

    def __init__(self) -> None:
        self._ref: _Reference | None = None

    def digest(self, message: bytes, start: int) -> bytes:
        """SHA-256 of the relaxed canonical form of ``message[start:]``."""
        ref = self._ref
        size = len(message) - start
        if ref is None:
            ref = self._ref = _Reference(message, start)
        pieces, lead, unknown = _match(ref, message, start)
        if unknown * 2 > size and size > 4 * _BLOCK:
            ref = self._ref = _Reference(message, start)
            pieces, lead, unknown = _match(ref, message, start)
        # Step (b) looks at the trailing CRLFs only: take pieces from the end until they
        # hold something else.
        k = len(pieces)
        tail = b""
        while k > 0:
            k -= 1
            tail = pieces[k] + tail
            if tail.rstrip(b"\r\n"):
                break
        tail = _end_of_body(tail)
        lead = min(lead, k)
        hasher = ref.states[lead].copy()
        update = hasher.update
        for piece in pieces[lead:k]:
            update(piece)
        update(tail)
        return hasher.digest()


def _match(ref: _Reference, message: bytes, start: int) -> tuple[list[bytes], int, int]:
    """``message[start:]`` as reduced pieces, how many of them are reference blocks from the
    start in a row, and how many bytes had to be reduced afresh."""
    off, reduced = ref.offsets, ref.reduced
    n = len(reduced)
    pos, end = start, len(message)
    i = ref.matching(message, pos, 0)
    pieces = list(reduced[:i])
    pos += off[i]
    lead = i
    unknown = 0
    while pos < end:
        # Reduce afresh up to where a coming block occurs again; if none does, the rest.
        found, i = _resync(ref, message, pos, i) or (end, n)
        pieces.append(_reduce_whitespace(message[pos:found]))
        unknown += found - pos
        if i < n:
            j = ref.matching(message, found, i)
            pieces += reduced[i:j]
            found += off[j] - off[i]
            i = j
        pos = found
    return pieces, lead, unknown


def _resync(ref: _Reference, message: bytes, pos: int, i: int) -> tuple[int, int] | None:
    """``(offset, block)``: where a coming block occurs next, right after a CRLF."""
    off, heads, view = ref.offsets, ref.heads, ref.view
    n = len(heads)
    # The block at ``i`` holds the change, so the next one is the likely match; ``i``
    # itself matches later only when bytes were inserted right before it. ``pos`` is
    # always at a line start.
    for j in (i + 1, i, i + 2, i + 3):
        if j >= n:
            continue
        block = view[off[j] : off[j + 1]]
        limit = pos + off[j + 1] - off[i] + _SLACK  # blocks i..j plus the change
        head = heads[j]
        q = message.find(head, pos + 1 if j == i else pos, limit)
        while q >= 0:
            if message[q - 2 : q] == _CRLF and message.startswith(block, q):
                return q, j
            q = message.find(head, q + 1, limit)
    return None


def canonical_header(field: bytes) -> bytes:
    """One header field (name, colon, value with its folds) in relaxed form (3.4.2), with
    a final CRLF."""
    name, _, value = field.partition(b":")
    value = value.replace(_CRLF, b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.strip(b" \t").lower() + b":" + value.strip(b" \t") + _CRLF


def split_head(message: bytes) -> tuple[list[bytes], int]:
    """The header fields of ``message`` (each with its folds, without the final CRLF) and
    the offset where the body starts."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError("message has no empty line between header and body (CRLF CRLF)")
    fields: list[bytes] = []
    for line in message[:end].split(_CRLF):
        if line[:1] in _FOLD and fields:  # a continuation line of the field above
            fields[-1] += _CRLF + line
        else:
            fields.append(line)
    return fields, end + 4


def _fold(tags: Iterable[tuple[str, str, bool]]) -> str:
    """``DKIM-Signature:`` with its tags, folded within 78 characters, ending with ``b=``.

    Each tag is ``(name, value, splittable)``: base64 values may be broken anywhere (FWS is
    allowed inside them), ``h=`` at its colons; others stay whole.
    """
    out = ["DKIM-Signature:"]
    col = len(out[0])
    for name, value, splittable in tags:
        text = f" {name}={value};"
        if col + len(text) <= _LINE:
            out.append(text)
            col += len(text)
            continue
        if not splittable:
            out.append("\r\n" + text)
            col = len(text)
            continue
        if col + len(name) + 3 > _LINE:
            out.append("\r\n")
            col = 0
        out.append(f" {name}=")
        col += len(name) + 2
        rest = value + ";"
        while rest:
            room = _LINE - col
            if len(rest) <= room:
                out.append(rest)
                col += len(rest)
                break
            cut = room
            if name == "h":  # break after a colon
                cut = rest.rfind(":", 0, room) + 1
                if cut <= 0:
                    cut = rest.find(":") + 1 or len(rest)
            out.append(rest[:cut] + "\r\n ")
            rest = rest[cut:]
            col = 1
    out.append("\r\n b=")
    return "".join(out)


def _fold_b(signature: str) -> str:
    """The b= value in lines: 75 characters after `` b=``, then 77 per continuation."""
    first, rest = signature[:75], signature[75:]
    lines = [first] + [rest[i : i + 77] for i in range(0, len(rest), 77)]
    return "\r\n ".join(lines) + "\r\n"


def parse_header_names(text: str | Sequence[str]) -> tuple[str, ...]:
    """Header names from a comma/colon/space separated string or a list; From required."""
    names = [n for n in re.split(r"[\s,:]+", text) if n] if isinstance(text, str) else list(text)
    for n in names:
        if _HEADER_NAME.fullmatch(n) is None:
            raise ValueError(f"{n!r} is not a header field name")
    if "from" not in {n.lower() for n in names}:
        raise ValueError("the signed headers must include From (RFC 6376 section 5.4)")
    # A name listed twice would sign a second, absent instance: once per name is meant.
    unique: dict[str, str] = {}
    for n in names:
        unique.setdefault(n.lower(), n)
    return tuple(unique.values())


class DkimSigner:
    """Signs messages for ``domain`` with the RSA key published at ``selector._domainkey``.

    ``private_key_pem`` is a PKCS#1 or PKCS#8 PEM RSA key without a passphrase. Calling the
    signer with a message returns the message with a ``DKIM-Signature`` header first. Raises
    ValueError for a key that is not RSA, too short, or unreadable, and for bad names.
    """

    __slots__ = (
        "selector",
        "domain",
        "headers",
        "timestamp",
        "_key",
        "_lower",
        "_wanted",
        "_canonical",
        "_prefix",
        "_body",
    )

    def __init__(
        self,
        selector: str,
        domain: str,
        private_key_pem: bytes | str,
        *,
        headers: str | Sequence[str] = DEFAULT_HEADERS,
        timestamp: bool = True,
    ) -> None:
        if _DNS_NAME.fullmatch(selector) is None:
            raise ValueError(f"selector {selector!r} is not a DNS name")
        if _DNS_NAME.fullmatch(domain) is None:
            raise ValueError(f"domain {domain!r} is not an ASCII domain name")
        pem = (
            private_key_pem.encode("ascii") if isinstance(private_key_pem, str) else private_key_pem
        )
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except TypeError:
            raise ValueError("the key is protected by a passphrase; store it without one") from None
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError("the file is not a PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the key is not an RSA key (DKIM here signs with rsa-sha256)")
        if key.key_size < MIN_KEY_BITS:
            raise ValueError(f"the RSA key has {key.key_size} bits; use at least 2048")
        self.selector = selector
        self.domain = domain.lower()
        self.headers = parse_header_names(headers)
        self.timestamp = timestamp
        self._key = key
        self._lower = tuple(n.lower() for n in self.headers)
        self._wanted = frozenset(n.encode("ascii") for n in self._lower)
        self._canonical: dict[bytes, bytes] = {}
        self._body = _BodyHasher()
        self._prefix = [
            ("v", "1", False),
            ("a", "rsa-sha256", False),
            ("c", "relaxed/relaxed", False),
            ("d", self.domain, False),
            ("s", selector, False),
        ]

    def __repr__(self) -> str:
        return f"<DkimSigner {self.dns_name} ({self._key.key_size}-bit RSA)>"

    @property
    def dns_name(self) -> str:
        """Where the public key is published: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record to publish at :attr:`dns_name`: ``v=DKIM1; k=rsa; p=...``."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"

    def __call__(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header prepended (CRLF line ends throughout)."""
        return self.signature_header(message) + message

    def signature_header(self, message: bytes) -> bytes:
        """The folded ``DKIM-Signature:`` header field for ``message``, ending with CRLF."""
        fields, body_start = split_head(message)
        body_hash = self._body.digest(message, body_start)

        # RFC 6376 5.4.2: a name listed once signs its last instance; a field present
        # several times is listed once per instance, taken from the bottom up.
        wanted = self._wanted
        by_name: dict[bytes, list[bytes]] = {}
        for f in fields:
            key = f[: f.find(b":")].rstrip(b" \t").lower()
            if key in wanted:
                by_name.setdefault(key, []).append(f)
        h_names: list[str] = []
        hasher = hashlib.sha256()
        cache = self._canonical
        for name in self._lower:
            instances = by_name.get(name.encode("ascii"))
            if not instances:
                continue
            for f in reversed(instances):
                h_names.append(name)
                # From, Subject, List-Id... are the same in every message of an issue.
                canonical = cache.get(f)
                if canonical is None:
                    canonical = canonical_header(f)
                    if len(cache) < _CACHE_SIZE:
                        cache[f] = canonical
                hasher.update(canonical)

        tags = list(self._prefix)
        if self.timestamp:
            tags.append(("t", str(int(time.time())), False))
        tags.append(("h", ":".join(h_names), True))
        tags.append(("bh", base64.b64encode(body_hash).decode("ascii"), True))
        unsigned = _fold(tags)
        # The signature covers its own header with b= empty and no final CRLF (3.7).
        hasher.update(canonical_header(unsigned.encode("ascii"))[:-2])
        signature = self._key.sign(hasher.digest(), _PKCS1, _PREHASHED)
        b = base64.b64encode(signature).decode("ascii")
        return (unsigned + _fold_b(b)).encode("ascii")


def load_dkim_signer(workspace: Workspace) -> DkimSigner | None:
    """The signer configured in ``[dkim]``, or None when ``dkim.key_file`` is not set.

    Raises :class:`BulletinError` when the key file is missing, readable by other users,
    unreadable, or does not hold an unencrypted RSA key of 1024 bits or more.
    """
    cfg = workspace.config.dkim
    if not cfg.key_file:
        return None
    path = workspace.root / cfg.key_file
    shown = workspace.relpath(path)
    generate = (
        f"Create one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
        f"-out {shown} && chmod 600 {shown}`, or remove dkim.key_file from bulletin.toml."
    )
    if not path.is_file():
        raise BulletinError(f"DKIM key file {shown} (dkim.key_file) does not exist.", hint=generate)
    try:
        pem = read_secret_file(path)
    except OSError as exc:
        raise BulletinError(
            f"Cannot read the DKIM key file {shown}: {exc.strerror}.",
            hint="Check the file's owner and permissions (it should be yours, mode 0600).",
        ) from None
    domain = cfg.domain or workspace.config.sender.from_email.rpartition("@")[2]
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        pass  # DkimSigner names the bad domain
    try:
        return DkimSigner(cfg.selector, domain, pem, headers=cfg.headers or DEFAULT_HEADERS)
    except ValueError as exc:
        raise BulletinError(f"Cannot sign with DKIM key {shown}: {exc}.", hint=generate) from None
