"""DKIM signing, checked by an independent verifier (dkimpy) against our published key."""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed

from bulletin import workspace as ws
from bulletin.content.loader import load_issue
from bulletin.errors import BulletinError, ConfigError
from bulletin.mail import MessageTemplate, Recipient, build_message_template
from bulletin.mail import dkim as bdkim
from bulletin.mail.dkim import DkimSigner, canonical_body, canonical_header, load_dkim_signer
from bulletin.render.pipeline import render_issue
from bulletin.render.values import sample_values

SLUG = "2014-10-clusterpolisee-03"
DOMAIN = "clusterpolisee.example.org"
SELECTOR = "s2026"

NAMES = [
    "Ana Popescu",
    "Ștefan Țărănescu",
    # Long enough to need several encoded-words and a folded To line.
    "Maria-Ecaterina Ștefănescu-Brâncoveanu Țăranu Îngerașu Ălăuțan Șerbănescu",
    "O'Brien, Jr.",
    '"citat" și <script>',
    "x" * 90,
    "",
]


@pytest.fixture(scope="module")
def pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def signer(pem: bytes) -> DkimSigner:
    return DkimSigner(SELECTOR, DOMAIN, pem)


def dns_for(signer: DkimSigner) -> Callable[..., bytes]:
    """A dnsfunc for dkimpy that answers only our selector's TXT record."""
    record = signer.dns_record().encode("ascii")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == signer.dns_name
        return record

    return dnsfunc


def verifies(data: bytes, signer: DkimSigner) -> bool:
    return bool(dkim.verify(data, dnsfunc=dns_for(signer)))


def _sample_template(
    workspace_dir: Path, signer: DkimSigner | None
) -> tuple[ws.Workspace, MessageTemplate, Callable[[int, str, str], Recipient]]:
    workspace = ws.load(workspace_dir)
    loaded = load_issue(workspace, workspace.issue_dir(SLUG))
    template = build_message_template(
        workspace.config, render_issue(workspace, loaded), sign=signer
    )

    def recipient(i: int, name: str, email: str = "") -> Recipient:
        email = email or f"r{i}@example.ro"
        values = {
            **sample_values(workspace, loaded.slug, email=email, name=name),
            "unsubscribe_url": f"http://127.0.0.1:8080/u/tok{i}",
        }
        return Recipient(email, name, values)

    return workspace, template, recipient


def _tags(data: bytes) -> dict[str, str]:
    m = re.match(rb"DKIM-Signature:(.*?)\r\n(?![ \t])", data, re.S)
    assert m is not None, data[:200]
    value = re.sub(r"\s+", "", m.group(1).decode("ascii"))
    return dict(t.split("=", 1) for t in value.split(";") if t)


def test_sample_issue_messages_verify_with_dkimpy(workspace_dir: Path, signer: DkimSigner) -> None:
    _, template, recipient = _sample_template(workspace_dir, signer)
    for i, name in enumerate(NAMES):
        data = template.personalise(recipient(i, name))
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
        assert verifies(data, signer), name
    # A non-ASCII local part: raw UTF-8 in To (SMTPUTF8); the signature still holds.
    data = template.personalise(recipient(99, "Ștefan", "ștefan@exemplu.ro"))
    assert "ștefan@exemplu.ro".encode() in data
    assert verifies(data, signer)


