"""Test keys and signed requests for the provider webhooks, and a stand-in for AWS's SNS host.

Everything is made here with ``cryptography``: a test CA (the trust root the tests give the
SNS certificate fetcher instead of the system CA store), a TLS certificate for
``sns.us-east-1.amazonaws.com`` issued by it, the RSA key and certificate SNS signs with, a
P-256 key standing in for SendGrid's, and a Mailgun signing key and Postmark secret.

:class:`FakeSnsHost` is a real HTTPS server on a loopback port presenting that TLS
certificate; the fetcher under test is routed to it (``HttpsFetcher(route=...)``) and still
checks the certificate against the test root and the URL's host name. It serves the signing
certificate and answers SubscribeURL visits, and counts both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

REGION_HOST = "sns.us-east-1.amazonaws.com"
CERT_PATH = "/SimpleNotificationService-0123456789abcdef.pem"
CERT_URL = f"https://{REGION_HOST}{CERT_PATH}"
EVIL_HOST = f"{REGION_HOST}.evil.example"
"""A host that is not SNS, for which the stand-in holds a valid certificate all the same (so
that only bulletin's own URL checks keep it from being used)."""
TOPIC = "arn:aws:sns:us-east-1:123456789012:bulletin-bounces"
OTHER_TOPIC = "arn:aws:sns:us-east-1:999999999999:someone-else"
MAILGUN_KEY = "key-mailgun-test-0123456789abcdef"
POSTMARK_SECRET = "postmark-test-secret-ș-ț"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[str, rsa.RSAPrivateKey] | None,
    *,
    ca: bool = False,
    dns: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns]), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Keys:
    """Every test key and certificate, made once per session."""

    ca: x509.Certificate
    tls_cert: x509.Certificate
    tls_key: rsa.RSAPrivateKey
    sns_key: rsa.RSAPrivateKey
    sns_cert: x509.Certificate
    stranger_key: rsa.RSAPrivateKey
    sendgrid_key: ec.EllipticCurvePrivateKey
    sendgrid_other: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls) -> Keys:
        def rsa_key() -> rsa.RSAPrivateKey:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)

        ca_key, tls_key, sns_key = rsa_key(), rsa_key(), rsa_key()
        ca = _certificate("bulletin test root", ca_key, None, ca=True)
        issuer = ("bulletin test root", ca_key)
        tls_cert = _certificate(REGION_HOST, tls_key, issuer, dns=(REGION_HOST, EVIL_HOST))
        sns_cert = _certificate("sns.amazonaws.com", sns_key, issuer)
        return cls(
            ca=ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            sns_key=sns_key,
            sns_cert=sns_cert,
            stranger_key=rsa_key(),
            sendgrid_key=ec.generate_private_key(ec.SECP256R1()),
            sendgrid_other=ec.generate_private_key(ec.SECP256R1()),
        )

    def client_context(self) -> ssl.SSLContext:
        """What the fetcher trusts in tests: the test root only."""
        return ssl.create_default_context(cadata=pem(self.ca).decode("ascii"))

    def sendgrid_public(self, key: ec.EllipticCurvePrivateKey | None = None) -> str:
        """The verification key as SendGrid shows it: base64 DER SubjectPublicKeyInfo."""
        der = (
            (key or self.sendgrid_key)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return base64.b64encode(der).decode("ascii")


# --- SNS -------------------------------------------------------------------------------------


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


_SIGNED = {
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


def sns_sign(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict[str, Any]:
    """``message`` with SignatureVersion, SigningCertURL (unless set) and Signature added."""
    text = "".join(
        f"{name}\n{message[name]}\n" for name in _SIGNED[message["Type"]] if name in message
    )
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode("utf-8"), padding.PKCS1v15(), algorithm)
    out = dict(message)
    out.setdefault("SigningCertURL", CERT_URL)
    out["SignatureVersion"] = version
    out["Signature"] = base64.b64encode(signature).decode("ascii")
    return out


_ids = iter(range(1, 1_000_000))


def ses_notification(
    keys: Keys,
    ses: dict[str, Any],
    *,
    topic: str = TOPIC,
    at: datetime | None = None,
    version: str = "2",
    key: rsa.RSAPrivateKey | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A signed SNS Notification carrying the SES notification ``ses``."""
    message = {
        "Type": "Notification",
        "MessageId": message_id or f"0000-test-{next(_ids)}",
        "TopicArn": topic,
        "Message": json.dumps(ses),
        "Timestamp": iso(at or datetime.now(UTC)),
    }
    return sns_sign(message, key or keys.sns_key, version)


def ses_bounce(emails: list[str], bounce_type: str = "Permanent") -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General" if bounce_type == "Permanent" else "MailboxFull",
            "bouncedRecipients": [
                {"emailAddress": e, "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
                for e in emails
            ],
            "timestamp": iso(datetime.now(UTC)),
        },
        "mail": {"timestamp": iso(datetime.now(UTC)), "destination": emails},
    }


def ses_complaint(emails: list[str]) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": e} for e in emails],
            "complaintFeedbackType": "abuse",
            "timestamp": iso(datetime.now(UTC)),
        },
        "mail": {"timestamp": iso(datetime.now(UTC))},
    }


def subscription_confirmation(
    keys: Keys, *, topic: str = TOPIC, subscribe_url: str | None = None
) -> dict[str, Any]:
    token = f"token{next(_ids)}"
    url = subscribe_url or (
        f"https://{REGION_HOST}/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}"
    )
    message = {
        "Type": "SubscriptionConfirmation",
        "MessageId": f"0000-sub-{next(_ids)}",
        "Token": token,
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.",
        "SubscribeURL": url,
        "Timestamp": iso(datetime.now(UTC)),
    }
    return sns_sign(message, keys.sns_key)


@dataclass
class FakeSnsHost:
    """An HTTPS server standing in for sns.us-east-1.amazonaws.com and :data:`EVIL_HOST`."""

    keys: Keys
    folder: Path
    cert_fetches: int = 0
    visits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                if self.path == CERT_PATH:
                    host.cert_fetches += 1
                    body = pem(host.keys.sns_cert)
                else:
                    host.visits.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "tls.pem").write_bytes(
            pem(self.keys.tls_cert)
            + self.keys.tls_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.folder / "tls.pem")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def route(self, host: str, port: int) -> tuple[str, int]:
        """Every host is this server (as if DNS said so); TLS still checks the name."""
        return ("127.0.0.1", self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --- SendGrid, Mailgun, Postmark ---------------------------------------------------------------


def sendgrid_headers(
    key: ec.EllipticCurvePrivateKey, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = key.sign(stamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode("ascii"),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def mailgun_body(
    event: dict[str, Any],
    *,
    key: str = MAILGUN_KEY,
    timestamp: int | None = None,
    token: str | None = None,
) -> bytes:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    token = token or hashlib.sha256(f"{time.time_ns()}{next(_ids)}".encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    signed = {"timestamp": stamp, "token": token, "signature": signature}
    return json.dumps({"signature": signed, "event-data": event}).encode("utf-8")


def mailgun_failed(
    email: str, severity: str = "permanent", reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": f"mg-{next(_ids)}",
        "event": "failed",
        "severity": severity,
        "recipient": email,
        "timestamp": time.time(),
        "reason": reason or ("bounce" if severity == "permanent" else "generic"),
        "delivery-status": {"code": 550, "description": "No such user"},
    }


def basic_auth(password: str, user: str = "postmark") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def postmark_bounce(email: str, kind: str = "HardBounce") -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": next(_ids),
        "Type": kind,
        "TypeCode": 1,
        "Email": email,
        "BouncedAt": iso(datetime.now(UTC)),
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "MessageStream": "outbound",
    }
