"""Amazon SNS message signatures: how ``/hooks/ses`` knows a notification came from AWS.

SNS signs each message with RSA (``SignatureVersion`` 1: SHA1withRSA, 2: SHA256withRSA) over
a canonical string of its fields, and names the certificate in ``SigningCertURL``. Anybody
can name a certificate, so where it comes from is the whole of the trust:

* the URL must be ``https://sns.<region>.amazonaws.com[.cn]/SimpleNotificationService-<hex>.pem``
  (:data:`CERT_URL`), checked before anything is fetched;
* it is fetched by :class:`HttpsFetcher` over TLS whose server certificate must chain to a
  trust root (the system CA store; tests pass an ``ssl.SSLContext`` with a test root) and
  name that host; no redirect is followed, the answer is capped at :data:`MAX_CERT_BYTES`
  and the wait at :data:`FETCH_TIMEOUT` seconds;
* a certificate so fetched is kept in memory and, when a cache folder is given, as a 0600
  file there (``.bulletin/sns-certs/``), and used until it expires.

The signing certificate file holds only the leaf, not the chain up to a root, so the TLS
connection to the AWS host is what ties it to a trust root; that is what AWS's own SDK
validators do. Then ``TopicArn`` must be one of ``webhooks.ses_topics``: a valid signature
only proves the message came through SNS, from anybody's topic.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CERT_URL = re.compile(
    r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/SimpleNotificationService-[a-z0-9]+\.pem"
)
"""The only place a signing certificate is fetched from."""

SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
"""The host a SubscribeURL must name before it is visited."""

MAX_CERT_BYTES = 64 * 1024
"""Largest certificate file read (a real one is about 2 KB)."""

MAX_ANSWER_BYTES = 64 * 1024
"""Most of a subscription confirmation's answer read (it is a short XML document)."""

FETCH_TIMEOUT = 10.0
"""Seconds a certificate download or a confirmation may take."""

_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]


class SnsRefused(Exception):
    """A message that does not prove it came from SNS and an allowed topic (the reason: for
    the log only)."""


Fetch = Callable[[str, int], bytes]
"""Gets an https URL's body (at most the given number of bytes), raising OSError otherwise."""

Route = Callable[[str, int], tuple[str, int]]
"""Where to connect for a host and port (tests send sns.*.amazonaws.com to a local server)."""


class HttpsFetcher:
    """GET over verified TLS: the server's certificate must chain to ``context``'s roots.

    The default context is the system CA store with hostname checking. ``route`` changes
    only where the TCP connection goes; TLS still checks the URL's own host name.
    """

    def __init__(
        self,
        context: ssl.SSLContext | None = None,
        *,
        route: Route | None = None,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.context = context or ssl.create_default_context()
        self.route = route
        self.timeout = timeout

    def __call__(self, url: str, limit: int) -> bytes:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise OSError(f"not an https URL: {parts.scheme}://{parts.hostname}")
        host, port = parts.hostname, parts.port or 443
        address = self.route(host, port) if self.route is not None else (host, port)
        sock = socket.create_connection(address, timeout=self.timeout)
        try:
            tls = self.context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        conn = http.client.HTTPSConnection(host, port, timeout=self.timeout)
        conn.sock = tls
        try:
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            conn.request("GET", target, headers={"User-Agent": "bulletin"})
            answer = conn.getresponse()
            # No redirect is followed: the URL checked is the URL read.
            if answer.status != 200:
                raise OSError(f"{host} answered {answer.status}")
            body = answer.read(limit + 1)
            if len(body) > limit:
                raise OSError(f"{host} answered more than {limit} bytes")
            return body
        finally:
            conn.close()


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical text SNS signs: ``Name\\nValue\\n`` for each signed field present."""
    fields = _SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise SnsRefused(f"unknown message type {str(message.get('Type'))[:40]!r}")
    out: list[str] = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise SnsRefused(f"the signed field {name} is missing")
        if not isinstance(value, str):
            raise SnsRefused(f"the signed field {name} is not text")
        out += [name, "\n", value, "\n"]
    return "".join(out).encode("utf-8")


class SnsVerifier:
    """Checks SNS messages: signature, certificate origin, topic; confirms subscriptions."""

    def __init__(
        self,
        topics: frozenset[str],
        *,
        fetch: Fetch | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.topics = topics
        self.fetch: Fetch = fetch if fetch is not None else HttpsFetcher()
        self.cache_dir = cache_dir
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def verify(self, message: Mapping[str, Any], now: datetime) -> None:
        """Raise :class:`SnsRefused` unless ``message`` is signed by SNS for an allowed topic."""
        if message.get("TopicArn") not in self.topics:
            # Checked first: a message for somebody else's topic costs no download.
            raise SnsRefused(f"topic {str(message.get('TopicArn'))[:200]!r} is not allowed")
        version = message.get("SignatureVersion")
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise SnsRefused(f"unknown SignatureVersion {str(version)[:10]!r}")
        url = message.get("SigningCertURL")
        if not isinstance(url, str) or CERT_URL.fullmatch(url) is None:
            raise SnsRefused("SigningCertURL is not an SNS certificate address")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except ValueError:
            raise SnsRefused("Signature is not base64") from None
        signed = string_to_sign(message)
        key = self.certificate(url, now).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRefused("the signing certificate's key is not RSA")
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SnsRefused("bad signature") from None

    def certificate(self, url: str, now: datetime) -> x509.Certificate:
        """The certificate at ``url`` (an address :data:`CERT_URL` allows), cached."""
        with self._lock:
            cert = self._certs.get(url)
        if cert is not None and _current(cert, now):
            return cert
        path = self._cache_path(url)
        cert = _read_cached(path) if path is not None else None
        if cert is None or not _current(cert, now):
            try:
                pem = self.fetch(url, MAX_CERT_BYTES)
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                raise SnsRefused(f"cannot fetch the signing certificate: {exc}") from None
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise SnsRefused("the signing certificate is not a PEM certificate") from None
            if not _current(cert, now):
                raise SnsRefused("the signing certificate has expired or is not yet valid")
            if path is not None:
                _write_cached(path, pem)
        with self._lock:
            self._certs[url] = cert
        return cert

    def confirm(self, url: object) -> None:
        """Visit a SubscriptionConfirmation's SubscribeURL (on an SNS host only)."""
        if not isinstance(url, str):
            raise SnsRefused("SubscribeURL is missing")
        parts = urlsplit(url)
        if (
            parts.scheme != "https"
            or parts.port is not None
            or parts.username is not None
            or SNS_HOST.fullmatch(parts.hostname or "") is None
        ):
            raise SnsRefused("SubscribeURL is not on an SNS host")
        try:
            self.fetch(url, MAX_ANSWER_BYTES)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            raise SnsRefused(f"confirming the subscription failed: {exc}") from None

    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        name = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
        return self.cache_dir / f"{name}.pem"


def _current(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _read_cached(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _write_cached(path: Path, pem: bytes) -> None:
    """Keep a fetched certificate (best effort: a cache that cannot be written is no cache)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.replace(temporary, path)
    except OSError:
        pass
