"""Bounce and complaint events from relay providers' webhooks (``POST /hooks/<provider>``).

The web handler (:mod:`bulletin.web.public`) reads the body and calls three steps here:

1. :meth:`Webhooks.authenticate`: the provider's own proof, checked before the body is
   trusted as anything but bytes --

   * ``ses``: an SNS message signature from an allowed topic (:mod:`bulletin.inbound.sns`);
   * ``sendgrid``: ECDSA P-256 over ``timestamp + body`` (``X-Twilio-Email-Event-Webhook-
     Signature`` / ``-Timestamp``) with the configured verification key;
   * ``mailgun``: hex HMAC-SHA256 of ``timestamp + token`` under the signing key;
   * ``postmark``: HTTP basic auth whose password is the configured secret.

   A signed request must be fresh: its timestamp at most :data:`MAX_AGE` old (SNS:
   :data:`SNS_MAX_AGE`, since SNS retries a message with its original signature) and not
   more than :data:`MAX_SKEW` ahead. Anything that fails raises :class:`Refused`, whose
   reason goes to the log and never to the client: every refusal gets the same answer.
2. the provider's events are read into :class:`Event` values: a body that authenticates but
   cannot be read raises :class:`Malformed`, before anything is written.
3. :meth:`Webhooks.apply`, in one write transaction: the request's nonce (Mailgun's token,
   a hash of the signature otherwise) is claimed -- a second use is refused as a replay --
   then each event's key (the provider's event id, else a hash of the event) is claimed, so
   an event delivered again counts once, and each event goes through the same rules as
   ``bulletin bounces import`` (:func:`bulletin.inbound.bounces.record_bounce` and
   :func:`~bulletin.inbound.bounces.record_complaint`). Events about addresses not in the
   store are acknowledged and ignored.

Postmark's basic auth carries no timestamp or nonce: a Postmark request sent again is
answered 200 and changes nothing, because its events' ids were claimed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import Connection

from bulletin.errors import BulletinError
from bulletin.inbound.bounces import SoftLimit, record_bounce, record_complaint
from bulletin.inbound.sns import HttpsFetcher, SnsRefused, SnsVerifier
from bulletin.store.receipts import KEY_LENGTH, claim, purge_expired
from bulletin.store.schema import utcnow
from bulletin.store.subscribers import Subscriber, find_subscriber, has_event_from
from bulletin.workspace import WEBHOOK_SECRET_ENV, Workspace

log = logging.getLogger(__name__)

Provider = Literal["ses", "postmark", "sendgrid", "mailgun"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)

MAX_BODY_BYTES = 1024 * 1024
"""Largest webhook body accepted: SNS messages reach 256 KB and SendGrid posts events in
batches; past this the request gets 413 as an oversized unsubscribe does."""

MAX_AGE = timedelta(minutes=5)
"""Oldest timestamp accepted on a SendGrid or Mailgun request."""

SNS_MAX_AGE = timedelta(hours=1)
"""Oldest SNS message accepted: SNS signs a message once, when it is published, and retries
its delivery with that signature (custom delivery policies retry for up to an hour)."""

MAX_SKEW = timedelta(minutes=5)
"""How far in the future a timestamp may be (clocks differ a little)."""

EVENT_KEEP = timedelta(days=30)
"""How long an event's receipt is kept: providers stop retrying after hours or days."""

NONCE_KEEP = SNS_MAX_AGE + MAX_SKEW
"""How long a nonce is kept: past it, its request is refused as stale anyway."""

Kind = Literal["hard", "soft", "complaint"]


class Refused(Exception):
    """The request does not prove it came from the provider (or came before): for the log."""


class Malformed(Exception):
    """An authenticated body that does not hold events we can read."""


@dataclass(frozen=True)
class Event:
    """One bounce or complaint about one address."""

    key: str
    kind: Kind
    email: str
    detail: str
    at: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    """An authenticated request: its nonce, events and (SNS) a subscription to confirm."""

    provider: Provider
    nonce: str | None
    events: tuple[Event, ...] = ()
    subscribe_url: str | None = None
    note: str = ""