def test_signature_header_is_folded_and_covers_the_list_headers(
    workspace_dir: Path, signer: DkimSigner
) -> None:
    _, template, recipient = _sample_template(workspace_dir, signer)
    data = template.personalise(recipient(1, NAMES[2]))
    header = data[: re.search(rb"\r\n(?![ \t])", data).end()]  # type: ignore[union-attr]
    lines = header.split(b"\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines), lines
    assert all(line.startswith(b" ") for line in lines[1:])
    assert b"\n" not in header.replace(b"\r\n", b"") and b"\r" not in header.replace(b"\r\n", b"")
    tags = _tags(data)
    assert (tags["v"], tags["a"], tags["c"]) == ("1", "rsa-sha256", "relaxed/relaxed")
    assert (tags["d"], tags["s"]) == (DOMAIN, SELECTOR)
    assert abs(int(tags["t"]) - time.time()) < 60
    signed = tags["h"].split(":")
    for name in (
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "mime-version",
        "content-type",
        "reply-to",
    ):
        assert signed.count(name) == 1, name
    assert len(base64.b64decode(tags["b"])) == 256  # 2048-bit RSA
    body = data[data.index(b"\r\n\r\n") + 4 :]
    assert base64.b64decode(tags["bh"]) == hashlib.sha256(Relaxed.canonicalize_body(body)).digest()


def test_changes_to_signed_content_break_the_signature(
    workspace_dir: Path, signer: DkimSigner
) -> None:
    _, template, recipient = _sample_template(workspace_dir, signer)
    data = template.personalise(recipient(3, "Ana Popescu"))
    assert verifies(data, signer)
    head_end = data.index(b"\r\n\r\n")
    body_pos = data.index(b"ClusterPoliSEE", head_end)
    tampered = {
        "body letter": data[:body_pos] + b"K" + data[body_pos + 1 :],
        "body appended": data + b"P.S. click here\r\n",
        "subject": data.replace(b"Subject: ClusterPoliSEE", b"Subject: ClusterPoliSEe", 1),
        "to": data.replace(b"<r3@example.ro>", b"<r4@example.ro>", 1),
        "unsubscribe": data.replace(b"/u/tok3", b"/u/tok4", 1),
        "one-click removed": data.replace(
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"", 1
        ),
        "signature": data.replace(b"bh=", b"bh=A", 1),
    }
    for what, bad in tampered.items():
        assert bad != data, what
        assert not verifies(bad, signer), what
    # Relaxed canonicalisation: whitespace changes on the way do not matter.
    relaxed = data.replace(b"Subject: ", b"Subject:  \t", 1)
    relaxed = relaxed[:body_pos] + b"  \t" + relaxed[body_pos:]
    assert verifies(relaxed + b"\r\n\r\n", signer)


def test_hand_made_message_with_whitespace_and_folds(signer: DkimSigner) -> None:
    subject = "=?utf-8?b?" + base64.b64encode("Știri și evenimente".encode()).decode() + "?="
    message = (
        b"From: =?utf-8?b?" + base64.b64encode("Asociația Țară".encode()) + b"?=\r\n"
        b" <news@" + DOMAIN.encode() + b">\r\n"
        b"To:   reader@example.org  \r\n"
        b"Subject: " + subject.encode() + b"\r\n\t  and a folded\t\ttail   \r\n"
        b"Reply-To: contact@" + DOMAIN.encode() + b"\r\n"
        b"Date: Wed, 01 Oct 2014 09:30:00 +0000\r\n"
        b"Message-ID: <x.1@" + DOMAIN.encode() + b">\r\n"
        b"X-Not-Signed: anything\r\n"
        b"\r\n"
        b"line with trailing space   \r\n"
        b"\ttabs\tand  runs \t of   spaces\r\n"
        b"   \r\n"
        b"last\r\n"
        b"\r\n"
        b"\r\n"
    )
    data = signer(message)
    assert data.endswith(message)
    assert verifies(data, signer)
    tags = _tags(data)
    assert tags["h"] == "from:reply-to:to:subject:date:message-id"
    assert "x-not-signed" not in tags["h"]
    # An unsigned header may change; a signed one may not.
    assert verifies(data.replace(b"X-Not-Signed: anything", b"X-Not-Signed: other"), signer)
    assert not verifies(data.replace(b"folded\t\ttail", b"folded tail!"), signer)


def test_empty_body_and_body_without_final_line_break(signer: DkimSigner) -> None:
    head = b"From: a@" + DOMAIN.encode() + b"\r\nSubject: x\r\n\r\n"
    for body in (b"", b"\r\n", b"\r\n\r\n", b"no final break", b"  \t"):
        assert verifies(signer(head + body), signer), body


def _random_body(rng: random.Random, size: int) -> bytes:
    atoms = [
        b"a",
        b"text",
        "ș".encode(),
        b" ",
        b"  ",
        b"\t",
        b" \t ",
        b"\r\n",
        b"\r\n\r\n",
        b"=\r\n",
        b"=20",
        b"<td>",
        b"\r",
        b"\n",
    ]
    return b"".join(rng.choice(atoms) for _ in range(size))


def test_canonicalisation_agrees_with_dkimpy() -> None:
    rng = random.Random(7)
    for _ in range(500):
        body = _random_body(rng, rng.randint(0, 300))
        assert canonical_body(body) == Relaxed.canonicalize_body(body), body
    for field in (b"Subject: a  b\t c  ", b"SUBJECT :\tx\r\n  y", b"To: <a@b>", b"X:"):
        ((name, value),) = Relaxed.canonicalize_headers([tuple(field.split(b":", 1))])
        assert canonical_header(field) == name + b":" + value, field


def test_body_hash_reuses_blocks_only_where_the_bytes_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small blocks so that short random bodies exercise matching, resynchronising after
    # insertions and deletions, and a new reference when a body is too different.
    rng = random.Random(11)
    head = b"From: a@b\r\n\r\n"
    for trial in range(150):
        monkeypatch.setattr(bdkim, "_BLOCK", rng.choice([16, 64, 256]))
        monkeypatch.setattr(bdkim, "_HEAD", rng.choice([4, 16]))
        monkeypatch.setattr(bdkim, "_SLACK", rng.choice([8, 64, 4096]))
        hasher = bdkim._BodyHasher()
        base = _random_body(rng, rng.randint(0, 2000))
        for _ in range(8):
            body = bytearray(base)
            for _ in range(rng.randint(0, 5)):
                p = rng.randint(0, len(body))
                if rng.random() < 0.5:
                    body[p:p] = _random_body(rng, rng.randint(1, 12))
                else:
                    del body[p : p + rng.randint(1, 30)]
            if rng.random() < 0.2:
                body += b"\r\n" * rng.randint(1, 3)
            message = head + bytes(body)
            want = hashlib.sha256(Relaxed.canonicalize_body(bytes(body))).digest()
            assert hasher.digest(message, len(head)) == want, (trial, bytes(body))


def test_one_signer_for_many_recipients_and_another_issue(
    workspace_dir: Path, signer: DkimSigner
) -> None:
    _, template, recipient = _sample_template(workspace_dir, signer)
    rng = random.Random(3)
    for i in range(25):
        name = " ".join(rng.choice(NAMES[:5]) for _ in range(rng.randint(1, 3)))
        data = template.personalise(recipient(i, name, f"p{i * 7919}@exemplu.ro"))
        assert verifies(data, signer), name
        # Only the recipient's own bytes were canonicalised afresh, not the whole body.
        start = data.index(b"\r\n\r\n") + 4
        ref = signer._body._ref
        assert ref is not None
        _, lead, unknown = bdkim._match(ref, data, start)
        assert lead > 0 and unknown < (len(data) - start) // 4
    # A different message through the same signer: it becomes the new reference.
    other = b"From: a@" + DOMAIN.encode() + b"\r\n\r\n" + b"Alt text, alt rand.\r\n" * 800
    assert verifies(signer(other), signer)
    data = template.personalise(recipient(100, "Ana"))
    assert verifies(data, signer)


def test_without_timestamp_the_signature_is_reproducible(pem: bytes) -> None:
    signer = DkimSigner(SELECTOR, DOMAIN, pem, headers="From, Subject", timestamp=False)
    message = b"From: a@" + DOMAIN.encode() + b"\r\nSubject: s\r\n\r\nbody\r\n"
    first = signer(message)
    assert b" t=" not in first and "h=from:subject;" in first.decode()
    assert first == signer(message)  # PKCS#1 v1.5 signatures are deterministic
    assert verifies(first, signer)


def test_signer_refuses_bad_keys_and_names(pem: bytes) -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="not an RSA key"):
        DkimSigner(SELECTOR, DOMAIN, ec_pem)
    with pytest.raises(ValueError, match="not a PEM private key"):
        DkimSigner(SELECTOR, DOMAIN, b"-----BEGIN NONSENSE-----\n")
    with pytest.raises(ValueError, match="selector"):
        DkimSigner("bad selector", DOMAIN, pem)
    with pytest.raises(ValueError, match="domain"):
        DkimSigner(SELECTOR, "exemplu.românia", pem)
    with pytest.raises(ValueError, match="must include From"):
        DkimSigner(SELECTOR, DOMAIN, pem, headers=["To", "Subject"])
    signer = DkimSigner(SELECTOR, DOMAIN, pem.decode("ascii"))
    assert repr(signer) == f"<DkimSigner {SELECTOR}._domainkey.{DOMAIN} (2048-bit RSA)>"
    with pytest.raises(ValueError, match="CRLF CRLF"):
        signer(b"From: a@b\nSubject: x\n\nbody\n")


def _configure(workspace_dir: Path, dkim_section: str) -> None:
    path = workspace_dir / "bulletin.toml"
    path.write_text(
        path.read_text(encoding="utf-8") + "\n[dkim]\n" + dkim_section, encoding="utf-8"
    )


def _write_key(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def test_load_dkim_signer_from_the_workspace(workspace_dir: Path, pem: bytes) -> None:
    assert load_dkim_signer(ws.load(workspace_dir)) is None  # no [dkim]: no signing
    _write_key(workspace_dir / ".bulletin" / "dkim.pem", pem)
    _configure(workspace_dir, f'selector = "{SELECTOR}"\nkey_file = ".bulletin/dkim.pem"\n')
    workspace = ws.load(workspace_dir)
    signer = load_dkim_signer(workspace)
    assert signer is not None
    assert signer.domain == DOMAIN  # from sender.from_email
    assert signer.headers == bdkim.DEFAULT_HEADERS
    _, template, recipient = _sample_template(workspace_dir, signer)
    assert verifies(template.personalise(recipient(1, "Ana Popescu")), signer)


def test_dkim_domain_and_headers_from_config(workspace_dir: Path, pem: bytes) -> None:
    _write_key(workspace_dir / "keys" / "dkim.pem", pem)
    _configure(
        workspace_dir,
        f'selector = "{SELECTOR}"\ndomain = "Știri.Example.org"\n'
        'key_file = "keys/dkim.pem"\nheaders = "From, To, Subject, List-Unsubscribe"\n',
    )
    signer = load_dkim_signer(ws.load(workspace_dir))
    assert signer is not None
    assert signer.domain == "știri.example.org".encode("idna").decode("ascii")
    assert signer.domain.startswith("xn--")
    assert signer.headers == ("From", "To", "Subject", "List-Unsubscribe")


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (None, 0o600, "does not exist"),
        (b"PEM", 0o644, "readable by other users"),
        (b"not a key at all", 0o600, "not a PEM private key"),
        ("ec", 0o600, "not an RSA key"),
        ("encrypted", 0o600, "passphrase"),
    ],
)
def test_load_dkim_signer_errors_say_what_to_do(
    workspace_dir: Path, pem: bytes, content: bytes | str | None, mode: int, message: str
) -> None:
    path = workspace_dir / ".bulletin" / "dkim.pem"
    if content == b"PEM":
        content = pem
    elif content == "ec":
        content = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    elif content == "encrypted":
        key = serialization.load_pem_private_key(pem, password=None)
        content = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"parola"),
        )
    if isinstance(content, bytes):
        _write_key(path, content, mode)
    _configure(workspace_dir, f'selector = "{SELECTOR}"\nkey_file = ".bulletin/dkim.pem"\n')
    with pytest.raises(BulletinError, match=message) as exc:
        load_dkim_signer(ws.load(workspace_dir))
    assert "BEGIN" not in str(exc.value)  # never echo key material
    if mode == 0o600 and content is None:
        assert "openssl genpkey" in str(exc.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('key_file = "k.pem"\n', "dkim: selector is required when key_file is set"),
        ('selector = "a b"\n', "dkim.selector: 'a b' is not a DNS name"),
        ('headers = "To, Subject"\n', "dkim.headers: must include From"),
        ('domain = "not a domain"\n', "dkim.domain: 'not a domain' is not a domain name"),
        ('algorithm = "ed25519"\n', "dkim.algorithm: unknown key"),
    ],
)
def test_dkim_config_is_validated(workspace_dir: Path, section: str, message: str) -> None:
    _configure(workspace_dir, section)
    with pytest.raises(ConfigError, match=re.escape(message)):
        ws.load(workspace_dir)