@dataclass
class Outcome:
    """What applying a delivery did."""

    events: int = 0
    repeated: int = 0
    unknown: int = 0
    suppressed: int = 0
    lines: list[str] = field(default_factory=list)


class Webhooks:
    """The webhook secrets of a workspace, and what to do with a request for each provider."""

    def __init__(
        self,
        *,
        limit: SoftLimit,
        ses_topics: frozenset[str] = frozenset(),
        postmark_secret: str | None = None,
        mailgun_key: str | None = None,
        sendgrid_key: str | None = None,
        sns: SnsVerifier | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.limit = limit
        self.sns = sns if sns is not None else SnsVerifier(ses_topics)
        self.postmark_secret = postmark_secret
        self.mailgun_key = mailgun_key
        self.sendgrid_key = _sendgrid_key(sendgrid_key) if sendgrid_key else None
        self.clock = clock

    @classmethod
    def from_workspace(cls, workspace: Workspace, *, sns: SnsVerifier | None = None) -> Webhooks:
        """The hooks configured in ``workspace`` (secrets from the environment or 0600 files).

        SNS certificates are fetched from AWS over TLS checked against the system CA store
        and cached in ``.bulletin/sns-certs/``.
        """
        topics = workspace.config.webhooks.topics
        if sns is None:
            sns = SnsVerifier(
                topics, fetch=HttpsFetcher(), cache_dir=workspace.secrets_dir / "sns-certs"
            )
        return cls(
            limit=SoftLimit.from_workspace(workspace),
            ses_topics=topics,
            postmark_secret=workspace.webhook_secret("postmark"),
            mailgun_key=workspace.webhook_secret("mailgun"),
            sendgrid_key=workspace.webhook_secret("sendgrid"),
            sns=sns,
        )

    def enabled(self, provider: str) -> bool:
        """Whether ``provider``'s hook is on (its secret, or for SES a topic, is configured)."""
        return {
            "ses": bool(self.sns.topics),
            "postmark": self.postmark_secret is not None,
            "mailgun": self.mailgun_key is not None,
            "sendgrid": self.sendgrid_key is not None,
        }.get(provider, False)

    # -- authenticate and read ---------------------------------------------------------------

    def authenticate(self, provider: Provider, headers: Mapping[str, str], body: bytes) -> Delivery:
        """Check a request's proof, then read its events.

        ``headers`` must be looked up case-insensitively (Starlette's are). Raises
        :class:`Refused` or :class:`Malformed`; may fetch an SNS certificate (blocking).
        """
        if not self.enabled(provider):
            raise Refused(f"the {provider} hook is off")
        now = self.clock()
        if provider == "ses":
            return self._ses(body, now)
        if provider == "postmark":
            return self._postmark(headers, body)
        if provider == "sendgrid":
            return self._sendgrid(headers, body, now)
        return self._mailgun(body, now)

    def _fresh(self, at: datetime, now: datetime, max_age: timedelta) -> None:
        if at < now - max_age:
            raise Refused(f"stale: timestamp {at:%Y-%m-%d %H:%M:%S}Z")
        if at > now + MAX_SKEW:
            raise Refused(f"timestamp in the future: {at:%Y-%m-%d %H:%M:%S}Z")

    def _ses(self, body: bytes, now: datetime) -> Delivery:
        envelope = _json(body, Refused)
        if not isinstance(envelope, dict):
            raise Refused("not an SNS message")
        try:
            self.sns.verify(envelope, now)
        except SnsRefused as exc:
            raise Refused(str(exc)) from None
        self._fresh(_iso_time(envelope.get("Timestamp"), Refused), now, SNS_MAX_AGE)
        message_id = str(envelope.get("MessageId", ""))
        nonce = "sns " + message_id
        kind = envelope.get("Type")
        if kind == "SubscriptionConfirmation":
            return Delivery("ses", nonce, subscribe_url=str(envelope.get("SubscribeURL")))
        if kind != "Notification":
            return Delivery("ses", nonce, note=f"{kind} acknowledged")
        return Delivery("ses", nonce, tuple(_ses_events(message_id, envelope.get("Message"))))

    def _postmark(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        assert self.postmark_secret is not None
        password = _basic_password(headers.get("authorization", ""))
        # Compared as bytes of equal meaning in constant time: the secret's length leaks
        # nothing useful, its content nothing at all.
        if password is None or not hmac.compare_digest(
            password.encode("utf-8"), self.postmark_secret.encode("utf-8")
        ):
            raise Refused("wrong or missing basic auth")
        record = _json(body, Malformed)
        return Delivery("postmark", None, tuple(_postmark_events(record)))

    def _sendgrid(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Delivery:
        assert self.sendgrid_key is not None
        signature = headers.get("x-twilio-email-event-webhook-signature", "")
        timestamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
        if not signature or not timestamp:
            raise Refused("signature headers missing")
        try:
            der = base64.b64decode(signature, validate=True)
            self.sendgrid_key.verify(
                der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256())
            )
        except (ValueError, InvalidSignature):
            raise Refused("bad signature") from None
        self._fresh(_unix_time(timestamp, Refused), now, MAX_AGE)
        nonce = "sig " + hashlib.sha256(der).hexdigest()
        return Delivery("sendgrid", nonce, tuple(_sendgrid_events(_json(body, Malformed))))

    def _mailgun(self, body: bytes, now: datetime) -> Delivery:
        assert self.mailgun_key is not None
        data = _json(body, Refused)
        signed = data.get("signature") if isinstance(data, dict) else None
        if not isinstance(signed, dict):
            raise Refused("no signature")
        timestamp, token, signature = (signed.get(k) for k in ("timestamp", "token", "signature"))
        if not all(isinstance(v, str) and v for v in (timestamp, token, signature)):
            raise Refused("signature fields missing")
        assert isinstance(timestamp, str) and isinstance(token, str) and isinstance(signature, str)
        expected = hmac.new(
            self.mailgun_key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8")):
            raise Refused("bad signature")
        self._fresh(_unix_time(timestamp, Refused), now, MAX_AGE)
        nonce = "token " + _short(token)
        assert isinstance(data, dict)
        return Delivery("mailgun", nonce, tuple(_mailgun_events(data.get("event-data"))))

    def confirm(self, delivery: Delivery) -> None:
        """Confirm an SNS subscription (signed, from an allowed topic): visit its SubscribeURL.

        Raises :class:`Refused` when the URL is not on an SNS host or the visit fails.
        """
        try:
            self.sns.confirm(delivery.subscribe_url)
        except SnsRefused as exc:
            raise Refused(str(exc)) from None

    # -- apply -------------------------------------------------------------------------------

    def apply(self, conn: Connection, delivery: Delivery) -> Outcome:
        """Record ``delivery`` in the caller's write transaction; :class:`Refused` if replayed."""
        now = self.clock()
        purge_expired(conn, now)
        if delivery.nonce is not None and not claim(
            conn, delivery.provider, _short(delivery.nonce), expires_at=now + NONCE_KEEP, now=now
        ):
            raise Refused("replayed: this request was received before")
        outcome = Outcome()
        for event in delivery.events:
            outcome.events += 1
            key = _short("event " + event.key)
            if not claim(conn, delivery.provider, key, expires_at=now + EVENT_KEEP, now=now):
                outcome.repeated += 1
                continue
            sub = find_subscriber(conn, event.email)
            if sub is None:
                outcome.unknown += 1
                continue
            changed = self._apply_one(conn, sub, event, delivery.provider, now)
            outcome.suppressed += changed
            outcome.lines.append(
                f"{event.kind} for subscriber {sub.id}" + (" (suppressed)" if changed else "")
            )
        return outcome

    def _apply_one(
        self, conn: Connection, sub: Subscriber, event: Event, provider: Provider, now: datetime
    ) -> bool:
        kind = "complaint" if event.kind == "complaint" else "bounce"
        source = _short(f"{kind} {provider} {event.key}")
        if has_event_from(conn, sub.id, source):
            return False  # recorded under an older receipt that has expired since
        if event.kind == "complaint":
            return record_complaint(conn, sub, source, event.detail)
        when = min(event.at or now, now)  # a date from the future is a wrong clock
        return record_bounce(conn, sub, event.kind, event.detail, source, when, self.limit)


# --- helpers ---------------------------------------------------------------------------------


def _sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key: base64 DER (SubjectPublicKeyInfo) or PEM, P-256."""
    source = WEBHOOK_SECRET_ENV["sendgrid"] + " (or webhooks.sendgrid_public_key_file)"
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise BulletinError(
            f"{source} is not a public key.",
            hint="Copy the verification key from SendGrid's Mail Settings > Event Webhook "
            "> Signature Verification (base64 text).",
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise BulletinError(
            f"{source} is not an ECDSA P-256 key.",
            hint="SendGrid's signed event webhook key is ECDSA P-256; copy it again.",
        )
    return key


def _short(key: str) -> str:
    """``key``, or a hash of it when longer than a receipt key may be."""
    if len(key) <= KEY_LENGTH:
        return key
    return "sha256 " + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _event_key(given: object, event: object) -> str:
    """The provider's id of an event, else a hash of the event itself."""
    if isinstance(given, str | int) and not isinstance(given, bool) and str(given):
        return str(given)
    canonical = json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "hash " + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _json(body: bytes, error: type[Exception]) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise error("not JSON") from None


def _iso_time(value: object, error: type[Exception]) -> datetime:
    if not isinstance(value, str):
        raise error("no timestamp")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise error("unreadable timestamp") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _unix_time(value: object, error: type[Exception]) -> datetime:
    try:
        seconds = float(str(value))
        if not math.isfinite(seconds):
            raise ValueError
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise error("unreadable timestamp") from None


def _optional_time(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _unix_time(value, Malformed)
    if isinstance(value, str) and value:
        return _iso_time(value, Malformed)
    return None


def _basic_password(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Malformed(f"{what} is missing")
    return value.strip()


def _detail(*parts: object) -> str:
    return "; ".join(str(p).strip() for p in parts if isinstance(p, str | int) and str(p).strip())


def _ses_events(message_id: str, text: object) -> list[Event]:
    if not isinstance(text, str):
        raise Malformed("the SNS Message is not text")
    message = _json(text.encode("utf-8"), Malformed)
    if not isinstance(message, dict):
        raise Malformed("the SES notification is not an object")
    kind = message.get("notificationType") or message.get("eventType")
    events: list[Event] = []
    if kind == "Bounce":
        bounce = message.get("bounce")
        if not isinstance(bounce, dict) or not isinstance(bounce.get("bouncedRecipients"), list):
            raise Malformed("a Bounce without bouncedRecipients")
        severity: Kind = "hard" if bounce.get("bounceType") == "Permanent" else "soft"
        at = _optional_time(bounce.get("timestamp"))
        for recipient in bounce["bouncedRecipients"]:
            if not isinstance(recipient, dict):
                raise Malformed("a bounced recipient is not an object")
            email = _text(recipient.get("emailAddress"), "emailAddress")
            detail = _detail(
                recipient.get("diagnosticCode"),
                f"SES {bounce.get('bounceType')}/{bounce.get('bounceSubType')}",
            )
            events.append(Event(f"{message_id} {email.lower()}", severity, email, detail, at))
    elif kind == "Complaint":
        complaint = message.get("complaint")
        if not isinstance(complaint, dict) or not isinstance(
            complaint.get("complainedRecipients"), list
        ):
            raise Malformed("a Complaint without complainedRecipients")
        at = _optional_time(complaint.get("timestamp"))
        detail = _detail("SES complaint", complaint.get("complaintFeedbackType"))
        for recipient in complaint["complainedRecipients"]:
            if not isinstance(recipient, dict):
                raise Malformed("a complained recipient is not an object")
            email = _text(recipient.get("emailAddress"), "emailAddress")
            events.append(Event(f"{message_id} {email.lower()}", "complaint", email, detail, at))
    elif not isinstance(kind, str):
        raise Malformed("neither notificationType nor eventType")
    return events


_POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress"})
_POSTMARK_SOFT = frozenset({"SoftBounce", "DnsError"})


def _postmark_events(record: object) -> list[Event]:
    if not isinstance(record, dict):
        raise Malformed("not a Postmark record")
    kind = record.get("RecordType")
    if kind not in ("Bounce", "SpamComplaint"):
        if not isinstance(kind, str):
            raise Malformed("no RecordType")
        return []  # deliveries, opens, clicks...
    key = _event_key(record.get("ID"), record)
    email = _text(record.get("Email"), "Email")
    at = _optional_time(record.get("BouncedAt"))
    detail = _detail(f"Postmark {record.get('Type')}", record.get("Description"))
    if kind == "SpamComplaint" or record.get("Type") == "SpamComplaint":
        return [Event(key, "complaint", email, detail, at)]
    if record.get("Type") in _POSTMARK_HARD:
        return [Event(key, "hard", email, detail, at)]
    if record.get("Type") in _POSTMARK_SOFT:
        return [Event(key, "soft", email, detail, at)]
    return []  # delays (Transient), auto-replies, blocks by the provider...


def _sendgrid_events(batch: object) -> list[Event]:
    if not isinstance(batch, list):
        raise Malformed("not a list of SendGrid events")
    events: list[Event] = []
    for item in batch:
        if not isinstance(item, dict):
            raise Malformed("a SendGrid event is not an object")
        name = item.get("event")
        if name not in ("bounce", "spamreport"):
            if not isinstance(name, str):
                raise Malformed("an event without its name")
            continue  # delivered, deferred (still trying), dropped (already suppressed)...
        key = _event_key(item.get("sg_event_id"), item)
        email = _text(item.get("email"), "email")
        at = _optional_time(item.get("timestamp"))
        if name == "spamreport":
            events.append(Event(key, "complaint", email, "SendGrid spam report", at))
            continue
        # type "blocked": the receiving server refused for now (reputation, content);
        # "bounce": the address does not take mail.
        kind: Kind = "soft" if item.get("type") == "blocked" else "hard"
        detail = _detail(f"SendGrid {item.get('type') or 'bounce'}", item.get("reason"))
        events.append(Event(key, kind, email, detail, at))
    return events


def _mailgun_events(data: object) -> list[Event]:
    if not isinstance(data, dict):
        raise Malformed("no event-data")
    name = data.get("event")
    if name not in ("failed", "complained"):
        if not isinstance(name, str):
            raise Malformed("an event without its name")
        return []
    key = _event_key(data.get("id"), data)
    email = _text(data.get("recipient"), "recipient")
    at = _optional_time(data.get("timestamp"))
    if name == "complained":
        return [Event(key, "complaint", email, "Mailgun complaint", at)]
    status = data.get("delivery-status")
    description = (
        status.get("description") or status.get("message") if isinstance(status, dict) else None
    )
    severity = data.get("severity")
    if severity != "permanent":
        # A temporary failure is one attempt Mailgun will retry (a delay, which `bounces
        # import` does not count either); counting each would suppress an address after
        # three retries of a single message.
        return []
    # "old": Mailgun gave up after retrying for hours -- a soft bounce, not a dead address.
    kind: Kind = "soft" if data.get("reason") == "old" else "hard"
    detail = _detail(f"Mailgun {severity} failure", description, data.get("reason"))
    return [Event(key, kind, email, detail, at)]
